"""The fused CUDA LIF recurrence equals the generic time loop (needs CuPy and a GPU)."""

import copy

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

from sj_spatial import SpatialRecurrentContainer
from sj_spatial.backends import cupy_missing
from sj_spatial.models import ExponentialSynapse

pytestmark = pytest.mark.skipif(cupy_missing() is not None, reason="needs CuPy and a CUDA GPU")

LIF_VARIANTS = [
    dict(tau=2.0),
    dict(tau=20.0, decay_input=False, surrogate_function=surrogate.ATan()),
    dict(tau=5.0, v_reset=None, surrogate_function=surrogate.Sigmoid(alpha=2.0)),
    dict(tau=3.0, detach_reset=True, v_threshold=0.5),
]


def pair(lif_kwargs, n, dtype, max_delay=6, delay_mode="interpolate", tau_syn=None):
    torch.manual_seed(0)
    cell = neuron.LIFNode(**lif_kwargs)
    if tau_syn is not None:  # the paper's cell: exponential synapse, then LIF
        cell = nn.Sequential(ExponentialSynapse(tau_syn), cell)
    generic = SpatialRecurrentContainer(
        cell,
        n,
        step_mode="m",
        max_delay=max_delay,
        delay_mode=delay_mode,
    ).to("cuda", dtype)
    with torch.no_grad():
        generic.positions.positions.uniform_(-3, 3)
        generic.weight.mul_(3)
    fused = copy.deepcopy(generic)
    fused.backend = "cupy"
    return generic, fused


def run(model, x):
    x = x.clone().requires_grad_()
    s = model(x)
    g = torch.linspace(-1, 1, s.numel(), device=s.device, dtype=s.dtype).reshape(s.shape)
    (s * g).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return s.detach(), x.grad, grads


@pytest.mark.parametrize("lif_kwargs", LIF_VARIANTS)
@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
@pytest.mark.parametrize("tau_syn", [None, 5.0], ids=["lif", "synapse+lif"])
def test_fused_equals_generic_loop_float64(lif_kwargs, delay_mode, tau_syn, monkeypatch):
    from sj_spatial.backends import cuda_lif

    calls = []
    original = cuda_lif.lif_recurrence
    monkeypatch.setattr(cuda_lif, "lif_recurrence", lambda *a: calls.append(1) or original(*a))
    generic, fused = pair(lif_kwargs, 40, torch.float64, delay_mode=delay_mode, tau_syn=tau_syn)
    x = torch.rand(30, 3, 40, device="cuda", dtype=torch.float64) * 3
    s_g, gx_g, grads_g = run(generic, x)
    s_f, gx_f, grads_f = run(fused, x)
    assert calls, "the fused kernel should have run"
    assert 0.02 < s_g.mean() < 0.9
    assert torch.equal(s_f, s_g)
    assert torch.allclose(gx_f, gx_g, rtol=1e-9, atol=1e-12)
    for name in grads_g:
        assert torch.allclose(grads_f[name], grads_g[name], rtol=1e-9, atol=1e-12), name
    if tau_syn is None:
        assert torch.allclose(fused.sub_module.v, generic.sub_module.v)
    else:
        assert torch.allclose(fused.sub_module[1].v, generic.sub_module[1].v)
        assert torch.allclose(fused.sub_module[0].state, generic.sub_module[0].state)


def test_fused_float32_matches_within_1e5_and_continues_after_the_first_call():
    generic, fused = pair(dict(tau=2.0), 128, torch.float32, max_delay=25)
    x = torch.rand(100, 8, 128, device="cuda") * 1.5
    s_g, gx_g, grads_g = run(generic, x)
    s_f, gx_f, grads_f = run(fused, x)
    assert torch.equal(s_f, s_g)
    scale = gx_g.abs().max()
    assert (gx_f - gx_g).abs().max() <= 1e-5 * scale
    for name in grads_g:
        err = (grads_f[name] - grads_g[name]).abs().max()
        assert err <= 1e-5 * grads_g[name].abs().max(), name
    # A second call without reset continues the sequence (the generic loop takes over).
    more = torch.rand(5, 8, 128, device="cuda") * 1.5
    with torch.no_grad():
        assert torch.equal(fused(more), generic(more))
    functional.reset_net(fused)
    assert fused.output_history is None
