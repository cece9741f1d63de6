"""Mixed precision: the layers under torch.autocast, half inputs and half layers.

Under autocast the delayed matmul behaves like ``nn.Linear``: its output (bias included)
has the autocast dtype, gradients reach the float32 parameters, and delays and
fractions stay float32. CUDA cases skip where no GPU (or no CuPy) is visible.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

from sj_spatial import SpatialDelayLinear, SpatialRecurrentContainer
from sj_spatial.backends import cpu as cpu_backend
from sj_spatial.backends import cuda, cupy_missing
from sj_spatial.delays import autocast_dtype, delay_taps, distances
from sj_spatial.layers import set_cpu_kernel

from tests.support.cuda_emu import EmuRunner, compile_kernels, compiler

HALF = (torch.bfloat16, torch.float16)
#: Normwise relative error allowed against the float32 result, a few units of roundoff
#: (2^-8 in bfloat16, 2^-11 in float16); measured on CPU: 3e-3 and 4e-4 (gradients 5e-3, 9e-4).
TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}
GRAD_TOL = {torch.bfloat16: 2e-2, torch.float16: 4e-3}

_no_cuda = not torch.cuda.is_available()
_no_cupy = cupy_missing()

# (device, backend, numba CPU kernel on): every implementation a layer can run on.
KERNELS = [
    pytest.param("cpu", "torch", True, id="cpu-numba"),
    pytest.param("cpu", "torch", False, id="cpu-dense"),
    pytest.param(
        "cuda",
        "torch",
        None,
        id="cuda-dense",
        marks=pytest.mark.skipif(_no_cuda, reason="no CUDA GPU is visible to torch"),
    ),
    pytest.param(
        "cuda",
        "cupy",
        None,
        id="cuda-cupy",
        marks=pytest.mark.skipif(_no_cupy is not None, reason=f"backend='cupy': {_no_cupy}"),
    ),
]
FAST_KERNELS = [p for p in KERNELS if p.id in ("cpu-numba", "cuda-cupy")]


def autocast_missing(device: str, dtype: torch.dtype) -> str | None:
    """Why ``torch.autocast(device, dtype)`` cannot run here, or None."""
    if device == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return "this GPU has no bfloat16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # older torch warns and disables unsupported dtypes
        with torch.autocast(device, dtype=dtype):
            on = autocast_dtype(device) == dtype
    return None if on else f"this torch has no {dtype} autocast on {device}"


# The float32 reference must not convolve in TF32 on CUDA.
pytestmark = pytest.mark.usefixtures("exact_float32")


@contextlib.contextmanager
def kernel(device: str, numba_on: bool | None, amp: torch.dtype | None = None, layer=None):
    """Select ``layer``'s CPU kernel and enter autocast (``amp``) or not (None)."""
    if numba_on and not cpu_backend.available():
        pytest.skip("numba is not installed")
    if numba_on is not None and layer is not None:
        set_cpu_kernel(layer, "numba" if numba_on else "dense")
    if amp is not None and (reason := autocast_missing(device, amp)) is not None:
        pytest.skip(reason)
    cast = torch.autocast(device, dtype=amp) if amp is not None else contextlib.nullcontext()
    with cast:
        yield


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def spread(module: nn.Module, scale: float) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("positions"):
                p.uniform_(-scale, scale)


def make_linear(device, backend, step_mode="m", delay_mode="interpolate", bias=True):
    torch.manual_seed(0)
    layer = SpatialDelayLinear(
        12,
        7,
        bias=bias,
        step_mode=step_mode,
        max_delay=5,
        delay_scale=2.0,
        delay_mode=delay_mode,
        backend=backend,
    )
    spread(layer, 1.5)  # delays span 0 .. 5 steps, some clamped
    return layer.to(device)


def make_recurrent(device, backend, sub_module, delay_mode="interpolate", step_mode="m"):
    torch.manual_seed(0)
    rec = SpatialRecurrentContainer(
        sub_module,
        6,
        step_mode=step_mode,
        max_delay=4,
        delay_scale=2.0,
        delay_mode=delay_mode,
        backend=backend,
    )
    spread(rec, 1.2)
    return rec.to(device)


def run(layer, x, step_mode, device, numba_on, amp=None):
    """Output and gradients (input and every parameter) of ``sum(y * g)`` for a fixed g."""
    functional.reset_net(layer)
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with kernel(device, numba_on, amp, layer):
        y = layer(x) if step_mode == "m" else torch.stack([layer(x_t) for x_t in x])
        gen = torch.Generator().manual_seed(1)
        g = torch.randn(y.shape, generator=gen).to(device)
        (y.float() * g).sum().backward()
    grads = {"x": x.grad, **{n: p.grad for n, p in layer.named_parameters()}}
    return y.detach(), grads


def assert_grads_close(grads, grads_ref, params, tol):
    assert grads.keys() == grads_ref.keys()
    for name, g in grads.items():
        assert g is not None, f"no gradient reached {name}"
        assert torch.isfinite(g).all(), f"{name} gradient is not finite"
        if name != "x":  # parameters keep their dtype and receive gradients in it
            assert g.dtype == params[name].dtype == torch.float32, name
        assert rel_err(g, grads_ref[name]) <= tol, (name, rel_err(g, grads_ref[name]))


@pytest.mark.parametrize("device, backend, numba_on", KERNELS)
@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
def test_linear_under_autocast_matches_float32(
    device, backend, numba_on, amp, step_mode, delay_mode
):
    layer = make_linear(device, backend, step_mode, delay_mode)
    x = torch.rand(10, 4, 12).to(device)
    y_ref, grads_ref = run(layer, x, step_mode, device, numba_on)
    y, grads = run(layer, x, step_mode, device, numba_on, amp)
    assert y_ref.dtype == torch.float32
    assert y.dtype == amp  # like nn.Linear under autocast
    assert torch.isfinite(y).all()
    assert rel_err(y, y_ref) <= TOL[amp]
    assert_grads_close(grads, grads_ref, dict(layer.named_parameters()), GRAD_TOL[amp])


@pytest.mark.parametrize("device, backend, numba_on", KERNELS)
@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
def test_linear_takes_half_inputs_under_autocast(device, backend, numba_on, amp):
    """The input of a layer after an autocast layer is already half: same result."""
    layer = make_linear(device, backend)
    x = torch.rand(10, 4, 12).to(device).to(amp)
    y_ref, grads_ref = run(layer, x.float(), "m", device, numba_on)
    y, grads = run(layer, x, "m", device, numba_on, amp)
    assert y.dtype == amp and grads["x"].dtype == amp
    assert rel_err(y, y_ref) <= TOL[amp]
    grads["x"] = grads["x"].float()
    assert_grads_close(grads, grads_ref, dict(layer.named_parameters()), GRAD_TOL[amp])


@pytest.mark.parametrize("device, backend, numba_on", FAST_KERNELS)
@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("half_input", [False, True])
def test_fast_kernels_accumulate_in_float32_and_round_once(
    device, backend, numba_on, amp, half_input
):
    layer = make_linear(device, backend, bias=False)
    x = torch.rand(10, 4, 12).to(device)
    if half_input:
        x = x.to(amp)
    y_ref, _ = run(layer, x.float(), "m", device, numba_on)
    y, _ = run(layer, x, "m", device, numba_on, amp)
    assert torch.equal(y, y_ref.to(amp))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=KERNELS[2].marks)])
@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
def test_delays_and_fractions_stay_float32_under_autocast(device, amp):
    layer = make_linear(device, "torch")
    rec = make_recurrent(device, "torch", nn.Identity())
    with torch.no_grad():
        layer.pre_positions.positions[1] = layer.pre_positions.positions[0]  # coincident
    want = [layer.delays(), rec.delays()]
    with kernel(device, None, amp):
        got = [layer.delays(), rec.delays()]
        taps = [delay_taps(d, mode) for d in got for mode in ("interpolate", "round")]
    for d, d_ref in zip(got, want, strict=True):
        assert d.dtype == torch.float32
        assert torch.equal(d, d_ref)
    for (k, f), (k_ref, f_ref) in zip(
        taps, [delay_taps(d, m) for d in want for m in ("interpolate", "round")], strict=True
    ):
        assert f.dtype == torch.float32 and k.dtype == torch.int64
        assert torch.equal(k, k_ref) and torch.equal(f, f_ref)


@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
def test_distances_of_far_away_neighbours_do_not_cancel_under_autocast(amp):
    """A difference formula, in float32: two neurons 0.5 apart at x = 1000."""
    post = torch.tensor([[1000.0, 0.0]], requires_grad=True)
    pre = torch.tensor([[1000.5, 0.0], [1000.0, 0.0]])
    with kernel("cpu", None, amp):
        d = distances(post, pre)
    assert d.dtype == torch.float32
    assert torch.allclose(d, torch.tensor([[0.5, 1e-4]]), rtol=1e-6, atol=0)
    # Half positions (a layer converted with .half()) still give float32 distances.
    d_half = distances(post.detach().to(amp), pre.to(amp))
    assert d_half.dtype == torch.float32
    assert torch.equal(d_half, distances(post.detach().to(amp).float(), pre.to(amp).float()))


@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
def test_float64_layer_is_left_in_float64_under_autocast(amp):
    layer = make_linear("cpu", "torch").double()
    x = torch.rand(8, 3, 12, dtype=torch.float64)
    y_ref, grads_ref = run(layer, x, "m", "cpu", True)
    y, grads = run(layer, x, "m", "cpu", True, amp)
    assert y.dtype == torch.float64 and layer.delays().dtype == torch.float64
    assert torch.equal(y, y_ref)
    for name, g in grads.items():
        assert torch.equal(g, grads_ref[name]), name


def dyadic(*shape, lo, hi, device="cpu"):
    """Multiples of 1/8: exact in bfloat16 and float16, as are their small sums."""
    return (torch.randint(lo, hi, shape) / 8).to(device)


@pytest.mark.parametrize("device, backend, numba_on", KERNELS)
@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_recurrent_lif_under_autocast_spikes_exactly_as_float32(
    device, backend, numba_on, amp, step_mode
):
    """Integer delays and weights exact in half precision: the same spikes, close gradients."""
    lif = neuron.LIFNode(tau=2.0, v_threshold=1.0, detach_reset=True)
    rec = make_recurrent(device, backend, lif, "round", step_mode)
    with torch.no_grad():
        rec.weight.copy_(dyadic(6, 6, lo=-8, hi=9))
        rec.bias.copy_(dyadic(6, lo=-2, hi=3))
    x = dyadic(16, 3, 6, lo=0, hi=20, device=device)
    y_ref, grads_ref = run(rec, x, step_mode, device, numba_on)
    y, grads = run(rec, x, step_mode, device, numba_on, amp)
    assert 0.05 < y_ref.mean() < 0.95, "the population should spike sometimes"
    assert y.dtype == torch.float32  # x[t] + r[t] is float32 for a float32 x
    assert torch.equal(y, y_ref)
    assert_grads_close(grads, grads_ref, dict(rec.named_parameters()), GRAD_TOL[amp])


@pytest.mark.parametrize("device, backend, numba_on", KERNELS)
@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
def test_recurrent_under_autocast_matches_float32(device, backend, numba_on, amp):
    """Interpolated delays with a smooth population (tanh): within half-precision error."""
    rec = make_recurrent(device, backend, nn.Tanh())
    x = torch.randn(12, 3, 6).to(device)
    y_ref, grads_ref = run(rec, x, "m", device, numba_on)
    y, grads = run(rec, x, "m", device, numba_on, amp)
    assert y.dtype == torch.float32
    assert rel_err(y, y_ref) <= TOL[amp]
    assert_grads_close(grads, grads_ref, dict(rec.named_parameters()), GRAD_TOL[amp])


@pytest.mark.parametrize("device, backend, numba_on", KERNELS)
@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
def test_recurrent_lif_interpolated_under_autocast_has_finite_gradients(
    device, backend, numba_on, amp
):
    lif = neuron.LIFNode(tau=2.0, v_threshold=0.5)
    rec = make_recurrent(device, backend, lif)
    x = torch.rand(20, 3, 6).to(device)
    y_ref, _ = run(rec, x, "m", device, numba_on)
    y, grads = run(rec, x, "m", device, numba_on, amp)
    # Rounding may flip a spike whose membrane potential sits on the threshold, no more.
    assert float((y != y_ref).float().mean()) <= 0.05
    for name, g in grads.items():
        assert g is not None and torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, f"{name} gets no gradient"


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("kind", ["linear", "recurrent"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_half_input_to_float32_layer_without_autocast_is_a_type_error(dtype, kind, step_mode):
    if kind == "linear":
        layer = make_linear("cpu", "torch", step_mode)
    else:
        layer = make_recurrent("cpu", "torch", neuron.LIFNode(), step_mode=step_mode)
    x = torch.rand(5, 2, layer.weight.shape[1], dtype=dtype)
    want = f"input x has dtype {dtype} but the synapse weight has dtype torch.float32"
    with pytest.raises(TypeError, match=want) as err:
        layer(x if step_mode == "m" else x[0])
    assert "torch.autocast" in str(err.value)
    memory = layer.input_history if kind == "linear" else layer.output_history
    assert memory is None  # the rejected input left nothing behind


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("numba_on", [True, False])
def test_half_layer_computes_in_half_with_float32_delays(dtype, numba_on):
    layer = make_linear("cpu", "torch")
    x = torch.rand(10, 4, 12)
    y_ref, _ = run(layer, x, "m", "cpu", numba_on)
    layer = layer.to(dtype)
    y, grads = run(layer, x.to(dtype), "m", "cpu", numba_on)
    assert layer.delays().dtype == torch.float32
    assert y.dtype == dtype
    assert rel_err(y, y_ref) <= 2 * TOL[dtype]
    for name, g in grads.items():
        assert g.dtype == dtype and torch.isfinite(g).all(), name


@pytest.mark.parametrize("device, backend, numba_on", KERNELS)
@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
def test_recurrent_lif_takes_half_inputs_under_autocast(device, backend, numba_on, amp):
    """The input after an autocast layer is half; the output has the neuron's dtype."""
    rec = make_recurrent(device, backend, neuron.LIFNode(tau=2.0, v_threshold=0.5))
    x = torch.rand(20, 3, 6).to(device).to(amp)
    y_ref, _ = run(rec, x.float(), "m", device, numba_on)
    y, grads = run(rec, x, "m", device, numba_on, amp)
    with kernel(device, numba_on, amp):  # spikingjelly 0.0.0.0.14's LIF returns float32 here
        neuron_dtype = neuron.LIFNode()(x[0]).dtype
    assert y.dtype == neuron_dtype
    assert float((y != y_ref).float().mean()) <= 0.05
    for name, g in grads.items():
        assert g is not None and torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, f"{name} gets no gradient"


@pytest.mark.parametrize("amp", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("half_input", [False, True])
def test_cupy_backend_computes_in_float32_under_autocast_emulated(amp, half_input):
    """The CuPy backend's host code and float32 kernels, run by the CPU emulator of
    tests/cuda_emu.py: under autocast it returns what it returns without, in x's dtype."""
    if compiler() is None:
        pytest.skip("no C++ compiler for the CUDA emulator")
    runner = EmuRunner(compile_kernels(cuda.SOURCE, cuda.KERNELS, defines=cuda.DEFINES))
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(14, 3, 5, generator=gen)
    x = x.to(amp) if half_input else x
    weight, frac = torch.randn(6, 5, generator=gen), torch.rand(6, 5, generator=gen)
    taps = torch.randint(0, 4, (6, 5), generator=gen)
    grad_y = torch.randn(14, 3, 6, generator=gen).to(x.dtype)
    results = []
    for amp_or_none in (None, amp):
        xl, wl, fl = leaves = [t.clone().requires_grad_() for t in (x, weight, frac)]
        with kernel("cpu", None, amp_or_none):
            y = cuda.DelayedMatmul.apply(xl, wl, taps, fl, 5, 14, runner)
        y.backward(grad_y)
        results.append((y.detach(), *(t.grad for t in leaves)))
    assert results[1][0].dtype == x.dtype
    for got, want in zip(results[1], results[0], strict=True):
        assert torch.equal(got, want)
