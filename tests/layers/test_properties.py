"""Properties of the layers over random shapes, options and positions (hypothesis).

For every drawn case: outputs and gradients (input, weight, bias, positions) are finite;
the multi-step result equals T single-step calls and the slow SPEC reference; the numba
CPU kernel equals the dense reference; where CuPy and a GPU exist, backend='cupy' equals
backend='torch'. Positions include coincident neurons (distance eps), integer grids
(delays on tap boundaries) and coordinates of 1e6 (every delay clamped). dtype, delay
mode and layout are pytest parameters; hypothesis draws the rest with a seed fixed per
parameter combination, so every run checks the same cases.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from spikingjelly.activation_based import functional, neuron

from sj_spatial import SpatialDelayLinear, SpatialRecurrentContainer
from sj_spatial.backends import cpu as cpu_backend
from sj_spatial.backends import cupy_missing
from sj_spatial.delays import delay_taps, delays_from_positions
from sj_spatial.layers import set_cpu_kernel

from tests.support.reference import spec_linear, spec_recurrence

SETTINGS = settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
LAYOUTS = ("spread", "coincident", "grid", "huge", "mixed")
DTYPES = [torch.float32, torch.float64]
DELAY_MODES = ["interpolate", "round"]
#: Every combination of dtype, delay mode and position layout, each with SETTINGS examples.
categories = pytest.mark.parametrize(
    "dtype, delay_mode, layout",
    [(d, m, lay) for d in DTYPES for m in DELAY_MODES for lay in LAYOUTS],
    ids=lambda v: str(v).replace("torch.", ""),
)


def examples(key: str, **strategies):
    """Run the decorated check on SETTINGS examples of ``strategies``, seeded by ``key``:
    the same examples on every run, other ones for every parameter combination."""

    def wrap(check):
        return seed(zlib.crc32(key.encode()))(SETTINGS(given(**strategies)(check)))

    return wrap


#: (rtol, atol) between implementations that sum in another order.
TOLS = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-10, 1e-12)}

needs_numba = pytest.mark.skipif(not cpu_backend.available(), reason="numba is not installed")


@dataclass(frozen=True)
class Case:
    t: int
    batch: tuple[int, ...]
    n_in: int
    n_out: int
    dim: int
    max_delay: int
    delay_scale: float
    dtype: torch.dtype
    delay_mode: str
    bias: bool
    layout: str
    seed: int


BATCHES = [(), (2,), (3,), (2, 2), (1, 3), (0,)]


@st.composite
def cases(draw, dtype, delay_mode, layout, square: bool = False) -> Case:
    """Shapes and options drawn by hypothesis; the categorical ones are pytest parameters
    (hypothesis favours the first of few choices, and every combination matters)."""
    n_in = draw(st.integers(1, 5))
    return Case(
        t=draw(st.integers(1, 6)),
        batch=draw(st.sampled_from(BATCHES)),
        n_in=n_in,
        n_out=n_in if square else draw(st.integers(1, 5)),
        dim=draw(st.integers(1, 4)),
        max_delay=draw(st.integers(0, 6)),
        delay_scale=draw(
            st.floats(0.05, 4.0, allow_subnormal=False) | st.sampled_from([0.0, 1.0, 1e3])
        ),
        dtype=dtype,
        delay_mode=delay_mode,
        bias=draw(st.booleans()),
        layout=layout,
        seed=draw(st.integers(0, 2**16)),
    )


def positions(layout: str, n: int, dim: int, gen: torch.Generator, anchor=None) -> torch.Tensor:
    """``[n, dim]`` positions of one layout; ``anchor`` rows are copied where neurons coincide."""
    p = torch.rand(n, dim, generator=gen, dtype=torch.float64) * 4 - 2
    anchor = None if anchor is None else anchor.detach().double()
    if layout == "grid":
        p = p.round()
    elif layout == "huge":
        p = p.sign() * 1e6
    elif layout == "coincident":
        p = (anchor[:1] if anchor is not None else p[:1]).expand(n, dim)
    elif layout == "mixed":  # some coincident with the other side, some far away
        pick = torch.rand(n, generator=gen) < 0.5
        if anchor is not None:
            p[pick] = anchor[torch.randint(0, len(anchor), (int(pick.sum()),), generator=gen)]
        p[torch.rand(n, generator=gen) < 0.3] *= 1e6
    return p.clone()


def set_positions(module, case: Case, gen: torch.Generator) -> None:
    with torch.no_grad():
        if isinstance(module, SpatialDelayLinear):
            post = positions(case.layout, case.n_out, case.dim, gen)
            module.post_positions.positions.copy_(post)
            pre = positions(case.layout, case.n_in, case.dim, gen, anchor=post)
            module.pre_positions.positions.copy_(pre)
        else:
            module.positions.positions.copy_(positions(case.layout, case.n_in, case.dim, gen))


def make_linear(case: Case, step_mode: str, backend: str = "torch") -> SpatialDelayLinear:
    layer = SpatialDelayLinear(
        case.n_in,
        case.n_out,
        bias=case.bias,
        step_mode=step_mode,
        dim=case.dim,
        max_delay=case.max_delay,
        delay_scale=case.delay_scale,
        delay_mode=case.delay_mode,
        backend=backend,
    ).to(case.dtype)
    gen = torch.Generator().manual_seed(case.seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
    set_positions(layer, case, gen)
    return layer


def make_recurrent(case: Case, step_mode: str, backend: str = "torch"):
    lif = neuron.LIFNode(tau=2.0, v_threshold=0.5, detach_reset=case.seed % 2 == 0)
    rec = SpatialRecurrentContainer(
        lif,
        case.n_in,
        bias=case.bias,
        step_mode=step_mode,
        dim=case.dim,
        max_delay=case.max_delay,
        delay_scale=case.delay_scale,
        delay_mode=case.delay_mode,
        backend=backend,
    ).to(case.dtype)
    gen = torch.Generator().manual_seed(case.seed)
    with torch.no_grad():
        rec.weight.copy_(torch.randn(rec.weight.shape, generator=gen))
    set_positions(rec, case, gen)
    return rec


def inputs(case: Case, features: int) -> tuple[torch.Tensor, torch.Generator]:
    gen = torch.Generator().manual_seed(case.seed + 1)
    shape = (case.t, *case.batch, features)
    x = torch.randn(shape, generator=gen, dtype=case.dtype)
    return x * (torch.rand(shape, generator=gen) < 0.7), gen  # zeros, as spikes have


def run(module, x: torch.Tensor, gen_seed: int, device: str = "cpu"):
    """Output and the gradients of ``sum(y * g)`` (fixed g) for x and every parameter."""
    functional.reset_net(module)
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    if module.step_mode == "m":
        y = module(x)
    else:
        y = torch.stack([module(x_t) for x_t in x])
    gen = torch.Generator().manual_seed(gen_seed)
    g = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(device)
    (y * g).sum().backward()
    grads = {"x": x.grad, **{n: p.grad for n, p in module.named_parameters()}}
    return y.detach(), grads


def assert_finite(y, grads, unused=()):
    """Finite output and gradients; only the parameters in ``unused`` may get none."""
    assert torch.isfinite(y).all(), "output is not finite"
    for name, g in grads.items():
        if g is None and name in unused:
            continue
        assert g is not None, f"no gradient reached {name}"
        assert torch.isfinite(g).all(), f"{name} gradient is not finite"


def assert_same(a, b, dtype, what):
    rtol, atol = TOLS[dtype]
    torch.testing.assert_close(a.cpu(), b.cpu(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def assert_same_run(run_a, run_b, dtype, what):
    (y_a, grads_a), (y_b, grads_b) = run_a, run_b
    assert_same(y_a, y_b, dtype, f"{what}, output")
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        if grads_a[name] is None or grads_b[name] is None:
            assert grads_a[name] is grads_b[name], f"{what}: grad {name} missing on one side"
            continue
        assert_same(grads_a[name], grads_b[name], dtype, f"{what}, grad {name}")


def check_delays_and_taps(case: Case) -> None:
    gen = torch.Generator().manual_seed(case.seed)
    post = positions(case.layout, case.n_out, case.dim, gen).to(case.dtype).requires_grad_()
    pre = positions(case.layout, case.n_in, case.dim, gen, anchor=post)
    pre = pre.to(case.dtype).requires_grad_()
    d = delays_from_positions(post, pre, case.delay_scale, case.max_delay)
    assert d.dtype == case.dtype and d.shape == (case.n_out, case.n_in)
    assert ((d >= 0) & (d <= case.max_delay)).all()
    k, f = delay_taps(d, case.delay_mode)
    assert ((k >= 0) & (k <= case.max_delay)).all()
    if case.delay_mode == "interpolate":
        assert ((f >= 0) & (f < 1)).all()
        assert torch.equal(k + f, d)  # floor and remainder are exact
    else:
        assert torch.equal(f, torch.zeros_like(f)) and ((k - d).abs() <= 0.5).all()
    weights = torch.randn(d.shape, dtype=case.dtype)
    if d.requires_grad:  # f follows the delay with slope 1 (straight through when rounded)
        (grad_d,) = torch.autograd.grad((f * weights).sum(), d, retain_graph=True)
        assert torch.equal(grad_d, weights)
    grads = torch.autograd.grad((f * weights).sum() + (d * weights).sum(), (post, pre))
    for g in grads:
        assert torch.isfinite(g).all()


def check_linear(case: Case, mode: str) -> None:
    """Finite, numba == dense, ``mode`` == the other step mode, == the SPEC reference."""
    layer = make_linear(case, mode)
    x, _ = inputs(case, case.n_in)
    fast = run(set_cpu_kernel(layer, "numba"), x, case.seed)
    assert fast[0].shape == (case.t, *case.batch, case.n_out)
    assert fast[0].dtype == case.dtype
    assert_finite(*fast)
    dense = run(set_cpu_kernel(layer, "dense"), x, case.seed)
    assert_same_run(fast, dense, case.dtype, "numba vs dense")
    layer.step_mode = "m" if mode == "s" else "s"
    other = run(set_cpu_kernel(layer, "numba"), x, case.seed)
    assert_same_run(fast, other, case.dtype, "step_mode 's' vs 'm'")
    want = spec_linear(
        x.reshape(case.t, -1, case.n_in),
        layer.effective_weight().detach(),
        None if layer.bias is None else layer.bias.detach(),
        layer.delays().detach(),
        case.delay_mode,
    ).reshape(fast[0].shape)
    assert_same(fast[0].double(), want, case.dtype, "SPEC reference")


def check_recurrent_lif(case: Case, mode: str) -> None:
    """The same properties for a LIF population with delayed recurrent synapses."""
    rec = make_recurrent(case, mode)
    x, _ = inputs(case, case.n_in)
    x = x.abs() * 2  # enough drive to spike
    fast = run(set_cpu_kernel(rec, "numba"), x, case.seed)
    assert fast[0].shape == (case.t, *case.batch, case.n_in)
    # One step reads no earlier spikes: the recurrent synapses take no part in it.
    assert_finite(*fast, unused=("weight", "positions.positions") if case.t == 1 else ())
    assert ((fast[0] == 0) | (fast[0] == 1)).all()
    dense = run(set_cpu_kernel(rec, "dense"), x, case.seed)
    assert_same_run(fast, dense, case.dtype, "numba vs dense")
    rec.step_mode = "m" if mode == "s" else "s"
    other = run(set_cpu_kernel(rec, "numba"), x, case.seed)
    assert_same_run(fast, other, case.dtype, "step_mode 's' vs 'm'")
    ref_lif = neuron.LIFNode(tau=2.0, v_threshold=0.5, detach_reset=case.seed % 2 == 0)
    bias = None if rec.bias is None else rec.bias.detach()
    want = spec_recurrence(
        x.reshape(case.t, -1, case.n_in),
        ref_lif,
        rec.weight.detach(),
        bias,
        rec.delays().detach(),
        case.delay_mode,
    ).reshape(fast[0].shape)
    assert_same(fast[0], want, case.dtype, "SPEC reference")


def check_cupy_equals_torch(case: Case, mode: str) -> None:
    ref = make_linear(case, mode).cuda()
    fast = make_linear(case, mode, backend="cupy").cuda()
    x, _ = inputs(case, case.n_in)
    want = run(ref, x.cuda(), case.seed, "cuda")
    got = run(fast, x.cuda(), case.seed, "cuda")
    assert_finite(*got)
    assert_same_run(got, want, case.dtype, "cupy vs torch")
    rec_case = Case(**{**case.__dict__, "n_out": case.n_in})
    rec_ref = make_recurrent(rec_case, mode).cuda()
    rec_fast = make_recurrent(rec_case, mode, backend="cupy").cuda()
    x = x.abs() * 2
    want = run(rec_ref, x.cuda(), case.seed, "cuda")
    got = run(rec_fast, x.cuda(), case.seed, "cuda")
    assert_finite(*got, unused=("weight", "positions.positions") if case.t == 1 else ())
    assert_same_run(got, want, case.dtype, "recurrent cupy vs torch")


MODES = st.sampled_from(["s", "m"])  # the step mode run first; the other is compared to it


@categories
def test_delays_and_taps(dtype, delay_mode, layout):
    key = f"delays {dtype} {delay_mode} {layout}"
    examples(key, case=cases(dtype, delay_mode, layout))(check_delays_and_taps)()


@needs_numba
@categories
def test_linear_layer(dtype, delay_mode, layout):
    key = f"linear {dtype} {delay_mode} {layout}"
    examples(key, case=cases(dtype, delay_mode, layout), mode=MODES)(check_linear)()


@needs_numba
@categories
def test_recurrent_lif_container(dtype, delay_mode, layout):
    key = f"recurrent {dtype} {delay_mode} {layout}"
    case = cases(dtype, delay_mode, layout, square=True)
    examples(key, case=case, mode=MODES)(check_recurrent_lif)()


_no_cupy = cupy_missing()


@pytest.mark.skipif(_no_cupy is not None, reason=f"backend='cupy': {_no_cupy}")
@pytest.mark.usefixtures("exact_float32")
@categories
def test_cupy_equals_torch(dtype, delay_mode, layout):
    key = f"cupy {dtype} {delay_mode} {layout}"
    examples(key, case=cases(dtype, delay_mode, layout), mode=MODES)(check_cupy_equals_torch)()
