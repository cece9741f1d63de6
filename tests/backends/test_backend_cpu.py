"""The numba CPU kernel computes exactly what the dense reference computes."""

import os
import subprocess
import sys
from functools import partial
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("numba")

from spikingjelly.activation_based import neuron

from sj_spatial import SpatialDelayLinear, SpatialRecurrentContainer
from sj_spatial.backends import cpu, dense, select, threads
from sj_spatial.layers import set_cpu_kernel

from tests.support.matmul_cases import (
    SHAPES,
    TAPS,
    assert_close,
    assert_equals_dense,
    make_inputs,
    run,
    small,
)


@pytest.fixture(params=["serial", "parallel"])
def threading(request):
    """The gather kernels on the calling thread or on the thread pool, whatever the size
    (explicit arguments; the event kernels are compared in test_backend_cpu_events.py)."""
    parallel = request.param == "parallel"
    return SimpleNamespace(
        delayed_matmul=partial(cpu.delayed_matmul, path="gather", parallel=parallel)
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("taps_mode", TAPS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradients_equal_dense(shape, taps_mode, dtype, threading):
    args = make_inputs(shape, taps_mode, dtype)
    assert_equals_dense(threading, dense, args, dtype)


@pytest.mark.parametrize(
    "needs", [(True, False, False), (False, True, False), (False, False, True), (True, False, True)]
)
def test_any_subset_of_gradients(needs):
    args = make_inputs((11, 3, 6, 5, 4, 11), "random", torch.float64)
    assert_equals_dense(cpu, dense, args, torch.float64, needs)


def test_frac_gradient_at_zero_frac_is_the_interpolation_slope():
    """'round' mode: frac is 0 in value and still receives w (x[t-k-1] - x[t-k])."""
    x, weight, taps, _, num_taps, t_out = make_inputs((10, 2, 4, 3, 3, 10), "random", torch.float64)
    delays = (taps + 0.3).double().requires_grad_()
    frac = delays - delays.detach()
    y = cpu.delayed_matmul(x, weight, taps, frac, num_taps, t_out)
    (g,) = torch.autograd.grad(y.square().sum(), delays)
    frac_ref = torch.zeros_like(frac).requires_grad_()
    y_ref = dense.delayed_matmul(x, weight, taps, frac_ref, num_taps, t_out)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), frac_ref)
    assert g.abs().max() > 0
    assert_close(g, g_ref, torch.float64)


def test_non_contiguous_input_and_mixed_dtypes():
    x, weight, taps, frac, num_taps, t_out = small()
    x_t = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    assert not x_t.is_contiguous()
    weight, frac = weight.float(), frac.float()  # computed in x's dtype, float64
    grad_y = torch.randn(8, 3, 4, dtype=torch.float64)
    y, grads = run(cpu, x_t, weight, taps, frac, num_taps, t_out, grad_y)
    y_ref, grads_ref = run(dense, x, weight.double(), taps, frac.double(), num_taps, t_out, grad_y)
    assert y.dtype == torch.float64
    assert (grads[1].dtype, grads[2].dtype) == (torch.float32, torch.float32)
    assert_close(y, y_ref, torch.float64)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert_close(g.double(), g_ref, torch.float32)  # rounded to float32 at the end


def test_requires_grad_inputs_under_no_grad():
    x, weight, taps, frac, num_taps, t_out = small()
    weight.requires_grad_()
    frac.requires_grad_()
    with torch.no_grad():
        y = cpu.delayed_matmul(x.requires_grad_(), weight, taps, frac, num_taps, t_out)
        y_ref = dense.delayed_matmul(x, weight, taps, frac, num_taps, t_out)
    assert not y.requires_grad
    assert_close(y, y_ref, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_falls_back_to_dense(dtype):
    x, weight, taps, frac, num_taps, t_out = small(dtype)
    y = cpu.delayed_matmul(x, weight, taps, frac, num_taps, t_out)
    y_ref = dense.delayed_matmul(x, weight, taps, frac, num_taps, t_out)
    assert y.dtype == dtype
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)


def test_taps_out_of_range_are_rejected():
    x, weight, taps, frac, num_taps, t_out = small()
    taps[0, 0] = num_taps - 1
    with pytest.raises(ValueError, match="taps must lie in"):
        cpu.delayed_matmul(x, weight, taps, frac, num_taps, t_out)


def test_select_uses_the_cpu_kernel_unless_disabled():
    device = torch.device("cpu")
    assert select("torch", device, "numba") is cpu
    assert select("torch", device, "dense") is dense
    assert select("torch", device) is cpu  # the default without SJ_SPATIAL_CPU_KERNEL
    layer = SpatialDelayLinear(3, 2)
    assert layer.cpu_kernel == "numba" and "kernel=numba" in repr(layer)
    assert set_cpu_kernel(layer, "dense") is layer
    assert layer.cpu_kernel == "dense" and "kernel=dense" in repr(layer)
    with pytest.raises(ValueError, match="cpu_kernel must be one of"):
        layer.cpu_kernel = "no"
    assert layer.cpu_kernel == "dense"


def test_environment_variable_disables_the_cpu_kernel():
    code = (
        "import torch; from sj_spatial.backends import select, dense; "
        "from sj_spatial import SpatialDelayLinear; "
        "assert select('torch', torch.device('cpu')) is dense; "
        "assert SpatialDelayLinear(2, 2).cpu_kernel == 'dense'"
    )
    env = dict(os.environ, SJ_SPATIAL_CPU_KERNEL="0")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def layer_grads(make, x, enabled):
    torch.manual_seed(3)
    layer = set_cpu_kernel(make(), "numba" if enabled else "dense")
    y = layer(x)
    params = [p for p in layer.parameters() if p.requires_grad]
    grads = torch.autograd.grad(y.square().sum(), [x, *params])
    return y.detach(), grads


@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
def test_spatial_delay_linear_same_with_and_without_cpu_kernel(delay_mode):
    def make():
        return SpatialDelayLinear(
            9, 6, step_mode="m", max_delay=5, delay_scale=3.0, delay_mode=delay_mode
        ).double()

    x = torch.rand(14, 4, 9, dtype=torch.float64).requires_grad_()
    y, grads = layer_grads(make, x, True)
    y_ref, grads_ref = layer_grads(make, x, False)
    assert len(grads) == 5  # input, weight, bias, pre and post positions
    assert_close(y, y_ref, torch.float64)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert_close(g, g_ref, torch.float64)


def test_spatial_recurrent_container_same_with_and_without_cpu_kernel():
    def make():
        lif = neuron.LIFNode(tau=2.0, v_threshold=0.5, detach_reset=True)
        return SpatialRecurrentContainer(
            lif, 5, step_mode="m", max_delay=4, delay_scale=2.0
        ).double()

    x = torch.rand(12, 3, 5, dtype=torch.float64).requires_grad_()
    y, grads = layer_grads(make, x, True)
    y_ref, grads_ref = layer_grads(make, x, False)
    assert y.sum() > 0
    assert_close(y, y_ref, torch.float64)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert_close(g, g_ref, torch.float64)


def test_numba_thread_count_is_set_once_not_on_every_call(monkeypatch):
    if cpu.numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")
    calls = []
    monkeypatch.setattr(cpu.numba, "set_num_threads", calls.append)
    monkeypatch.setattr(threads, "_threads_set", {})
    x, weight, taps, frac, num_taps, t_out = small()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in range(3):  # every call on the thread pool
            cpu.delayed_matmul(x, weight, taps, frac, num_taps, t_out, parallel=True)
    finally:
        torch.set_num_threads(previous)
    assert calls == [2]
