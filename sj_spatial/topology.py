"""Graph and wiring metrics of a trained spatial layer: arrays in, floats out.

Weights follow the layers' layout ``W[post, pre]`` (synapse j <- i is ``W[j, i]``);
positions are ``[N, D]`` in distance units. Every function takes numpy arrays or torch
tensors (detached and copied to float64 numpy) and none depends on training code; the
distances, wiring cost and communicability are the layers' own (:mod:`sj_spatial.delays`,
:mod:`sj_spatial.wiring`), evaluated in float64. The formulas and references are in
``docs/topology.md``.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import torch
from scipy.sparse import csgraph

from . import delays, wiring
from ._checks import check_count, check_positive
from ._introspect import is_recurrent, positions_of

#: Metrics that need a square (recurrent) matrix: its neurons are the graph's nodes.
GRAPH_METRICS = (
    "modularity",
    "num_communities",
    "clustering",
    "clustering_raw",
    "efficiency",
    "efficiency_raw",
    "small_world",
    "shannon_entropy",
    "communicability_entropy",
)
#: Metrics that need positions.
SPATIAL_METRICS = ("wiring_cost", "wiring_efficiency", "mean_length", "clamped_fraction")


def as_array(x, name: str = "x") -> np.ndarray:
    """``x`` (numpy array, torch tensor or nested list) as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}"
        ) from exc


def _matrix(x, name: str, square: bool = False) -> np.ndarray:
    a = as_array(x, name)
    if a.ndim != 2 or (square and a.shape[0] != a.shape[1]):
        expected = "a square [n, n] matrix" if square else "a 2-D matrix"
        raise ValueError(f"{name} must be {expected}, got shape {a.shape}")
    return a


def distances(post, pre) -> np.ndarray:
    """Distances ``[out, in]`` between ``post`` ``[out, D]`` and ``pre`` ``[in, D]``.

    The layers' smoothed distance :func:`sj_spatial.delays.distances`
    (``sqrt(||post_j - pre_i||^2 + EPS^2)``), computed in float64.
    """
    post, pre = _matrix(post, "post"), _matrix(pre, "pre")
    if post.shape[1] != pre.shape[1]:
        raise ValueError(
            f"pre must have the dimension D={post.shape[1]} of post, got shape {pre.shape}"
        )
    return delays.distances(torch.tensor(post), torch.tensor(pre)).numpy()


def _graph(weight) -> np.ndarray:
    """``|W|`` as a directed adjacency ``A[source, target]`` without self-loops."""
    a = np.abs(_matrix(weight, "weight", square=True)).T.copy()
    np.fill_diagonal(a, 0.0)
    return a


# ---------------------------------------------------------------- communities
def communities(weight, seed: int = 0, resolution: float = 1.0) -> np.ndarray:
    """Louvain communities of the directed graph of ``|W|`` (self-loops ignored).

    ``weight``: ``[n, n]``. Returns int labels ``[n]``, 0 for the largest community.
    Seeded: the same ``seed`` gives the same partition.
    """
    a = _graph(weight)
    n = a.shape[0]
    if not a.any():
        return np.arange(n)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    src, dst = np.nonzero(a)
    g.add_weighted_edges_from(zip(src.tolist(), dst.tolist(), a[src, dst].tolist(), strict=True))
    parts = nx.community.louvain_communities(g, weight="weight", resolution=resolution, seed=seed)
    labels = np.empty(n, dtype=np.int64)
    for label, part in enumerate(sorted(parts, key=lambda p: (-len(p), min(p)))):
        labels[list(part)] = label
    return labels


def modularity(weight, labels) -> float:
    """Directed weighted modularity Q of a partition (Leicht & Newman 2008).

    ``Q = 1/m sum_ij (A_ij - k_i^out k_j^in / m) [c_i = c_j]`` with ``A`` the graph of
    ``|W|`` without self-loops and ``m = sum A``; NaN for a graph without edges.
    """
    a = _graph(weight)
    labels = np.asarray(labels)
    if labels.shape != (a.shape[0],):
        raise ValueError(f"labels must have shape ({a.shape[0]},), got {labels.shape}")
    m = a.sum()
    if m == 0:
        return math.nan
    onehot = np.eye(labels.max() + 1)[labels]
    within = np.trace(onehot.T @ a @ onehot)
    expected = (onehot.T @ a.sum(1)) @ (onehot.T @ a.sum(0))
    return float(within / m - expected / m**2)


# ---------------------------------------------------------- clustering, paths
def clustering(weight) -> float:
    """Mean weighted directed clustering coefficient (Fagiolo 2007).

    As ``networkx.clustering`` on a weighted ``DiGraph``: weights divided by the largest,
    ``C_i = [(W^(1/3) + W^(1/3)T)^3]_ii / (2 (k_i (k_i - 1) - 2 k_i^<->))`` with ``k_i``
    the total (in + out) degree and ``k_i^<->`` the reciprocal degree.
    """
    return _clustering(_graph(weight))


def _clustering(a: np.ndarray) -> float:
    top = a.max()
    if top == 0:
        return 0.0
    s = np.cbrt(a / top)
    s = s + s.T
    cycles = np.einsum("ij,ji->i", s @ s, s) / 2
    b = (a > 0).astype(np.float64)
    degree = b.sum(0) + b.sum(1)
    possible = degree * (degree - 1) - 2 * np.einsum("ij,ji->i", b, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(possible > 0, cycles / possible, 0.0)
    return float(c.mean())


def global_efficiency(weight) -> float:
    """Weighted global efficiency: mean over ordered pairs i != j of ``1 / d_ij``.

    ``d_ij`` is the shortest directed path length with edge length ``1 / |w|`` (weights
    divided by the largest first, so lengths are >= 1); unreachable pairs count 0.
    """
    return _efficiency(_graph(weight))


def _efficiency(a: np.ndarray) -> float:
    n = a.shape[0]
    top = a.max()
    if n < 2 or top == 0:
        return 0.0
    lengths = np.zeros_like(a)
    np.divide(top, a, out=lengths, where=a > 0)  # 0 means "no edge" to csgraph
    dist = csgraph.shortest_path(lengths, method="auto", directed=True)
    with np.errstate(divide="ignore"):
        inv = 1.0 / dist
    np.fill_diagonal(inv, 0.0)
    return float(inv.sum() / (n * (n - 1)))


def shuffled(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Null graph: the off-diagonal entries of ``a`` permuted (weights and density kept)."""
    off = ~np.eye(a.shape[0], dtype=bool)
    null = np.zeros_like(a)
    null[off] = rng.permutation(a[off])
    return null


# ------------------------------------------------------------------ entropies
def _row_entropy(p: np.ndarray) -> float:
    """Mean Shannon entropy (bits) of the rows of a non-negative matrix, empty rows skipped."""
    total = p.sum(1, keepdims=True)
    keep = total[:, 0] > 0
    if not keep.any():
        return math.nan
    q = p[keep] / total[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log2(q), 0.0)
    return float(-terms.sum(1).mean())


def shannon_entropy(weight) -> float:
    """Mean over neurons of the entropy (bits) of their outgoing ``|w|`` as a distribution.

    ``H = mean_i -sum_j p_ij log2 p_ij`` with ``p_ij = |w_ji| / sum_j |w_ji|`` (Akarca et
    al.); neurons without outgoing weight are skipped.
    """
    return _row_entropy(np.abs(_matrix(weight, "weight", square=True)).T)


def communicability_entropy(weight) -> float:
    """Shannon entropy (bits) of the rows of the weighted communicability of ``|W|``.

    ``G = expm(S^-1/2 A S^-1/2)``, ``A[i, j] = |w_ji|``, ``S`` the diagonal of outgoing
    strengths (Crofts & Higham 2009); each row of ``G`` is normalised to sum 1.
    """
    w = _matrix(weight, "weight", square=True)
    # wiring.communicability is in the layout W[post, pre]: its columns are the neurons.
    return _row_entropy(wiring.communicability(torch.tensor(w)).numpy().T)


# -------------------------------------------------------------------- wiring
def wiring_cost(weight, dist) -> float:
    """``sum_ji |w_ji| d_ji`` (weight times distance units; :mod:`sj_spatial.wiring`)."""
    return _wiring_cost(*_pair(weight, dist))


def mean_length(weight, dist) -> float:
    """``|w|``-weighted mean synapse length ``sum |w| d / sum |w|`` (distance units)."""
    w, d = _pair(weight, dist)
    total = float(np.abs(w).sum())
    return _wiring_cost(w, d) / total if total > 0 else math.nan


def wiring_efficiency(weight, dist) -> float:
    """``1 - (C - Cmin) / (Cmax - Cmin)`` with ``C = sum |w| d`` (Mészáros et al. 2025).

    ``Cmin`` pairs the sorted ``|w|`` with the reverse-sorted distances (strongest
    synapses on the shortest distances), ``Cmax`` with the sorted ones; 1 is the cheapest
    wiring of these weights on these distances, 0 the dearest. NaN when ``Cmax == Cmin``.
    """
    w, d = _pair(weight, dist)
    w_sorted = np.sort(np.abs(w), axis=None)
    d_sorted = np.sort(d, axis=None)
    c_min = float(w_sorted @ d_sorted[::-1])
    c_max = float(w_sorted @ d_sorted)
    if c_max == c_min:
        return math.nan
    return 1.0 - (_wiring_cost(w, d) - c_min) / (c_max - c_min)


def clamped_fraction(weight, dist, max_delay: float, delay_scale: float = 1.0) -> float:
    """Share of the nonzero synapses whose delay ``delay_scale * d`` reaches ``max_delay``."""
    w, d = _pair(weight, dist)
    alive = w != 0
    if not alive.any():
        return math.nan
    return float((delay_scale * d[alive] >= max_delay).mean())


def _wiring_cost(w: np.ndarray, d: np.ndarray) -> float:
    return float(wiring.wiring_cost(torch.tensor(w), torch.tensor(d)))


def _pair(weight, dist) -> tuple[np.ndarray, np.ndarray]:
    w, d = _matrix(weight, "weight"), _matrix(dist, "dist")
    if w.shape != d.shape:
        raise ValueError(f"dist must have the shape of weight {w.shape}, got {d.shape}")
    return w, d


# ------------------------------------------------------------------ analyze
def _layer_inputs(layer) -> dict:
    """Weight, positions and delay options of a spatial layer."""
    positions = positions_of(layer)
    if positions is None:
        raise TypeError(
            "layer_or_weight must be a spatial layer or a weight matrix, got "
            f"{type(layer).__name__} without positions"
        )
    post, pre = positions
    return {
        "weight": layer.effective_weight(),
        "post": post,
        "pre": pre,
        "recurrent": is_recurrent(layer),
        "delay_scale": layer.delay_scale,
        "max_delay": layer.max_delay,
    }


def _array_inputs(weight, positions, delay_scale, max_delay) -> dict:
    weight = _matrix(weight, "layer_or_weight")
    if positions is None:
        post = pre = None
    elif isinstance(positions, tuple) and len(positions) == 2:
        post, pre = positions
    else:
        post = pre = positions
    recurrent = weight.shape[0] == weight.shape[1] and post is pre
    return {
        "weight": weight,
        "post": post,
        "pre": pre,
        "recurrent": recurrent,
        "delay_scale": delay_scale,
        "max_delay": max_delay,
    }


def graph_metrics(weight, seed: int = 0, nulls: int = 10, labels=None) -> dict[str, float]:
    """Graph metrics of a square ``[n, n]`` weight (see :func:`analyze`).

    ``labels``: communities already found by :func:`communities` (found here when None).
    """
    check_count("nulls", nulls, 1)
    a = _graph(weight)
    labels = communities(weight, seed=seed) if labels is None else np.asarray(labels)
    c, e = _clustering(a), _efficiency(a)
    rng = np.random.default_rng(seed)
    null_c, null_e = [], []
    for _ in range(nulls):
        null = shuffled(a, rng)
        null_c.append(_clustering(null))
        null_e.append(_efficiency(null))
    c_norm = _ratio(c, float(np.mean(null_c)))
    e_norm = _ratio(e, float(np.mean(null_e)))
    return {
        "modularity": modularity(weight, labels),
        "num_communities": float(labels.max() + 1),
        "clustering": c_norm,
        "clustering_raw": c,
        "efficiency": e_norm,
        "efficiency_raw": e,
        "small_world": c_norm * e_norm,
        "shannon_entropy": shannon_entropy(weight),
        "communicability_entropy": communicability_entropy(weight),
    }


def _ratio(x: float, null: float) -> float:
    return x / null if null > 0 else math.nan


def spatial_metrics(
    weight, dist, max_delay: float | None = None, delay_scale: float = 1.0
) -> dict[str, float]:
    """Wiring metrics of a weight ``[out, in]`` on distances ``[out, in]`` (see :func:`analyze`)."""
    metrics = {
        "wiring_cost": wiring_cost(weight, dist),
        "wiring_efficiency": wiring_efficiency(weight, dist),
        "mean_length": mean_length(weight, dist),
    }
    if max_delay is not None:
        metrics["clamped_fraction"] = clamped_fraction(weight, dist, max_delay, delay_scale)
    return metrics


def analyze(
    layer_or_weight,
    positions=None,
    seed: int = 0,
    *,
    nulls: int = 10,
    delay_scale: float = 1.0,
    max_delay: float | None = None,
    labels=None,
) -> dict[str, float]:
    """All metrics of one layer or weight matrix, as a dict of floats.

    ``layer_or_weight``: a spatial layer (its masked weight, positions, ``delay_scale``
    and ``max_delay`` are read; ``positions`` must then be None) or a weight ``[out, in]``.
    ``positions``: for a weight, ``[n, D]`` (one population, both sides of a square
    matrix) or a tuple ``(post [out, D], pre [in, D])``; None skips the spatial metrics.

    Graph metrics (:data:`GRAPH_METRICS`; Louvain seeded by ``seed``, clustering and
    efficiency divided by their mean over ``nulls`` shuffled-weight graphs) need a
    recurrent layer or a square weight with one population; spatial metrics
    (:data:`SPATIAL_METRICS`) need positions, and ``clamped_fraction`` a ``max_delay``.
    ``labels``: communities already found by :func:`communities` for this weight (found
    here when None). A 512-neuron recurrent layer takes about 3 s on 2 CPU cores with
    ``nulls=10``, 2 s of it in Louvain.
    """
    if hasattr(layer_or_weight, "weight") and not hasattr(layer_or_weight, "shape"):
        if positions is not None:
            raise ValueError(
                "positions must be None when a layer is given (its own are used), "
                f"got {type(positions).__name__}"
            )
        inputs = _layer_inputs(layer_or_weight)
    else:
        inputs = _array_inputs(layer_or_weight, positions, delay_scale, max_delay)
    weight = as_array(inputs["weight"], "weight")
    dist = None
    if inputs["post"] is not None:
        dist = distances(inputs["post"], inputs["pre"])
        if dist.shape != weight.shape:
            raise ValueError(
                f"positions give distances of shape {dist.shape}, but weight has shape "
                f"{weight.shape}"
            )
    metrics = {}
    if inputs["recurrent"]:
        metrics.update(graph_metrics(weight, seed=seed, nulls=nulls, labels=labels))
    if dist is not None:
        metrics.update(spatial_metrics(weight, dist, inputs["max_delay"], inputs["delay_scale"]))
    return metrics


def specialization_r2(input_weight, positions, alpha: float = 1.0) -> float:
    """In-sample R^2 of a ridge regression from each neuron's input weights to its position.

    ``input_weight``: ``[N, in]`` (row j: the weights onto neuron j, the layout of the
    layer feeding the population), ``positions``: ``[N, D]``. Ridge with intercept and
    penalty ``alpha``; returns the R^2 averaged over the D coordinates (as scikit-learn's
    ``Ridge(alpha).fit(X, Y).score(X, Y)``). High values: position is predictable from
    what a neuron listens to, i.e. function aligns with place (Mészáros et al. 2025).
    """
    x = _matrix(input_weight, "input_weight")
    y = _matrix(positions, "positions")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"positions must have one row per row of input_weight ({x.shape[0]}), "
            f"got shape {y.shape}"
        )
    alpha = check_positive("alpha", alpha)
    x = x - x.mean(0)
    y = y - y.mean(0)
    gram = x @ x.T  # dual form: cost N^3, whatever the number of inputs
    fitted = gram @ np.linalg.solve(gram + alpha * np.eye(len(x)), y)
    total = np.square(y).sum(0)
    r2 = 1.0 - np.square(y - fitted).sum(0) / np.where(total > 0, total, np.nan)
    return float(np.nanmean(r2)) if np.isfinite(r2).any() else math.nan
