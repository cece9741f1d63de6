import pytest
import torch

from sj_spatial import NeuronPositions


def test_uniform_init_within_scale_and_shape():
    p = NeuronPositions(1000, dim=3, scale=2.0)
    assert p.positions.shape == (1000, 3)
    assert p().abs().max() <= 2.0
    assert p().abs().max() > 1.5  # spread over the cube, not collapsed
    assert p.positions.requires_grad


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(num_neurons=0), ValueError, ["num_neurons", "0"]),
        (dict(num_neurons=3.5), TypeError, ["num_neurons", "3.5"]),
        (dict(num_neurons=4, dim=0), ValueError, ["dim", "0"]),
        (dict(num_neurons=4, init="grid"), ValueError, ["init", "grid"]),
        (dict(num_neurons=4, scale=float("nan")), ValueError, ["scale", "nan"]),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, exc, words):
    with pytest.raises(exc) as info:
        NeuronPositions(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_check_finite_rejects_nan_and_inf():
    p = NeuronPositions(3)
    p.check_finite()
    with torch.no_grad():
        p.positions[1, 0] = float("inf")
    with pytest.raises(ValueError, match="positions must be finite"):
        p.check_finite()


def test_param_groups_split_shared_positions_once_from_weights():
    from sj_spatial import SpatialDelayLinear, param_groups

    hidden = NeuronPositions(4)
    net = torch.nn.Sequential(
        SpatialDelayLinear(3, 4, post_positions=hidden),
        SpatialDelayLinear(4, 2, pre_positions=hidden),
    )
    weights, positions = param_groups(net, lr=1e-3, position_lr=0.05)
    assert positions["lr"] == 0.05 and weights["lr"] == 1e-3
    assert sum(p.numel() for p in positions["params"]) == (3 + 4 + 2) * 2
    assert {id(p) for p in weights["params"]} == {
        id(net[0].weight),
        id(net[0].bias),
        id(net[1].weight),
        id(net[1].bias),
    }
    assert len(param_groups(torch.nn.Linear(2, 2), 1e-3, 0.05)) == 1
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        param_groups([net], 1e-3, 0.05)
