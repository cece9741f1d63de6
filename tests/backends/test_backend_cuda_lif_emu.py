"""The fused LIF recurrence kernels, run on the CPU through the CUDA emulator.

Forward spikes, the neuron's last membrane potential and every gradient of the fused
path must equal the generic time loop of SpatialRecurrentContainer with a real
spikingjelly LIFNode (float64, so that no spike flips on rounding).
"""

from __future__ import annotations

import copy

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

from sj_spatial import SpatialRecurrentContainer
from sj_spatial.backends import cuda, cuda_lif, cupy_runtime
from sj_spatial.backends.contract import lag_window
from sj_spatial.cells import lif_cell, set_cell_state
from sj_spatial.delays import delay_taps
from sj_spatial.functional import _fused_lif, _Synapses
from sj_spatial.models import ExponentialSynapse, recurrent_shd_model

from tests.support.cuda_emu import EmuRunner, compile_kernels, compiler
from tests.support.lif_cases import LIF_VARIANTS, cell, final_state

# Slow: the CUDA emulator compiles the kernels with g++ and runs them thread by thread.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def emu():
    if compiler() is None:
        pytest.skip("no C++ compiler for the CUDA emulator")
    return compile_kernels(
        cuda.SOURCE + cuda_lif.SOURCE,
        cuda.KERNELS + cuda_lif.KERNELS,
        defines=cuda.DEFINES + cuda_lif.DEFINES,
    )


@pytest.mark.parametrize("variant", sorted(LIF_VARIANTS))
@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
@pytest.mark.parametrize("tau_syn", [None, 2.5], ids=["lif", "synapse+lif"])
def test_fused_lif_equals_generic_loop(emu, variant, delay_mode, tau_syn):
    torch.manual_seed(0)
    n, T, N, max_delay = 37, 14, 3, 4
    rec = SpatialRecurrentContainer(
        cell(variant, tau_syn),
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
    v_ref, c_ref = final_state(rec.sub_module)
    assert 0.02 < s_ref.mean() < 0.9
    (s_ref * g).sum().backward()

    params = lif_cell(fused_lif)
    assert params is not None
    x2 = x.detach().clone().requires_grad_()
    weight = rec.weight.detach().clone().requires_grad_()
    bias = rec.bias.detach().clone().requires_grad_()
    pos = rec.positions.positions.detach().clone().requires_grad_()
    from sj_spatial.delays import delays_from_positions

    taps, frac = delay_taps(delays_from_positions(pos, pos, 1.0, max_delay), delay_mode)
    assert params.synapse_decay == (0.0 if tau_syn is None else fused_lif[0].decay)
    s, (v_last, c_last) = cuda_lif.lif_recurrence(
        x2, weight, taps, frac, lag_window(max_delay), bias, params, runner=EmuRunner(emu)
    )
    assert torch.equal(s, s_ref.detach())
    assert torch.allclose(v_last, v_ref.detach(), atol=1e-12)
    if c_ref is not None:
        assert torch.allclose(c_last, c_ref.detach(), atol=1e-12)
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
    params = lif_cell(lif)
    x = (torch.rand(T, N, n, dtype=torch.float64) * 1.5).requires_grad_()
    weight = torch.randn(n, n, dtype=torch.float64)
    taps = torch.randint(0, max_delay + 1, (n, n))
    frac = torch.rand(n, n, dtype=torch.float64)
    _, (v_last, _) = cuda_lif.lif_recurrence(
        x, weight, taps, frac, lag_window(max_delay), None, params, runner=EmuRunner(emu)
    )
    v_last.sum().backward()

    # The same through the generic loop of the functional API.
    from sj_spatial.backends import dense
    from sj_spatial.functional import _Synapses  # noqa: F401  (documented internal)

    x_ref = x.detach().clone().requires_grad_()
    ref = neuron.LIFNode(tau=2.0)
    history = torch.zeros(lag_window(max_delay), N, n, dtype=torch.float64)
    for x_t in x_ref:
        r = dense.delayed_matmul(history, weight, taps, frac, lag_window(max_delay), 1)[0]
        s = ref(x_t + r)
        history = torch.cat((history[1:], s[None]))
    ref.v.sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, rtol=1e-9, atol=1e-12)


def test_unsupported_neurons_fall_back():
    assert lif_cell(neuron.IFNode()) is None
    assert lif_cell(neuron.LIFNode(step_mode="m")) is None
    assert lif_cell(neuron.LIFNode(surrogate_function=surrogate.PiecewiseQuadratic())) is None
    assert lif_cell(neuron.LIFNode(surrogate_function=surrogate.ATan(spiking=False))) is None
    lif = neuron.LIFNode()
    lif(torch.rand(2, 3))  # v is now a tensor: a sequence in progress
    assert lif_cell(lif) is None
    assert lif_cell(neuron.LIFNode(tau=3.0)).tau == 3.0
    other_cell = nn.Sequential(neuron.LIFNode(), ExponentialSynapse(2.0))  # synapse after LIF
    assert lif_cell(other_cell) is None
    assert lif_cell(nn.Sequential(ExponentialSynapse(2.0), neuron.IFNode())) is None


def test_gradient_through_the_last_synaptic_current(emu):
    """c_last is an output too: d c_last / d x[t] = syn_decay ** (T - 1 - t)."""
    n, T, N = 3, 5, 1
    lif = neuron.LIFNode(tau=2.0, v_threshold=1e9)  # silent: c does not feed back
    step = nn.Sequential(ExponentialSynapse(2.0), lif)
    params = lif_cell(step)
    x = torch.rand(T, N, n, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(n, n, dtype=torch.float64)
    taps, frac = torch.zeros(n, n, dtype=torch.long), torch.zeros(n, n, dtype=torch.float64)
    _, (_, c_last) = cuda_lif.lif_recurrence(
        x, weight, taps, frac, lag_window(0), None, params, runner=EmuRunner(emu)
    )
    c_last.sum().backward()
    d = step[0].decay
    want = torch.tensor([d ** (T - 1 - t) for t in range(T)], dtype=torch.float64)
    assert torch.allclose(x.grad[:, 0, 0], want, rtol=1e-12)


def test_paper_model_cell_runs_fused_and_continues_like_the_generic_loop(emu, monkeypatch):
    """The dispatch of the cupy backend: the paper's cell (synapse + LIF) takes the fused
    path, and leaves neuron and synapse where the generic loop leaves them."""
    monkeypatch.setattr(cupy_runtime, "runner", lambda device: EmuRunner(emu))
    torch.manual_seed(3)
    model = recurrent_shd_model(20, hidden=16, classes=4, dt=1e-3, max_delay=6, delay_scale=3.0)
    rec = model[1].double()
    with torch.no_grad():
        rec.weight.mul_(4)
    x = torch.rand(12, 2, 16, dtype=torch.float64) * 2
    fused_cell = copy.deepcopy(rec.sub_module)
    synapses = _Synapses(
        rec.weight, rec.bias, rec.delays(), rec.max_delay, rec.delay_mode, "torch", None, x
    )
    got, state = _fused_lif(cuda_lif, x, lif_cell(fused_cell), synapses)
    set_cell_state(fused_cell, state)  # as the container does
    want = rec(x)
    assert want.sum() > 0 and torch.equal(got, want)
    assert torch.allclose(fused_cell[1].v, rec.sub_module[1].v, atol=1e-12)
    assert torch.allclose(fused_cell[0].state, rec.sub_module[0].state, atol=1e-12)
    # In the middle of a sequence the synapse holds a state: the generic loop takes over.
    assert lif_cell(fused_cell) is None
    functional.reset_net(fused_cell)
    assert lif_cell(fused_cell) is not None
