"""The fused CPU LIF recurrence (numba) equals the generic time loop of the container."""

from __future__ import annotations

import copy

import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

from sj_spatial import SpatialRecurrentContainer, backends
from sj_spatial.backends import cpu, cpu_lif
from sj_spatial.models import ExponentialSynapse, recurrent_shd_model

from tests.support.lif_cases import LIF_VARIANTS, cell, final_state

pytestmark = pytest.mark.skipif(not cpu.available(), reason="numba is not installed")


def run(model, x, fused: bool, monkeypatch):
    """Output, input gradient and parameter gradients of ``sum(s * g)``; ``fused`` False
    runs the generic loop (no fused kernel anywhere)."""
    calls = []
    with monkeypatch.context() as patch:
        if fused:
            original = cpu_lif.lif_recurrence
            patch.setattr(cpu_lif, "lif_recurrence", lambda *a: calls.append(1) or original(*a))
        else:
            patch.setattr(backends, "fused_lif", lambda *a: None)
        x = x.clone().requires_grad_()
        s = model(x)
    assert bool(calls) == fused
    g = torch.linspace(-1, 1, s.numel(), dtype=s.dtype).reshape(s.shape)
    (s * g).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return s.detach(), x.grad, grads


def pair(variant, tau_syn, n, dtype, **options):
    torch.manual_seed(0)
    generic = SpatialRecurrentContainer(cell(variant, tau_syn), n, step_mode="m", **options)
    generic = generic.to(dtype)
    with torch.no_grad():
        generic.positions.positions.uniform_(-2.5, 2.5)
        generic.weight.mul_(3)
    return generic, copy.deepcopy(generic)


@pytest.mark.parametrize("variant", sorted(LIF_VARIANTS))
@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
@pytest.mark.parametrize("tau_syn", [None, 2.5], ids=["lif", "synapse+lif"])
def test_fused_equals_generic_loop_float64(variant, delay_mode, tau_syn, monkeypatch):
    generic, fused = pair(variant, tau_syn, 37, torch.float64, max_delay=4, delay_mode=delay_mode)
    x = torch.rand(14, 20, 37, dtype=torch.float64) * 3
    s_g, gx_g, grads_g = run(generic, x, False, monkeypatch)
    s_f, gx_f, grads_f = run(fused, x, True, monkeypatch)
    assert 0.02 < s_g.mean() < 0.9
    # float64 and the same order of additions: no spike can flip on rounding.
    assert torch.equal(s_f, s_g)
    assert torch.allclose(gx_f, gx_g, rtol=1e-9, atol=1e-12)
    for name in grads_g:
        assert torch.allclose(grads_f[name], grads_g[name], rtol=1e-9, atol=1e-12), name
    for got, want in zip(
        final_state(fused.sub_module), final_state(generic.sub_module), strict=True
    ):
        assert (got is None) == (want is None)
        if got is not None:
            assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_paper_model_float32_within_rounding_and_continues_like_the_loop(monkeypatch):
    """The paper's cell in float32: the same spikes, gradients within float32 rounding of
    the accumulations, and a second call without reset continues the sequence."""
    torch.manual_seed(1)
    model = recurrent_shd_model(40, hidden=64, classes=5, dt=1e-3, max_delay=25, delay_scale=8.0)
    generic, fused = model[1], copy.deepcopy(model[1])
    x = torch.rand(60, 9, 64) * 1.5
    s_g, gx_g, grads_g = run(generic, x, False, monkeypatch)
    s_f, gx_f, grads_f = run(fused, x, True, monkeypatch)
    assert 0.01 < s_g.mean() < 0.9
    assert torch.equal(s_f, s_g)
    # Sums of up to 64 neurons x 60 steps of float32 terms: relative error ~1e-6.
    assert (gx_f - gx_g).abs().max() <= 1e-5 * gx_g.abs().max()
    for name in grads_g:
        err = (grads_f[name] - grads_g[name]).abs().max()
        assert err <= 1e-5 * grads_g[name].abs().max(), name
    more = torch.rand(7, 9, 64) * 1.5
    with torch.no_grad():
        assert torch.equal(fused(more), generic(more))
    functional.reset_net(fused)
    assert fused.output_history is None and fused.sub_module[1].v == 0.0


def test_batch_shapes_and_single_step_mode(monkeypatch):
    generic, fused = pair("hard-decay-sigmoid", None, 6, torch.float64, max_delay=3)
    x = torch.rand(5, 2, 3, 6, dtype=torch.float64) * 3  # [T, *batch, n] with two batch dims
    assert torch.equal(run(fused, x, True, monkeypatch)[0], run(generic, x, False, monkeypatch)[0])
    functional.reset_net(fused)
    functional.reset_net(generic)
    fused.step_mode = generic.step_mode = "s"
    with torch.no_grad():
        got = torch.stack([fused(x_t) for x_t in x])  # one step at a time: the loop
        want = torch.stack([generic(x_t) for x_t in x])
    assert torch.equal(got, want)


def test_only_fresh_lif_cells_on_the_numba_kernel_run_fused(monkeypatch):
    calls = []
    original = cpu_lif.lif_recurrence
    monkeypatch.setattr(cpu_lif, "lif_recurrence", lambda *a: calls.append(1) or original(*a))
    x = torch.rand(4, 2, 5)
    for sub_module in (neuron.IFNode(), nn.Sequential(neuron.LIFNode(), ExponentialSynapse(2.0))):
        SpatialRecurrentContainer(sub_module, 5, step_mode="m")(x)
    dense = SpatialRecurrentContainer(neuron.LIFNode(), 5, step_mode="m")
    dense.cpu_kernel = "dense"
    dense(x)
    assert calls == []
    lif = SpatialRecurrentContainer(neuron.LIFNode(), 5, step_mode="m")
    lif(x)
    assert calls == [1]
    lif(x)  # continuing the sequence: the generic loop
    assert calls == [1]


@pytest.mark.parametrize(("batch", "threads"), [(1, 2), (20, 2), (70, 3)])
def test_the_thread_count_never_changes_the_numbers(batch, threads, monkeypatch):
    """Each step's neurons are split over the threads; a neuron's arithmetic is the same
    whichever thread runs it, so the bits are too."""
    _, fused = pair("soft-sigmoid2", 2.5, 19, torch.float32, max_delay=6)
    x = torch.rand(9, batch, 19) * 3
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        s_t, gx_t, grads_t = run(fused, x, True, monkeypatch)
        torch.set_num_threads(1)
        functional.reset_net(fused)
        fused.zero_grad()
        s_1, gx_1, grads_1 = run(fused, x, True, monkeypatch)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(s_t, s_1) and torch.equal(gx_t, gx_1)
    for name in grads_1:
        assert torch.equal(grads_t[name], grads_1[name]), name
