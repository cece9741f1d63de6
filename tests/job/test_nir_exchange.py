"""NIR exchange: spatial models round-trip exactly through a NIR file, delays become
``nir.Delay`` nodes, the delay budget holds, and hostile input fails clearly.

Under spikingjelly 0.0.0.0.14 (no ``nir_exchange``) every test marked
``@or_release_error`` asserts instead that both functions say which release they need.
"""

import functools
import importlib.util
import warnings

import nir
import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from sj_spatial import (
    NeuronPositions,
    SpatialDelayLinear,
    SpatialRecurrentContainer,
    prune_by_magnitude,
)
from sj_spatial.baselines import FreeDelayLinear, FreeDelayRecurrentContainer
from sj_spatial.models import recurrent_shd_model
from sj_spatial.nir_exchange import NIRUnavailableError, export_to_nir, import_from_nir

HAS_SJ_NIR = importlib.util.find_spec("spikingjelly.activation_based.nir_exchange") is not None
DT = 1e-3
MODES = ["interpolate", "round"]


def or_release_error(test):
    """Run ``test`` where spikingjelly has ``nir_exchange`` (>= 2.0.0); elsewhere assert
    that export and import raise the error that names the release they need."""
    if HAS_SJ_NIR:
        return test

    @functools.wraps(test)
    def release_error(*args, **kwargs):
        calls = (
            lambda: export_to_nir(nn.Linear(2, 2), torch.zeros(1, 2)),
            lambda: import_from_nir("model.nir"),
        )
        for call in calls:
            with pytest.raises(NIRUnavailableError, match=r"needs spikingjelly >= 2\.0\.0"):
                call()

    return release_error


def run_steps(module, x):
    """An imported module run one step per call over ``x [T, N, in]``; ``[T, N, out]``."""
    outputs, state = [], None
    with torch.no_grad():
        for x_t in x:
            out, state = module(x_t, state)
            outputs.append(out)
    return torch.stack(outputs)


def round_trip(net, x, path, **options):
    """``net`` exported to the file ``path``, read back and imported (one step per call)."""
    export_to_nir(net, x, path, dt=DT, **options)
    return import_from_nir(path, dt=DT)


def outputs_of(net, x):
    """``net``'s multi-step output on ``x`` from a fresh state (the state is reset after)."""
    functional.reset_net(net)
    with torch.no_grad():
        out = net(x)
    functional.reset_net(net)
    return out


def active(spikes):
    """Spike tests mean something only when neurons both fire and stay silent."""
    return 0.05 < float(spikes.mean()) < 0.95


def feed_forward(delay_mode, step_mode="m"):
    """in 12 -> 24 LIF -> 6 LIF through two spatial layers sharing the hidden positions."""
    torch.manual_seed(1)
    hidden = NeuronPositions(24)
    options = dict(step_mode=step_mode, max_delay=8, delay_scale=3.0, delay_mode=delay_mode)
    net = nn.Sequential(
        SpatialDelayLinear(12, 24, post_positions=hidden, **options),
        neuron.LIFNode(tau=2.0, step_mode=step_mode),
        SpatialDelayLinear(24, 6, pre_positions=hidden, **options),
        neuron.LIFNode(tau=2.0, step_mode=step_mode),
    )
    with torch.no_grad():
        net[0].weight.mul_(4.0)
        net[2].weight.mul_(12.0)
    return net


def with_delay_mode(net, delay_mode):
    for module in net.modules():
        if isinstance(module, (SpatialDelayLinear, SpatialRecurrentContainer)):
            module.delay_mode = delay_mode
    return net


def paper_model(delay_mode, hidden=24):
    """The paper's model (exponential synapse + LIF, leaky readouts), small."""
    torch.manual_seed(2)
    net = recurrent_shd_model(12, hidden, 4, dt=DT, max_delay=8, delay_scale=3.0)
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    return with_delay_mode(net, delay_mode)


def lif_recurrent(delay_mode):
    """Linear -> a LIF population with a recurrent bias (the other cell, and the bias)."""
    torch.manual_seed(4)
    net = nn.Sequential(
        layer.Linear(12, 24, step_mode="m"),
        SpatialRecurrentContainer(
            neuron.LIFNode(tau=2.0), 24, step_mode="m", max_delay=8, delay_scale=3.0
        ),
    )
    with torch.no_grad():
        net[0].weight.mul_(4.0)
    return with_delay_mode(net, delay_mode)


# Spikes are compared exactly: the imported graph sums the lags' matrix products in
# another order than the delayed kernels, so potentials differ by float32 rounding
# (~1e-7 relative), and none of these seeded inputs puts a potential that close to the
# threshold. Non-spiking readouts are compared to that rounding.
READOUT_TOL = dict(rtol=1e-5, atol=1e-6)


@or_release_error
@pytest.mark.parametrize("delay_mode", MODES)
def test_feed_forward_round_trip_gives_the_same_spikes(delay_mode, tmp_path):
    net = feed_forward(delay_mode)
    x = torch.rand(40, 4, 12)
    want = outputs_of(net, x)
    assert active(want)
    assert torch.equal(run_steps(round_trip(net, x, tmp_path / "ff.nir"), x), want)
    whole, _ = import_from_nir(tmp_path / "ff.nir", dt=DT, step_mode="m")(x)
    assert torch.equal(whole, want)


@or_release_error
@pytest.mark.parametrize("delay_mode", MODES)
@pytest.mark.parametrize("build", [paper_model, lif_recurrent], ids=["cuba_cell", "lif_cell"])
def test_recurrent_round_trip_gives_the_same_spikes(build, delay_mode, tmp_path):
    net = build(delay_mode)
    spiking = net[:2]
    x = torch.rand(60, 4, 12)
    want = outputs_of(spiking, x)
    assert active(want)
    assert torch.equal(run_steps(round_trip(spiking, x, tmp_path / "rec.nir"), x), want)


@or_release_error
def test_free_delay_layers_round_trip_too(tmp_path):
    torch.manual_seed(5)
    options = dict(step_mode="m", max_delay=6)
    net = nn.Sequential(
        FreeDelayLinear(12, 16, **options),
        FreeDelayRecurrentContainer(neuron.LIFNode(tau=2.0), 16, **options),
    )
    with torch.no_grad():
        net[0].weight.mul_(4.0)
    x = torch.rand(40, 3, 12)
    want = outputs_of(net, x)
    assert active(want)
    assert torch.equal(run_steps(round_trip(net, x, tmp_path / "free.nir"), x), want)


@or_release_error
@pytest.mark.parametrize("delay_mode", MODES)
def test_the_paper_model_round_trips_to_its_readout(delay_mode, tmp_path):
    net = paper_model(delay_mode)
    x = (torch.rand(60, 4, 12) < 0.3).float()
    want = outputs_of(net, x)
    got = run_steps(round_trip(net, x, tmp_path / "paper.nir"), x)
    torch.testing.assert_close(got, want, **READOUT_TOL)


@or_release_error
@pytest.mark.parametrize("delay_mode", MODES)
def test_single_step_models_export_the_same_graph(delay_mode, tmp_path):
    net = feed_forward(delay_mode, step_mode="s")
    x = torch.rand(30, 4, 12)
    with torch.no_grad():
        want = torch.stack([net(x_t) for x_t in x])
    functional.reset_net(net)
    assert active(want)
    assert torch.equal(run_steps(round_trip(net, x[0], tmp_path / "s.nir"), x), want)


@or_release_error
def test_pruned_synapses_are_zeros_in_the_graph(tmp_path):
    net = feed_forward("interpolate")
    prune_by_magnitude(net[0], 0.5)
    graph = export_to_nir(net, torch.rand(3, 1, 12), dt=DT)
    weights = sum(
        node.weight for node in graph.nodes["_0"].nodes.values() if hasattr(node, "weight")
    )
    pruned = ~net[0].weight_mask.numpy()
    assert pruned.sum() == 12 * 24 // 2 and (weights[pruned] == 0).all()
    x = torch.rand(30, 2, 12)
    assert torch.equal(run_steps(round_trip(net, x, tmp_path / "p.nir"), x), outputs_of(net, x))


@or_release_error
def test_delays_are_delay_nodes_of_whole_steps_in_seconds():
    layer_ = FreeDelayLinear(3, 2, step_mode="m", max_delay=4)
    with torch.no_grad():
        layer_.delay.copy_(torch.tensor([[0.0, 1.5, 2.25], [3.0, 0.5, 1.0]]))
        layer_.weight.copy_(torch.tensor([[1.0, 0.5, -2.0], [0.25, 4.0, -1.0]]))
    graph = export_to_nir(layer_, torch.zeros(1, 1, 3), dt=DT).nodes["_0"]
    assert sorted(name for name in graph.nodes if name.startswith("delay_")) == [
        "delay_1",
        "delay_2",
        "delay_3",
    ]
    for lag in (1, 2, 3):
        assert np.array_equal(graph.nodes[f"delay_{lag}"].delay, np.full(3, lag * DT))
        assert (f"delay_{lag}", f"weight_{lag}") in graph.edges
    assert isinstance(graph.nodes["weight_0"], nir.Affine)  # the bias, once
    assert all(isinstance(graph.nodes[f"weight_{lag}"], nir.Linear) for lag in (1, 2, 3))
    # near = w (1 - f) at floor(d), far = w f at floor(d) + 1
    assert graph.nodes["weight_2"].weight.tolist() == [[0.0, 0.25, -1.5], [0.0, 0.0, 0.0]]
    assert graph.nodes["weight_3"].weight.tolist() == [[0.0, 0.0, -0.5], [0.25, 0.0, 0.0]]


@or_release_error
def test_recurrent_loops_carry_the_delays_without_the_extra_step():
    net = lif_recurrent("round")
    graph = export_to_nir(net, torch.zeros(1, 1, 12), dt=DT).nodes["_1"]
    lags = {int(round(float(node.delay[0]) / DT)) for node in graph.nodes.values()
            if isinstance(node, nir.Delay)}  # fmt: skip
    rounded = torch.round(net[1].delays().detach()).long()
    assert lags == set(rounded.unique().tolist()) - {0}
    assert isinstance(graph.nodes["cell"], nir.LIF) and isinstance(graph.nodes["bias"], nir.Affine)
    assert ("cell", "weight_0") in graph.edges and ("weight_0", "cell") in graph.edges
    assert graph.metadata["loop_steps"] == 1


@or_release_error
def test_metadata_holds_positions_options_and_dt(tmp_path):
    net = paper_model("round")
    export_to_nir(net, torch.zeros(1, 1, 12), tmp_path / "m.nir", dt=DT)
    meta = nir.read(tmp_path / "m.nir").nodes["_1"].metadata
    assert np.array_equal(meta["positions"], net[1].positions.positions.detach().numpy())
    assert meta["delay_scale"] == 3.0 and meta["max_delay"] == 8 and meta["dt"] == DT
    assert meta["delay_mode"] == "round" and meta["layer"] == "SpatialRecurrentContainer"
    assert isinstance(nir.read(tmp_path / "m.nir").nodes["_1"].nodes["cell"], nir.CubaLIF)


@or_release_error
@pytest.mark.parametrize("delay_mode", MODES)
def test_a_clamped_graph_is_the_model_with_max_delay_at_the_bound(delay_mode, tmp_path):
    net = paper_model(delay_mode)[:2]
    x = torch.rand(60, 4, 12)
    with pytest.raises(ValueError, match=r"max_delay_steps=3: \d+ of 576 synapses"):
        export_to_nir(net, x, tmp_path / "c.nir", dt=DT, max_delay_steps=3)
    assert not (tmp_path / "c.nir").exists()
    with pytest.warns(UserWarning, match=r"clamped \d+ synapses to max_delay_steps=3"):
        imported = round_trip(net, x, tmp_path / "c.nir", max_delay_steps=3, clamp=True)
    net[1].max_delay = 3
    assert torch.equal(run_steps(imported, x), outputs_of(net, x))


@or_release_error
def test_spikingjellys_own_exporter_names_ours():
    from spikingjelly.activation_based.nir_exchange import export_to_nir as sj_export

    with pytest.raises(TypeError, match=r"sj_spatial\.nir_exchange\.export_to_nir"):
        sj_export(feed_forward("interpolate"), torch.rand(3, 1, 12))


@or_release_error
def test_plain_spikingjelly_models_go_through_spikingjellys_mappers(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(12, 8, step_mode="m"), neuron.LIFNode(step_mode="m"))
    with torch.no_grad():
        net[0].weight.mul_(6.0)
    x = torch.rand(20, 3, 12)
    want = outputs_of(net, x)
    assert active(want)
    assert torch.equal(run_steps(round_trip(net, x, tmp_path / "plain.nir"), x), want)


# ---------------------------------------------------------------- hostile input


def _graph(*nodes, edges=None):
    """A top graph of ``nodes`` (name, node) in a chain from an Input of 3 channels."""
    named = {"input": nir.Input(input_type={"input": np.array([3])}), **dict(nodes)}
    named["output"] = nir.Output(output_type={"output": np.array([3])})
    names = list(named)
    chain = edges if edges is not None else list(zip(names, names[1:], strict=False))
    return nir.NIRGraph(named, chain, type_check=False)


@or_release_error
@pytest.mark.parametrize(
    "graph, match",
    [
        (
            _graph(("th", nir.Threshold(threshold=np.ones(3)))),
            r"node 'th' has type nir\.Threshold, which has no mapping \(supported: .*Delay",
        ),
        (
            _graph(("late", nir.Delay(delay=np.array([DT, 2.5 * DT, DT])))),
            r"node 'late' \(nir\.Delay\): delay must be a whole number >= 0 of time steps "
            r"dt=0\.001 s, got 2\.5 steps .* in channel 1",
        ),
        (
            _graph(("back", nir.Delay(delay=np.full(3, -DT)))),
            r"node 'back' .* got -1 steps",
        ),
        (
            _graph(("w", nir.Linear(weight=np.ones((3, 4), dtype=np.float32)))),
            r"edge 'input' -> 'w': the output of 'input' has shape \[3\], the input of 'w' "
            r"expects \[4\]",
        ),
        (
            _graph(("d", nir.Delay(delay=np.zeros(3))), edges=[("input", "d"), ("d", "nowhere")]),
            r"edge \('d', 'nowhere'\) of graph '<top>' names no node 'nowhere'",
        ),
        (
            _graph(("leak", nir.LI(tau=np.full(3, DT / 2), r=np.ones(3), v_leak=np.zeros(3)))),
            r"node 'leak' \(nir\.LI\): tau must be finite and >= dt=0\.001 s, got 0\.0005 s",
        ),
    ],
    ids=["unknown_node", "half_step_delay", "negative_delay", "shapes", "dangling_edge", "li"],
)
def test_hostile_graphs_raise_value_errors_that_name_the_node(graph, match, tmp_path):
    with pytest.raises(ValueError, match=r"^graph_or_path: " + match):
        import_from_nir(graph, dt=DT)


@or_release_error
def test_hostile_graphs_inside_subgraphs_are_named_by_their_path(tmp_path):
    inner = _graph(("th", nir.Threshold(threshold=np.ones(3))))
    with pytest.raises(ValueError, match=r"node 'sub\.th' has type nir\.Threshold"):
        import_from_nir(_graph(("sub", inner)), dt=DT)


@or_release_error
def test_bad_files_and_arguments_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="graph_or_path: no NIR file at"):
        import_from_nir(tmp_path / "missing.nir")
    (tmp_path / "junk.nir").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"graph_or_path: cannot read .*junk\.nir as a NIR graph"):
        import_from_nir(tmp_path / "junk.nir")
    with pytest.raises(TypeError, match="graph_or_path must be a nir.NIRGraph or the path"):
        import_from_nir(42)
    for bad in (0, -1e-3, float("nan"), "1ms"):
        with pytest.raises(ValueError, match="dt must be a finite number of seconds > 0"):
            import_from_nir(tmp_path / "missing.nir", dt=bad)
    with pytest.raises(ValueError, match=r"step_mode must be one of \['s', 'm'\], got 'x'"):
        import_from_nir(tmp_path / "missing.nir", step_mode="x")


@or_release_error
def test_a_recurrent_graph_refuses_multi_step_import(tmp_path):
    graph = export_to_nir(lif_recurrent("round"), torch.zeros(1, 1, 12), dt=DT)
    with pytest.raises(ValueError, match=r"graph_or_path: step_mode='m' .* recurrent loop"):
        import_from_nir(graph, dt=DT, step_mode="m")


@or_release_error
def test_models_without_a_nir_form_are_refused_by_name():
    x = torch.zeros(2, 1, 3)
    with pytest.raises(TypeError, match=r"net\.1 is a ReLU, which has no NIR mapping"):
        export_to_nir(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), x)
    other_cell = SpatialRecurrentContainer(neuron.IFNode(), 3, step_mode="m")
    with pytest.raises(TypeError, match=r"sub_module of SpatialRecurrentContainer must be a LIF"):
        export_to_nir(other_cell, x)
    leaky = nn.Sequential(
        nn.Sequential(layer.Linear(3, 3, step_mode="m")),
        SpatialRecurrentContainer(
            nn.Sequential(recurrent_shd_model(3, 3, 2)[1].sub_module[0], neuron.LIFNode()),
            3,
            step_mode="m",
        ),
    )
    with pytest.raises(ValueError, match=r"needs LIFNode\(decay_input=False, v_reset=0\.0\)"):
        export_to_nir(leaky, x)
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor, got list"):
        export_to_nir(other_cell, [0.0])
    with pytest.raises(ValueError, match="dt must be a finite number of seconds > 0, got 0"):
        export_to_nir(other_cell, x, dt=0)


@or_release_error
def test_a_failed_export_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "model.nir"
    path.write_bytes(b"the previous graph")
    net = paper_model("interpolate")[:2]
    with pytest.raises(ValueError, match="max_delay_steps=2"):
        export_to_nir(net, torch.zeros(1, 1, 12), path, dt=DT, max_delay_steps=2)
    with pytest.raises(ValueError, match="save_path must be a file to write, got the folder"):
        export_to_nir(net, torch.zeros(1, 1, 12), tmp_path, dt=DT)

    def write_half(filename, graph):  # a writer that dies half way
        with open(filename, "wb") as file:
            file.write(b"\x89HDF half")
        raise OSError("disk full")

    monkeypatch.setattr(nir, "write", write_half)
    with pytest.raises(OSError, match="disk full"):
        export_to_nir(net, torch.zeros(1, 1, 12), path, dt=DT)
    assert path.read_bytes() == b"the previous graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.nir"]


@or_release_error
def test_export_leaves_the_models_memories_alone():
    net = paper_model("interpolate")
    x = torch.rand(10, 2, 12)
    with torch.no_grad():
        net(x)
    before = [m.output_history.clone() for m in net if hasattr(m, "output_history")]
    export_to_nir(net, torch.zeros(3, 2, 12), dt=DT)
    after = [m.output_history for m in net if hasattr(m, "output_history")]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_functions_say_which_release_they_need_or_run():
    """Both releases: the error names the release and the extra only where they are
    missing (this file's other tests assert it under the old release)."""
    if HAS_SJ_NIR:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert isinstance(export_to_nir(nn.Linear(2, 2), torch.zeros(1, 2)), nir.NIRGraph)
    else:
        with pytest.raises(NIRUnavailableError, match=r"spikingjelly 0\.0\.0\.0\.14 is installed"):
            export_to_nir(nn.Linear(2, 2), torch.zeros(1, 2))
