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
