"""Spoken digits: one table of models trained on the same speaker-held-out data set.

The data is a folder in SHD's layout, e.g. the one ``benchmarks/spoken_digits.py`` builds.
Rows (``--model``):

- ``gru``: a non-spiking GRU (700 -> 128) on the same binned spike counts, with a linear
  readout of every state averaged over time (a readout of the last state alone learned
  far more slowly: 0.62-0.67 after 20 epochs at lr 1e-3).
- ``rec-none``, ``rec-fixed``, ``rec-d2``, ``rec-d3``, ``rec-free``: the paper's recurrent
  model (:func:`sj_spatial.models.recurrent_shd_model`, 128 hidden) with recurrent
  synapses of one time step (no delays), with delays of fixed random 2-D positions, of
  learned 2-D / 3-D positions, and with free per-synapse delays
  (:class:`sj_spatial.baselines.FreeDelayRecurrentContainer`, initialised uniform in
  ``[0, 2 * delay_scale]`` steps, the spread of the 2-D positions' first delays).

These rows train with ``sj-spatial train``'s recipe (:mod:`sj_spatial.train_job.recipe`:
Adam, positions or free delays at ``--position-lr``, cosine decay, gradient clipping, the
cross-entropy of the time-averaged readout) under the options given here, whose defaults
are ``sj-spatial train --data-root``'s.

- ``tutorial01``: ``tutorials/01_spatialize_sj_shd_model.py`` run as it is (spikingjelly's
  feed-forward SHD model, 2 x 256 LIF, with and without spatial delays); two rows.
- ``tutorial02``: ``tutorials/02_dcls_to_positions.py`` run as it is (SNN-delays' DCLS
  model against the same model with learned positions); two rows.
  ``tutorial02-positions`` trains only its positions model, with ``--positions-hidden H``
  neurons per hidden layer (``dcls-positions-d2-wide`` when H differs from DCLS's 256: for
  as many trainable parameters as DCLS, H = 386).

Each (row, training, seed) adds its record, run ``<row>-<training>-s<seed>``, to
``records.jsonl`` in ``--out`` (``benchmarks/records.py``: test accuracy after the last
epoch, the best epoch's, per epoch, trainable parameters, seconds per training epoch, the
configuration and the machine); ``--summarize`` writes ``summary.md`` from every record
there, a line per row and training (learning rate, augmentation, epochs, and for the rows
with delays ``--max-delay`` and ``--delay-scale``): mean +- std, the Student-t 95 %
interval of the mean, parameters, time per epoch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from bench_layers import machine_info
from records import append_record, read_records
from seeding import draw_like_positions
from torch import nn
from yinyang import count_params, mean_interval

from sj_spatial.baselines import FreeDelayRecurrentContainer
from sj_spatial.distributed import World
from sj_spatial.models import recurrent_shd_model
from sj_spatial.train_job import Callback, CosineDecay, EpochRecord, fit
from sj_spatial.train_job.config import DATA_ROOT_DEFAULTS, TrainConfig
from sj_spatial.train_job.recipe import (
    build_optimizers,
    datasets,
    evaluation_loader,
    train_batches,
)

ROOT = Path(__file__).resolve().parent.parent
RECURRENT = ("rec-none", "rec-fixed", "rec-d2", "rec-d3", "rec-free")
#: Each tutorial's script, its models' rows, and its extra arguments (tutorial 02 stops
#: before fitting positions to DCLS's delays, which no row reports).
TUTORIALS = {
    "tutorial01": (
        ROOT / "tutorials" / "01_spatialize_sj_shd_model.py",
        {"SpikingJelly (no delays)": "ff-none", "spatialized (positions)": "ff-d2"},
        (),
    ),
    "tutorial02": (
        ROOT / "tutorials" / "02_dcls_to_positions.py",
        {"DCLS": "dcls", "positions": "dcls-positions-d2"},
        ("--no-fit",),
    ),
    "tutorial02-positions": (
        ROOT / "tutorials" / "02_dcls_to_positions.py",
        {"positions": "dcls-positions-d2"},
        ("--no-fit", "--only", "positions"),
    ),
}
MODELS = ("gru", *RECURRENT, *TUTORIALS)
#: Table rows in order, with their descriptions.
ROWS = {
    "gru": "GRU 128, non-spiking (binned counts)",
    "rec-none": "recurrent LIF 128, no delays",
    "rec-fixed": "recurrent LIF 128, fixed random 2-D positions",
    "rec-d2": "recurrent LIF 128, learned 2-D positions",
    "rec-d3": "recurrent LIF 128, learned 3-D positions",
    "rec-free": "recurrent LIF 128, free per-synapse delays",
    "ff-none": "tutorial 01: SpikingJelly FF 2 x 256, no delays",
    "ff-d2": "tutorial 01: the same, spatialized (2-D positions)",
    "dcls": "tutorial 02: DCLS 2 x 256 (per-synapse delays)",
    "dcls-positions-d2": "tutorial 02: the same, learned 2-D positions",
    "dcls-positions-d2-wide": "tutorial 02: learned 2-D positions, more hidden neurons",
}


class GRUClassifier(nn.Module):
    """GRU over ``[T, N, in]`` counts with a linear readout of every state,
    ``[T, N, classes]``: the recipe's loss averages it over time, as the spiking models'."""

    def __init__(self, in_features: int = 700, hidden: int = 128, classes: int = 20):
        super().__init__()
        self.gru = nn.GRU(in_features, hidden)
        self.readout = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(x)
        return self.readout(states)


def build_model(name: str, config: TrainConfig) -> nn.Module:
    """The model of a row (``gru`` or one of :data:`RECURRENT`) for ``config``."""
    if name == "gru":
        return GRUClassifier(hidden=config.hidden)
    dim = 3 if name == "rec-d3" else 2
    max_delay = 0 if name == "rec-none" else config.max_delay
    model = recurrent_shd_model(
        dt=config.dt,
        hidden=config.hidden,
        dim=dim,
        max_delay=max_delay,
        delay_scale=config.delay_scale,
        backend=config.backend,
    )
    if name in ("rec-none", "rec-fixed"):
        model[1].positions.requires_grad_(False)
    if name == "rec-free":
        draw_like_positions(config.hidden)  # the draws of the records (seeding.py)
        model[1] = FreeDelayRecurrentContainer(
            model[1].sub_module,
            config.hidden,
            bias=False,
            step_mode="m",
            max_delay=config.max_delay,
            init_max=2 * config.delay_scale,
            backend=config.backend,
        )
    return model


def train_row(name: str, config: TrainConfig, log=print) -> dict:
    """Train row ``name`` with the recipe of ``config`` through the job's loop
    (:func:`sj_spatial.train_job.loop`); returns its record."""
    world = World()
    torch.manual_seed(config.seed)
    (train_set, test_set), source = datasets(config, world)
    model = build_model(name, config)
    optimizers = build_optimizers(model, config)

    class Log(Callback):
        def on_epoch_end(self, record: EpochRecord) -> None:
            log(
                f"{name} seed {config.seed} epoch {record.epoch}: train {record.train_acc:.3f} "
                f"test {record.test_acc:.3f} ({record.seconds:.0f} s)"
            )

    records = fit(
        model,
        optimizers,
        train_batches(train_set, config, world),
        evaluation_loader(test_set, config, world),
        epochs=config.epochs,
        callbacks=[CosineDecay(optimizers, config.epochs), Log()],
        clip=config.clip or None,
    )
    test_acc = [r.test_acc for r in records]
    seconds = [r.seconds for r in records]
    return {
        "row": name,
        "training": training(
            config.lr,
            config.augment,
            config.epochs,
            None if name in ("gru", "rec-none") else (config.max_delay, config.delay_scale),
        ),
        "seed": config.seed,
        "test_acc": test_acc[-1],
        "best_test_acc": max(test_acc),
        "test_acc_per_epoch": test_acc,
        "params": count_params(model),
        "seconds_per_epoch": statistics.fmean(seconds),
        "data": source,
        "config": {k: str(v) for k, v in asdict(config).items()},
    }


def run_tutorial(name: str, args: argparse.Namespace, seed: int, log=print) -> list[dict]:
    """Run a tutorial script as it is; one record per model it trains."""
    script, rows, extra = TUTORIALS[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        command = [sys.executable, str(script), "--data-root", str(args.data_root)]
        command += ["--seed", str(seed), "--json", str(out), "--device", "cpu", *extra]
        if args.epochs is not None:
            command += ["--epochs", str(args.epochs)]
        if args.limit is not None:
            command += ["--samples", str(args.limit)]
        if args.positions_hidden is not None:
            command += ["--positions-hidden", str(args.positions_hidden)]
        log(" ".join(command))
        subprocess.run(command, check=True)
        results = json.loads(out.read_text())
    settings = results["settings"]
    training = f"the tutorial's: lr {settings['lr']:g}, {settings['epochs']} epochs"
    records = []
    for model, result in results["models"].items():
        row, how = rows[model], training
        wide = settings.get("positions_hidden", settings["hidden"])
        if model == "positions" and wide != settings["hidden"]:
            row, how = "dcls-positions-d2-wide", f"{training}, 2 x {wide} hidden"
        records.append(
            {
                "row": row,
                "training": how,
                "seed": seed,
                "test_acc": result["test_accuracy"],
                "best_test_acc": max(result["test_accuracy_per_epoch"]),
                "test_acc_per_epoch": result["test_accuracy_per_epoch"],
                "params": result["trainable_parameters"],
                "seconds_per_epoch": result["seconds_per_epoch"],
                "data": str(args.data_root),
                "config": {**settings, "script": script.name},
            }
        )
    return records


def training(lr: float, augment: bool, epochs: int, delays: tuple[int, float] | None = None) -> str:
    """How a recipe row trained, in words: its learning rate, augmentation, epochs and,
    for a row with delays, ``delays``: the longest delay (steps) and the delay scale."""
    words = f"lr {lr:g}, {'augmented' if augment else 'not augmented'}, {epochs} epochs"
    return words + (f", max delay {delays[0]}, scale {delays[1]:g}" if delays else "")


def run_name(record: dict) -> str:
    """``<row>-<training>-s<seed>``, the training in a file-name form: the record's ``run``
    (the name of its JSON file before records)."""
    slug = record["training"].replace("the tutorial's: ", "").replace(", ", "-")
    slug = slug.replace("not augmented", "noaug").replace("augmented", "aug").replace(" ", "")
    return f"{record['row']}-{slug}-s{record['seed']}"


def summary_table(records: list[dict]) -> str:
    """The summary of ``records``: one row per table row and training, in :data:`ROWS`'s
    order."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        runs.setdefault((record["row"], record["training"]), []).append(record)
    lines = [
        "| model | training | trainable params | s / epoch | seeds | test acc, last epoch "
        "(mean ± std) | 95 % CI of the mean | best epoch (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = list(ROWS)
    for row, how in sorted(runs, key=lambda key: (order.index(key[0]), key[1])):
        label = ROWS[row]
        records = sorted(runs[row, how], key=lambda r: r["seed"])
        acc = [100 * r["test_acc"] for r in records]
        best = [100 * r["best_test_acc"] for r in records]
        spread = f" ± {statistics.stdev(acc):.1f}" if len(acc) > 1 else ""
        ci = mean_interval(acc)
        lines.append(
            f"| {label} | {how} | {records[0]['params']:,} | "
            f"{statistics.fmean(r['seconds_per_epoch'] for r in records):.1f} | "
            f"{len(acc)} ({', '.join(str(r['seed']) for r in records)}) | "
            f"{statistics.fmean(acc):.1f}{spread} | "
            f"{f'{ci[0]:.1f}-{ci[1]:.1f}' if ci else '-'} | {statistics.fmean(best):.1f} |"
        )
    return "\n".join(lines) + "\n"


def summarize(out: Path) -> str:
    """Write ``summary.md`` of every record in ``out``; returns its text."""
    text = summary_table(read_records(out))
    (out / "summary.md").write_text(text)
    return text


def make_parser() -> argparse.ArgumentParser:
    defaults = {**asdict(TrainConfig()), **DATA_ROOT_DEFAULTS}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--model", choices=MODELS, help="the row(s) to train")
    parser.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0..4")
    parser.add_argument("--data-root", type=Path, help="folder with shd_train.h5, shd_test.h5")
    parser.add_argument("--out", type=Path, required=True, help="folder of the records")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"default {defaults['epochs']} (tutorials: their own)",
    )
    parser.add_argument("--lr", type=float, default=defaults["lr"])
    parser.add_argument("--position-lr", type=float, default=defaults["position_lr"])
    parser.add_argument(
        "--max-delay", type=int, default=defaults["max_delay"], help="longest delay in steps"
    )
    parser.add_argument(
        "--delay-scale",
        type=float,
        default=defaults["delay_scale"],
        help="time steps per unit of distance",
    )
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=defaults["augment"],
        help="shift + blend augmentation (recipe rows)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="samples per split (default: all; for trials)"
    )
    parser.add_argument(
        "--positions-hidden",
        type=int,
        default=None,
        help="tutorial02*: hidden neurons per layer of the positions model (default: as DCLS's)",
    )
    parser.add_argument("--summarize", action="store_true", help="only write summary.md")
    return parser


def parse_seeds(text: str) -> list[int]:
    if ".." in text:
        first, last = text.split("..")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        print(summarize(args.out))
        return
    if args.model is None or args.data_root is None:
        raise SystemExit("--model and --data-root are needed (or --summarize)")
    machine = machine_info(torch.device("cpu"))
    for seed in parse_seeds(args.seeds):
        if args.model in TUTORIALS:
            records = run_tutorial(args.model, args, seed)
        else:
            config = TrainConfig(
                data_root=args.data_root,
                epochs=args.epochs or DATA_ROOT_DEFAULTS["epochs"],
                lr=args.lr,
                position_lr=args.position_lr,
                max_delay=args.max_delay,
                delay_scale=args.delay_scale,
                augment=args.augment,
                seed=seed,
                limit=args.limit,
            )
            records = [train_row(args.model, config)]
        for record in records:
            record = {"script": "spoken_digits_compare.py", "run": run_name(record), **record}
            record["machine"] = machine
            append_record(args.out, record)
            print(
                f"{record['row']} seed {seed}: test {record['test_acc']:.3f} (best "
                f"{record['best_test_acc']:.3f}), {record['params']:,} params, "
                f"{record['seconds_per_epoch']:.1f} s/epoch"
            )
    print(summarize(args.out))


if __name__ == "__main__":
    main()
