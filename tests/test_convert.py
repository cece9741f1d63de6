import copy

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from sj_spatial import NeuronPositions, SpatialDelayLinear, SpatialRecurrentContainer, spatialize


def shd_mlp(n_in=20, hidden=16, n_out=5):
    """The standard SpikingJelly SHD model's shape: (Linear, BN, LIF, Dropout) x 2, readout.

    BatchNorm1d over [T, N, C] is wrapped in SeqToANNContainer, which works in every
    spikingjelly release (0.0.0.0.14's multi-step layer.BatchNorm1d wants [T, N, C, L]).
    """
    return nn.Sequential(
        layer.Linear(n_in, hidden, step_mode="m"),
        layer.SeqToANNContainer(nn.BatchNorm1d(hidden)),
        neuron.LIFNode(tau=2.0, step_mode="m"),
        layer.Dropout(0.2, step_mode="m"),
        layer.Linear(hidden, hidden, step_mode="m"),
        layer.SeqToANNContainer(nn.BatchNorm1d(hidden)),
        neuron.LIFNode(tau=2.0, step_mode="m"),
        layer.Dropout(0.2, step_mode="m"),
        layer.Linear(hidden, n_out, step_mode="m"),
    )


def test_zero_delays_compute_exactly_what_the_original_did():
    original = shd_mlp().eval()
    with torch.no_grad():  # make the hidden layers spike
        original[0].weight.mul_(8)
        original[4].weight.mul_(8)
    converted = spatialize(copy.deepcopy(original), delay_scale=0.0)
    x = (torch.rand(12, 3, 20) < 0.3).float()
    want = original(x)
    assert original[2].v.gt(0).any() or want.abs().sum() > 0
    got = converted(x)
    assert torch.equal(got, want)


def test_weights_copied_positions_shared_between_consecutive_layers():
    model = shd_mlp()
    weights = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
    spatialize(model, dim=3, max_delay=9)
    spatial = [m for m in model if isinstance(m, SpatialDelayLinear)]
    assert len(spatial) == 3
    for m, w in zip(spatial, weights, strict=True):
        assert torch.equal(m.weight, w) and m.max_delay == 9 and m.dim == 3
    assert spatial[0].post_positions is spatial[1].pre_positions
    assert spatial[1].post_positions is spatial[2].pre_positions
    positions = {id(p) for p in model.modules() if isinstance(p, NeuronPositions)}
    assert len(positions) == 4  # input, hidden 1, hidden 2, output


def test_skip_last_and_skip_by_name_keep_layers_plain():
    model = spatialize(shd_mlp(), skip_last=True)
    assert isinstance(model[8], layer.Linear) and not isinstance(model[8], SpatialDelayLinear)
    model = spatialize(shd_mlp(), skip=["0"])
    assert not isinstance(model[0], SpatialDelayLinear) and isinstance(model[4], SpatialDelayLinear)
    model = spatialize(shd_mlp(), skip=lambda name, m: m.out_features == 5)
    assert not isinstance(model[8], SpatialDelayLinear)


def test_not_inplace_leaves_the_original_alone():
    original = shd_mlp()
    converted = spatialize(original, inplace=False)
    assert isinstance(original[0], layer.Linear) and isinstance(converted[0], SpatialDelayLinear)


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_linear_recurrent_container_becomes_linear_plus_spatial_recurrence(step_mode):
    n = 6
    original = nn.Sequential(
        layer.Linear(4, n, step_mode=step_mode),
        layer.LinearRecurrentContainer(neuron.LIFNode(), n, n, step_mode=step_mode),
        layer.Linear(n, 3, step_mode=step_mode),
    )
    with torch.no_grad():
        original[0].weight.mul_(6)
    converted = spatialize(copy.deepcopy(original), delay_scale=0.0)
    mix, recurrent = converted[1]
    assert isinstance(recurrent, SpatialRecurrentContainer) and isinstance(mix, layer.Linear)
    assert converted[0].post_positions is recurrent.positions is converted[2].pre_positions
    x = torch.rand(10, 2, 4)
    if step_mode == "m":
        want, got = original(x), converted(x)
    else:
        want = torch.stack([original(x_t) for x_t in x])
        got = torch.stack([converted(x_t) for x_t in x])
    assert want.abs().sum() > 0
    assert torch.allclose(got, want, atol=1e-6)


def test_reset_net_reaches_the_new_layers_after_conversion():
    model = shd_mlp()
    functional.reset_net(model)  # spikingjelly 2.0 caches the module list here
    spatialize(model)
    model(torch.rand(5, 2, 20))
    assert model[0].input_history is not None
    functional.reset_net(model)
    assert model[0].input_history is None and model[4].input_history is None


def test_linear_inside_a_time_folding_container_is_refused():
    model = nn.Sequential(layer.SeqToANNContainer(nn.Linear(4, 3)))
    with pytest.raises(ValueError, match="folds time into the batch"):
        spatialize(model)
    spatialize(model, skip=["0.0"])  # explicitly skipped: fine


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        spatialize("net")
    with pytest.raises(TypeError, match="skip must be"):
        spatialize(shd_mlp(), skip="0")
    lrc = nn.Sequential(layer.LinearRecurrentContainer(nn.Linear(4, 3), 4, 3))
    with pytest.raises(ValueError, match="in_features=4 != out_features=3"):
        spatialize(lrc)
