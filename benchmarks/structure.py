"""The paper's structural findings and its parameter ablation, on the built-in SHD-format data.

Every configuration trains the paper's recurrent model (700 -> Linear -> recurrent
ExponentialSynapse + LIF with position-derived delays -> Linear -> leaky readout,
:func:`sj_spatial.models.recurrent_shd_model`) with BPTT, Adam (weights ``--lr``,
positions ``--position-lr``), cosine decay per epoch and gradient clipping, as
``sj-spatial train`` does, and adds its record, run ``<name>``, to ``records.jsonl``
(``benchmarks/records.py``: history per epoch, final metrics, delay histogram, pruning
curves) and writes ``runs/<name>.pt`` (the state_dict: the trained model, for analyses
beyond the report; the report and the figures read only the records). ``report`` (run at
the end, or alone with ``--report-only``) reads every record and writes ``results.json``,
``results.md`` and five figures:

- ``fig5_wiring_cost.png``: modularity, wiring efficiency, accuracy and mean synapse
  length against the strength of a wiring cost ``strength * sum |w| d**power`` on the
  recurrent weights, distance-weighted (``power=1``, distances divided by their mean) and
  plain L1 (``power=0``), with the no-cost run as reference (the paper's Fig. 5).
- ``fig6_pruning.png``: test accuracy, modularity and clustering after zeroing the
  longest (``prune_by_distance``) or weakest (``prune_by_magnitude``) fraction of the
  recurrent synapses of a trained model, without retraining (Fig. 6).
- ``fig2a_specialisation.png``: ``topology.specialization_r2`` of the input weights
  against the hidden positions after every epoch, with the same R^2 for shuffled
  positions as chance level (Fig. 2A).
- ``fig4b_delays.png``: ``|w|``-weighted histograms of the recurrent delays after training,
  spatial against free per-synapse delays (Fig. 4B).
- ``fig7_ablation.png``: test accuracy against trainable parameters: no delays, free
  per-synapse delays, spatial delays in D = 1..4, fixed random positions (Fig. 7).

    python benchmarks/structure.py                        # every run, then the report
    python benchmarks/structure.py --only spatial-d2 free --no-report
    python benchmarks/structure.py --report-only
    python benchmarks/structure.py --quick --out /tmp/q    # tiny smoke run (seconds)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from bench_layers import cpu_model
from records import append_record, read_records
from seeding import draw_like_positions
from torch import nn

import sj_spatial
from sj_spatial import WiringCost, param_groups, prune_by_distance, prune_by_magnitude, topology
from sj_spatial.baselines import FreeDelayRecurrentContainer
from sj_spatial.data import collate, shd_splits
from sj_spatial.models import recurrent_shd_model
from sj_spatial.train_job import Callback, CosineDecay, EpochRecord, fit
from sj_spatial.train_job.recipe import run_epoch

DEFAULT_OUT = Path(__file__).parent / "results" / "structure-2026-11-28"
FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9)
PRUNERS = {"distance": prune_by_distance, "magnitude": prune_by_magnitude}
STRENGTHS = (1e-5, 1e-4, 1e-3)
QUICK_STRENGTHS = (1e-3,)
NULLS = 5  # shuffled graphs per topology.analyze call
R2_SHUFFLES = 20  # position permutations for the chance level of the specialisation R^2
PRUNE_REFERENCE = "dist-1e-03"  # the cost run whose pruning curves fig 6 shows


@dataclass(frozen=True)
class Config:
    """One trained model. ``kind``: 'spatial' (positions), 'free' (per-synapse delays) or
    'none' (delay_scale 0, no delays); ``power`` / ``strength``: wiring cost (None: none).
    """

    name: str
    kind: str = "spatial"
    dim: int = 2
    fixed_positions: bool = False
    power: float | None = None
    strength: float = 0.0
    prune: bool = False


def configs(strengths=STRENGTHS) -> list[Config]:
    """Every configuration: the D=2 reference, the cost sweep and the ablation."""
    runs = [Config("spatial-d2", prune=True)]
    for label, power in (("dist", 1.0), ("l1", 0.0)):
        runs += [Config(f"{label}-{s:.0e}", power=power, strength=s, prune=True) for s in strengths]
    runs += [
        Config("none", kind="none"),
        Config("free", kind="free"),
        Config("fixed-d2", fixed_positions=True),
    ]
    runs += [Config(f"spatial-d{d}", dim=d) for d in (1, 3, 4)]
    return runs


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--out", type=Path, default=DEFAULT_OUT)
    add("--only", nargs="+", default=None, help="names of the runs to train (default: all)")
    add("--no-report", action="store_true", help="train only; no results.* or figures")
    add("--report-only", action="store_true", help="no training; report the runs in --out")
    add("--quick", action="store_true", help="tiny sizes: a smoke test in seconds")
    add("--epochs", type=int, default=10)
    add("--hidden", type=int, default=128)
    add("--limit", type=int, default=None, help="samples per split (default: all)")
    add("--dt", type=float, default=10e-3, help="time step in seconds")
    add("--duration", type=float, default=1.0, help="seconds of each sample")
    add("--max-delay", type=int, default=25, help="longest delay in time steps")
    add("--delay-scale", type=float, default=3.0, help="time steps per distance unit")
    add("--batch-size", type=int, default=64)
    add("--lr", type=float, default=1e-3)
    add("--position-lr", type=float, default=0.05)
    add("--clip", type=float, default=1.0)
    add("--strengths", type=float, nargs="+", default=None, help="wiring-cost strengths")
    add("--seed", type=int, default=0)
    add("--threads", type=int, default=1, help="torch threads")
    return parser


def apply_quick(args) -> None:
    """Tiny sizes for ``--quick`` (a smoke test of every code path)."""
    args.epochs, args.hidden, args.limit = 1, 8, 48
    args.duration, args.max_delay, args.batch_size = 0.2, 8, 16
    if args.strengths is None:
        args.strengths = list(QUICK_STRENGTHS)


# ------------------------------------------------------------------ models
def build_model(config: Config, args) -> nn.Sequential:
    """The paper's model for one configuration (seeded by ``args.seed``)."""
    torch.manual_seed(args.seed)
    model = recurrent_shd_model(
        dt=args.dt,
        hidden=args.hidden,
        dim=config.dim,
        max_delay=args.max_delay,
        delay_scale=0.0 if config.kind == "none" else args.delay_scale,
    )
    rec = model[1]
    if config.kind == "none" or config.fixed_positions:
        rec.positions.positions.requires_grad_(False)
    if config.kind == "free":
        draw_like_positions(args.hidden)  # the draws of the records (seeding.py)
        free = FreeDelayRecurrentContainer(
            rec.sub_module, args.hidden, bias=False, step_mode="m", max_delay=args.max_delay
        )
        with torch.no_grad():  # same start: the weights and delays of the spatial model
            free.weight.copy_(rec.weight)
            free.delay.copy_(rec.delays())
        model[1] = free
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters that receive gradient updates."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def expected_parameters(config: Config, hidden: int, inputs: int = 700, classes: int = 20) -> int:
    """Trainable parameters by formula: two linear layers, the recurrent weight, and the
    timing parameters (N·D positions, N·N free delays, none without delays or when fixed).
    """
    base = inputs * hidden + hidden + hidden * hidden + hidden * classes + classes
    if config.kind == "free":
        return base + hidden * hidden
    if config.kind == "none" or config.fixed_positions:
        return base
    return base + hidden * config.dim


def optimizer(model: nn.Module, args) -> torch.optim.Adam:
    """Adam with the weights at ``lr`` and the timing parameters at their own rate.

    Free delays (time steps) get ``position_lr * delay_scale``: the step a position step
    of ``position_lr`` distance units gives a delay, so both kinds move delays alike.
    """
    groups = param_groups(model, args.lr, args.position_lr)
    if isinstance(model[1], FreeDelayRecurrentContainer):
        groups[-1]["lr"] = args.position_lr * args.delay_scale  # the timing group is last
    for group in groups:
        group["initial_lr"] = group["lr"]  # what the cosine decay scales
    return torch.optim.Adam(groups)


def accuracy(model: nn.Module, loader) -> float:
    """Test accuracy of ``model`` over ``loader`` (the job's evaluation pass)."""
    _, correct, count = run_epoch(model, loader, torch.device("cpu"))
    return correct / max(count, 1)


# ---------------------------------------------------------------- analysis
def has_positions(model: nn.Module) -> bool:
    """Whether the model's recurrent layer has neuron positions (free delays have none)."""
    return hasattr(model[1], "positions")


def structure(model: nn.Module, seed: int) -> dict[str, float]:
    """``topology.analyze`` of the recurrent layer (graph metrics only for free delays)."""
    rec = model[1]
    if has_positions(model):
        metrics = topology.analyze(rec, seed=seed, nulls=NULLS)
    else:
        metrics = topology.analyze(rec.effective_weight(), seed=seed, nulls=NULLS)
    return {k: float(v) for k, v in metrics.items()}


def specialisation(model: nn.Module, seed: int) -> dict[str, float]:
    """R^2 of input weights -> hidden positions, and its mean / std over shuffled positions."""
    if not has_positions(model):
        return {}
    w = model[0].weight.detach().numpy()
    pos = model[1].positions.positions.detach().numpy()
    rng = np.random.default_rng(seed)
    nulls = [topology.specialization_r2(w, rng.permutation(pos)) for _ in range(R2_SHUFFLES)]
    return {
        "r2": topology.specialization_r2(w, pos),
        "r2_null": float(np.mean(nulls)),
        "r2_null_std": float(np.std(nulls)),
    }


def delay_histogram(model: nn.Module, max_delay: int, bins: int = 50) -> dict:
    """``|w|``-weighted histogram of the recurrent delays (time steps) on ``[0, max_delay]``."""
    rec = model[1]
    delays = rec.delays().detach().numpy().ravel()
    weight = rec.effective_weight().detach().abs().numpy().ravel()
    counts, edges = np.histogram(delays, bins=bins, range=(0, max_delay), weights=weight)
    mean = float((delays * weight).sum() / weight.sum()) if weight.sum() > 0 else math.nan
    return {
        "edges": edges.tolist(),
        "weighted_counts": counts.tolist(),
        "weighted_mean": mean,
        "unweighted_mean": float(delays.mean()),
        "clamped_fraction": float((delays >= max_delay).mean()),
    }


def pruning_curves(model, loader, seed: int, fractions=FRACTIONS) -> dict[str, list[dict]]:
    """Test accuracy and structure after pruning each fraction of the recurrent synapses of
    a copy of ``model`` (no retraining), by distance and by magnitude.
    """
    curves = {}
    for method, prune in PRUNERS.items():
        rows = []
        for fraction in fractions:
            pruned = copy.deepcopy(model)
            rec = pruned[1]
            before = rec.weight.numel() if rec.weight_mask is None else int(rec.weight_mask.sum())
            prune(rec, fraction)
            alive = int(rec.weight_mask.sum())
            acc = accuracy(pruned, loader)
            metrics = structure(pruned, seed)
            rows.append(
                {
                    "fraction": fraction,
                    "pruned_fraction": 1 - alive / before,
                    "pruned": before - alive,
                    "test_acc": acc,
                    **{k: metrics[k] for k in REPORTED if k in metrics},
                }
            )
        curves[method] = rows
    return curves


REPORTED = ("modularity", "clustering", "clustering_raw", "efficiency", "small_world")
REPORTED_SPATIAL = ("wiring_efficiency", "mean_length", "wiring_cost")


# ---------------------------------------------------------------- training
def train_one(config: Config, args, data, settings: dict) -> dict:
    """Train one configuration; returns its record (also added to ``records.jsonl``)."""
    train_set, test_set = data
    model = build_model(config, args)
    opt = optimizer(model, args)
    cost = None
    if config.power is not None and config.strength > 0:
        cost = WiringCost(model, config.strength, power=config.power, normalize="mean")
    test_loader = torch.utils.data.DataLoader(test_set, args.batch_size, collate_fn=collate)
    history = [{"epoch": 0, **specialisation(model, args.seed), **_short(model, args.seed)}]
    t0 = time.perf_counter()

    def batches(epoch: int) -> torch.utils.data.DataLoader:
        shuffle = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        return torch.utils.data.DataLoader(
            train_set, args.batch_size, shuffle=True, generator=shuffle, collate_fn=collate
        )

    class Track(Callback):
        """Structure and specialisation after every epoch, into ``history``."""

        def on_epoch_end(self, record: EpochRecord) -> None:
            row = {
                "epoch": record.epoch,
                "train_loss": record.train_loss,
                "train_acc": record.train_acc,
                "test_loss": record.test_loss,
                "test_acc": record.test_acc,
                **specialisation(model, args.seed),
                **_short(model, args.seed),
            }
            history.append(row)
            print(
                f"[{config.name}] epoch {record.epoch}: train {record.train_acc:.3f} test "
                f"{record.test_acc:.3f} r2 {row.get('r2', math.nan):.3f} Q "
                f"{row.get('modularity', math.nan):.3f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )

    fit(
        model,
        [opt],
        batches,
        test_loader,
        epochs=args.epochs,
        callbacks=[CosineDecay([opt], args.epochs), Track()],
        cost=cost,
        clip=args.clip or None,
    )
    seconds = time.perf_counter() - t0
    record = {
        "script": "structure.py",
        "run": config.name,
        "config": asdict(config),
        "settings": settings,
        "seed": args.seed,
        "trainable_parameters": trainable_parameters(model),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "test_acc": history[-1].get("test_acc", math.nan),
        "train_seconds": seconds,
        "history": history,
        "structure": structure(model, args.seed),
        "delays": delay_histogram(model, args.max_delay),
    }
    if config.prune and has_positions(model):
        record["pruning"] = pruning_curves(model, test_loader, args.seed)
    append_record(args.out, record)
    models = args.out / "runs"
    models.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), models / f"{config.name}.pt")
    return record


def _short(model, seed: int) -> dict[str, float]:
    metrics = structure(model, seed)
    return {k: metrics[k] for k in REPORTED + REPORTED_SPATIAL if k in metrics}


# ------------------------------------------------------------------ report
def load_runs(out: Path) -> dict[str, dict]:
    """Every run recorded in ``out``, by name, in the order of the names."""
    return {r["run"]: r for r in sorted(read_records(out), key=lambda r: r["run"])}


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def cost_rows(runs: dict) -> list[dict]:
    """Fig. 5 rows: the no-cost run, then each cost type by strength."""
    rows = []
    for name, r in runs.items():
        c = r["config"]
        if c["kind"] != "spatial" or c["fixed_positions"] or c["dim"] != 2:
            continue
        if c["power"] is None and name != "spatial-d2":
            continue
        cost = "none" if c["power"] is None else ("distance" if c["power"] == 1 else "L1")
        s = r["structure"]
        rows.append(
            {
                "run": name,
                "cost": cost,
                "strength": c["strength"],
                "test_acc": r["test_acc"],
                **{k: s.get(k, math.nan) for k in REPORTED + REPORTED_SPATIAL},
            }
        )
    order = {"none": 0, "distance": 1, "L1": 2}
    return sorted(rows, key=lambda row: (order[row["cost"]], row["strength"]))


def ablation_rows(runs: dict) -> list[dict]:
    """Fig. 7 rows: accuracy and trainable parameters of the delay variants."""
    labels = {
        "none": "no delays (delay_scale 0)",
        "free": "free per-synapse delays",
        "fixed-d2": "fixed random positions, D=2",
    }
    rows = []
    for name, r in runs.items():
        c = r["config"]
        if c["power"] is not None:
            continue
        label = labels.get(name, f"learned positions, D={c['dim']}")
        timing = r["trainable_parameters"] - expected_parameters(
            Config("x", kind="none"), _hidden(r)
        )
        rows.append(
            {
                "run": name,
                "variant": label,
                "trainable_parameters": r["trainable_parameters"],
                "timing_parameters": timing,
                "test_acc": r["test_acc"],
                "best_test_acc": max(h.get("test_acc", 0.0) for h in r["history"]),
            }
        )
    return sorted(rows, key=lambda row: row["trainable_parameters"])


def _hidden(record: dict) -> int:
    return int(record["settings"]["hidden"])


def report(out: Path) -> dict:
    """What ``results.json`` holds, from the runs recorded in ``out``."""
    runs = load_runs(out)
    if not runs:
        raise SystemExit(f"no runs recorded in {out}; train some first")
    costs, ablation = cost_rows(runs), ablation_rows(runs)
    pruning = {n: r["pruning"] for n, r in runs.items() if "pruning" in r}
    spec = {n: [h for h in r["history"] if "r2" in h] for n, r in runs.items()}
    delays = {n: r["delays"] for n, r in runs.items() if n in ("spatial-d2", "free")}
    results = {
        "settings": next(iter(runs.values()))["settings"],
        "environment": environment(),
        "cost_sweep": costs,
        "pruning": pruning,
        "specialisation": {n: v for n, v in spec.items() if v},
        "delays": delays,
        "ablation": ablation,
    }
    return results


def write_report(out: Path) -> dict:
    """``results.json``, ``results.md`` and the figures from the runs recorded in ``out``."""
    results = report(out)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    figures(results, out)
    (out / "results.md").write_text(markdown(results) + "\n")
    return results


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        spikingjelly = version("spikingjelly")
    except PackageNotFoundError:
        spikingjelly = "unknown"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spikingjelly": spikingjelly,
        "sj_spatial": sj_spatial.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": cpu_model(),
    }


def markdown(results: dict) -> str:
    """The tables of ``results`` as markdown."""
    parts = []
    cost_header = ["run", "cost", "strength", "test acc", "modularity", "clustering (/null)"]
    cost_header += ["wiring efficiency", "mean length"]
    parts.append(
        "**Wiring cost sweep (Fig. 5)**\n\n"
        + _table(
            cost_header,
            [
                [
                    r["run"],
                    r["cost"],
                    f"{r['strength']:g}",
                    _fmt(r["test_acc"]),
                    _fmt(r["modularity"]),
                    _fmt(r["clustering"]),
                    _fmt(r["wiring_efficiency"]),
                    _fmt(r["mean_length"]),
                ]
                for r in results["cost_sweep"]
            ],
        )
    )
    for name, curves in results["pruning"].items():
        rows = []
        for method, points in curves.items():
            rows += [
                [
                    method,
                    f"{p['fraction']:g}",
                    _fmt(p["pruned_fraction"], 4),
                    _fmt(p["test_acc"]),
                    _fmt(p.get("modularity")),
                    _fmt(p.get("clustering")),
                ]
                for p in points
            ]
        header = ["pruned by", "fraction", "pruned (actual)", "test acc", "modularity"]
        header.append("clustering (/null)")
        parts.append(f"**Pruning `{name}` (Fig. 6)**\n\n" + _table(header, rows))
    spec_rows = []
    for name, hist in results["specialisation"].items():
        first, last = hist[0], hist[-1]
        spec_rows.append(
            [
                name,
                f"{_fmt(first['r2'])} ({_fmt(first['r2_null'])})",
                f"{_fmt(last['r2'])} ({_fmt(last['r2_null'])} ± {_fmt(last['r2_null_std'])})",
                " ".join(_fmt(h["r2"], 2) for h in hist),
            ]
        )
    parts.append(
        "**Specialisation R² (Fig. 2A)**\n\n"
        + _table(
            ["run", "R² start (shuffled)", "R² end (shuffled ± sd)", "R² per epoch 0..E"], spec_rows
        )
    )
    delay_rows = [
        [
            name,
            _fmt(d["weighted_mean"], 2),
            _fmt(d["unweighted_mean"], 2),
            _fmt(d["clamped_fraction"]),
            _fmt(d["weighted_counts"][0] / max(sum(d["weighted_counts"]), 1e-12)),
        ]
        for name, d in results["delays"].items()
    ]
    parts.append(
        "**Recurrent delays after training (Fig. 4B)**\n\n"
        + _table(
            [
                "run",
                "\\|w\\|-weighted mean delay (steps)",
                "mean delay",
                "share at max_delay",
                "share of \\|w\\| below 0.5 steps",
            ],
            delay_rows,
        )
    )
    parts.append(
        "**Ablation (Fig. 7)**\n\n"
        + _table(
            ["variant", "trainable parameters", "of which timing", "test acc (last)", "best"],
            [
                [
                    r["variant"],
                    r["trainable_parameters"],
                    r["timing_parameters"],
                    _fmt(r["test_acc"]),
                    _fmt(r["best_test_acc"]),
                ]
                for r in results["ablation"]
            ],
        )
    )
    return "\n\n".join(parts)


# ----------------------------------------------------------------- figures
FIGURES = (
    "fig5_wiring_cost.png",
    "fig6_pruning.png",
    "fig2a_specialisation.png",
    "fig4b_delays.png",
    "fig7_ablation.png",
)


def figures(results: dict, out: Path) -> None:
    """The five PNGs of the module docstring."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    _fig_costs(plt, results["cost_sweep"], out / FIGURES[0])
    _fig_pruning(plt, results["pruning"], out / FIGURES[1])
    _fig_specialisation(plt, results["specialisation"], out / FIGURES[2])
    _fig_delays(plt, results["delays"], out / FIGURES[3])
    _fig_ablation(plt, results["ablation"], out / FIGURES[4])


def _fig_costs(plt, rows, path) -> None:
    keys = ("modularity", "wiring_efficiency", "test_acc", "mean_length")
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, key in zip(axes, keys, strict=True):
        for cost, style in (("distance", "o-"), ("L1", "s--")):
            pts = [r for r in rows if r["cost"] == cost]
            ax.plot([r["strength"] for r in pts], [r[key] for r in pts], style, label=cost)
        base = [r for r in rows if r["cost"] == "none"]
        if base:
            ax.axhline(base[0][key], color="grey", lw=1, ls=":", label="no cost")
        ax.set(xscale="log", xlabel="cost strength", title=key.replace("_", " "))
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fig_pruning(plt, pruning, path) -> None:
    keys = ("test_acc", "modularity", "clustering")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    shown = [n for n in ("spatial-d2", PRUNE_REFERENCE) if n in pruning] or list(pruning)[:2]
    for ax, key in zip(axes, keys, strict=True):
        for name in shown:
            for method, style in (("distance", "o-"), ("magnitude", "s--")):
                pts = pruning[name][method]
                ax.plot(
                    [p["fraction"] for p in pts],
                    [p.get(key, math.nan) for p in pts],
                    style,
                    label=f"{name}, by {method}",
                )
        ax.set(xlabel="fraction of recurrent synapses pruned", title=key.replace("_", " "))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fig_specialisation(plt, spec, path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, hist in spec.items():
        main = name == "spatial-d2"
        epochs = [h["epoch"] for h in hist]
        line = ax.plot(epochs, [h["r2"] for h in hist], lw=2 if main else 0.8, label=name)[0]
        if main:
            null = np.array([h["r2_null"] for h in hist])
            std = np.array([h["r2_null_std"] for h in hist])
            ax.fill_between(epochs, null - std, null + std, color=line.get_color(), alpha=0.2)
            ax.plot(epochs, null, ":", color=line.get_color(), label=f"{name}, shuffled")
    ax.set(xlabel="epoch", ylabel="specialisation R²")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fig_delays(plt, delays, path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, d in delays.items():
        counts = np.asarray(d["weighted_counts"])
        edges = np.asarray(d["edges"])
        density = counts / max(counts.sum(), 1e-12)
        ax.stairs(density, edges, label=f"{name} (mean {d['weighted_mean']:.1f})")
    ax.set(xlabel="recurrent delay (time steps)", ylabel="share of sum |w|")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fig_ablation(plt, rows, path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in rows:
        ax.plot(r["trainable_parameters"], r["test_acc"], "o")
        ax.annotate(r["run"], (r["trainable_parameters"], r["test_acc"]), fontsize=7)
    ax.set(xlabel="trainable parameters", ylabel="test accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = make_parser().parse_args(argv)
    if args.quick:
        apply_quick(args)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        chosen = configs(args.strengths or STRENGTHS)
        if args.only is not None:
            unknown = set(args.only) - {c.name for c in chosen}
            if unknown:
                raise SystemExit(f"--only: unknown runs {sorted(unknown)}")
            chosen = [c for c in chosen if c.name in args.only]
        data = shd_splits(None, args.dt, args.duration, args.limit, seed=args.seed)
        settings = {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("only", "no_report", "report_only")
        }
        settings["command"] = " ".join(["python benchmarks/structure.py", *argv])
        for config in chosen:
            train_one(config, args, data, settings)
    if not args.no_report:
        print(markdown(write_report(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
