import copy
import dataclasses
import logging
import warnings

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from sj_spatial import NeuronPositions, SpatialDelayLinear, SpatialRecurrentContainer, spatialize
from sj_spatial.convert import SpatializeReport


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
    # Different code computes the two readouts (BLAS for layer.Linear, the delay kernel for
    # SpatialDelayLinear), summing n = in_features + 1 float32 terms (the bias too) in
    # different orders. Each sum is within n * eps/2 * sum|terms| of the exact one, whatever
    # the order, and sum|terms| <= sum_i |w_ji| + |b_j| for spikes in {0, 1}: so the two
    # differ by at most n * eps * max_j(sum_i |w_ji| + |b_j|) (about 2e-6 here, 3e-8 seen).
    # The hidden layers differ by rounding too, which cannot change a spike unless a
    # membrane potential lies within rounding of the threshold (none does here).
    readout = original[8]
    terms = readout.in_features + 1
    magnitude = (readout.weight.abs().sum(1) + readout.bias.abs()).max().item()
    atol = terms * torch.finfo(torch.float32).eps * magnitude
    torch.testing.assert_close(got, want, rtol=0.0, atol=atol)


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
    with pytest.warns(UserWarning, match=r"every linear layer was skipped \(0\.0 by skip\)"):
        spatialize(model, skip=["0.0"])  # explicitly skipped: fine, but said


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        spatialize("net")
    with pytest.raises(TypeError, match="skip must be"):
        spatialize(shd_mlp(), skip="0")
    lrc = nn.Sequential(layer.LinearRecurrentContainer(nn.Linear(4, 3), 4, 3))
    with pytest.raises(ValueError, match="in_features=4 != out_features=3"):
        spatialize(lrc)


class ConvNet(nn.Module):
    """No linear layer at all."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)

    def forward(self, x):
        return self.conv(x)


def test_a_model_without_linear_layers_warns_that_nothing_was_converted():
    model = ConvNet()
    with pytest.warns(UserWarning, match="converted nothing: ConvNet contains no nn.Linear"):
        assert spatialize(model) is model
    assert isinstance(model.conv, nn.Conv1d)


def test_a_dcls_model_warns_that_nothing_was_converted():
    modules = pytest.importorskip("DCLS.construct.modules")
    model = nn.Sequential(modules.Dcls1d(4, 4, kernel_count=2, dilated_kernel_size=5, padding=2))
    with pytest.warns(UserWarning, match="converted nothing: Sequential contains no nn.Linear"):
        spatialize(model)


def test_skipping_every_linear_layer_warns_why():
    with pytest.warns(UserWarning, match=r"in Sequential: .*skipped \(0 by skip_last\)"):
        spatialize(nn.Sequential(layer.Linear(4, 3)), skip_last=True)
    with pytest.warns(UserWarning, match=r"skipped \(0 by skip, 4 by skip, 8 by skip_last\)"):
        spatialize(shd_mlp(), skip=["0", "4"], skip_last=True)


def test_a_conversion_that_converts_something_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        spatialize(shd_mlp(), skip_last=True)


class ListBlocks(nn.Module):
    """SNN-delays' ``snn.SNN`` layout: the layers are registered through ``self.model``
    (an nn.Sequential), but forward calls them from the plain nested lists ``self.blocks``
    (``self.final_block`` is ``self.blocks[-1]``), and ``self.weights`` lists the weights."""

    def __init__(self):
        super().__init__()
        self.blocks = [[[layer.Linear(6, 8, step_mode="m")], [neuron.LIFNode(step_mode="m")]]]
        self.final_block = [[layer.Linear(8, 3, step_mode="m")]]
        self.blocks.append(self.final_block)
        self.model = nn.Sequential(*[m for block in self.blocks for part in block for m in part])
        self.weights = [m.weight for m in self.model if isinstance(m, nn.Linear)]
        self.by_name = {"readout": self.model[2]}

    def forward(self, x):
        x = self.blocks[0][1][0](self.blocks[0][0][0](x))
        return self.by_name["readout"](x)


def test_layers_called_through_plain_lists_and_dicts_are_re_pointed():
    original = ListBlocks()
    with torch.no_grad():
        original.model[0].weight.mul_(8)  # make the hidden layer spike
    model, report = spatialize(original, delay_scale=3.0, inplace=False, return_report=True)
    assert isinstance(original.blocks[0][0][0], layer.Linear)  # the copy was converted
    first, readout = model.model[0], model.model[2]
    assert model.blocks[0][0][0] is first and model.final_block[0][0] is readout
    assert model.by_name["readout"] is readout
    assert model.weights[0] is first.weight and model.weights[1] is readout.weight
    assert report.rebound == (
        "model.blocks[0][0][0]",
        "model.blocks[1][0][0]",
        "model.weights[0]",
        "model.weights[1]",
        "model.by_name['readout']",
    )
    x = (torch.rand(10, 2, 6) < 0.5).float()
    out = model(x)
    assert not torch.allclose(out, original(x))  # the delays act
    out.square().sum().backward()
    grad = readout.pre_positions.positions.grad
    assert grad is not None and grad.abs().sum() > 0


class TupleHeld(nn.Module):
    """Layers held where spatialize cannot re-point them."""

    def __init__(self):
        super().__init__()
        self.fc = layer.Linear(4, 3, step_mode="m")
        self.layers = (self.fc,)
        self.step = self.fc.forward

    def forward(self, x):
        return self.layers[0](x)


def test_references_that_cannot_be_re_pointed_are_named_in_a_warning():
    with pytest.warns(UserWarning, match=r"re-point model\.layers\[0\], model\.step \(") as got:
        model, report = spatialize(TupleHeld(), return_report=True)
    assert "nn.ModuleList" in str(got[0].message)
    assert isinstance(model.fc, SpatialDelayLinear) and model.layers[0] is not model.fc
    assert report.rebound == ()


def test_the_report_lists_conversions_and_skips(caplog):
    with caplog.at_level(logging.INFO, logger="sj_spatial"):
        model, report = spatialize(shd_mlp(), skip=["4"], skip_last=True, return_report=True)
    assert isinstance(report, SpatializeReport)
    assert report.converted == (("0", "Linear", "SpatialDelayLinear"),)
    assert report.skipped == (("4", "skip"), ("8", "skip_last"))
    assert report.rebound == ()
    assert [r.getMessage() for r in caplog.records] == [
        "spatialize: 0: Linear -> SpatialDelayLinear"
    ]
    assert str(report).splitlines() == [
        "spatialize: 1 converted, 2 skipped, 0 rebound",
        "  converted  0  Linear -> SpatialDelayLinear",
        "  skipped    4  by skip",
        "  skipped    8  by skip_last",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.converted = ()
    assert spatialize(shd_mlp(), return_report=False) is not None  # a model, not a tuple


def test_the_report_names_the_recurrent_replacement():
    n = 5
    model = nn.Sequential(layer.LinearRecurrentContainer(neuron.LIFNode(), n, n))
    _, report = spatialize(model, return_report=True)
    assert report.converted == (
        ("0", "LinearRecurrentContainer", "Sequential(Linear, SpatialRecurrentContainer)"),
    )


def test_a_layer_registered_twice_is_replaced_by_one_layer_under_both_names():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    _, report = spatialize(model, step_mode="m", return_report=True)
    assert isinstance(model[0], SpatialDelayLinear) and model[2] is model[0]
    assert report.converted == (("0", "Linear", "SpatialDelayLinear"),)


def test_a_bare_linear_layer_is_returned_converted_in_the_step_mode_given():
    linear = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"\(model\) is a plain nn.Linear, which has no step mode"):
        spatialize(linear)
    converted = spatialize(linear, step_mode="s")
    assert isinstance(converted, SpatialDelayLinear) and converted.step_mode == "s"
    assert torch.equal(converted.weight, linear.weight)
