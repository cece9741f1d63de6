"""``sj-spatial export``: a finished run of ``sj-spatial train`` as a NIR graph, with the
test accuracy its model keeps on targets with integer and bounded delays.

:func:`export_run` is the command's library function: a user's mistake is a ValueError
with a one-line message in the command's words (``RUN``, ``--out``,
``--max-delay-steps``, ``--clamp``); ``sj_spatial/cli.py`` parses the options and prints.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ._introspect import named_spatial_layers
from .distributed import World
from .nir_exchange import DelayBudgetError, export_to_nir, require_nir
from .nir_exchange.api import write_graph
from .train_job.checkpoints import CHECKPOINT, load_checkpoint
from .train_job.config import TrainConfig
from .train_job.errors import JobError
from .train_job.recipe import build_model, datasets, evaluation_loader, run_epoch

#: The options of a run that define its model and its test data: TrainConfig fields, with
#: the type that reads each back from the strings of a checkpoint's ``"args"``.
RUN_OPTIONS = {
    "data_root": Path,
    "dt": float,
    "duration": float,
    "limit": int,
    "seed": int,
    "hidden": int,
    "dim": int,
    "max_delay": int,
    "delay_scale": float,
    "batch_size": int,
}


def _one_line(text: object) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def run_config(args: dict) -> TrainConfig:
    """The :class:`TrainConfig` of a checkpoint's ``"args"`` (strings) for its model and
    test data; the other fields keep their defaults (CPU, no augmentation)."""
    values = {}
    for name, kind in RUN_OPTIONS.items():
        text = args.get(name, "None")
        values[name] = None if text == "None" else kind(text)
    return TrainConfig(**values, augment=False, device="cpu")


def load_run(run: str | os.PathLike) -> tuple[nn.Module, TrainConfig]:
    """``(model, config)`` of a run folder of ``sj-spatial train`` or its checkpoint, on
    the CPU; ValueError naming RUN when there is none or it does not load."""
    path = Path(run) / CHECKPOINT if Path(run).is_dir() else Path(run)
    try:
        state = load_checkpoint(path)
        config = run_config(state["args"])
        model = build_model(config)
        model.load_state_dict(state["model"])
    except FileNotFoundError:
        raise ValueError(f"RUN {run}: not a run of sj-spatial train (no {path})") from None
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ValueError(f"RUN {run}: {_one_line(exc)}") from None
    return model, config


def deployed(model: nn.Module, max_delay_steps: int | None = None) -> nn.Module:
    """A copy of ``model`` with integer delays (``delay_mode='round'``), clamped to
    ``max_delay_steps`` time steps when given: what a target with per-synapse integer
    delays of at most that many steps runs."""
    target = copy.deepcopy(model)
    for _, layer in named_spatial_layers(target):
        layer.delay_mode = "round"
        if max_delay_steps is not None:
            layer.max_delay = min(layer.max_delay, max_delay_steps)
    return target


def evaluation_split(config: TrainConfig) -> Dataset:
    """The test split of the run of ``config``; ValueError when its data are unreadable."""
    try:
        (_, test_set), _ = datasets(config, World())
    except JobError as exc:
        raise ValueError(f"the run's test data: {_one_line(exc)}") from None
    return test_set


def accuracy_of(model: nn.Module, config: TrainConfig, test_set: Dataset) -> float:
    """The accuracy of ``model`` on ``test_set`` (:func:`evaluation_split`), on the CPU, in the
    run's batches."""
    loader = evaluation_loader(test_set, config, World())
    _, correct, count = run_epoch(model, ((x, y, 1.0) for x, y in loader), torch.device("cpu"))
    return correct / max(count, 1)


def count_nodes(graph) -> int:
    """The nodes of a NIR graph, those of its subgraphs included (a subgraph counts as
    its nodes)."""
    import nir

    return sum(
        count_nodes(node) if isinstance(node, nir.NIRGraph) else 1 for node in graph.nodes.values()
    )


def export_run(
    run: str | os.PathLike,
    out: str | os.PathLike,
    max_delay_steps: int | None = None,
    clamp: bool = False,
) -> dict:
    """Write the model of a finished run to ``out`` as a NIR graph and measure it.

    ``run``: a run folder of ``sj-spatial train`` or its ``checkpoint.pt``. The graph has
    the delays as trained, at the run's ``dt`` (``docs/deploy.md``); ``max_delay_steps``
    (time steps) and ``clamp`` as in :func:`~sj_spatial.nir_exchange.export_to_nir`.
    Returns ``{"out", "bytes", "nodes", "dt", "max_delay_steps", "clamped", "accuracy"}``:
    ``clamped`` synapses, and the test ``accuracy`` ``{"trained", "rounded",
    "clamped"}`` of the model as trained, with delays rounded to integers, and rounded and
    clamped to ``max_delay_steps`` (None without it). ImportError when NIR exchange is not
    installed; a mistake is a ValueError with one line, and ``out`` is left as it was.
    """
    require_nir()
    if clamp and max_delay_steps is None:
        raise ValueError("--clamp needs --max-delay-steps N, the bound to clamp the delays to")
    if Path(out).is_dir():
        raise ValueError(f"--out {out} is a folder; give the path of the file to write")
    model, config = load_run(run)
    test_set = evaluation_split(config)
    example = torch.zeros(1, 1, model[0].in_features)  # one step fixes every shape
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the report counts the clamped
            graph = export_to_nir(
                model, example, None, config.dt, max_delay_steps=max_delay_steps, clamp=clamp
            )
    except DelayBudgetError as exc:
        raise ValueError(
            f"--max-delay-steps {exc.max_steps}: {exc.count} of {exc.total} synapses of RUN "
            f"need longer delays (largest {exc.largest:.2f} steps); pass --clamp to clamp "
            f"them to {exc.max_steps} steps, or train with --max-delay {exc.max_steps}"
        ) from None
    accuracy = {
        "trained": accuracy_of(model, config, test_set),
        "rounded": accuracy_of(deployed(model), config, test_set),
        "clamped": None,
    }
    if max_delay_steps is not None:
        accuracy["clamped"] = accuracy_of(deployed(model, max_delay_steps), config, test_set)
    write_graph(graph, out, "--out")  # last: a mistake leaves the file as it was
    return {
        "out": str(out),
        "bytes": Path(out).stat().st_size,
        "nodes": count_nodes(graph),
        "dt": config.dt,
        "max_delay_steps": max_delay_steps,
        "clamped": sum(graph.metadata["clamped"].values()),
        "accuracy": accuracy,
    }


def report_lines(report: dict) -> str:
    """What ``sj-spatial export`` prints of :func:`export_run`'s report."""
    acc, bound = report["accuracy"], report["max_delay_steps"]
    graph = f"{report['nodes']} NIR nodes, {report['bytes']} bytes, dt {report['dt']} s per step"
    accuracy = (
        f"test accuracy: as trained {acc['trained']:.3f}, delays rounded {acc['rounded']:.3f}"
    )
    if acc["clamped"] is not None:
        accuracy += f", rounded and clamped to {bound} steps {acc['clamped']:.3f}"
    clamped = (
        f"; {report['clamped']} synapses clamped to {bound} steps" if report["clamped"] else ""
    )
    return f"wrote {report['out']}: {graph}{clamped}\n{accuracy}"
