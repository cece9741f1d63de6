"""spatialize never guesses a step mode: a converted model's output for one sample never
depends on the other samples of its batch.

A spatial layer keeps a delay memory along its time axis. Converted in the wrong step
mode, it reads the batch (or a batch-first sequence's batch axis) as time, and one
sample's output then depends on the others: the check used throughout is that the output
of sample b in a batch equals that of sample b run alone.

Spikes are compared through float64 runs: a batch of 1 and a batch of 3 may round the
same sum differently (BLAS), by ~1e-16, which flips a spike only if a membrane potential
lies that close to the threshold, so outputs are compared with atol 1e-9.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from sj_spatial import SpatialDelayLinear, SpatialRecurrentContainer, spatialize

ATOL = 1e-9


def run(net: nn.Module, x: torch.Tensor, step_mode: str, time_dim: int = 0) -> torch.Tensor:
    """``net`` over the sequence ``x`` (time on ``time_dim``), from a reset state: one call
    in 'm', one call per step in 's'."""
    functional.reset_net(net)
    if step_mode == "m":
        out = net(x)
    else:
        out = torch.stack([net(x_t) for x_t in x.unbind(time_dim)], time_dim)
    functional.reset_net(net)
    return out


def assert_samples_independent(net, x, step_mode, batch_dim=1, time_dim=0):
    """Every sample's output in the batch equals its output alone."""
    together = run(net, x, step_mode, time_dim)
    for b in range(x.shape[batch_dim]):
        alone = run(net, x.narrow(batch_dim, b, 1), step_mode, time_dim)
        torch.testing.assert_close(together.narrow(batch_dim, b, 1), alone, rtol=0, atol=ATOL)


def spatial_layers(net):
    return [
        m for m in net.modules() if isinstance(m, (SpatialDelayLinear, SpatialRecurrentContainer))
    ]


# ------------------------------------------------------------------ the reported cases
def test_a_plain_linear_in_a_single_step_model_is_converted_single_step():
    torch.manual_seed(0)
    net = nn.Sequential(layer.Flatten(), nn.Linear(12, 6), neuron.LIFNode()).double()
    c = spatialize(net, delay_scale=3.0)
    assert c[1].step_mode == "s"
    xb = torch.rand(3, 12, dtype=torch.float64) * 2
    y = c[1](xb)
    functional.reset_net(c)
    y1 = c[1](xb[2:3])
    assert torch.equal(y[2], y1[0])  # was 0.31 apart when nn.Linear was made multi-step
    x = torch.rand(8, 3, 12, dtype=torch.float64) * 2
    assert_samples_independent(c, x, "s")


class BatchFirstNet(nn.Module):
    """The shape of spikingjelly's ``examples/speech_commands.py``: a multi-step spiking
    stack that returns batch-first ``[batch, T, features]``, then a plain ``nn.Linear``
    called from the model's own forward, averaged over time."""

    def __init__(self):
        super().__init__()
        self.lif = neuron.LIFNode(tau=2.0, step_mode="m")
        self.fc = nn.Linear(10, 4)

    def forward(self, x):  # x: [batch, T, features]
        spikes = self.lif(x.transpose(0, 1)).transpose(0, 1)
        return self.fc(spikes).mean(dim=1)


def test_a_plain_linear_fed_batch_first_data_needs_its_time_axis():
    torch.manual_seed(1)
    net = BatchFirstNet().double()
    with pytest.raises(
        ValueError,
        match=r"fc is a plain nn.Linear, which has no step mode.*"
        r"time_dim=1 for batch-first \[batch, T, features\].*skip=\['fc'\]",
    ):
        spatialize(net, delay_scale=3.0)
    assert type(net.fc) is nn.Linear  # a refusal leaves the model as it was

    x = torch.rand(3, 9, 10, dtype=torch.float64) * 3  # [batch, T, features]
    c = spatialize(net, delay_scale=3.0, step_mode="m", time_dim=1)
    assert c.fc.time_dim == 1 and "time_dim=1" in repr(c.fc)
    assert_samples_independent(c, x, "m", batch_dim=0, time_dim=1)
    # Time runs along dim 1: the same as the time-major layer on the transposed input.
    time_major = SpatialDelayLinear(10, 4, step_mode="m", delay_scale=3.0).double()
    time_major.load_state_dict(c.fc.state_dict())
    spikes = c.lif(x.transpose(0, 1))
    functional.reset_net(c)
    assert torch.equal(c.fc(spikes.transpose(0, 1)), time_major(spikes).transpose(0, 1))


def test_the_layer_keeps_time_on_its_time_dim_across_calls():
    torch.manual_seed(2)
    layer_bf = SpatialDelayLinear(5, 3, step_mode="m", delay_scale=2.0, max_delay=4, time_dim=1)
    layer_tm = SpatialDelayLinear(5, 3, step_mode="m", delay_scale=2.0, max_delay=4)
    layer_tm.load_state_dict(layer_bf.state_dict())
    x = torch.rand(2, 7, 5)  # [batch, T, features]
    got = torch.cat([layer_bf(x[:, :3]), layer_bf(x[:, 3:])], dim=1)  # one sequence, two calls
    torch.testing.assert_close(got, layer_tm(x.transpose(0, 1)).transpose(0, 1), rtol=0, atol=0)
    with pytest.raises(
        ValueError,
        match=r"x_seq must have at least 3 dims \(\[batch, T, \*batch, features\]\) "
        r"in step_mode='m', got shape \(7, 5\)",
    ):
        layer_bf(x[0])
    with pytest.raises(ValueError, match="time_dim must be >= 0, got -1"):
        SpatialDelayLinear(5, 3, time_dim=-1)


# ------------------------------------------------------------------ evidence and refusals
@pytest.mark.parametrize("mode", ["s", "m"])
def test_a_plain_linear_takes_the_step_mode_of_its_neighbours(mode):
    net = nn.Sequential(
        layer.Linear(4, 5, step_mode=mode),
        neuron.LIFNode(step_mode=mode),
        nn.Dropout(0.1),
        nn.Linear(5, 3),  # looks past the dropout to the neuron
        nn.ReLU(),
        neuron.IFNode(step_mode=mode),
    )
    spatialize(net)
    assert [m.step_mode for m in spatial_layers(net)] == [mode, mode]


def test_a_plain_linear_inside_a_multistep_container_is_single_step():
    torch.manual_seed(3)
    net = layer.MultiStepContainer(nn.Linear(4, 5), neuron.LIFNode()).double()
    spatialize(net, delay_scale=2.0)
    assert net[0].step_mode == "s"
    x = torch.rand(6, 3, 4, dtype=torch.float64) * 3
    assert_samples_independent(net, x, "m")  # the container takes [T, batch, ...]


def test_after_a_seq_to_ann_container_the_data_is_time_major():
    net = nn.Sequential(layer.SeqToANNContainer(nn.BatchNorm1d(4)), nn.Linear(4, 2))
    spatialize(net)
    assert net[1].step_mode == "m"


def test_a_step_mode_against_the_evidence_is_refused_and_nothing_is_converted():
    net = nn.Sequential(nn.Linear(3, 4), neuron.LIFNode(step_mode="m"), nn.Linear(4, 2))
    with pytest.raises(
        ValueError,
        match=r"0 \(Linear\) would be converted with step_mode='s' "
        r"\(the argument step_mode\), but 1 \(LIFNode\) after it gives it "
        r"step_mode='m'.*functional.set_step_mode",
    ):
        spatialize(net, step_mode="s")
    assert not spatial_layers(net)
    # A spikingjelly layer's own step mode against its neighbours' is refused the same way.
    sj = nn.Sequential(layer.Linear(3, 4), neuron.LIFNode(step_mode="m"))
    with pytest.raises(ValueError, match=r"step_mode='s' \(its own step_mode\), but 1 \(LIFNode\)"):
        spatialize(sj)
    functional.set_step_mode(sj, "m")  # the remedy the message names
    assert spatialize(sj)[0].step_mode == "m"


def test_neighbours_of_different_step_modes_are_refused():
    net = nn.Sequential(
        neuron.LIFNode(step_mode="m"), nn.Linear(3, 3), neuron.LIFNode(step_mode="s")
    )
    with pytest.raises(
        ValueError,
        match=r"1 sits between modules of different step modes: "
        r"0 \(LIFNode\) before it has step_mode='m', 2 \(LIFNode\) after it",
    ):
        spatialize(net, step_mode="m")


def test_a_custom_module_between_is_no_evidence():
    class Transpose(nn.Module):
        def forward(self, x):
            return x.transpose(0, 1)

    net = nn.Sequential(neuron.LIFNode(step_mode="m"), Transpose(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="2 is a plain nn.Linear, which has no step mode"):
        spatialize(net)


def test_bad_step_mode_and_time_dim_are_named():
    with pytest.raises(ValueError, match=r"step_mode must be one of \['s', 'm'\], got 'x'"):
        spatialize(nn.Linear(2, 2), step_mode="x")
    with pytest.raises(TypeError, match="time_dim must be an int"):
        spatialize(nn.Linear(2, 2), step_mode="m", time_dim=1.0)


# ------------------------------------------------------------------ random models
LINEARS = ("nn", "sj")
NEURONS = (neuron.LIFNode, neuron.IFNode)


def random_model(draw, step_mode: str) -> tuple[nn.Module, int]:
    """A random spikingjelly model in ``step_mode`` and its input width: blocks of a linear
    layer (plain or spikingjelly), maybe a layout-keeping module, a neuron; maybe a
    LinearRecurrentContainer; a readout."""
    width = draw(st.integers(2, 6))
    n_in = width
    modules: list[nn.Module] = []
    for _ in range(draw(st.integers(1, 3))):
        n_out = draw(st.integers(2, 6))
        if draw(st.sampled_from(LINEARS)) == "nn":
            modules.append(nn.Linear(n_in, n_out))
        else:
            modules.append(layer.Linear(n_in, n_out, step_mode=step_mode))
        extra = draw(st.sampled_from(["none", "relu", "dropout", "sj-dropout"]))
        if extra == "relu":
            modules.append(nn.ReLU())
        elif extra == "dropout":
            modules.append(nn.Dropout(0.3))
        elif extra == "sj-dropout":
            modules.append(layer.Dropout(0.3, step_mode=step_mode))
        modules.append(draw(st.sampled_from(NEURONS))(step_mode=step_mode))
        n_in = n_out
    if draw(st.booleans()):
        modules.append(
            layer.LinearRecurrentContainer(neuron.LIFNode(), n_in, n_in, step_mode=step_mode)
        )
    modules.append(nn.Linear(n_in, draw(st.integers(1, 4))))
    return nn.Sequential(*modules), width


@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("order", ["set_then_spatialize", "spatialize_then_set"])
@seed(27)
@settings(
    max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(data=st.data())
def test_random_models_never_mix_the_samples_of_a_batch(step_mode, order, data):
    draw = data.draw
    torch.manual_seed(draw(st.integers(0, 2**16)))
    # A model built single-step and switched afterwards, as spikingjelly users do.
    built = "s" if order == "spatialize_then_set" else step_mode
    net, width = random_model(draw, built)
    net = net.double().eval()
    scale = draw(st.floats(0.5, 4.0))
    spatialize(net, delay_scale=scale, max_delay=5)
    if order == "spatialize_then_set":
        functional.set_step_mode(net, step_mode)
    assert spatial_layers(net)
    for m in spatial_layers(net):
        assert m.step_mode == step_mode
    x = torch.rand(draw(st.integers(2, 7)), 3, width, dtype=torch.float64) * 3
    assert_samples_independent(net, x, step_mode)
