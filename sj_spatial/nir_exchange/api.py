"""``export_to_nir`` and ``import_from_nir``: the checks, the delay budget and the file.

The NIR machinery (:mod:`.to_nir`, :mod:`.from_nir`) is imported only once the
requirements are known to be installed, so that this module imports everywhere and says
what is missing when a function is called.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import __version__
from .._checks import STEP_MODES, check_choice
from .._introspect import SPATIAL_LAYERS
from ..data._files import atomic_path
from .lags import apply_budget, check_budget_options

if TYPE_CHECKING:
    import nir

#: The extra that installs NIR's packages, as pip takes it.
EXTRA = "pip install 'sj-spatial[nir]'"


class NIRUnavailableError(ImportError):
    """What NIR exchange needs is not installed: spikingjelly >= 2.0.0 (whose
    ``activation_based.nir_exchange`` it extends), ``nir`` or ``nirtorch``."""


def require_nir() -> None:
    """Raise :class:`NIRUnavailableError` naming the release or the packages that are
    missing for NIR exchange; return when all are installed."""
    if importlib.util.find_spec("spikingjelly.activation_based.nir_exchange") is None:
        installed = importlib.metadata.version("spikingjelly")
        raise NIRUnavailableError(
            "sj_spatial.nir_exchange needs spikingjelly >= 2.0.0, whose "
            f"activation_based.nir_exchange it extends; spikingjelly {installed} is installed "
            "and has none (pip install 'spikingjelly>=2.0.0')"
        )
    missing = [name for name in ("nir", "nirtorch") if importlib.util.find_spec(name) is None]
    if missing:
        raise NIRUnavailableError(f"sj_spatial.nir_exchange needs {' and '.join(missing)}: {EXTRA}")


def _check_dt(dt) -> float:
    if (
        isinstance(dt, bool)
        or not isinstance(dt, (int, float))
        or not (math.isfinite(dt) and dt > 0)
    ):
        raise ValueError(f"dt must be a finite number of seconds > 0, got {dt!r}")
    return float(dt)


def _leaf_model(net: nn.Module) -> nn.Module:
    """``net``, or ``Sequential(net)`` when it is a single layer or neuron (torch.fx traces
    the model's own forward, which a spatial layer refuses, and a graph needs nodes)."""
    single = isinstance(net, SPATIAL_LAYERS) or next(net.children(), None) is None
    return nn.Sequential(net) if single else net


def _check_leaves(net: nn.Module, mapped: dict) -> None:
    """TypeError naming the first module that torch.fx leaves whole but NIR cannot map."""
    from nirtorch.torch_tracer import NIRTorchTracer

    tracer = NIRTorchTracer(tuple(mapped))
    graph = tracer.trace(net)
    for node in graph.nodes:
        if node.op == "call_module":
            module = net.get_submodule(node.target)
            if type(module) not in mapped:
                known = ", ".join(sorted({kind.__name__ for kind in mapped}))
                raise TypeError(
                    f"net.{node.target} is a {type(module).__name__}, which has no NIR mapping "
                    f"(mapped: {known})"
                )


def export_to_nir(
    net: nn.Module,
    example_input: torch.Tensor,
    save_path: str | os.PathLike | None = None,
    dt: float = 1e-4,
    *,
    max_delay_steps: int | None = None,
    clamp: bool = False,
) -> nir.NIRGraph:
    """The NIR graph of ``net``; written to ``save_path`` (HDF5, atomically) when given.

    spikingjelly's ``export_to_nir`` with sj_spatial's layers and cells added: a spatial
    layer becomes a subgraph of ``nir.Delay`` and weight nodes, one path per integer lag
    (``docs/deploy.md``), so that the graph computes what ``net`` computes in either
    ``delay_mode``. ``example_input`` (``[T, N, in]`` or ``[N, in]``, as ``net`` takes it)
    fixes the shapes; ``net``'s memories are left as they were. ``dt``: seconds per time
    step (NIR's delays and time constants are seconds: steps * dt).

    ``max_delay_steps``: the longest delay the target takes, in time steps. A synapse that
    needs more (``ceil(delay)`` when interpolating, ``round(delay)`` when rounding) is a
    ValueError, or, with ``clamp=True``, gets the delay ``max_delay_steps`` (a
    ``UserWarning`` says how many; ``graph.metadata["clamped"]`` counts them by layer).
    """
    require_nir()
    import nirtorch

    from .to_nir import SpatialModuleMapper

    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    dt = _check_dt(dt)
    if save_path is not None:
        _check_file_path(save_path, "save_path")
    budget = check_budget_options(max_delay_steps, clamp)
    clamped = apply_budget(net, budget)
    model = _leaf_model(net)
    mapper = SpatialModuleMapper(model, example_input, dt, budget)
    _check_leaves(model, {**nirtorch.torch_tracer.DEFAULT_MAP, **mapper.map_dict})
    graph = nirtorch.torch_to_nir(model, mapper.map_dict, type_check=True)
    graph.metadata = {"dt": dt, "clamped": dict(clamped), "exporter": f"sj_spatial {__version__}"}
    if clamped:
        warnings.warn(
            f"clamped {sum(clamped.values())} synapses to max_delay_steps={max_delay_steps} "
            f"({', '.join(f'{n!r}: {c}' for n, c in clamped.items())})",
            UserWarning,
            stacklevel=2,
        )
    if save_path is not None:
        write_graph(graph, save_path, "save_path")
    return graph


def _check_file_path(path, name: str) -> Path:
    """``path`` as a Path if it can name a file to write; TypeError or ValueError naming
    the argument ``name`` otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or path, got {type(path).__name__}")
    if Path(path).is_dir():
        raise ValueError(f"{name} must be a file to write, got the folder {path}")
    return Path(path)


def write_graph(graph: nir.NIRGraph, path: str | os.PathLike, name: str = "path") -> Path:
    """Write ``graph`` to ``path`` atomically: a complete file or none (an earlier file
    stays until the new one is complete). ``name``: the argument named in errors."""
    import nir

    path = _check_file_path(path, name)
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)
    return path


def import_from_nir(
    graph_or_path: nir.NIRGraph | str | os.PathLike,
    dt: float = 1e-4,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    step_mode: str = "s",
) -> torch.fx.GraphModule:
    """A module of a NIR graph (or of the file at a path), with spikingjelly's calling
    convention: ``out, state = module(x, state)``; ``state=None`` starts a sequence.

    spikingjelly's ``import_from_nir`` with ``nir.Delay`` (a delay line of whole steps:
    ``delay / dt`` must be whole), ``nir.LI`` and ``nir.Scale`` added. ``dt``: seconds per
    time step (use the ``dt`` of the export to get the same model). ``step_mode='s'``
    takes one step ``[N, in]`` per call (graphs with a recurrent loop need it); ``'m'`` a
    sequence ``[T, N, in]``. A node that cannot be mapped, a delay that is not whole, or
    an edge whose shapes differ raise ValueError naming ``graph_or_path`` and the node.
    """
    require_nir()
    from .from_nir import to_module

    dt = _check_dt(dt)
    check_choice("step_mode", step_mode, STEP_MODES)
    graph = _read_graph(graph_or_path)
    try:
        return to_module(graph, dt, device, dtype, step_mode)
    except ValueError as exc:
        raise ValueError(f"graph_or_path: {exc}") from exc


def _read_graph(graph_or_path) -> nir.NIRGraph:
    import nir

    if isinstance(graph_or_path, nir.NIRGraph):
        return graph_or_path
    if not isinstance(graph_or_path, (str, os.PathLike)):
        raise TypeError(
            f"graph_or_path must be a nir.NIRGraph or the path of a NIR file, got "
            f"{type(graph_or_path).__name__}"
        )
    path = Path(graph_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"graph_or_path: no NIR file at {path}")
    try:
        graph = nir.read(path, type_check=False)
    except Exception as exc:  # h5py, KeyError, AssertionError: anything not a NIR graph
        raise ValueError(
            f"graph_or_path: cannot read {path} as a NIR graph ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(graph, nir.NIRGraph):
        raise ValueError(f"graph_or_path: {path} holds a nir.{type(graph).__name__}, not a graph")
    return graph
