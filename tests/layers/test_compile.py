"""torch.compile: the layers compile as the model's first call, with fullgraph=True too,
and give the eager numbers (forward and gradients)."""

import subprocess
import sys
import textwrap

import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

from sj_spatial import SpatialDelayLinear, backends
from sj_spatial.layers import set_cpu_kernel
from sj_spatial.models import recurrent_shd_model

# Slow: every case compiles a model (inductor compiles C++).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),  # dynamo's notes on SJ internals
]


def _feedforward():
    return nn.Sequential(
        SpatialDelayLinear(12, 8, step_mode="m", max_delay=5, delay_scale=2.0),
        neuron.LIFNode(tau=2.0, step_mode="m"),
        SpatialDelayLinear(8, 3, step_mode="m", max_delay=5, delay_scale=2.0),
    )


def _recurrent():
    return recurrent_shd_model(in_features=12, hidden=8, classes=3, max_delay=5, dt=0.01)


def _run(model, x):
    """Output and gradients of one forward + backward, then a reset."""
    model.zero_grad()
    y = model(x)
    (y * torch.linspace(0.5, 1.5, y.shape[-1], device=y.device)).sum().backward()
    functional.reset_net(model)
    return y.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("make", [_feedforward, _recurrent], ids=["feedforward", "recurrent"])
@pytest.mark.parametrize("kernel", ["numba", "dense"])
@pytest.mark.parametrize("compiler", ["eager", "aot_eager", "inductor"])
def test_compiled_model_equals_eager_as_first_call(make, kernel, compiler):
    torch._dynamo.reset()
    model = set_cpu_kernel(make(), kernel)
    x = (torch.rand(9, 2, 12) < 0.3).float()
    compiled = torch.compile(model, backend=compiler, fullgraph=True)
    got, got_grads = _run(compiled, x)  # the first call of the model is the compiled one
    want, want_grads = _run(model, x)
    again, _ = _run(compiled, x)  # the second compiled call reuses the graph
    # The same kernels run inside and outside the graph; inductor may fuse the elementwise
    # neuron arithmetic differently (float32 rounding), hence a tolerance, not equality.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_non_finite_positions_are_caught_inside_a_compiled_graph():
    torch._dynamo.reset()
    model = _feedforward()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.rand(4, 2, 12)
    compiled(x)
    functional.reset_net(model)
    with torch.no_grad():
        model[2].pre_positions.positions[3, 1] = float("inf")
    with pytest.raises(ValueError, match="pre_positions must be finite"):
        compiled(x)


def test_compile_as_the_first_call_in_a_fresh_process():
    # numba dispatches (and loads its cache) on the first call in a process; dynamo used to
    # trace into that and fail ("exception table entry start instruction has no offset").
    script = textwrap.dedent(
        """
        import torch
        from sj_spatial.models import recurrent_shd_model
        model = recurrent_shd_model(in_features=12, hidden=8, classes=3, max_delay=5, dt=0.01)
        y = torch.compile(model, backend="eager", fullgraph=True)(torch.rand(9, 2, 12))
        y.sum().backward()
        print("ok", tuple(y.shape))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok (9, 2, 3)" in done.stdout


def test_single_steps_under_compile_continue_the_sequence_like_eager():
    # The delay memories change from None to a growing, then fixed-length history: the
    # compiled model recompiles for those cases and gives the eager single-step numbers.
    torch._dynamo.reset()
    from sj_spatial import SpatialRecurrentContainer

    model = nn.Sequential(
        SpatialDelayLinear(12, 8, max_delay=5, delay_scale=2.0),
        SpatialRecurrentContainer(neuron.LIFNode(tau=2.0), 8, max_delay=4, delay_scale=2.0),
        SpatialDelayLinear(8, 3, max_delay=5, delay_scale=2.0),
    )
    x = (torch.rand(9, 2, 12) < 0.4).float()
    compiled = torch.compile(model, backend="aot_eager")
    for _ in range(2):  # the second sequence after reset_net reuses the graphs
        got = torch.stack([compiled(x_t) for x_t in x])
        functional.reset_net(model)
        want = torch.stack([model(x_t) for x_t in x])
        functional.reset_net(model)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["torch", "cupy"])
def test_compiled_model_on_cuda_equals_eager(backend, exact_float32):
    # backend='torch' on CUDA is the dense reference: plain torch, compiled whole
    # (fullgraph); backend='cupy' calls CUDA kernels that are graph breaks.
    if backend == "cupy" and backends.cupy_missing() is not None:
        pytest.skip(backends.cupy_missing())
    torch._dynamo.reset()
    model = recurrent_shd_model(
        in_features=12, hidden=8, classes=3, max_delay=5, dt=0.01, backend=backend
    ).cuda()
    x = (torch.rand(9, 2, 12) < 0.3).float().cuda()
    compiled = torch.compile(model, fullgraph=backend == "torch")
    got, got_grads = _run(compiled, x)
    want, want_grads = _run(model, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    if backend == "cupy":
        torch._dynamo.reset()
        with pytest.raises(torch._dynamo.exc.Unsupported, match="disable"):
            torch.compile(model, fullgraph=True)(x)
