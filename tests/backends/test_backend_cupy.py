"""backend='cupy' on a CUDA GPU: the same outputs and gradients as backend='torch'.

Skipped where CuPy or a GPU is missing. ``python tests/backends/test_backend_cupy.py`` prints
forward + backward timings against ``nn.Linear``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sj_spatial import SpatialDelayLinear, SpatialRecurrentContainer
from sj_spatial.backends import cupy_missing, dense

_missing = cupy_missing()
# The torch reference convolves in TF32 by default on CUDA; compare in full float32.
pytestmark = [
    pytest.mark.skipif(_missing is not None, reason=f"backend='cupy': {_missing}"),
    pytest.mark.usefixtures("exact_float32"),
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def spikes(*shape, density=0.05, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.rand(*shape, device="cuda", generator=g) < density).float()


def layer_pair(c, o, step_mode, delay_mode, max_delay, delay_scale=10.0):
    torch.manual_seed(0)
    ref = SpatialDelayLinear(
        c,
        o,
        step_mode=step_mode,
        max_delay=max_delay,
        delay_scale=delay_scale,
        delay_mode=delay_mode,
    ).cuda()
    fast = SpatialDelayLinear(
        c,
        o,
        step_mode=step_mode,
        max_delay=max_delay,
        delay_scale=delay_scale,
        delay_mode=delay_mode,
        backend="cupy",
    )
    fast = fast.cuda()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def run(layer, x, step_mode):
    x = x.clone().requires_grad_()
    if step_mode == "m":
        y = layer(x)
    else:
        y = torch.stack([layer(x_t) for x_t in x])
    g = torch.Generator(device="cuda").manual_seed(1)
    y.backward(torch.randn(y.shape, device="cuda", generator=g))
    grads = {
        "x": x.grad,
        "weight": layer.weight.grad,
        "bias": layer.bias.grad,
        "pre_positions": layer.pre_positions.positions.grad,
        "post_positions": layer.post_positions.positions.grad,
    }
    layer.reset()
    return y, grads


@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
@pytest.mark.parametrize(
    "shape",
    [(100, 16, 700, 256, 25), (37, 5, 33, 19, 7), (20, 3, 10, 12, 40)],
    ids=["shd_700_256", "odd", "long_delay"],
)
def test_layer_multi_step_matches_torch(shape, delay_mode):
    t, n, c, o, max_delay = shape
    ref, fast = layer_pair(c, o, "m", delay_mode, max_delay)
    x = spikes(t, n, c)
    y_ref, g_ref = run(ref, x, "m")
    y, g = run(fast, x, "m")
    assert rel_err(y, y_ref) <= 1e-5
    for name in g_ref:
        assert rel_err(g[name], g_ref[name]) <= 1e-5, name


@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
def test_layer_single_step_matches_torch(delay_mode):
    ref, fast = layer_pair(64, 48, "s", delay_mode, 12)
    x = spikes(30, 4, 64, density=0.2)
    y_ref, g_ref = run(ref, x, "s")
    y, g = run(fast, x, "s")
    assert rel_err(y, y_ref) <= 1e-5
    for name in g_ref:
        assert rel_err(g[name], g_ref[name]) <= 1e-5, name


def test_delayed_matmul_tail_and_noncontiguous_input():
    from sj_spatial.backends import cuda

    g = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn(16, 40, 9, device="cuda", generator=g).permute(1, 0, 2)  # [40, 16, 9]
    weight = torch.randn(11, 9, device="cuda", generator=g)
    taps = torch.randint(0, 7, (11, 9), device="cuda", generator=g)
    frac = torch.rand(11, 9, device="cuda", generator=g)
    args = [t.clone().requires_grad_() for t in (x, weight, frac)]
    refs = [t.clone().requires_grad_() for t in (x, weight, frac)]
    y = cuda.delayed_matmul(args[0], args[1], taps, args[2], 8, 23)
    y_ref = dense.delayed_matmul(refs[0], refs[1], taps, refs[2], 8, 23)
    assert rel_err(y, y_ref) <= 1e-5
    grad = torch.randn(y.shape, device="cuda", generator=g)
    y.backward(grad)
    y_ref.backward(grad)
    for mine, theirs in zip(args, refs, strict=True):
        assert rel_err(mine.grad, theirs.grad) <= 1e-5
    gw, gf = cuda.weight_frac_grads(x, grad, weight, taps, frac, 8, 23)
    assert rel_err(gw, refs[1].grad) <= 1e-5 and rel_err(gf, refs[2].grad) <= 1e-5


def test_recurrent_container_matches_torch():
    torch.manual_seed(3)
    kw = {"max_delay": 9, "delay_scale": 5.0, "step_mode": "m"}
    ref = SpatialRecurrentContainer(nn.Tanh(), 24, **kw).cuda()
    fast = SpatialRecurrentContainer(nn.Tanh(), 24, backend="cupy", **kw).cuda()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(25, 3, 24, device="cuda")
    outs = []
    for layer in (ref, fast):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        y.square().sum().backward()
        outs.append((y, xi.grad, layer.weight.grad, layer.positions.positions.grad))
    for mine, theirs in zip(outs[1], outs[0], strict=True):
        assert rel_err(mine, theirs) <= 1e-5


def test_float16_input_is_computed_in_float32():
    from sj_spatial.backends import cuda
    from sj_spatial.delays import delay_taps

    ref, fast = layer_pair(70, 30, "m", "interpolate", 20)
    x = spikes(50, 6, 70, density=0.1).half().requires_grad_()
    y = fast(x)  # float32: the float32 bias promotes the float16 delayed matmul
    assert rel_err(y, ref(x.detach().float())) <= 2e-3
    y.sum().backward()
    assert x.grad.dtype == torch.float16 and torch.isfinite(fast.weight.grad).all()
    taps, frac = delay_taps(fast.delays().detach(), "interpolate")
    y16 = cuda.delayed_matmul(x.detach(), fast.weight.detach(), taps, frac, 22, 50)
    y32 = dense.delayed_matmul(x.detach().float(), fast.weight.detach(), taps, frac, 22, 50)
    assert y16.dtype == torch.float16 and rel_err(y16, y32) <= 2e-3


def test_no_dense_delay_kernel_is_allocated():
    c, o, max_delay, t, n = 700, 256, 250, 100, 16
    dense_kernel_bytes = o * c * (max_delay + 2) * 4
    _, fast = layer_pair(c, o, "m", "interpolate", max_delay, delay_scale=100.0)
    x = spikes(t, n, c).requires_grad_()
    fast(x).sum().backward()  # compile and warm up
    fast.reset()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fast(x).sum().backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 0.4 * dense_kernel_bytes, (extra, dense_kernel_bytes)


def _bench(fn, *args, repeat=20):
    for _ in range(3):
        fn(*args)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeat):
        fn(*args)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def _train_step(layer, x):
    layer(x).sum().backward()
    if hasattr(layer, "reset"):
        layer.reset()


def _forward_step(layer, x):
    with torch.no_grad():
        layer(x)
    layer.reset()


def benchmark() -> None:
    """Forward + backward of ``sum(y)``, ms, against ``nn.Linear`` (float32, no TF32)."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    print(
        f"{'T':>5} {'N':>4} {'in->out':>9} {'max_delay':>9} {'Linear':>8} {'cupy':>8} "
        f"{'ratio':>6} {'cupy fwd':>9} {'torch':>8}"
    )
    cases = [(100, 16, 700, 256, 25), (100, 16, 700, 256, 250), (100, 256, 700, 256, 25),
             (1000, 256, 700, 256, 25), (1000, 256, 700, 256, 250)]  # fmt: skip
    for t, n, c, o, max_delay in cases:
        x = spikes(t, n, c).requires_grad_()
        linear = nn.Linear(c, o).cuda()
        ref, fast = layer_pair(c, o, "m", "interpolate", max_delay, delay_scale=max_delay / 2)
        t_lin = _bench(_train_step, linear, x)
        t_fast = _bench(_train_step, fast, x)
        t_fwd = _bench(_forward_step, fast, x)
        t_ref = _bench(_train_step, ref, x, repeat=3) if t * n <= 1600 else float("nan")
        print(
            f"{t:>5} {n:>4} {f'{c}->{o}':>9} {max_delay:>9} {t_lin:>8.3f} {t_fast:>8.3f} "
            f"{t_fast / t_lin:>6.2f} {t_fwd:>9.3f} {t_ref:>8.3f}"
        )


if __name__ == "__main__":
    if _missing is not None:
        raise SystemExit(f"backend='cupy' unavailable: {_missing}")
    benchmark()
