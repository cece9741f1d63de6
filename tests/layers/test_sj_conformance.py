"""The models shipped inside the installed spikingjelly, driven through sj_spatial the way
SpikingJelly users drive models: spatialize, set_step_mode before and after, reset_net,
detach_net, monitors, MultiStepContainer, deepcopy and an optimiser step.

The nets are spikingjelly's own example classes (``rsnn_sequential_fmnist``: a plain
feed-forward net, one with a stateful synapse filter and one with a
``LinearRecurrentContainer``), so that these tests follow the installed release.

Comparisons across kernels (BLAS in the original layers, the delay kernel in the spatial
ones) run in float64: their rounding differences (~1e-16) can flip a spike only if a
membrane potential lies that close to the threshold, so the spike trains are compared
exactly. Comparisons of the same code are exact in any dtype.
"""

import copy

import pytest
import torch
from spikingjelly.activation_based import functional, layer, monitor, neuron
from spikingjelly.activation_based.examples import rsnn_sequential_fmnist as examples

from sj_spatial import SpatialDelayLinear, SpatialRecurrentContainer, spatialize

NETS = ["PlainNet", "StatefulSynapseNet", "FeedBackNet"]
T, N = 12, 3


def example(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(examples, name)().double()


def rows(seed: int = 1) -> torch.Tensor:
    """Sequential-FMNIST-like input ``[T, N, 28]`` (image rows as time steps)."""
    return torch.rand(T, N, 28, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def drive(net: torch.nn.Module, x: torch.Tensor, step_mode: str) -> torch.Tensor:
    """The spikes of ``net.fc`` over ``x``, then a reset (one call in 'm', T calls in 's')."""
    out = net.fc(x) if step_mode == "m" else torch.stack([net.fc(x_t) for x_t in x])
    functional.reset_net(net)
    return out


def spatial(name: str, order: str, delay_scale: float = 2.0) -> torch.nn.Module:
    """``name`` spatialized, with ``set_step_mode(net, 'm')`` before or after."""
    net = example(name)
    if order == "set_then_spatialize":
        functional.set_step_mode(net, "m")
    spatialize(net, dim=2, max_delay=4, delay_scale=delay_scale)
    if order == "spatialize_then_set":
        functional.set_step_mode(net, "m")
    return net


def spatial_layers(net: torch.nn.Module) -> list[torch.nn.Module]:
    return [
        m for m in net.modules() if isinstance(m, (SpatialDelayLinear, SpatialRecurrentContainer))
    ]


@pytest.mark.parametrize("order", ["set_then_spatialize", "spatialize_then_set"])
@pytest.mark.parametrize("name", NETS)
def test_zero_delays_reproduce_the_example_whatever_the_order(name, order):
    original = example(name)
    functional.set_step_mode(original, "m")
    want = drive(original, rows(), "m")
    net = spatial(name, order, delay_scale=0.0)
    assert len(spatial_layers(net)) >= 2
    for m in net.modules():  # every recurrent sub-module stays single-step, as in SJ
        if isinstance(m, SpatialRecurrentContainer):
            assert m.step_mode == "m" and m.sub_module.step_mode == "s"
    assert want.sum() > 0
    assert torch.equal(drive(net, rows(), "m"), want)


@pytest.mark.parametrize("name", NETS)
def test_multi_step_single_step_and_multistep_container_agree(name):
    net = spatial(name, "spatialize_then_set")
    want = drive(net, rows(), "m")
    assert 0 < want.mean() < 1
    functional.set_step_mode(net, "s")
    assert torch.equal(drive(net, rows(), "s"), want)
    wrapped = layer.MultiStepContainer(*net.fc)
    assert torch.equal(wrapped(rows()), want)
    functional.reset_net(wrapped)
    # reset_net starts a new sequence: the same input gives the same output again.
    assert torch.equal(wrapped(rows()), want)


@pytest.mark.parametrize("name", NETS)
def test_detach_net_between_chunks_keeps_the_values(name):
    net = spatial(name, "spatialize_then_set")
    x = rows().requires_grad_()
    want = drive(net, x, "m")
    first = net.fc(x[:5])
    functional.detach_net(net)
    for m in spatial_layers(net):
        history = getattr(m, "input_history", getattr(m, "output_history", None))
        assert history is not None and not history.requires_grad
    second = net.fc(x[5:])
    assert torch.equal(torch.cat((first, second)), want)
    second.sum().backward()
    assert torch.equal(x.grad[:5], torch.zeros_like(x.grad[:5]))  # the graph was cut


@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("name", NETS)
def test_monitors_record_every_neuron_call(name, step_mode):
    net = spatial(name, "spatialize_then_set")
    functional.set_step_mode(net, step_mode)
    recorder = monitor.OutputMonitor(net, neuron.IFNode)
    out = drive(net, rows(), step_mode)
    names = recorder.monitored_layers
    assert len(names) == 2
    for layer_name in names:
        records = recorder[layer_name]
        inside = "." in layer_name and isinstance(
            net.get_submodule(layer_name.rsplit(".", 1)[0]), SpatialRecurrentContainer
        )
        # Multi-step neurons record one [T, N, n] tensor per call; a neuron inside the
        # recurrent container (or in single-step mode) records one [N, n] per step.
        per_step = step_mode == "s" or inside
        assert len(records) == (T if per_step else 1)
        assert records[0].shape[:-1] == ((N,) if per_step else (T, N))
    last = names[-1]
    recorded = torch.stack(recorder[last]) if step_mode == "s" else recorder[last][0]
    assert torch.equal(recorded, out)
    recorder.remove_hooks()


@pytest.mark.parametrize("name", NETS)
def test_deepcopy_is_independent_and_computes_the_same(name):
    net = spatial(name, "spatialize_then_set")
    with torch.no_grad():  # deepcopy takes graph leaves only, as for any torch module
        net.fc(rows()[:4])  # memories hold a sequence
    twin = copy.deepcopy(net)
    assert torch.equal(twin.fc(rows()[4:]), net.fc(rows()[4:]))
    functional.reset_net(twin)
    for m in spatial_layers(net):  # resetting the copy leaves the original's memory alone
        assert getattr(m, "input_history", getattr(m, "output_history", None)) is not None
    assert not any(p is q for p in net.parameters() for q in twin.parameters())


@pytest.mark.parametrize("name", NETS)
def test_one_optimiser_step_moves_weights_and_positions(name):
    net = spatial(name, "spatialize_then_set")
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in net.named_parameters()}
    target = torch.arange(N) % 10
    out = net(rows() * 3)
    loss = torch.nn.functional.cross_entropy(out, target)
    loss.backward()
    optimiser.step()
    functional.reset_net(net)
    moved = {k for k, v in net.named_parameters() if not torch.equal(v, before[k])}
    positions = {k for k in before if k.endswith("positions.positions")}
    assert positions and positions <= moved, sorted(positions - moved)
    assert any(k.endswith("weight") for k in moved)
    again = net(rows() * 3)
    assert torch.isfinite(again).all()
