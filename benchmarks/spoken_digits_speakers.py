"""Spoken digits: test accuracy per held-out speaker of finished ``sj-spatial train`` runs.

Each LOGDIR is a run's folder; its ``checkpoint.pt`` gives the model, the data folder and
the time step, and the data folder's ``build.json`` (``benchmarks/spoken_digits.py``)
names the speakers that ``/extra/speaker`` indexes. Prints one table: a row per speaker,
a column per run. Shows which unheard voices a model generalises to.

    python benchmarks/spoken_digits_speakers.py runs/a runs/b
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from spikingjelly.activation_based import functional
from torch.utils.data import DataLoader

from sj_spatial.data import SHD, collate
from sj_spatial.train_job.checkpoints import CHECKPOINT, load_checkpoint
from sj_spatial.train_job.config import TrainConfig
from sj_spatial.train_job.recipe import build_model


def speaker_names(data_root: Path) -> list[str]:
    """The names ``/extra/speaker`` indexes: ``build.json``'s training, then test speakers."""
    speakers = json.loads((data_root / "build.json").read_text())["speakers"]
    return [s["name"] for s in speakers["train"] + speakers["test"]]


@torch.no_grad()
def predictions(logdir: Path) -> tuple[SHD, np.ndarray, Path]:
    """The test set of a run, the run's predicted class of each of its samples, and the
    run's data folder."""
    saved = load_checkpoint(logdir / CHECKPOINT)
    args = saved["args"]
    config = TrainConfig(
        data_root=Path(args["data_root"]),
        dt=float(args["dt"]),
        duration=float(args["duration"]),
        dim=int(args["dim"]),
        hidden=int(args["hidden"]),
        max_delay=int(args["max_delay"]),
        delay_scale=float(args["delay_scale"]),
    )
    model = build_model(config)
    model.load_state_dict(saved["model"])
    model.eval()
    test = SHD(config.data_root, train=False, dt=config.dt, duration=config.duration)
    out = []
    for x, _ in DataLoader(test, 64, collate_fn=collate):
        out.append(model(x).mean(0).argmax(-1))
        functional.reset_net(model)
    return test, torch.cat(out).numpy(), config.data_root


def per_speaker(logdirs: list[Path]) -> str:
    """A markdown table of test accuracy (%) per speaker (rows) and run (columns), and of
    all speakers; the runs must share their data folder."""
    runs = [predictions(logdir) for logdir in logdirs]
    test, _, data_root = runs[0]
    for logdir, (_, _, root) in zip(logdirs, runs, strict=True):
        if root != data_root:
            raise SystemExit(f"logdirs: {logdir} ran on {root}, not {data_root}")
    if test.speakers is None:
        raise SystemExit(f"{logdirs[0]}: the test file has no /extra/speaker")
    names, index = speaker_names(data_root), sorted(set(test.speakers.tolist()))
    columns = []
    for _, predicted, _ in runs:
        hits = predicted == test.labels
        columns.append({s: 100 * hits[test.speakers == s].mean() for s in index})
        columns[-1]["all"] = 100 * hits.mean()
    lines = [
        "| speaker | " + " | ".join(str(d) for d in logdirs) + " |",
        "|---|" + "---|" * len(logdirs),
    ]
    for s in index:
        cells = " | ".join(f"{c[s]:.1f}" for c in columns)
        lines.append(f"| {names[s]} | {cells} |")
    lines.append("| all | " + " | ".join(f"{c['all']:.1f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdirs", type=Path, nargs="+", help="folders of finished runs")
    args = parser.parse_args(argv)
    for logdir in args.logdirs:
        if not (logdir / CHECKPOINT).is_file():
            parser.error(f"logdirs: no {CHECKPOINT} in {logdir}")
    print(per_speaker(args.logdirs), end="")


if __name__ == "__main__":
    main()
