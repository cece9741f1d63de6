"""NIR graphs as spikingjelly modules: spikingjelly's node mapper extended with the nodes
the spatial layers export to (``nir.Delay``, ``nir.LI``, ``nir.Scale``).

Needs spikingjelly >= 2.0.0, ``nir`` and ``nirtorch`` (checked by
:mod:`sj_spatial.nir_exchange` before it imports this module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import nir
import nirtorch
import numpy as np
import torch
from spikingjelly.activation_based.nir_exchange.from_nir import _has_cycle, _NodeMapper
from torch import nn

from .modules import DelayLine, LeakyIntegrator, Scale

#: Relative error within which ``delay / dt`` counts as a whole number of steps (the
#: seconds of a graph are ``steps * dt`` in float64, a few ulps from whole).
WHOLE_STEPS_RTOL = 1e-6


def walk(graph: nir.NIRGraph, prefix: str = "") -> Iterator[tuple[str, nir.NIRGraph]]:
    """``(name, graph)`` of ``graph`` and of every subgraph in it, depth first (names
    joined by dots; the top graph is ``''``)."""
    yield prefix, graph
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            yield from walk(node, f"{prefix}{name}.")


def whole_steps(seconds: np.ndarray, dt: float) -> np.ndarray:
    """``seconds / dt`` as int64 when every value is a whole number >= 0 of steps;
    ValueError saying which value is not otherwise."""
    steps = np.asarray(seconds, dtype=np.float64) / dt
    whole = np.round(steps)
    bad = (
        ~np.isfinite(steps)
        | (steps < 0)
        | (np.abs(steps - whole) > WHOLE_STEPS_RTOL * np.maximum(whole, 1))
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"delay must be a whole number >= 0 of time steps dt={dt} s, got "
            f"{steps.flat[i]:.6g} steps ({steps.flat[i] * dt:.6g} s) in channel {i} "
            f"({int(bad.sum())} of {bad.size} channels)"
        )
    return whole.astype(np.int64)


class SpatialNodeMapper(_NodeMapper):
    """spikingjelly's ``_NodeMapper`` with ``nir.Delay``, ``nir.LI`` and ``nir.Scale``; a
    node that cannot be mapped raises ValueError naming it (``names``: node id -> name)."""

    def __init__(self, dt: float, names: dict[int, str]):
        super().__init__(dt=dt)
        self.names = names

    @property
    def map_dict(self) -> dict:
        maps = {
            **super().map_dict,
            nir.Delay: self.map_delay,
            nir.LI: self.map_li,
            nir.Scale: self.map_scale,
        }
        return {kind: self._naming(fn) for kind, fn in maps.items()}

    def _naming(self, fn: Callable[[nir.NIRNode], nn.Module]) -> Callable:
        def mapped(node: nir.NIRNode) -> nn.Module:
            try:
                return fn(node)
            except (ValueError, NotImplementedError) as exc:
                name = self.names.get(id(node), "?")
                raise ValueError(f"node {name!r} (nir.{type(node).__name__}): {exc}") from exc

        return mapped

    def map_delay(self, node: nir.Delay) -> DelayLine:
        return DelayLine(torch.from_numpy(whole_steps(node.delay, self.dt)))

    def map_li(self, node: nir.LI) -> LeakyIntegrator:
        tau = np.asarray(node.tau, dtype=np.float64)
        if not (np.isfinite(tau).all() and (tau >= self.dt).all()):
            raise ValueError(
                f"tau must be finite and >= dt={self.dt} s, got {float(tau.min()):.6g} s"
            )
        rate = self.dt / tau
        decay, gain, leak = 1.0 - rate, rate * node.r, rate * node.v_leak
        return LeakyIntegrator(*(torch.from_numpy(np.asarray(a)) for a in (decay, gain, leak)))

    def map_scale(self, node: nir.Scale) -> Scale:
        return Scale(torch.from_numpy(np.asarray(node.scale)))


def supported_types(mapper: SpatialNodeMapper) -> tuple[type, ...]:
    """The node types :func:`to_module` maps (subgraphs included)."""
    return (*mapper.map_dict, *nirtorch.nir_interpreter.DEFAULT_MAP, nir.NIRGraph)


def check_graph(graph: nir.NIRGraph, mapper: SpatialNodeMapper) -> None:
    """ValueError naming the node or edge when ``graph`` (or a subgraph) has a node type
    that cannot be mapped, an edge to a missing node, or an edge whose shapes differ."""
    kinds = supported_types(mapper)
    for prefix, sub in walk(graph):
        for name, node in sub.nodes.items():
            if not isinstance(node, kinds):
                known = ", ".join(sorted({k.__name__ for k in kinds}))
                raise ValueError(
                    f"node {prefix + name!r} has type nir.{type(node).__name__}, which has no "
                    f"mapping (supported: {known})"
                )
        for edge in sub.edges:
            _check_edge(sub, tuple(edge), prefix)


def _check_edge(graph: nir.NIRGraph, edge: tuple[str, str], prefix: str) -> None:
    source, target = edge
    for end in edge:
        if end not in graph.nodes:
            raise ValueError(f"edge {edge} of graph {prefix or '<top>'!r} names no node {end!r}")
    out = _single_type(graph.nodes[source].output_type)
    into = _single_type(graph.nodes[target].input_type)
    if out is not None and into is not None and not np.array_equal(out, into):
        raise ValueError(
            f"edge {prefix + source!r} -> {prefix + target!r}: the output of {source!r} has "
            f"shape {out.tolist()}, the input of {target!r} expects {into.tolist()}"
        )


def _single_type(types) -> np.ndarray | None:
    """The one shape of an input or output type dict, or None when it is not known."""
    if not types or len(types) != 1:
        return None
    shape = next(iter(types.values()))
    if shape is None:
        return None
    shape = np.asarray(shape)
    return None if shape.dtype == object else shape


def has_cycle(graph: nir.NIRGraph) -> bool:
    """Whether ``graph`` or any subgraph of it has a cycle (a recurrent connection)."""
    return any(_has_cycle(sub) for _, sub in walk(graph))


def to_module(
    graph: nir.NIRGraph, dt: float, device, dtype: torch.dtype, step_mode: str
) -> torch.fx.GraphModule:
    """The checked ``graph`` as a ``GraphModule`` (``out, state = m(x, state)``)."""
    from spikingjelly.activation_based import functional

    names = {
        id(node): prefix + name for prefix, sub in walk(graph) for name, node in sub.nodes.items()
    }
    mapper = SpatialNodeMapper(dt, names)
    check_graph(graph, mapper)
    if step_mode == "m" and has_cycle(graph):
        raise ValueError(
            "step_mode='m' runs a sequence at once, which a graph with a recurrent loop cannot "
            "do; use step_mode='s' (one call per time step)"
        )
    module = nirtorch.nir_to_torch(graph, mapper.map_dict, device=device, dtype=dtype)
    functional.set_step_mode(module, step_mode)
    return module
