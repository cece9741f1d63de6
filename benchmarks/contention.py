"""The main job on a busy machine: wall time beside other processes, and where it goes.

``jobs``: the wall time of ``sj-spatial train --epochs E`` (the built-in data, the job's
defaults otherwise) in situations a user meets, in interleaved rounds so that every ratio
comes from one run under the same conditions:

- ``idle``: nothing else runs; ``idle, 1 thread``: the same with one thread
  (``OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1``);
- ``1 busy``: one other process keeps one core busy (a pure-Python spin loop);
- ``3 busy`` and ``3 busy, 1 thread``: three such processes, default threads and one;
- ``torch busy``: another experiment on the machine: a process that multiplies matrices
  with torch at its default thread count (its OpenMP threads spin between products);
- ``2 jobs``: two main jobs at once (the wall time of each; fair share is 2x idle).

``profile``: the time of the main job's training step and of its kernels (torch's
profiler: the fused recurrence forward and backward, whose backward holds the weight and
fraction reductions, the input and readout layers' BLAS products), idle and beside three
busy processes, at the default thread count and at one thread.

Writes ``contention.json`` and ``contention.md`` into ``--out``.

    python benchmarks/contention.py jobs --rounds 2 --out benchmarks/results/contention-DATE
    python benchmarks/contention.py profile --out ...
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_layers import machine_info

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: ``name: (busy processes, extra environment, jobs at once)``; a busy process is a
#: spin loop (an int) or a torch job (:data:`TORCH_JOB`).
SITUATIONS = {
    "idle": (0, {}, 1),
    "idle, 1 thread": (0, ONE_THREAD, 1),
    "1 busy": (1, {}, 1),
    "3 busy": (3, {}, 1),
    "3 busy, 1 thread": (3, ONE_THREAD, 1),
    "torch busy": ("torch", {}, 1),
    "2 jobs": (0, {}, 2),
}
SPIN = "while True: pass"
TORCH_JOB = "import torch\na = torch.rand(1500, 1500)\nwhile True:\n    a @ a\n"


@contextlib.contextmanager
def busy(count: int | str):
    """``count`` processes that keep a core busy each (``"torch"``: one torch job), for the
    duration of the block."""
    codes = [TORCH_JOB] if count == "torch" else [SPIN] * count
    spinners = [subprocess.Popen([sys.executable, "-c", code]) for code in codes]
    try:
        time.sleep(2.0 if count == "torch" else 0.5 if count else 0)  # started and busy
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def job_command(logdir: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "sj_spatial.cli", "train", "--epochs", str(epochs)] + [
        "--quiet",
        "--logdir",
        str(logdir),
    ]


def run_jobs(situation: str, epochs: int, tmp: Path) -> list[float]:
    """Wall seconds of each job of ``situation`` (one, or two at once)."""
    spinners, env, jobs = SITUATIONS[situation]
    environment = {**os.environ, **env}
    with busy(spinners):
        start = time.perf_counter()
        procs = []
        for i in range(jobs):
            logdir = Path(tempfile.mkdtemp(dir=tmp)) / f"run{i}"
            procs.append(
                subprocess.Popen(
                    job_command(logdir, epochs),
                    env=environment,
                    cwd=tmp,  # sj_spatial from the environment, not from a checkout's folder
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        walls = []
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"{situation}: the job failed: {err.strip()[-500:]}")
            walls.append(time.perf_counter() - start)
    return walls


def jobs(args) -> dict:
    """Interleaved rounds of every situation; the walls and their ratios to idle."""
    walls: dict[str, list[float]] = {name: [] for name in args.situations}
    with tempfile.TemporaryDirectory() as tmp:
        run_jobs("idle", 1, Path(tmp))  # warm caches: data, numba
        for r in range(args.rounds):
            for name in args.situations:
                walls[name] += run_jobs(name, args.epochs, Path(tmp))
                print(f"round {r + 1}: {name}: {walls[name][-1]:.1f} s", flush=True)
    return {"epochs": args.epochs, "rounds": args.rounds, "walls": walls}


def profile_step(threads: int, steps: int) -> dict:
    """Milliseconds per training step of the main job's model, and per op (profiler)."""
    code = f"""
import json, time, torch
torch.set_num_threads({threads})
from torch.profiler import ProfilerActivity, profile
from spikingjelly.activation_based import functional
from sj_spatial.data import collate, shd_splits
from sj_spatial.train_job.config import TrainConfig
from sj_spatial.train_job.recipe import build_model, build_optimizers, train_step
config = TrainConfig()
torch.manual_seed(0)
(train, _) = shd_splits(None, config.dt, config.duration, None, seed=0)
x, y = collate([train[i] for i in range(config.batch_size)])
model = build_model(config)
optimizers = build_optimizers(model, config)
def step():
    train_step(model, x, y, optimizers, None, config.clip)
    functional.reset_net(model)
for _ in range(3):
    step()
walls = []
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range({steps}):
        start = time.perf_counter()
        step()
        walls.append(time.perf_counter() - start)
ops = {{e.key: e.cpu_time_total / 1e3 / {steps} for e in prof.key_averages()}}
print(json.dumps({{"walls": walls, "ops": ops}}))
"""
    env = {**os.environ, **(ONE_THREAD if threads == 1 else {})}
    with tempfile.TemporaryDirectory() as tmp:  # sj_spatial from the environment
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout.splitlines()[-1])


#: The profiler's names of the ops reported, and their labels.
OPS = {
    "LIFRecurrence": "fused recurrence, forward",
    "LIFRecurrenceBackward": "fused recurrence, backward (+ weight and fraction grads)",
    "aten::addmm": "input and readout layers, forward (BLAS)",
    "aten::mm": "input and readout layers, backward (BLAS)",
}


def profile(args) -> dict:
    results = {}
    for spinners in (0, 3):
        for threads in (torch.get_num_threads(), 1):
            key = f"{spinners} busy, {threads} thread{'s' if threads > 1 else ''}"
            with busy(spinners):
                measured = profile_step(threads, args.steps)
            results[key] = {
                "step_ms": 1e3 * statistics.median(measured["walls"]),
                "ops_ms": {label: measured["ops"].get(op) for op, label in OPS.items()},
            }
            print(key, f"{results[key]['step_ms']:.0f} ms/step", flush=True)
    return {"steps": args.steps, "profile": results}


def markdown(results: dict) -> str:
    lines = []
    if "walls" in results:
        walls = results["walls"]
        idle = statistics.median(walls["idle"]) if walls.get("idle") else None
        lines += [
            f"`sj-spatial train --epochs {results['epochs']}`, {results['rounds']} "
            "interleaved rounds (median wall; ratio to idle in the same run)",
            "",
            "| situation | wall (s), each run | median (s) | against idle |",
            "|---|---|---|---|",
        ]
        for name, values in walls.items():
            median = statistics.median(values)
            ratio = f"{median / idle:.2f}x" if idle else "-"
            runs = ", ".join(f"{v:.1f}" for v in values)
            lines.append(f"| {name} | {runs} | {median:.1f} | {ratio} |")
        one = walls.get("3 busy, 1 thread")
        if one and walls.get("3 busy"):
            ratio = statistics.median(walls["3 busy"]) / statistics.median(one)
            lines += ["", f"3 busy: default threads / one thread = {ratio:.2f}"]
    if "profile" in results:
        lines += [
            "",
            f"Training step of the main job's model (batch 64, T 100), median of "
            f"{results['steps']} steps; ops: profiler CPU time per step (ms)",
            "",
            "| situation | step (ms) | " + " | ".join(OPS.values()) + " |",
            "|---|---|" + "---|" * len(OPS),
        ]
        for key, row in results["profile"].items():
            ops = " | ".join("-" if v is None else f"{v:.1f}" for v in row["ops_ms"].values())
            lines.append(f"| {key} | {row['step_ms']:.0f} | {ops} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("jobs", "profile"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--situations", nargs="+", default=list(SITUATIONS), choices=SITUATIONS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results = jobs(args) if args.mode == "jobs" else profile(args)
    results["machine"] = {**machine_info(torch.device("cpu")), "started": started}
    path = args.out / f"contention-{args.mode}.json"
    path.write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (args.out / f"contention-{args.mode}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
