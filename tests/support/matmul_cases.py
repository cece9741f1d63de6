"""Inputs of the delayed-matmul contract and the comparisons that the numba gather and
event kernel tests share."""

import torch

# (T_in, N, in, out, max_delay, t_out)
SHAPES = [
    (12, 3, 5, 4, 3, 12),
    (12, 3, 5, 4, 3, 5),  # t_out < T_in
    (12, 3, 5, 4, 3, 1),  # one output step, as the recurrent layer asks
    (9, 1, 6, 7, 4, 9),  # N = 1
    (10, 2, 4, 3, 0, 10),  # max_delay 0: taps 0 only
    (3, 2, 5, 4, 6, 3),  # T_in < num_taps
    (3, 2, 5, 4, 6, 1),
    (1, 4, 3, 2, 2, 1),
    (30, 5, 19, 23, 7, 17),
]
TAPS = ["random", "zero", "max", "integer", "pruned"]


def make_inputs(shape, taps_mode, dtype, seed=0):
    t_in, n, n_in, n_out, max_delay, t_out = shape
    num_taps = max_delay + 2
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(t_in, n, n_in, generator=gen, dtype=dtype)
    x = x * (torch.rand(t_in, n, n_in, generator=gen) < 0.5)  # zeros, as spikes have
    weight = torch.randn(n_out, n_in, generator=gen, dtype=dtype)
    taps = torch.randint(0, num_taps - 1, (n_out, n_in), generator=gen)
    frac = torch.rand(n_out, n_in, generator=gen, dtype=dtype)
    if taps_mode == "zero":
        taps.zero_()
    elif taps_mode == "max":
        taps.fill_(num_taps - 2)
    elif taps_mode == "integer":
        frac[torch.rand(n_out, n_in, generator=gen) < 0.5] = 0.0
    elif taps_mode == "pruned":
        weight[torch.rand(n_out, n_in, generator=gen) < 0.5] = 0.0
    return x, weight, taps, frac, num_taps, t_out


def small(dtype=torch.float64):
    return make_inputs((8, 3, 5, 4, 3, 8), "random", dtype)


def run(impl, x, weight, taps, frac, num_taps, t_out, grad_y, needs=(True, True, True)):
    leaves = zip((x, weight, frac), needs, strict=True)
    x, weight, frac = (t.detach().requires_grad_(r) for t, r in leaves)
    y = impl.delayed_matmul(x, weight, taps, frac, num_taps, t_out)
    wrt = [t for t in (x, weight, frac) if t.requires_grad]
    grads = torch.autograd.grad(y, wrt, grad_y) if wrt else ()
    return y.detach(), grads


def assert_close(actual, expected, dtype):
    if dtype == torch.float64:
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    else:  # float32 sums in another order; scale atol for sums that cancel
        scale = max(1.0, float(expected.abs().max()))
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def assert_equals_dense(impl, dense, args, dtype, needs=(True, True, True)):
    """``impl``'s output and the gradients in ``needs`` (x, weight, frac) of
    ``make_inputs``' ``args`` equal the dense reference's within :func:`assert_close`."""
    x, weight, *_, t_out = args
    n, n_out = x.shape[1], weight.shape[0]
    grad_y = torch.randn(t_out, n, n_out, dtype=dtype)
    y, grads = run(impl, *args, grad_y, needs)
    y_ref, grads_ref = run(dense, *args, grad_y, needs)
    assert y.shape == (t_out, n, n_out)
    assert len(grads) == sum(needs)
    assert_close(y, y_ref, dtype)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert_close(g, g_ref, dtype)
