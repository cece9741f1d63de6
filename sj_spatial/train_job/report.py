"""The report of ``sj-spatial train``: ``summary.json``, ``summary.md`` (the summary as a
markdown table) and PNG figures of the positions, the |w|-weighted delays and the
learning curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from torch import nn

from .. import topology
from ..callbacks import position_figure
from ..layers import SpatialRecurrentContainer
from ..positions import NeuronPositions
from .config import TrainConfig
from .loop import EpochRecord


def epoch_line(record: EpochRecord) -> str:
    """The line ``sj-spatial train`` prints after each epoch."""
    return (
        f"epoch {record.epoch}: train loss {record.train_loss:.3f} acc "
        f"{record.train_acc:.3f} | test loss {record.test_loss:.3f} acc "
        f"{record.test_acc:.3f} ({record.seconds:.0f} s)"
    )


def write_report(
    model: nn.Module, history: dict, source: str, config: TrainConfig, resumes: list[dict] = ()
) -> dict:
    """Write the summary and the figures of a trained ``model`` into ``config.logdir``;
    returns the summary. ``history``: lists of ``train_loss``, ``train_acc``,
    ``test_loss``, ``test_acc`` per epoch; ``source``: words that say what data it saw;
    ``resumes``: the options each ``--resume`` changed (the summary's ``"resumed"``)."""
    rec = _recurrent(model)
    labels = topology.communities(rec.effective_weight().detach().cpu(), seed=config.seed)
    summary = _summary(model, history, source, config, labels)
    if resumes:
        summary["resumed"] = list(resumes)
    (config.logdir / "summary.json").write_text(json.dumps(summary, indent=2))
    (config.logdir / "summary.md").write_text(summary_table(summary) + "\n")
    _figures(model, history, config.logdir, labels)
    return summary


def _recurrent(model: nn.Module) -> SpatialRecurrentContainer:
    return next(m for m in model.modules() if isinstance(m, SpatialRecurrentContainer))


def _summary(model, history, source, config, labels) -> dict:
    rec = _recurrent(model)
    positions = sum(
        p.numel() for m in model.modules() if isinstance(m, NeuronPositions) for p in m.parameters()
    )
    total = sum(p.numel() for p in model.parameters())
    metrics = topology.analyze(rec, seed=config.seed, nulls=5, labels=labels)
    return {
        "data": source,
        "epochs": len(history["test_acc"]),
        "test_accuracy": history["test_acc"][-1] if history["test_acc"] else math.nan,
        "best_test_accuracy": max(history["test_acc"], default=math.nan),
        "parameters": total,
        "position_parameters": positions,
        "delay_parameters_if_per_synapse": rec.num_features**2,
        "topology": {k: float(v) for k, v in metrics.items()},
    }


def summary_table(summary: dict) -> str:
    """The summary as a markdown table."""
    rows = [
        ("data", summary["data"]),
        ("epochs", summary["epochs"]),
        (
            "test accuracy (last / best)",
            f"{summary['test_accuracy']:.3f} / {summary['best_test_accuracy']:.3f}",
        ),
        (
            "parameters (of which positions)",
            f"{summary['parameters']} ({summary['position_parameters']}; per-synapse delays "
            f"would need {summary['delay_parameters_if_per_synapse']})",
        ),
    ]
    rows += [(f"topology: {k}", f"{v:.4g}") for k, v in summary["topology"].items()]
    for resumed in summary.get("resumed", []):
        changes = ", ".join(
            f"--{name.replace('_', '-')} {old} -> {new}"
            for name, (old, new) in resumed["changed"].items()
        )
        rows.append((f"resumed after epoch {resumed['after_epoch']}", f"changed {changes}"))
    lines = ["| quantity | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _figures(model, history, logdir: Path, labels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rec = _recurrent(model)
    weight = rec.effective_weight().detach().cpu().numpy()
    pos = rec.positions.positions.detach().cpu().numpy()
    image = position_figure(weight, pos, pos, labels=labels, title="recurrent layer")
    plt.imsave(logdir / "positions.png", image)

    delays = rec.delays().detach().cpu().numpy().ravel()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.hist(delays, bins=40, weights=np.abs(weight).ravel())
    ax.set(xlabel="delay (time steps)", ylabel="sum of |w|", title="|w|-weighted delays")
    fig.tight_layout()
    fig.savefig(logdir / "delay_histogram.png", dpi=100)
    plt.close(fig)

    epochs = np.arange(1, len(history["test_acc"]) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    for split in ("train", "test"):
        a.plot(epochs, history[f"{split}_loss"], label=split)
        b.plot(epochs, history[f"{split}_acc"], label=split)
    a.set(xlabel="epoch", ylabel="loss")
    b.set(xlabel="epoch", ylabel="accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(logdir / "learning_curves.png", dpi=100)
    plt.close(fig)
