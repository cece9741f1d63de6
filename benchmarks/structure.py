"""The paper's structural findings and its parameter ablation, on SHD-format data: the
built-in data by default, or a data root such as the spoken digits
(``benchmarks/spoken_digits.py``).

Every configuration trains the paper's recurrent model (700 -> Linear -> recurrent
ExponentialSynapse + LIF with position-derived delays -> Linear -> leaky readout,
:func:`sj_spatial.models.recurrent_shd_model`) with BPTT, Adam (weights ``--lr``,
positions ``--position-lr``), cosine decay per epoch and gradient clipping, as
``sj-spatial train`` does (with ``--data-root``, also its augmentation), and adds its
record, run ``<name>-s<seed>``, to ``records.jsonl`` (``benchmarks/records.py``: history
per epoch, final metrics, delay histogram, pruning curves) and writes
``runs/<name>-s<seed>.pt`` (the state_dict: the trained model, for analyses beyond the
report; the report and the figures read only the records). ``report`` (run at the end, or
alone with ``--report-only``) reads every record, averages the seeds of each
configuration (95 % Student-t intervals of the means; Welch's intervals for differences)
and writes ``results.json``, ``results.md`` and five figures:

- ``fig5_wiring_cost.png``: modularity, wiring efficiency, accuracy and mean synapse
  length against the strength of a wiring cost ``strength * sum |w| d**power`` on the
  recurrent weights, distance-weighted (``power=1``, distances divided by their mean) and
  plain L1 (``power=0``), with the no-cost run as reference; and the graph metrics
  against test accuracy, where the two costs compare at matched accuracy (the paper's
  Fig. 5).
- ``fig6_pruning.png``: test accuracy, modularity and clustering after zeroing the
  longest (``prune_by_distance``) or weakest (``prune_by_magnitude``) fraction of the
  recurrent synapses of a trained model, without retraining (Fig. 6).
- ``fig2a_specialisation.png``: function aligned with place after every epoch:
  ``topology.specialization_r2`` of the input weights against the hidden positions, in
  standard deviations above its level for shuffled positions, and the correlation of
  the distance between two neurons with the similarity of their input weights (Fig. 2A).
- ``fig4b_delays.png``: ``|w|``-weighted histograms of the recurrent delays after training,
  spatial against free per-synapse delays (Fig. 4B).
- ``fig7_ablation.png``: test accuracy against trainable parameters: no delays, free
  per-synapse delays, spatial delays in D = 1..4, fixed random positions (Fig. 7).

    python benchmarks/structure.py                        # every run, then the report
    python benchmarks/structure.py --only spatial-d2 free --no-report
    python benchmarks/structure.py --data-root DIR --seed 1 --only spatial-d2 --no-report
    python benchmarks/structure.py --report-only
    python benchmarks/structure.py --quick --out /tmp/q    # tiny smoke run (seconds)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
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
from spoken_digits_targets import difference_interval
from torch import nn
from torch.utils.data import Dataset
from yinyang import mean_interval

import sj_spatial
from sj_spatial import WiringCost, param_groups, prune_by_distance, prune_by_magnitude, topology
from sj_spatial.baselines import FreeDelayRecurrentContainer
from sj_spatial.data import AugmentedSHD, SHDFormatError, collate, shd_splits
from sj_spatial.models import recurrent_shd_model
from sj_spatial.train_job import Callback, CosineDecay, EpochRecord, fit
from sj_spatial.train_job.recipe import run_epoch

DEFAULT_OUT = Path(__file__).parent / "results" / "structure-2026-11-28"
FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9)
PRUNERS = {"distance": prune_by_distance, "magnitude": prune_by_magnitude}
STRENGTHS = (1e-5, 1e-4, 1e-3)
QUICK_STRENGTHS = (1e-3,)
NULLS = 5  # shuffled graphs per topology.analyze call
R2_SHUFFLES = 20  # position permutations for the chance levels of the specialisation measures
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
    add("--data-root", type=Path, default=None, help="SHD files to train on (default: built-in)")
    add(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the paper's augmentation of the training set (default: on with --data-root)",
    )
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
    add("--seed", type=int, default=0, help="seed of the weights, positions and data order")
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


def datasets(args) -> tuple[Dataset, Dataset]:
    """``(train, test)``: the SHD files of ``--data-root`` (default: the built-in data),
    the training split wrapped in the paper's augmentation (``AugmentedSHD``, as
    ``sj-spatial train --augment``) when ``args.augment`` (by default on with a data root).
    """
    try:
        splits = shd_splits(args.data_root, args.dt, args.duration, args.limit, seed=args.seed)
    except (SHDFormatError, FileNotFoundError) as exc:
        raise SystemExit(f"--data-root: {exc}") from None
    train_set, test_set = splits
    augment = args.data_root is not None if args.augment is None else args.augment
    if augment:
        train_set = AugmentedSHD(train_set, seed=args.seed)
    return train_set, test_set


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
    """Two measures of function aligned with place, each with its mean / std over shuffled
    positions (the chance level): the R^2 of input weights -> hidden positions
    (``topology.specialization_r2``) and the distance-similarity correlation
    (:func:`distance_correlation`)."""
    if not has_positions(model):
        return {}
    w = model[0].weight.detach().numpy()
    pos = model[1].positions.positions.detach().numpy()
    rng = np.random.default_rng(seed)
    nulls = [topology.specialization_r2(w, rng.permutation(pos)) for _ in range(R2_SHUFFLES)]
    similarity = input_similarity(w)
    mantel = [
        distance_correlation(similarity, p)
        for p in [pos, *(rng.permutation(pos) for _ in range(R2_SHUFFLES))]
    ]
    return {
        "r2": topology.specialization_r2(w, pos),
        "r2_null": float(np.mean(nulls)),
        "r2_null_std": float(np.std(nulls)),
        "mantel": mantel[0],
        "mantel_null": float(np.mean(mantel[1:])),
        "mantel_null_std": float(np.std(mantel[1:])),
    }


def input_similarity(input_weight: np.ndarray) -> np.ndarray:
    """Cosine similarity of the input weights of every pair of neurons ``[N, N]``."""
    norm = np.linalg.norm(input_weight, axis=1, keepdims=True)
    unit = input_weight / np.where(norm > 0, norm, 1.0)
    return unit @ unit.T


def distance_correlation(similarity: np.ndarray, positions: np.ndarray) -> float:
    """Pearson correlation, over the pairs of distinct neurons, of their distance and the
    similarity of their inputs (a Mantel statistic). Below 0: neighbours listen to the
    same inputs. Unlike the in-sample R^2, it has no parameters to fit, so its shuffled
    level stays near 0 however many inputs there are.
    """
    i, j = np.triu_indices(len(positions), k=1)
    dist = np.linalg.norm(positions[i] - positions[j], axis=1)
    return float(np.corrcoef(dist, similarity[i, j])[0, 1])


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
        if isinstance(train_set, AugmentedSHD):
            train_set.set_epoch(epoch)  # this epoch's shifts and blends
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
        "run": run_name(config, args.seed),
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
    torch.save(model.state_dict(), models / f"{record['run']}.pt")
    return record


def run_name(config: Config, seed: int) -> str:
    """The name of one seed's run of a configuration: ``<config>-s<seed>``."""
    return f"{config.name}-s{seed}"


def _short(model, seed: int) -> dict[str, float]:
    metrics = structure(model, seed)
    return {k: metrics[k] for k in REPORTED + REPORTED_SPATIAL if k in metrics}


# ------------------------------------------------------------------ report
#: Metrics of the cost sweep (Fig. 5): graph metrics, then those of the wiring.
SWEEP_KEYS = ("test_acc", *REPORTED, *REPORTED_SPATIAL)
#: Metrics compared between the two costs at matched accuracy, and in the pruning curves.
MATCHED_KEYS = ("modularity", "clustering", "wiring_efficiency", "mean_length")
PRUNE_KEYS = ("test_acc", "modularity", "clustering")
#: Specialisation over training (Fig. 2A): the measures of :func:`specialisation`, and
#: each one's distance above its shuffled level in shuffled standard deviations.
SPEC_KEYS = ("r2", "r2_null", "r2_null_std", "r2_sd_above")
SPEC_KEYS += ("mantel", "mantel_null", "mantel_null_std", "mantel_sd_above")


def load_runs(out: Path) -> dict[str, list[dict]]:
    """The records in ``out`` by configuration name (sorted), each list by seed."""
    groups: dict[str, list[dict]] = {}
    for record in sorted(read_records(out), key=lambda r: (r["config"]["name"], r["seed"])):
        groups.setdefault(record["config"]["name"], []).append(record)
    return dict(sorted(groups.items()))


def summarize(rows: list[dict], keys) -> dict:
    """For each key: the mean over ``rows`` (NaN-free values; NaN if none), and under
    ``<key>_ci`` the 95 % Student-t interval of that mean (None for one value)."""
    out = {}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None and not math.isnan(r[key])]
        out[key] = statistics.fmean(values) if values else math.nan
        out[f"{key}_ci"] = mean_interval(values)
    return out


def _spatial_2d(record: dict) -> bool:
    c = record["config"]
    return c["kind"] == "spatial" and not c["fixed_positions"] and c["dim"] == 2


def final_metrics(records: list[dict]) -> list[dict]:
    """Per seed: the test accuracy and the ``topology.analyze`` metrics after training."""
    return [{"test_acc": r["test_acc"], **r["structure"]} for r in records]


def cost_rows(runs: dict[str, list[dict]]) -> list[dict]:
    """Fig. 5 rows: the no-cost configuration, then each cost type by strength; the
    metrics of the trained recurrent layer averaged over seeds."""
    rows = []
    for name, records in runs.items():
        c = records[0]["config"]
        if not _spatial_2d(records[0]) or (c["power"] is None and name != "spatial-d2"):
            continue
        cost = "none" if c["power"] is None else ("distance" if c["power"] == 1 else "L1")
        rows.append(
            {
                "run": name,
                "cost": cost,
                "strength": c["strength"],
                "seeds": [r["seed"] for r in records],
                **summarize(final_metrics(records), SWEEP_KEYS),
            }
        )
    order = {"none": 0, "distance": 1, "L1": 2}
    return sorted(rows, key=lambda row: (order[row["cost"]], row["strength"]))


def matched_rows(runs: dict[str, list[dict]], costs: list[dict]) -> list[dict]:
    """The two costs at matched accuracy: each distance-cost strength against the L1
    strength of the nearest mean test accuracy, with Welch's 95 % intervals of the
    differences (distance minus L1) over seeds."""
    distance = [r for r in costs if r["cost"] == "distance"]
    plain = [r for r in costs if r["cost"] == "L1"]
    rows = []
    for d in distance:
        if not plain:
            break
        l1 = min(plain, key=lambda r: abs(r["test_acc"] - d["test_acc"]))
        a, b = final_metrics(runs[d["run"]]), final_metrics(runs[l1["run"]])
        row = {"distance": d["run"], "l1": l1["run"]}
        for key in ("test_acc", *MATCHED_KEYS):
            row[key] = d[key] - l1[key]
            row[f"{key}_ci"] = difference_interval([x[key] for x in a], [x[key] for x in b])
        rows.append(row)
    return rows


def pruning_rows(records: list[dict]) -> dict[str, list[dict]]:
    """The pruning curves of one configuration averaged over seeds, by method; and under
    ``"distance - magnitude"`` the paired differences (same seed's model) at each fraction.
    """
    methods = records[0]["pruning"]
    curves: dict[str, list[dict]] = {}
    for method in methods:
        curves[method] = [
            {
                "fraction": points[0]["fraction"],
                "pruned_fraction": points[0]["pruned_fraction"],
                "pruned": points[0]["pruned"],
                **summarize(points, PRUNE_KEYS),
            }
            for points in zip(*(r["pruning"][method] for r in records), strict=True)
        ]
    if set(PRUNERS) <= set(methods):
        diffs = []
        for i, row in enumerate(curves["distance"]):
            paired = [
                {
                    k: r["pruning"]["distance"][i].get(k, math.nan)
                    - r["pruning"]["magnitude"][i].get(k, math.nan)
                    for k in PRUNE_KEYS
                }
                for r in records
            ]
            diffs.append({"fraction": row["fraction"], **summarize(paired, PRUNE_KEYS)})
        curves["distance - magnitude"] = diffs
    return curves


def specialisation_rows(records: list[dict]) -> list[dict]:
    """Specialisation per epoch averaged over seeds (epochs with the measures only), with
    each measure's distance above its shuffled level in shuffled standard deviations."""
    histories = [[h for h in r["history"] if "r2" in h] for r in records]
    rows = []
    for points in zip(*histories, strict=True):
        points = [
            {**h, "r2_sd_above": _sd_above(h, "r2"), "mantel_sd_above": _sd_above(h, "mantel")}
            for h in points
        ]
        rows.append({"epoch": points[0]["epoch"], **summarize(points, SPEC_KEYS)})
    return rows


def _sd_above(row: dict, key: str) -> float:
    """``(row[key] - its shuffled mean) / its shuffled sd``; NaN without them."""
    sd = row.get(f"{key}_null_std")
    return (row[key] - row[f"{key}_null"]) / sd if sd else math.nan


def delay_rows(records: list[dict]) -> dict:
    """The |w|-weighted delay histogram summed over seeds, and its statistics averaged."""
    counts = np.sum([r["delays"]["weighted_counts"] for r in records], axis=0)
    keys = ("weighted_mean", "unweighted_mean", "clamped_fraction")
    return {
        "edges": records[0]["delays"]["edges"],
        "weighted_counts": counts.tolist(),
        **{k: statistics.fmean(r["delays"][k] for r in records) for k in keys},
    }


def ablation_rows(runs: dict[str, list[dict]]) -> list[dict]:
    """Fig. 7 rows: accuracy (averaged over seeds) and trainable parameters of the delay
    variants."""
    labels = {
        "none": "no delays (delay_scale 0)",
        "free": "free per-synapse delays",
        "fixed-d2": "fixed random positions, D=2",
    }
    rows = []
    for name, records in runs.items():
        c, first = records[0]["config"], records[0]
        if c["power"] is not None:
            continue
        timing = first["trainable_parameters"] - expected_parameters(
            Config("x", kind="none"), _hidden(first)
        )
        best = [
            {"best_test_acc": max(h.get("test_acc", 0.0) for h in r["history"])} for r in records
        ]
        rows.append(
            {
                "run": name,
                "variant": labels.get(name, f"learned positions, D={c['dim']}"),
                "seeds": [r["seed"] for r in records],
                "trainable_parameters": first["trainable_parameters"],
                "timing_parameters": timing,
                **summarize(records, ("test_acc",)),
                **summarize(best, ("best_test_acc",)),
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
    costs = cost_rows(runs)
    settings = dict(next(iter(runs.values()))[0]["settings"])
    settings.pop("seed", None)
    settings.pop("command", None)
    return {
        "settings": settings,
        "seeds": sorted({r["seed"] for records in runs.values() for r in records}),
        "commands": sorted(
            {r["settings"].get("command", "") for rs in runs.values() for r in rs} - {""}
        ),
        "environment": environment(),
        "cost_sweep": costs,
        "matched": matched_rows(runs, costs),
        "pruning": {n: pruning_rows(rs) for n, rs in runs.items() if "pruning" in rs[0]},
        "specialisation": {
            n: specialisation_rows(rs) for n, rs in runs.items() if "r2" in rs[0]["history"][0]
        },
        "delays": {n: delay_rows(rs) for n, rs in runs.items() if n in ("spatial-d2", "free")},
        "ablation": ablation_rows(runs),
    }


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


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _cell(row: dict, key: str, digits: int = 3) -> str:
    """``row[key]``, with its 95 % interval ``row[key + "_ci"]`` when there is one."""
    ci = row.get(f"{key}_ci")
    value = _fmt(row.get(key, math.nan), digits)
    return value if not ci else f"{value} ({_fmt(ci[0], digits)} to {_fmt(ci[1], digits)})"


def _every(hist: list[dict], key: str, most: int = 12) -> str:
    """``key`` of the epochs of ``hist``, every k-th epoch once there are more than
    ``most`` (then prefixed with the epochs shown)."""
    step = math.ceil(len(hist) / most)
    shown = hist[::step]
    values = " ".join(_fmt(h[key], 2) for h in shown)
    return values if step == 1 else f"epochs 0, {step}, ..., {shown[-1]['epoch']}: {values}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def markdown(results: dict) -> str:
    """The tables of ``results`` as markdown; with more than one seed a cell reads
    ``mean (95 % interval of the mean)``."""
    seeds = results.get("seeds", [0])
    parts = [
        f"Seeds: {', '.join(str(s) for s in seeds)}; with more than one, a cell is the mean "
        "(95 % interval of the mean)."
    ]
    cost_header = ["run", "cost", "strength", "test acc", "modularity", "clustering (/null)"]
    cost_header += ["wiring efficiency", "mean length"]
    keys = ("test_acc", "modularity", "clustering", "wiring_efficiency", "mean_length")
    parts.append(
        "**Wiring cost sweep (Fig. 5)**\n\n"
        + _table(
            cost_header,
            [
                [r["run"], r["cost"], f"{r['strength']:g}", *(_cell(r, k) for k in keys)]
                for r in results["cost_sweep"]
            ],
        )
    )
    if results.get("matched"):
        header = ["distance cost", "L1 of nearest accuracy", "test acc", "modularity"]
        header += ["clustering (/null)", "wiring efficiency", "mean length"]
        rows = [
            [m["distance"], m["l1"], *(_cell(m, k) for k in ("test_acc", *MATCHED_KEYS))]
            for m in results["matched"]
        ]
        parts.append(
            "**Distance cost minus L1 at matched accuracy (Fig. 5; Welch's 95 % intervals)**\n\n"
            + _table(header, rows)
        )
    for name, curves in results["pruning"].items():
        rows = []
        for method in PRUNERS:
            rows += [
                [
                    method,
                    f"{p['fraction']:g}",
                    _fmt(p["pruned_fraction"], 4),
                    *(_cell(p, k) for k in PRUNE_KEYS),
                ]
                for p in curves[method]
            ]
        rows += [
            ["distance - magnitude", f"{p['fraction']:g}", "", *(_cell(p, k) for k in PRUNE_KEYS)]
            for p in curves.get("distance - magnitude", [])
            if p["fraction"] > 0
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
                _cell(last, "r2_sd_above", 1),
                *(
                    [
                        f"{_cell(last, 'mantel')} ({_fmt(last['mantel_null'])} "
                        f"± {_fmt(last['mantel_null_std'])})",
                        _cell(last, "mantel_sd_above", 1),
                    ]
                    if not math.isnan(last["mantel"])
                    else ["n/a", "n/a"]
                ),
                _every(hist, "r2"),
            ]
        )
    parts.append(
        "**Specialisation (Fig. 2A)**\n\n"
        + _table(
            [
                "run",
                "R² start (shuffled)",
                "R² end (shuffled ± sd)",
                "R² end, sd above shuffled",
                "distance-similarity r end (shuffled ± sd)",
                "r end, sd above shuffled",
                "R² per epoch 0..E",
            ],
            spec_rows,
        )
    )
    delay_rows_ = [
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
            delay_rows_,
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
                    _cell(r, "test_acc"),
                    _cell(r, "best_test_acc"),
                ]
                for r in results["ablation"]
            ],
        )
    )
    return "\n\n".join(parts)


# ------------------------------------------------- the tables RESULTS.md copies
def _mean_ci(row: dict, key: str, digits: int = 3, sign: bool = False) -> str:
    """``row[key]`` and its interval as ``0.882 (0.848-0.917)``; with ``sign``, a
    difference: ``+0.028 (-0.001 to 0.057)``."""
    value = f"{row[key]:+.{digits}f}" if sign else f"{row[key]:.{digits}f}"
    ci = row.get(f"{key}_ci")
    if not ci:
        return value
    joint = " to " if sign or ci[0] < 0 else "-"
    return f"{value} ({ci[0]:.{digits}f}{joint}{ci[1]:.{digits}f})"


def _label(row: dict) -> str:
    return "no cost" if row["cost"] == "none" else f"{row['cost']} {row['strength']:g}"


def sweep_table(results: dict) -> str:
    """The cost sweep (Fig. 5): a row per configuration, mean (95 % interval)."""
    header = ["cost", "strength", "test acc", "modularity", "clustering (/null)"]
    header += ["wiring efficiency", "mean length"]
    rows = []
    for r in results["cost_sweep"]:
        cells = [
            r["cost"],
            f"{r['strength']:g}",
            _mean_ci(r, "test_acc"),
            _mean_ci(r, "modularity"),
        ]
        cells += [_mean_ci(r, "clustering", 2), _mean_ci(r, "wiring_efficiency")]
        cells.append(_mean_ci(r, "mean_length", 2))
        rows.append(cells)
    return _table(header, rows) + "\n"


def matched_table(results: dict) -> str:
    """Distance cost minus L1 at matched accuracy, with Welch's intervals."""
    strength = {r["run"]: r["strength"] for r in results["cost_sweep"]}
    header = ["distance cost", "L1", "test acc", "modularity", "clustering (/null)"]
    header += ["wiring efficiency", "mean length"]
    rows = []
    for m in results["matched"]:
        cells = [f"{strength[m['distance']]:g}", f"{strength[m['l1']]:g}"]
        cells += [_mean_ci(m, k, 3, sign=True) for k in ("test_acc", "modularity")]
        cells.append(_mean_ci(m, "clustering", 2, sign=True))
        cells.append(_mean_ci(m, "wiring_efficiency", 3, sign=True))
        cells.append(_mean_ci(m, "mean_length", 2, sign=True))
        rows.append(cells)
    return _table(header, rows) + "\n"


def pruning_table(results: dict, names, fractions=(0.0, 0.2, 0.4, 0.6, 0.8)) -> str:
    """Test accuracy after pruning (Fig. 6) of the configurations ``names`` by length and
    by magnitude, and the paired difference at 20 %."""
    labels = {r["run"]: _label(r) for r in results["cost_sweep"]}
    header = ["model", "pruned by", *(f"{f:g}" for f in fractions)]
    header.append("length minus magnitude at 0.2")
    rows = []
    for name in names:
        curves = results["pruning"][name]
        at = {p["fraction"]: p for p in curves["distance - magnitude"]}
        for method, word in (("distance", "length"), ("magnitude", "magnitude")):
            points = {p["fraction"]: p for p in curves[method]}
            cells = [labels[name], word, *(f"{points[f]['test_acc']:.3f}" for f in fractions)]
            cells.append(
                _mean_ci(at[0.2], "test_acc", 3, sign=True) if method == "distance" else ""
            )
            rows.append(cells)
    return _table(header, rows) + "\n"


def specialisation_table(results: dict, epochs=(0, 10)) -> str:
    """Specialisation (Fig. 2A) per configuration: the R² at the end and the
    distance-similarity correlation at ``epochs`` and at the end."""
    header = ["run", "R² end (shuffled)"]
    header += [f"distance-similarity r: epoch {e}" for e in epochs]
    header += ["last epoch (shuffled ± sd)", "last epoch, sd above shuffled"]
    rows = []
    for row in results["cost_sweep"]:
        hist = {h["epoch"]: h for h in results["specialisation"][row["run"]]}
        last = hist[max(hist)]
        cells = [_label(row), f"{last['r2']:.3f} ({last['r2_null']:.3f})"]
        cells += [f"{hist[e]['mantel']:.3f}" for e in epochs]
        cells.append(
            f"{last['mantel']:.3f} ({last['mantel_null']:.3f} ± {last['mantel_null_std']:.3f})"
        )
        cells.append(_mean_ci(last, "mantel_sd_above", 1))
        rows.append(cells)
    return _table(header, rows) + "\n"


# ----------------------------------------------------------------- figures
FIGURES = (
    "fig5_wiring_cost.png",
    "fig6_pruning.png",
    "fig2a_specialisation.png",
    "fig4b_delays.png",
    "fig7_ablation.png",
)


def figures(results: dict, out: Path) -> None:
    """The five PNGs of the module docstring; error bars: 95 % intervals over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    _fig_costs(plt, results["cost_sweep"], out / FIGURES[0])
    _fig_pruning(plt, results["pruning"], out / FIGURES[1])
    _fig_specialisation(plt, results["specialisation"], out / FIGURES[2])
    _fig_delays(plt, results["delays"], out / FIGURES[3])
    _fig_ablation(plt, results["ablation"], out / FIGURES[4])


def _err(rows: list[dict], key: str) -> np.ndarray:
    """Error bars ``[2, len(rows)]`` from the rows' 95 % intervals (0 where there is none)."""
    bars = np.zeros((2, len(rows)))
    for i, row in enumerate(rows):
        ci = row.get(f"{key}_ci")
        if ci:
            bars[:, i] = row[key] - ci[0], ci[1] - row[key]
    return bars


def _fig_costs(plt, rows, path) -> None:
    """Top: metrics against the cost's strength; bottom: against test accuracy, where the
    two costs compare at matched accuracy."""
    top = ("modularity", "wiring_efficiency", "test_acc", "mean_length")
    bottom = ("modularity", "clustering", "wiring_efficiency", "mean_length")
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.4))
    base = [r for r in rows if r["cost"] == "none"]
    for i, (ax, key) in enumerate(zip(axes.flat, top + bottom, strict=True)):
        x_key = "strength" if i < 4 else "test_acc"
        for cost, style in (("distance", "o-"), ("L1", "s--")):
            pts = [r for r in rows if r["cost"] == cost]
            x = [r[x_key] for r in pts]
            xerr = _err(pts, "test_acc") if x_key == "test_acc" else None
            ax.errorbar(
                x, [r[key] for r in pts], _err(pts, key), xerr, style, capsize=3, label=cost
            )
        if base and x_key == "strength":
            ax.axhline(base[0][key], color="grey", lw=1, ls=":", label="no cost")
        elif base:
            ax.errorbar(
                [base[0]["test_acc"]],
                [base[0][key]],
                _err(base, key),
                _err(base, "test_acc"),
                "k^",
                capsize=3,
                label="no cost",
            )
        ax.set(xlabel="cost strength" if i < 4 else "test accuracy", title=key.replace("_", " "))
        if i < 4:
            strengths = sorted({r["strength"] for r in rows if r["cost"] != "none"})
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(strengths, [f"{s:g}" for s in strengths])
    axes[0, 0].legend()
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fig_pruning(plt, pruning, path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    shown = [n for n in ("spatial-d2", PRUNE_REFERENCE) if n in pruning] or list(pruning)[:2]
    for ax, key in zip(axes, PRUNE_KEYS, strict=True):
        for name in shown:
            for method, style in (("distance", "o-"), ("magnitude", "s--")):
                pts = pruning[name][method]
                ax.errorbar(
                    [p["fraction"] for p in pts],
                    [p.get(key, math.nan) for p in pts],
                    _err(pts, key),
                    fmt=style,
                    capsize=3,
                    label=f"{name}, by {method}",
                )
        ax.set(xlabel="fraction of recurrent synapses pruned", title=key.replace("_", " "))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fig_specialisation(plt, spec, path) -> None:
    """Left: the R^2 in shuffled standard deviations above its shuffled level; right: the
    distance-similarity correlation against its shuffled level; bands: 95 % intervals of
    the no-cost run and of the reference cost run."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, hist in spec.items():
        main = name == "spatial-d2"
        epochs = [h["epoch"] for h in hist]
        for ax, key in zip(axes, ("r2_sd_above", "mantel"), strict=True):
            values = np.array([h.get(key, math.nan) for h in hist], dtype=float)
            line = ax.plot(epochs, values, lw=2 if main else 0.8, label=name)[0]
            bars = _err(hist, key)
            if bars.any() and name in ("spatial-d2", PRUNE_REFERENCE):  # two bands stay legible
                ax.fill_between(
                    epochs, values - bars[0], values + bars[1], color=line.get_color(), alpha=0.15
                )
            if main and key == "mantel":
                null = [h.get("mantel_null", math.nan) for h in hist]
                ax.plot(epochs, null, ":", color=line.get_color(), label=f"{name}, shuffled")
    axes[0].axhline(0, color="grey", lw=1, ls=":")
    axes[0].set(xlabel="epoch", ylabel="R², sd above shuffled positions")
    axes[1].set(xlabel="epoch", ylabel="r(distance, input similarity)")
    axes[1].legend(fontsize=6, ncol=2)
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
        ax.errorbar(
            [r["trainable_parameters"]], [r["test_acc"]], _err([r], "test_acc"), fmt="o", capsize=3
        )
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
    if args.augment is None:
        args.augment = args.data_root is not None
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        chosen = configs(args.strengths or STRENGTHS)
        if args.only is not None:
            unknown = set(args.only) - {c.name for c in chosen}
            if unknown:
                raise SystemExit(f"--only: unknown runs {sorted(unknown)}")
            chosen = [c for c in chosen if c.name in args.only]
        data = datasets(args)
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
