"""Topology metrics: planted structure, hand-made formulas, and equality with networkx."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import scipy.linalg
import torch
from spikingjelly.activation_based import neuron

from sj_spatial import SpatialDelayLinear, SpatialRecurrentContainer, prune_by_distance
from sj_spatial import topology as topo


def planted(n=40, seed=0):
    """Two far-apart clusters of n/2 neurons: strong dense weights within, weak between."""
    rng = np.random.default_rng(seed)
    half = n // 2
    group = np.repeat([0, 1], half)
    same = group[:, None] == group[None, :]
    w = np.where(same, rng.uniform(0.5, 1.0, (n, n)), rng.uniform(0.0, 0.02, (n, n)))
    w *= rng.choice([-1.0, 1.0], (n, n))
    centres = np.array([[-5.0, 0.0], [5.0, 0.0]])
    positions = centres[group] + rng.normal(0.0, 0.5, (n, 2))
    return w, positions, group


def random_dense(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n)), rng.uniform(-1.0, 1.0, (n, 2))


def digraph(w) -> nx.DiGraph:
    """Reference graph: edge i -> j with weight |w[j, i]|, no self-loops."""
    a = np.abs(w).T.copy()
    np.fill_diagonal(a, 0.0)
    return nx.from_numpy_array(a, create_using=nx.DiGraph)


# ------------------------------------------------------------ planted structure
def test_planted_clusters_are_modular_and_random_graphs_are_not():
    w, positions, group = planted()
    labels = topo.communities(w, seed=0)
    assert len(set(labels)) == 2
    assert all(len(set(labels[group == g])) == 1 for g in (0, 1))
    m = topo.analyze(w, positions, nulls=3)
    assert m["modularity"] > 0.45
    assert m["num_communities"] == 2.0
    assert m["clustering"] > 1.15  # clustered beyond weight-shuffled graphs
    assert m["wiring_efficiency"] > 0.9  # strong synapses are the short ones

    given = topo.analyze(w, positions, nulls=3, labels=labels)
    assert given == m  # communities passed in are the ones analyze would find
    split = topo.analyze(w, positions, nulls=3, labels=np.arange(len(w)) % 2)
    assert split["modularity"] < m["modularity"]

    r = topo.analyze(*random_dense(), nulls=3)
    assert r["modularity"] < 0.1
    assert r["clustering"] == pytest.approx(1.0, abs=0.05)
    assert r["efficiency"] == pytest.approx(1.0, abs=0.05)
    assert r["wiring_efficiency"] == pytest.approx(0.5, abs=0.1)


def test_louvain_is_seeded():
    w, _ = random_dense(60)
    assert np.array_equal(topo.communities(w, seed=3), topo.communities(w, seed=3))
    assert topo.analyze(w, nulls=2, seed=5) == topo.analyze(w, nulls=2, seed=5)


# ------------------------------------------------- equality with networkx
def test_modularity_equals_networkx_directed_modularity():
    w, _ = random_dense(30)
    labels = np.arange(30) % 3
    parts = [set(np.flatnonzero(labels == c).tolist()) for c in range(3)]
    expected = nx.community.modularity(digraph(w), parts, weight="weight")
    assert topo.modularity(w, labels) == pytest.approx(expected, abs=1e-12)


def test_clustering_equals_networkx_weighted_directed_clustering():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(25, 25)) * (rng.random((25, 25)) < 0.3)  # sparse, some reciprocal
    expected = np.mean(list(nx.clustering(digraph(w), weight="weight").values()))
    assert topo.clustering(w) == pytest.approx(expected, abs=1e-12)


def test_efficiency_equals_dijkstra_on_inverse_weights():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(20, 20)) * (rng.random((20, 20)) < 0.25)
    g = digraph(w)
    top = max(d["weight"] for *_, d in g.edges(data=True))
    for *_, d in g.edges(data=True):
        d["length"] = top / d["weight"]
    total = sum(
        1.0 / dist
        for src, targets in nx.all_pairs_dijkstra_path_length(g, weight="length")
        for dst, dist in targets.items()
        if src != dst
    )
    assert topo.global_efficiency(w) == pytest.approx(total / (20 * 19), abs=1e-12)


# ------------------------------------------------------------ hand-made formulas
def test_wiring_metrics_equal_their_formulas_by_hand():
    w = np.array([[1.0, -2.0], [3.0, -4.0]])
    d = np.array([[1.0, 3.0], [2.0, 4.0]])
    # C = 1*1 + 2*3 + 3*2 + 4*4 = 29; sorted |w| 1,2,3,4 with d 4,3,2,1 -> 20, with 1,2,3,4 -> 30
    assert topo.wiring_cost(w, d) == 29.0
    assert topo.wiring_efficiency(w, d) == pytest.approx(1 - 9 / 10)
    assert topo.mean_length(w, d) == pytest.approx(29 / 10)
    cheapest = np.array([[4.0, 3.0], [2.0, 1.0]])  # 1*4 + 2*3 + 3*2 + 4*1 = 20
    assert topo.wiring_efficiency(w, cheapest) == pytest.approx(1.0)
    assert topo.wiring_efficiency(w, np.array([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(0.0)
    assert math.isnan(topo.wiring_efficiency(w, np.ones((2, 2))))
    assert topo.clamped_fraction(w, d, max_delay=3) == 0.5
    assert topo.clamped_fraction(w, d, max_delay=3, delay_scale=2.0) == 0.75
    assert topo.clamped_fraction(w * [[0, 1], [1, 1]], d, max_delay=3) == pytest.approx(2 / 3)


def test_shannon_entropy_is_the_mean_entropy_of_outgoing_weights():
    n = 8
    assert topo.shannon_entropy(np.ones((n, n))) == pytest.approx(3.0)
    assert topo.shannon_entropy(np.eye(n) * 5) == 0.0
    # Column i of W[post, pre] holds neuron i's outgoing weights: (1, 1, 2) -> 1.5 bits.
    w = np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 0.0], [-2.0, 0.0, 0.0]])
    assert topo.shannon_entropy(w) == pytest.approx((1.5 + 0.0) / 2)  # column 2 is empty


def test_communicability_entropy_follows_crofts_higham_normalisation():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(6, 6))
    a = np.abs(w).T  # rows: outgoing
    s = a.sum(1)
    g = scipy.linalg.expm(np.diag(s**-0.5) @ a @ np.diag(s**-0.5))
    p = g / g.sum(1, keepdims=True)
    expected = np.mean(-(p * np.log2(p)).sum(1))
    assert topo.communicability_entropy(w) == pytest.approx(expected, rel=1e-12)


def test_specialization_r2_equals_primal_ridge_and_detects_planted_alignment():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 6))
    y = x @ rng.normal(size=(6, 2)) + 0.05 * rng.normal(size=(200, 2))
    xc, yc = x - x.mean(0), y - y.mean(0)
    beta = np.linalg.solve(xc.T @ xc + 2.0 * np.eye(6), xc.T @ yc)
    r2 = 1 - ((yc - xc @ beta) ** 2).sum(0) / (yc**2).sum(0)
    assert topo.specialization_r2(x, y, alpha=2.0) == pytest.approx(r2.mean(), rel=1e-10)
    assert topo.specialization_r2(torch.tensor(x), torch.tensor(y)) > 0.95
    assert topo.specialization_r2(x, rng.uniform(-1, 1, (200, 2))) < 0.15


# ------------------------------------------------------------------ analyze
def test_analyze_reads_a_recurrent_layer_like_its_arrays():
    torch.manual_seed(0)
    rec = SpatialRecurrentContainer(neuron.LIFNode(), 30, max_delay=2, delay_scale=1.5)
    prune_by_distance(rec, 0.3)
    from_layer = topo.analyze(rec, nulls=2)
    w = rec.effective_weight()
    from_arrays = topo.analyze(w, rec.positions.positions, nulls=2, max_delay=2, delay_scale=1.5)
    assert from_layer == from_arrays
    assert set(from_layer) == set(topo.GRAPH_METRICS) | set(topo.SPATIAL_METRICS)
    assert all(isinstance(v, float) for v in from_layer.values())
    d = topo.distances(rec.positions.positions, rec.positions.positions)
    alive = w.detach().numpy() != 0
    assert from_layer["clamped_fraction"] == pytest.approx(np.mean(1.5 * d[alive] >= 2))
    assert from_layer["wiring_cost"] == pytest.approx(np.sum(np.abs(w.detach().numpy()) * d))


def test_feedforward_layers_get_only_spatial_metrics():
    layer = SpatialDelayLinear(7, 7, max_delay=3)
    m = topo.analyze(layer)
    assert set(m) == set(topo.SPATIAL_METRICS)
    post, pre = layer.post_positions.positions, layer.pre_positions.positions
    assert topo.analyze(layer.weight, (post, pre), max_delay=3) == m


def test_weight_without_positions_gets_only_graph_metrics():
    w, _ = random_dense(20)
    assert set(topo.analyze(w, nulls=1)) == set(topo.GRAPH_METRICS)
    assert topo.analyze(torch.tensor(w), nulls=1) == topo.analyze(w, nulls=1)


def test_distances_match_the_layers_distances():
    layer = SpatialDelayLinear(5, 4)
    expected = layer.delays().detach().numpy()  # delay_scale 1, no clamp at this size
    got = topo.distances(layer.post_positions.positions, layer.pre_positions.positions)
    assert np.allclose(got, expected, atol=1e-6)


def test_errors_name_the_argument_and_the_received_value():
    with pytest.raises(ValueError, match=r"weight must be a square \[n, n\] matrix, got shape"):
        topo.communities(np.ones((3, 4)))
    with pytest.raises(ValueError, match="nulls must be an int >= 1, got 0"):
        topo.analyze(np.ones((3, 3)), nulls=0)
    with pytest.raises(ValueError, match="positions must be None when a layer is given"):
        topo.analyze(SpatialDelayLinear(2, 2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"positions give distances of shape \(3, 3\)"):
        topo.analyze(np.ones((4, 4)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="dist must have the shape of weight"):
        topo.wiring_cost(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="positions must have one row per row of input_weight"):
        topo.specialization_r2(np.ones((5, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="alpha must be a number > 0, got 0"):
        topo.specialization_r2(np.ones((5, 3)), np.ones((5, 2)), alpha=0)
    with pytest.raises(
        TypeError, match="layer_or_weight must be a spatial layer or a weight matrix, got Linear"
    ):
        topo.analyze(torch.nn.Linear(2, 2))
