"""Free per-synapse delays: the same synapse formula with ``delay [out, in]`` as parameter."""

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn

from sj_spatial import (
    SpatialDelayLinear,
    SpatialRecurrentContainer,
    param_groups,
    prune_by_magnitude,
)
from sj_spatial.baselines import FreeDelayLinear, FreeDelayRecurrentContainer

from tests.support.reference import spec_linear, spec_recurrence

D64 = torch.float64


@pytest.mark.parametrize("delay_mode", ["interpolate", "round"])
def test_linear_equals_spec_formula_with_its_delays(delay_mode):
    layer = FreeDelayLinear(5, 3, step_mode="m", max_delay=4, delay_mode=delay_mode).to(D64)
    with torch.no_grad():
        layer.delay.uniform_(0.0, 4.0)
        layer.delay[0, :2] = torch.tensor([-1.0, 6.0])  # clamped at 0 and at max_delay
    x = torch.randn(9, 2, 5, dtype=D64)
    delays = layer.delays().detach()
    assert delays.min() == 0 and delays.max() == 4
    want = spec_linear(x, layer.weight.detach(), layer.bias.detach(), delays, delay_mode)
    assert torch.allclose(layer(x), want, atol=1e-12)


def test_linear_delay_gradient_is_exact():
    layer = FreeDelayLinear(3, 2, step_mode="m", max_delay=5, init_max=4.0).to(D64)
    x = torch.randn(8, 2, 3, dtype=D64)

    def f(delay):
        functional.reset_net(layer)
        return torch.func.functional_call(layer, {"delay": delay}, (x,))

    delay = (torch.rand(2, 3, dtype=D64) * 3.5 + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(f, (delay,))


def test_single_step_equals_multi_step():
    m = FreeDelayLinear(4, 3, step_mode="m", max_delay=3).to(D64)
    s = FreeDelayLinear(4, 3, step_mode="s", max_delay=3).to(D64)
    s.load_state_dict(m.state_dict())
    x = torch.randn(7, 2, 4, dtype=D64)
    assert torch.allclose(torch.stack([s(x_t) for x_t in x]), m(x), atol=1e-12)


def test_recurrent_equals_spec_formula():
    rec = FreeDelayRecurrentContainer(nn.Tanh(), 4, step_mode="m", max_delay=3).to(D64)
    x = torch.randn(10, 2, 4, dtype=D64)
    delays = rec.delays().detach()
    want = spec_recurrence(x, torch.tanh, rec.weight.detach(), rec.bias.detach(), delays)
    assert torch.allclose(rec(x), want, atol=1e-12)
    rec(x).sum().backward()
    assert rec.delay.grad is not None and rec.delay.grad.abs().sum() > 0


def test_parameters_state_dict_and_param_groups():
    layer = FreeDelayLinear(6, 4, max_delay=10, init_max=2.0)
    assert set(layer.state_dict()) == {"weight", "bias", "delay"}
    assert 0 <= layer.delay.min().item() and layer.delay.max().item() <= 2.0
    groups = param_groups(nn.Sequential(layer), lr=1e-3, position_lr=0.05)
    assert [g["lr"] for g in groups] == [1e-3, 0.05]
    assert groups[1]["params"] == [layer.delay]
    assert "free delays" in repr(layer) and "dim=" not in repr(layer)


def test_a_seed_gives_the_weights_of_the_spatial_layer_of_the_same_shape(benchmark_script):
    draw_like_positions = benchmark_script("seeding").draw_like_positions

    def free_linear():
        draw_like_positions(5, 3)
        return FreeDelayLinear(5, 3)

    def free_recurrent():
        draw_like_positions(4)
        return FreeDelayRecurrentContainer(nn.Tanh(), 4)

    pairs = [
        (lambda: SpatialDelayLinear(5, 3, dim=1), free_linear),
        (lambda: SpatialRecurrentContainer(nn.Tanh(), 4, dim=1), free_recurrent),
    ]
    for make_spatial, make_free in pairs:
        torch.manual_seed(7)
        spatial = make_spatial()
        torch.manual_seed(7)
        free = make_free()
        assert torch.equal(free.weight, spatial.weight) and torch.equal(free.bias, spatial.bias)
        assert not isinstance(free, type(spatial))  # siblings: free delays have no positions


def test_non_finite_delay_is_rejected():
    layer = FreeDelayLinear(2, 2, step_mode="m")
    with torch.no_grad():
        layer.delay[0, 0] = float("nan")
    with pytest.raises(ValueError, match="delay must be finite"):
        layer(torch.zeros(3, 1, 2))


def test_bad_init_max_names_the_argument():
    with pytest.raises(ValueError, match="init_max"):
        FreeDelayLinear(2, 2, init_max=-1.0)


def test_wiring_cost_refuses_free_delays_with_a_clear_error():
    from sj_spatial import WiringCost

    with pytest.raises(TypeError, match="free per-synapse delays have no distances"):
        WiringCost(nn.Sequential(FreeDelayLinear(3, 2)))()


def test_prune_by_magnitude_masks_the_weakest_free_delay_synapses():
    torch.manual_seed(6)
    rec = FreeDelayRecurrentContainer(nn.Tanh(), 4, step_mode="m", max_delay=3).to(D64)
    weakest = torch.argsort(rec.weight.detach().abs().flatten())[:8]  # 0.5 * 16
    prune_by_magnitude(rec, 0.5)
    assert set(torch.nonzero(~rec.weight_mask.flatten()).flatten().tolist()) == set(
        weakest.tolist()
    )
    x = torch.randn(10, 2, 4, dtype=D64)
    w, b, delays = rec.effective_weight().detach(), rec.bias.detach(), rec.delays().detach()
    assert torch.allclose(rec(x), spec_recurrence(x, torch.tanh, w, b, delays), atol=1e-12)
