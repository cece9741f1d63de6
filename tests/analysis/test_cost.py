"""WiringCost and pruning: the formulas, their gradients, and masks that persist."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

from sj_spatial import (
    NeuronPositions,
    SpatialDelayLinear,
    SpatialRecurrentContainer,
    WiringCost,
    prune_by_distance,
    prune_by_magnitude,
)
from sj_spatial.backends import cupy_missing
from sj_spatial.cost import communicability, layer_distances, named_spatial_layers

from tests.support.reference import spec_linear

D64 = torch.float64
EPS = 1e-4


def hand_linear() -> SpatialDelayLinear:
    """3 -> 2 layer with hand-placed neurons and weights (distances 0, 1, 2, 3, 4, 5)."""
    layer = SpatialDelayLinear(3, 2, step_mode="m", max_delay=3).to(D64)
    with torch.no_grad():
        layer.pre_positions.positions.copy_(torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]]))
        layer.post_positions.positions.copy_(torch.tensor([[0.0, 0.0], [0.0, 2.0]]))
        layer.weight.copy_(torch.tensor([[0.5, -2.0, 1.0], [-1.5, 0.25, 3.0]]))
    return layer


# Distances of hand_linear(), without the eps smoothing: row j = post, column i = pre.
HAND_DIST = torch.tensor([[0.0, 5.0, 1.0], [2.0, math.sqrt(9 + 4), math.sqrt(5)]], dtype=D64)


def smooth(d: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(d**2 + EPS**2)


def hand_recurrent(n=4, seed=0) -> SpatialRecurrentContainer:
    torch.manual_seed(seed)
    rec = SpatialRecurrentContainer(nn.Tanh(), n, step_mode="m", max_delay=4).to(D64)
    with torch.no_grad():
        rec.positions.positions.uniform_(-2.0, 2.0)
    return rec


# ------------------------------------------------------------------ formulas
def test_wiring_cost_equals_formula_on_a_hand_made_layer():
    layer = hand_linear()
    w = layer.weight.detach()
    expected = 2.5 * (w.abs() * smooth(HAND_DIST) ** 2).sum()
    got = WiringCost(layer, strength=2.5, power=2.0)()
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    # |w| * d by hand for power 1: 0.5*0 + 2*5 + 1*1 + 1.5*2 + 0.25*sqrt(13) + 3*sqrt(5)
    by_hand = 10 + 1 + 3 + 0.25 * math.sqrt(13) + 3 * math.sqrt(5)
    assert WiringCost([layer])().item() == pytest.approx(by_hand, abs=1e-3)


def test_normalize_mean_divides_each_layers_distances_by_their_mean():
    layer = hand_linear()
    d = smooth(HAND_DIST)
    expected = (layer.weight.detach().abs() * d / d.mean()).sum()
    got = WiringCost(layer, normalize="mean")()
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    # Scaling all positions leaves the normalised cost unchanged.
    with torch.no_grad():
        layer.pre_positions.positions.mul_(7.0)
        layer.post_positions.positions.mul_(7.0)
    assert WiringCost(layer, normalize="mean")().item() == pytest.approx(expected.item(), rel=1e-5)


def test_communicability_weighting_matches_scipy_expm_on_recurrent_layers():
    rec = hand_recurrent(4)
    w = rec.weight.detach().numpy()
    p = rec.positions.positions.detach().numpy()
    d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1) + EPS**2)
    a = np.abs(w)
    s = a.sum(0)  # outgoing strength of each pre neuron i (column of W[post, pre])
    comm = scipy.linalg.expm(np.diag(s**-0.5) @ a @ np.diag(s**-0.5))
    np.fill_diagonal(comm, 0.0)
    expected = (a * d * comm).sum()
    got = WiringCost(rec, communicability=True)()
    assert got.item() == pytest.approx(expected, rel=1e-10)
    assert np.allclose(
        communicability(rec.weight).detach().numpy()[~np.eye(4, dtype=bool)],
        comm[~np.eye(4, dtype=bool)],
    )


def test_communicability_leaves_feedforward_layers_plain():
    layer = hand_linear()
    assert WiringCost(layer, communicability=True)().item() == WiringCost(layer)().item()


def test_model_cost_is_the_sum_over_its_spatial_layers_in_module_order():
    hidden = NeuronPositions(5)
    model = nn.Sequential(
        SpatialDelayLinear(3, 5, step_mode="m", post_positions=hidden),
        SpatialRecurrentContainer(neuron.LIFNode(), 5, step_mode="m", positions=hidden),
        nn.Linear(5, 2),
    )
    names = [name for name, _ in named_spatial_layers(model)]
    assert names == ["0", "1"]
    total = WiringCost(model, strength=0.3)()
    parts = WiringCost([model[0]], strength=0.3)() + WiringCost([model[1]], strength=0.3)()
    assert total.item() == pytest.approx(parts.item(), rel=1e-6)


# ----------------------------------------------------------------- gradients
def test_gradient_reaches_weights_only_by_default():
    layer = hand_linear()
    WiringCost(layer, strength=2.0)().backward()
    expected = 2.0 * torch.sign(layer.weight.detach()) * smooth(HAND_DIST)
    assert torch.allclose(layer.weight.grad, expected, rtol=1e-10)
    assert layer.pre_positions.positions.grad is None
    assert layer.post_positions.positions.grad is None


def test_position_grad_pulls_connected_neurons_together():
    layer = hand_linear()
    cost = WiringCost(layer, power=2.0, position_grad=True)
    cost().backward()
    post = layer.post_positions.positions.detach().clone().requires_grad_(True)
    pre = layer.pre_positions.positions.detach().clone().requires_grad_(True)
    d2 = ((post[:, None] - pre[None]) ** 2).sum(-1) + EPS**2
    (layer.weight.detach().abs() * d2).sum().backward()
    assert torch.allclose(layer.post_positions.positions.grad, post.grad, rtol=1e-10)
    assert torch.allclose(layer.pre_positions.positions.grad, pre.grad, rtol=1e-10)
    before = cost().item()
    with torch.no_grad():  # a small descent step shortens the wiring
        for p in (layer.pre_positions.positions, layer.post_positions.positions):
            p -= 0.01 * p.grad
    assert cost().item() < before
    assert layer.weight.grad is not None


# ------------------------------------------------------------------- pruning
def alive(layer) -> torch.Tensor:
    return (
        torch.ones_like(layer.weight, dtype=torch.bool)
        if layer.weight_mask is None
        else (layer.weight_mask)
    )


def test_prune_by_distance_removes_exactly_the_longest():
    torch.manual_seed(1)
    layer = SpatialDelayLinear(10, 8, step_mode="m")
    d = layer_distances_ref(layer)
    order = torch.argsort(d.flatten(), descending=True)
    prune_by_distance(layer, 0.25)
    removed = ~layer.weight_mask.flatten()
    assert int(removed.sum()) == 20
    assert set(torch.nonzero(removed).flatten().tolist()) == set(order[:20].tolist())
    assert torch.all(layer.weight.flatten()[removed] == 0)
    assert torch.all(layer.weight.flatten()[~removed] != 0)


def test_prune_by_magnitude_removes_exactly_the_weakest():
    torch.manual_seed(2)
    rec = SpatialRecurrentContainer(neuron.LIFNode(), 9, step_mode="m")
    order = torch.argsort(rec.weight.detach().abs().flatten())
    prune_by_magnitude(rec, 0.5)
    removed = torch.nonzero(~rec.weight_mask.flatten()).flatten()
    assert set(removed.tolist()) == set(order[:41].tolist())  # 0.5 * 81 rounded half up


def test_pruning_twice_composes_among_alive_synapses():
    torch.manual_seed(3)
    layer = SpatialDelayLinear(8, 8, step_mode="m")
    weakest = torch.argsort(layer.weight.detach().abs().flatten())
    prune_by_magnitude(layer, 0.5)
    prune_by_magnitude(layer, 0.5)  # half of the 32 left, not the 32 zeros again
    removed = torch.nonzero(~layer.weight_mask.flatten()).flatten()
    assert set(removed.tolist()) == set(weakest[:48].tolist())

    layer = SpatialDelayLinear(8, 8, step_mode="m")
    longest = torch.argsort(layer_distances_ref(layer).flatten(), descending=True)
    prune_by_distance(layer, 0.25)
    prune_by_magnitude(layer, 0.0)
    prune_by_distance(layer, 0.5)  # 16 + half of 48
    removed = torch.nonzero(~layer.weight_mask.flatten()).flatten()
    assert set(removed.tolist()) == set(longest[:40].tolist())


def test_fraction_one_prunes_everything_and_zero_nothing():
    layer = SpatialDelayLinear(4, 3)
    prune_by_distance(layer, 0.0)
    assert layer.weight_mask.all()
    prune_by_magnitude(layer, 1.0)
    assert not layer.weight_mask.any()
    assert torch.all(layer.effective_weight() == 0)


def layer_distances_ref(layer) -> torch.Tensor:
    post, pre = layer.post_positions.positions, layer.pre_positions.positions
    return smooth(torch.cdist(post.detach().double(), pre.detach().double()))


def make_pruned(kind: str, step_mode: str):
    torch.manual_seed(4)
    if kind == "linear":
        return nn.Sequential(
            SpatialDelayLinear(6, 5, step_mode=step_mode, max_delay=3),
            neuron.LIFNode(step_mode=step_mode),
        )
    return nn.Sequential(
        SpatialRecurrentContainer(neuron.LIFNode(), 6, step_mode=step_mode, max_delay=3)
    )


def run(model, x, step_mode):
    functional.reset_net(model)
    if step_mode == "m":
        return model(x)
    return torch.stack([model(x_t) for x_t in x])


@pytest.mark.parametrize("kind", ["linear", "recurrent"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_pruned_synapses_stay_zero_under_training_and_state_dict_round_trip(kind, step_mode):
    model = make_pruned(kind, step_mode)
    layer = model[0]
    x = torch.rand(12, 3, 6)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    cost = WiringCost(model, strength=0.01)

    def train(steps):
        for _ in range(steps):
            opt.zero_grad()
            loss = run(model, x, step_mode).sum() + layer.weight.square().sum() + cost()
            loss.backward()
            opt.step()

    train(3)  # Adam has momentum on every weight before pruning
    prune_by_distance(layer, 0.3)
    prune_by_magnitude(layer, 0.2)
    dead = ~layer.weight_mask
    train(5)
    assert torch.all(layer.effective_weight()[dead] == 0)
    assert torch.all(layer.effective_weight()[~dead] == layer.weight[~dead])

    # The forward pass uses weight * mask whatever the raw weight holds there.
    out = run(model, x, step_mode)
    with torch.no_grad():
        layer.weight[dead] = 100.0
    assert torch.equal(run(model, x, step_mode), out)

    state = model.state_dict()
    assert torch.equal(state["0.weight_mask"], layer.weight_mask)
    fresh = make_pruned(kind, step_mode)
    assert fresh[0].weight_mask is None
    fresh.load_state_dict(state)  # strict: the mask key is expected after loading
    assert torch.equal(fresh[0].weight_mask, layer.weight_mask)
    assert torch.equal(run(fresh, x, step_mode), out)


OPTIMIZERS = {
    "Adam": lambda params: torch.optim.Adam(params, lr=0.05),
    "AdamW+decay": lambda params: torch.optim.AdamW(params, lr=0.05, weight_decay=0.1),
    "SGD+momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
}


@pytest.mark.parametrize("kind", ["linear", "recurrent"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_pruned_entries_of_the_weight_itself_stay_exactly_zero_under_every_optimizer(
    kind, optimizer
):
    model = make_pruned(kind, "m")
    layer = model[0]
    x = torch.rand(12, 3, 6)
    opt = OPTIMIZERS[optimizer](model.parameters())

    def train(steps):
        for _ in range(steps):
            opt.zero_grad()
            (run(model, x, "m").sum() + layer.weight.square().sum()).backward()
            opt.step()

    train(3)  # momentum / moments on every weight before pruning
    prune_by_magnitude(layer, 0.5)
    dead = ~layer.weight_mask
    assert torch.all(layer.weight[dead] == 0)
    train(4)
    assert torch.all(layer.weight[dead] == 0)  # not only the effective weight
    assert torch.all(layer.weight[~dead] != 0)
    assert torch.all(model.state_dict()["0.weight"][dead] == 0)
    assert torch.equal(layer.weight, layer.effective_weight())

    # The network the wiring cost and the topology metrics see is the one in `weight`.
    cost = WiringCost(layer)
    d = layer_distances(layer).detach().double()
    assert torch.allclose(cost().double(), (layer.weight.detach().double().abs() * d).sum())

    # A copy and a model loaded from the state_dict hold the mask through training too.
    functional.reset_net(model)  # memories are graph outputs, which deepcopy refuses
    for other in (copy.deepcopy(model), make_pruned(kind, "m")):
        other.load_state_dict(model.state_dict())
        opt = OPTIMIZERS[optimizer](other.parameters())
        for _ in range(3):
            opt.zero_grad()
            (run(other, x, "m").sum() + other[0].weight.square().sum()).backward()
            opt.step()
        assert torch.equal(other[0].weight_mask, layer.weight_mask)
        assert torch.all(other[0].weight[dead] == 0)


def test_saved_weight_is_zero_where_pruned_even_after_writing_to_the_raw_weight():
    model = make_pruned("linear", "m")
    layer = model[0]
    prune_by_distance(layer, 0.4)
    dead = ~layer.weight_mask
    with torch.no_grad():
        layer.weight[dead] = 7.0  # by hand, past the optimiser hook
    state = model.state_dict()
    assert torch.all(state["0.weight"][dead] == 0)
    assert torch.equal(state["0.weight"][~dead], layer.weight[~dead].detach())
    fresh = make_pruned("linear", "m")
    fresh.load_state_dict(state)
    assert torch.all(fresh[0].weight[dead] == 0)


def test_a_mask_assigned_by_hand_is_held_after_the_next_forward():
    model = make_pruned("linear", "m")
    layer = model[0]
    mask = torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    with torch.no_grad():
        layer.weight.mul_(mask)
    layer.weight_mask = mask
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.rand(12, 3, 6)
    for _ in range(3):
        opt.zero_grad()
        (run(model, x, "m").sum() + layer.weight.square().sum()).backward()
        opt.step()
    assert torch.all(layer.weight[~mask] == 0)


BACKENDS = [
    "torch",
    pytest.param(
        "cupy",
        marks=pytest.mark.skipif(
            cupy_missing() is not None, reason=f"backend='cupy': {cupy_missing()}"
        ),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pruned_layer_follows_the_spec_with_the_masked_weight_in_every_backend(backend):
    device = "cuda" if backend == "cupy" else "cpu"
    torch.manual_seed(5)
    layer = SpatialDelayLinear(7, 5, step_mode="m", max_delay=4, delay_scale=2.0, backend=backend)
    layer = layer.to(device)
    prune_by_distance(layer, 0.4)
    assert layer.weight_mask.device.type == device
    x = (torch.rand(15, 2, 7, device=device) < 0.3).float()
    got = layer(x)
    expected = spec_linear(
        x.double().cpu(),
        layer.effective_weight().detach().double().cpu(),
        layer.bias.detach().double().cpu(),
        layer.delays().detach().double().cpu(),
    )
    assert torch.allclose(got.double().cpu(), expected, atol=1e-5)
    got.sum().backward()
    assert torch.all(layer.weight.grad[~layer.weight_mask] == 0)


# -------------------------------------------------------------------- errors
@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan])
def test_fraction_out_of_range_is_a_value_error_naming_it(fraction):
    with pytest.raises(ValueError, match=r"fraction must be a float in \[0, 1\], got"):
        prune_by_distance(SpatialDelayLinear(3, 2), fraction)


@pytest.mark.parametrize("fraction", ["0.5", True, None])
def test_fraction_of_wrong_type_is_a_type_error_naming_it(fraction):
    with pytest.raises(TypeError, match="fraction must be a float in \\[0, 1\\], got"):
        prune_by_magnitude(SpatialDelayLinear(3, 2), fraction)


def test_pruning_a_plain_linear_is_a_type_error():
    with pytest.raises(TypeError, match="layer must be a SpatialDelayLinear or .*got Linear"):
        prune_by_distance(nn.Linear(3, 2), 0.5)


def test_wiring_cost_argument_errors_name_the_argument():
    layer = SpatialDelayLinear(3, 2)
    with pytest.raises(ValueError, match="strength must be finite and >= 0.0, got -1.0"):
        WiringCost(layer, strength=-1.0)
    with pytest.raises(ValueError, match=r"normalize must be one of \[None, 'mean'\], got 'max'"):
        WiringCost(layer, normalize="max")
    with pytest.raises(TypeError, match="position_grad must be a bool, got str 'yes'"):
        WiringCost(layer, position_grad="yes")
    with pytest.raises(TypeError, match=r"modules\[1\] must be a SpatialDelayLinear .*got Linear"):
        WiringCost([layer, nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="modules must contain at least one .* got none"):
        WiringCost(nn.Sequential(nn.Linear(2, 2)))
