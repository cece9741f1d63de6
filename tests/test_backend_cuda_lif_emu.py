"""The fused LIF recurrence kernels, run on the CPU through the CUDA emulator.

Forward spikes, the neuron's last membrane potential and every gradient of the fused
path must equal the generic time loop of SpatialRecurrentContainer with a real
spikingjelly LIFNode (float64, so that no spike flips on rounding).
"""

from __future__ import annotations

import copy

import pytest
import torch
from spikingjelly.activation_based import neuron, surrogate

from sj_spatial import SpatialRecurrentContainer
from sj_spatial.backends import cuda, cuda_lif
from sj_spatial.delays import delay_taps
from sj_spatial.functional import num_taps

from cuda_emu import EmuRunner, compile_kernels, compiler


@pytest.fixture(scope="module")
def emu():
    if compiler() is None:
        pytest.skip("no C++ compiler for the CUDA emulator")
    return compile_kernels(cuda.kernel_source(), cuda.KERNELS + cuda_lif.KERNELS)


LIF_VARIANTS = {
    "hard-decay-sigmoid": dict(tau=2.0),
    "hard-nodecay-atan": dict(tau=20.0, decay_input=False, surrogate_function=surrogate.ATan()),
    "soft-sigmoid2": dict(tau=5.0, v_reset=None, surrogate_function=surrogate.Sigmoid(alpha=2.0)),
    "detach-reset": dict(tau=3.0, detach_reset=True, v_threshold=0.5),
    "soft-nodecay-detach": dict(tau=4.0, v_reset=None, decay_input=False, detach_reset=True),
}


@pytest.mark.parametrize("variant", sorted(LIF_VARIANTS))
@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
def test_fused_lif_equals_generic_loop(emu, variant, delay_mode):
    torch.manual_seed(0)
    n, T, N, max_delay = 37, 14, 3, 4
    rec = SpatialRecurrentContainer(
        neuron.LIFNode(**LIF_VARIANTS[variant]),
        n,
        step_mode="m",
        max_delay=max_delay,
        delay_mode=delay_mode,
    ).double()
    with torch.no_grad():
        rec.positions.positions.uniform_(-2.5, 2.5)
        rec.weight.mul_(3)
    fused_lif = copy.deepcopy(rec.sub_module)
    x = (torch.rand(T, N, n, dtype=torch.float64) * 3).requires_grad_()
    g = torch.randn(T, N, n, dtype=torch.float64)

    s_ref = rec(x)
    v_ref = rec.sub_module.v
    assert 0.02 < s_ref.mean() < 0.9
    (s_ref * g).sum().backward()

    params = cuda_lif.lif_params(fused_lif)
    assert params is not None
    x2 = x.detach().clone().requires_grad_()
    weight = rec.weight.detach().clone().requires_grad_()
    bias = rec.bias.detach().clone().requires_grad_()
    pos = rec.positions.positions.detach().clone().requires_grad_()
    from sj_spatial.delays import delays_from_positions

    taps, frac = delay_taps(delays_from_positions(pos, pos, 1.0, max_delay), delay_mode)
    s, v_last = cuda_lif.lif_recurrence(
        x2, weight, bias, taps, frac, params, num_taps(max_delay), runner=EmuRunner(emu)
    )
    assert torch.equal(s, s_ref.detach())
    assert torch.allclose(v_last, v_ref.detach(), atol=1e-12)
    ((s * g).sum() + v_last.sum() * 0).backward()
    assert torch.allclose(x2.grad, x.grad, rtol=1e-9, atol=1e-12)
    assert torch.allclose(weight.grad, rec.weight.grad, rtol=1e-9, atol=1e-12)
    assert torch.allclose(bias.grad, rec.bias.grad, rtol=1e-9, atol=1e-12)
    assert torch.allclose(pos.grad, rec.positions.positions.grad, rtol=1e-9, atol=1e-12)


def test_gradient_through_the_last_membrane_potential(emu):
    """v_last is an output: its gradient flows back through the whole sequence."""
    torch.manual_seed(2)
    n, T, N, max_delay = 8, 6, 2, 2
    lif = neuron.LIFNode(tau=2.0)
    params = cuda_lif.lif_params(lif)
    x = (torch.rand(T, N, n, dtype=torch.float64) * 1.5).requires_grad_()
    weight = torch.randn(n, n, dtype=torch.float64)
    taps = torch.randint(0, max_delay + 1, (n, n))
    frac = torch.rand(n, n, dtype=torch.float64)
    _, v_last = cuda_lif.lif_recurrence(
        x, weight, None, taps, frac, params, num_taps(max_delay), runner=EmuRunner(emu)
    )
    v_last.sum().backward()

    # The same through the generic loop of the functional API.
    from sj_spatial.backends import dense
    from sj_spatial.functional import _Synapses  # noqa: F401  (documented internal)

    x_ref = x.detach().clone().requires_grad_()
    ref = neuron.LIFNode(tau=2.0)
    history = torch.zeros(num_taps(max_delay), N, n, dtype=torch.float64)
    for x_t in x_ref:
        r = dense.delayed_matmul(history, weight, taps, frac, num_taps(max_delay), 1)[0]
        s = ref(x_t + r)
        history = torch.cat((history[1:], s[None]))
    ref.v.sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, rtol=1e-9, atol=1e-12)


def test_unsupported_neurons_fall_back():
    assert cuda_lif.lif_params(neuron.IFNode()) is None
    assert cuda_lif.lif_params(neuron.LIFNode(step_mode="m")) is None
    assert (
        cuda_lif.lif_params(neuron.LIFNode(surrogate_function=surrogate.PiecewiseQuadratic()))
        is None
    )
    assert (
        cuda_lif.lif_params(neuron.LIFNode(surrogate_function=surrogate.ATan(spiking=False)))
        is None
    )
    lif = neuron.LIFNode()
    lif(torch.rand(2, 3))  # v is now a tensor: a sequence in progress
    assert cuda_lif.lif_params(lif) is None
    assert cuda_lif.lif_params(neuron.LIFNode(tau=3.0))["tau"] == 3.0
