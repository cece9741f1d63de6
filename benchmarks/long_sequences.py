"""Peak memory and time of one training step of the paper's recurrent model vs sequence length.

Model: ``recurrent_shd_model`` (700 -> 128 recurrent LIF with spatial delays -> 20 leaky
readouts, dt 1 ms, ``max_delay`` 25), loss = cross-entropy of the time-mean readout, on
random spikes ``[T, batch, 700]``. One training step = forward + backward with

- ``full``: plain BPTT over all ``T`` steps, the graph of the whole sequence held at once;
- ``tbptt-C``: :func:`sj_spatial.truncated_bptt` with ``chunk = C`` (a no-grad pass, then
  chunk-by-chunk backward; the graph held covers ``C`` steps; gradient truncated);
- ``ckpt-C``: :func:`sj_spatial.checkpointed_bptt` with ``chunk = C`` (the same, but the
  memories at every chunk boundary are stored and each chunk recomputed: exact gradient).

Every configuration runs in a fresh subprocess. On CPU the peak is ``ru_maxrss`` (the
process's high-water resident set) after the step minus the resident set just before it
(after imports, model, input and a short warm-up step, all built so that the high-water
mark before the step stays close to the resident set: ``slack`` in the JSON);
on CUDA it is ``torch.cuda.max_memory_allocated`` above what was allocated before the step.
The input itself (``T * batch * 700`` floats) is in the baseline for every method.
Writes ``long_sequences.json`` and ``long_sequences.md`` into ``--out``; rows already in
that JSON with the same settings are kept unless measured again (``--methods`` adds some).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
METHODS = ("full", "tbptt", "ckpt")
DEFAULTS = {
    "cpu": {"lengths": [250, 500, 1000, 2000], "batch": 16, "chunks": [100, 250], "repeats": 1},
    "cuda": {"lengths": [250, 500, 1000, 2000, 4000], "batch": 256, "chunks": [100, 250]},
    "quick": {"lengths": [50, 100], "batch": 2, "chunks": [20], "repeats": 1},
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--device", default="cpu", help="cpu or cuda[:i]")
    add("--lengths", type=int, nargs="+", help="sequence lengths T (time steps)")
    add("--batch", type=int)
    add("--chunks", type=int, nargs="+", help="chunk lengths of tbptt / ckpt (time steps)")
    add("--methods", nargs="+", choices=METHODS, default=["full", "tbptt"])
    add("--repeats", type=int, default=None, help="fresh processes per configuration")
    add("--max-delay", type=int, default=25)
    add("--hidden", type=int, default=128)
    add("--density", type=float, default=0.05, help="input spike probability per step")
    add("--backend", default="torch", choices=("torch", "cupy"))
    add("--threads", type=int, default=2, help="torch / OMP threads of each run")
    add("--quick", action="store_true", help="tiny sizes, to check that the script runs")
    add("--out", type=Path, default=None)
    add("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _rss_bytes() -> int:
    """The resident set now (Linux), else the high-water mark."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return _maxrss_bytes()
    return pages * os.sysconf("SC_PAGE_SIZE")


def worker(config: dict) -> dict:
    """One training step of one configuration in this process; returns its measurements."""
    from spikingjelly.activation_based import functional

    from sj_spatial import checkpointed_bptt, truncated_bptt
    from sj_spatial.models import recurrent_shd_model

    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    device = torch.device(config["device"])
    model = recurrent_shd_model(
        hidden=config["hidden"],
        dt=1e-3,
        max_delay=config["max_delay"],
        delay_scale=3.0,
        backend=config["backend"],
    ).to(device)
    chunk = config["chunk"]
    method = config.get("method", "full" if chunk is None else "tbptt")
    chunked = {"tbptt": truncated_bptt, "ckpt": checkpointed_bptt}.get(method)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        def loss_fn(out):
            return F.cross_entropy(out.mean(0), y)

        model.zero_grad(set_to_none=True)
        if chunked is None:
            functional.reset_net(model)
            loss_fn(model(x)).backward()
        else:
            chunked(model, x, loss_fn, chunk)
        functional.reset_net(model)

    def data(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (t, config["batch"], 700)
        # In place: no temporary larger than x raises the high-water mark before the step.
        x = torch.empty(shape, device=device).bernoulli_(config["density"])
        return x, torch.randint(0, 20, (config["batch"],), device=device)

    # Kernels compiled and loaded on a few steps, too few to raise the high-water mark.
    warm_x, warm_y = data(4)
    functional.reset_net(model)
    F.cross_entropy(model(warm_x).mean(0), warm_y).backward()
    if chunked is not None:
        chunked(model, warm_x, lambda out: F.cross_entropy(out.mean(0), warm_y), 2)
    functional.reset_net(model)
    x, y = data(config["T"])
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _rss_bytes()
        slack = max(_maxrss_bytes() - before, 0)
    t0 = time.perf_counter()
    step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
        slack = 0
    else:
        peak = _maxrss_bytes() - before
    return {
        "seconds": seconds,
        "peak_bytes": peak,
        "slack_bytes": slack,  # a peak below this would not show: it is a lower bound then
        "input_bytes": x.numel() * x.element_size(),
    }


def run_config(config: dict) -> dict:
    """``worker(config)`` in a fresh interpreter with ``threads`` OMP threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(config["threads"]), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def merge(path: Path, settings: dict, rows: list[dict]) -> list[dict]:
    """``rows`` after the rows already in ``path`` that have the same settings and were not
    measured again, ordered by T and method."""
    if not path.exists():
        return rows
    old = json.loads(path.read_text())
    same = ("batch", "max_delay", "hidden", "density", "backend", "threads")
    if any(old["settings"].get(k) != settings[k] for k in same):
        return rows
    new = {(r["T"], r["method"]) for r in rows}
    kept = [r for r in old["results"] if (r["T"], r["method"]) not in new]
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(
        kept + rows, key=lambda r: (r["T"], order[r["method"].split("-")[0]], r["chunk"] or 0)
    )


def summarize(runs: list[dict]) -> dict:
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[0]["error"]}
    return {
        "seconds": statistics.median(r["seconds"] for r in good),
        "peak_bytes": max(r["peak_bytes"] for r in good),
        "slack_bytes": max(r.get("slack_bytes", 0) for r in good),
        "input_bytes": good[0]["input_bytes"],
        "runs": runs,
    }


def machine_info(device: torch.device) -> dict:
    sys.path.insert(0, str(HERE))
    import bench_layers

    info = bench_layers.machine_info(device)
    info["cores_note"] = (
        "shared machine: other processes used the same cores during the run"
        if device.type == "cpu"
        else None
    )
    return info


def markdown(info: dict, settings: dict, rows: list[dict]) -> str:
    unit = "peak RSS above baseline" if info["device"] == "cpu" else "peak CUDA memory"
    lines = [
        "# Long sequences: one training step of the recurrent model vs T",
        "",
        f"- date: {info['date']}; device: {info.get('gpu') or info['cpu']} ({info['device']}), "
        f"{info['cpu_count']} cores, {settings['threads']} threads",
        f"- versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items() if v)}",
        "- model: recurrent_shd_model(700 -> "
        f"{settings['hidden']} recurrent LIF -> 20), dt 1 ms, max_delay {settings['max_delay']}, "
        f"backend {settings['backend']}; batch {settings['batch']}; input spike density "
        f"{settings['density']}; loss = cross-entropy of the time-mean readout",
        f"- memory: {unit}, each configuration in a fresh process (max over "
        f"{settings['repeats']} runs); time: median wall time of the step",
        f"- note: {info['cores_note']}" if info.get("cores_note") else "",
        "- high-water mark above the resident set before the step (a smaller peak would not "
        f"show): at most {max(r.get('slack_bytes', 0) for r in rows) / 2**20:.1f} MB"
        if info["device"] == "cpu"
        else "",
        "",
        "| T | method | peak MB | time (s) | input MB (in baseline) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['T']} | {row['method']} |  |  | error: {row['error']} |")
            continue
        lines.append(
            f"| {row['T']} | {row['method']} | {row['peak_bytes'] / 2**20:.1f} | "
            f"{row['seconds']:.2f} | {row['input_bytes'] / 2**20:.1f} |"
        )
    return "\n".join(line for line in lines if line is not None) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    device = torch.device(args.device)
    defaults = DEFAULTS["quick" if args.quick else device.type]
    lengths = args.lengths or defaults["lengths"]
    chunks = args.chunks or defaults["chunks"]
    settings = {
        "batch": args.batch or defaults["batch"],
        "repeats": args.repeats or defaults.get("repeats", 1),
        "max_delay": args.max_delay,
        "hidden": args.hidden,
        "density": args.density,
        "backend": args.backend,
        "threads": args.threads,
        "lengths": lengths,
        "chunks": chunks,
        "methods": args.methods,
    }
    date = datetime.date.today().isoformat()
    out = args.out or HERE / "results" / f"{device.type}-{date}"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    plan = [(m, c) for m in args.methods for c in ([None] if m == "full" else chunks)]
    for t in lengths:
        for method, chunk in plan:
            config = {k: settings[k] for k in ("batch", "max_delay", "hidden", "density")}
            config.update(
                T=t,
                method=method,
                chunk=chunk,
                device=str(device),
                backend=args.backend,
                threads=args.threads,
            )
            runs = [run_config(config) for _ in range(settings["repeats"])]
            name = method if chunk is None else f"{method}-{chunk}"
            row = {"T": t, "method": name, "chunk": chunk}
            row.update(summarize(runs))
            rows.append(row)
            shown = (
                row.get("error") or f"{row['peak_bytes'] / 2**20:.1f} MB, {row['seconds']:.2f} s"
            )
            print(f"T={t} {row['method']}: {shown}", flush=True)
    info = machine_info(device)
    rows = merge(out / "long_sequences.json", settings, rows)
    (out / "long_sequences.json").write_text(
        json.dumps({"machine": info, "settings": settings, "results": rows}, indent=1) + "\n"
    )
    (out / "long_sequences.md").write_text(markdown(info, settings, rows))
    print(f"wrote {out / 'long_sequences.md'}")


if __name__ == "__main__":
    main()
