"""Forward + backward time and memory of one delayed layer against nn.Linear and DCLS.

Input: spikes ``[T, N, in_features]`` at a given density; loss: ``sum(output)``. Methods:

- ``linear``: ``nn.Linear`` on ``[T * N, in]`` (no delays, the floor).
- ``spatial-cpu``: ``SpatialDelayLinear`` (backend ``'torch'``) on the numba CPU kernels,
  as a user runs it: the event kernels or the gather, whichever the backend picks.
- ``spatial-cpu-gather``: the same layer with the event kernels off (the gather only).
- ``spatial-dense``: the same layer on the dense reference kernel (``backend='torch'`` with
  the CPU kernel switched off, or on CUDA).
- ``spatial-cupy``: the same layer with ``backend='cupy'`` (CUDA only).
- ``dcls``: DCLS ``Dcls1d`` with one learnable position per synapse (``kernel_count=1``,
  version ``'gauss'``) on the input left-padded by its kernel size - 1, as the SNN-delays
  SHD model uses it.

Timings are interleaved (one step of every method per round) so that the ratios come
from one run under the same load. Writes ``results.json``, ``results.md`` and
``time_vs_max_delay.png`` into ``--out``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from sj_spatial import SpatialDelayLinear, backends

METHODS = ("linear", "spatial-cpu", "spatial-cpu-gather", "spatial-dense", "spatial-cupy", "dcls")

#: Defaults per device: (T, batch, max_delay, repeats). T=1000 / batch 256 only on GPU.
DEFAULTS = {
    "cpu": ([100], [16], [25, 64, 250], 5),
    "cuda": ([100, 1000], [16, 256], [25, 64, 250], 10),
    "quick": ([20], [4], [5, 25], 2),
}
#: Default --budget per device: seconds one method may spend on one configuration.
BUDGET_S = {"cpu": 20.0, "cuda": 4.0}


class Skip(Exception):
    """A method that cannot run here; the message says why."""


def _version(module: str, dist: str | None = None) -> str | None:
    try:
        return importlib.metadata.version(dist or module)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:  # noqa: BLE001  (a missing or broken optional package)
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Environment variables that pin which instruction set the CPU kernels of torch, MKL,
#: oneDNN and numba use (their rounding differs between AVX2 and AVX-512 code paths).
ISA_ENVIRONMENT = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "NUMBA_CPU_NAME")


#: What ``dirty`` leaves out: results (which runs rewrite as they finish) and documents.
NOT_CODE = (":(exclude)benchmarks/results", ":(exclude)*.md")


def _checkout(root: Path | None = None) -> dict:
    """sj_spatial's version and, in a git checkout, its commit, whether tracked code
    differs from it (``dirty``) and which files (``changed``; results and documents are
    not code: :data:`NOT_CODE`)."""
    root = Path(__file__).resolve().parents[1] if root is None else root
    info = {"version": _version("sj_spatial", "sj-spatial"), "commit": None, "dirty": None}
    try:
        run = functools.partial(
            subprocess.run, cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
        info["commit"] = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        status = ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE]
        changed = [line[3:] for line in run(status).stdout.splitlines()]
        info.update(dirty=bool(changed), changed=changed)
    except (OSError, subprocess.SubprocessError):
        pass  # not a checkout, or no git
    return info


def numerics_info() -> dict:
    """What decides a CPU run's rounding besides the seed and the library versions: the
    code, the instruction set each library's kernels use, and torch's thread count (which
    the numba kernels follow)."""
    info = {
        "sj_spatial": _checkout(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "environment": {name: os.environ.get(name) for name in ISA_ENVIRONMENT},
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import numba
        from llvmlite import binding

        info["numba_cpu"] = numba.config.CPU_NAME or binding.get_host_cpu_name()
    except ImportError:
        info["numba_cpu"] = None
    return info


def machine_info(device: torch.device) -> dict:
    """Where and with what a benchmark ran: machine, date, library versions, threads, and
    what else decides the rounding (:func:`numerics_info`)."""
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": torch.multiprocessing.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {
            "torch": torch.__version__,
            "spikingjelly": _version("spikingjelly"),
            "numba": _version("numba"),
            "dcls": _version("DCLS", "dcls"),
            "cupy": _version("cupy") if device.type == "cuda" else None,
        },
        "device": str(device),
        "numerics": numerics_info(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["versions"]["cuda"] = torch.version.cuda
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory(step: Callable[[], None], device: torch.device) -> tuple[int, int | None]:
    """One call of ``step``: bytes of the distinct storages autograd saves for backward,
    and (CUDA only) the peak allocated memory above what was allocated before the call."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    peak = None
    if device.type == "cuda":
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    return sum(storages.values()), peak


def measure(
    steps: dict[str, Callable[[], None]],
    device: torch.device,
    repeats: int,
    budget_s: float,
) -> dict[str, dict]:
    """Time each step after one warm-up call, interleaving the methods round by round.

    A method whose warm-up took long runs fewer rounds (at least 1) so that it spends
    about ``budget_s`` seconds. Returns per method: median and all times in ms, and memory.
    """
    results: dict[str, dict] = {}
    rounds: dict[str, int] = {}
    for name, step in list(steps.items()):
        try:
            start = time.perf_counter()
            step()  # compiles, allocates, fills caches
            sync(device)
            first = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001  (report any failure of one method, go on)
            results[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
            del steps[name]
            continue
        rounds[name] = max(1, min(repeats, int(budget_s / max(first, 1e-9))))
        results[name] = {"times_ms": []}
    for r in range(max(rounds.values(), default=0)):
        for name, step in steps.items():
            if r < rounds[name]:
                sync(device)
                start = time.perf_counter()
                step()
                sync(device)
                results[name]["times_ms"].append((time.perf_counter() - start) * 1e3)
    for name, step in steps.items():
        res = results[name]
        res["time_ms"] = statistics.median(res["times_ms"])
        res["saved_bytes"], res["peak_bytes"] = memory(step, device)
    return results


def spikes(shape, density: float, device: torch.device, requires_grad: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(shape, generator=gen) < density).float().to(device)
    return x.requires_grad_(requires_grad)


def _zero_grad(module: nn.Module, x: torch.Tensor) -> None:
    for p in module.parameters():
        p.grad = None
    x.grad = None


def linear_step(x: torch.Tensor, out_features: int) -> Callable[[], None]:
    layer = nn.Linear(x.shape[-1], out_features).to(x.device)

    def step() -> None:
        _zero_grad(layer, x)
        layer(x.reshape(-1, x.shape[-1])).sum().backward()

    return step


def spatial_step(x: torch.Tensor, out_features: int, max_delay: int, method: str):
    """SpatialDelayLinear; positions U(-1, 1)^2 and delay_scale max_delay / 2, so that the
    delays spread over 0 .. max_delay (those past it are clamped)."""
    device = x.device
    backend, cpu_kernel = "torch", "dense"
    if method == "spatial-cupy":
        if device.type != "cuda":
            raise Skip("CUDA only")
        backend = "cupy"
    elif method in ("spatial-cpu", "spatial-cpu-gather"):
        if device.type != "cpu":
            raise Skip("CPU only")
        if backends.numba_missing():
            raise Skip(backends.numba_missing())
        cpu_kernel = "numba"
    try:
        layer = SpatialDelayLinear(
            x.shape[-1],
            out_features,
            step_mode="m",
            max_delay=max_delay,
            delay_scale=max(max_delay, 1) / 2,
            backend=backend,
        ).to(device)
    except ValueError as exc:  # e.g. backend='cupy' without CuPy
        raise Skip(str(exc)) from exc
    layer.cpu_kernel = cpu_kernel
    if method == "spatial-cpu-gather":
        layer.cpu_path = "gather"

    def step() -> None:
        _zero_grad(layer, x)
        layer.reset()
        layer(x).sum().backward()

    return step


def dcls_kernel_size(max_delay: int) -> int:
    """DCLS centres its kernel: the odd size closest to max_delay + 1 from above."""
    return max_delay + 1 if max_delay % 2 == 0 else max_delay + 2


def dcls_step(x: torch.Tensor, out_features: int, max_delay: int) -> Callable[[], None]:
    try:
        from DCLS.construct.modules import Dcls1d
    except ImportError as exc:
        raise Skip(f"dcls is not installed ({exc})") from exc
    size = dcls_kernel_size(max_delay)
    conv = Dcls1d(
        x.shape[-1], out_features, kernel_count=1, dilated_kernel_size=size, version="gauss"
    ).to(x.device)

    def step() -> None:
        _zero_grad(conv, x)
        # [T, N, in] -> [N, in, T], left-padded so that the output keeps T causal steps.
        y = conv(F.pad(x.permute(1, 2, 0), (size - 1, 0)))
        y.sum().backward()

    return step


def make_steps(methods, x, out_features, max_delay) -> tuple[dict, dict]:
    """Steps to time and skip notes, for the methods that apply to x's device."""
    steps, notes = {}, {}
    for method in methods:
        try:
            if method == "linear":
                steps[method] = linear_step(x, out_features)
            elif method == "dcls":
                steps[method] = dcls_step(x, out_features, max_delay)
            else:
                steps[method] = spatial_step(x, out_features, max_delay, method)
        except Skip as exc:
            notes[method] = str(exc)
    return steps, notes


def ratio(value, base) -> float | None:
    return None if value is None or not base else value / base


def markdown(info: dict, args: dict, rows: list[dict], title: str, base: str) -> str:
    """A markdown report: the machine, then one table row per configuration and method,
    with its time relative to the method ``base``."""
    lines = [
        f"# {title}",
        "",
        f"- date: {info['date']}; device: {info.get('gpu', info['cpu'])} ({info['device']})",
        f"- threads: {info['threads']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v),
        "- settings: " + ", ".join(f"{k}={v}" for k, v in args.items()),
        "",
        f"| T | batch | max_delay | method | time (ms) | x {base} | saved MB | peak MB | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mb = [
            None if r.get(k) is None else f"{r[k] / 2**20:.1f}"
            for k in ("saved_bytes", "peak_bytes")
        ]
        t = r.get("time_ms")
        rel = r.get(f"x_{base}")
        lines.append(
            f"| {r['T']} | {r['batch']} | {r['max_delay']} | {r['method']} | "
            f"{'' if t is None else f'{t:.1f}'} | {'' if rel is None else f'{rel:.2f}'} | "
            f"{mb[0] or ''} | {mb[1] or ''} | {r.get('skipped', '')} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Time against max_delay per method, one panel per (T, batch), log y."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing; no plot written")
        return
    configs = sorted({(r["T"], r["batch"]) for r in rows})
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4), squeeze=False)
    for ax, (t, batch) in zip(axes[0], configs, strict=True):
        here = [r for r in rows if (r["T"], r["batch"]) == (t, batch) and "time_ms" in r]
        for method in dict.fromkeys(r["method"] for r in here):
            points = sorted((r["max_delay"], r["time_ms"]) for r in here if r["method"] == method)
            ax.plot(*zip(*points, strict=True), marker="o", label=method)
        ax.set(xlabel="max_delay (time steps)", ylabel="fwd+bwd time (ms)", yscale="log")
        ax.set_title(f"T={t}, batch={batch}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_parser(description: str = __doc__) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description.splitlines()[0])
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="default: cuda when available, else cpu",
    )
    p.add_argument("--T", type=int, nargs="+", help="time steps (default per device)")
    p.add_argument("--batch", type=int, nargs="+", help="batch sizes (default per device)")
    p.add_argument("--max-delay", type=int, nargs="+", help="max delays (default per device)")
    p.add_argument("--density", type=float, default=0.05, help="input spike density")
    p.add_argument("--repeats", type=int, help="timed rounds (default per device)")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds one method may spend on one configuration (fewer rounds if slow); "
        "default 20 on CPU, 4 on CUDA",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=None, help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    p.add_argument("--only", nargs="+", default=None, help="subset of the methods")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill device-dependent defaults and apply --threads."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible to torch")
    t, batch, delays, repeats = DEFAULTS["quick" if args.quick else args.device]
    args.T = args.T or t
    args.batch = args.batch or batch
    args.max_delay = args.max_delay or delays
    args.repeats = args.repeats or repeats
    args.budget = args.budget or BUDGET_S[args.device]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out is None:
        day = datetime.date.today().isoformat()
        args.out = Path(__file__).parent / "results" / f"{args.device}-{day}"
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def main(argv=None) -> None:
    """Run the layer benchmark and write results.json, results.md, time_vs_max_delay.png."""
    parser = make_parser()
    parser.add_argument("--in-features", type=int, default=700)
    parser.add_argument("--out-features", type=int, default=256)
    parser.add_argument(
        "--input-grad",
        action="store_true",
        help="the input requires grad too (a hidden layer, not the first)",
    )
    args = resolve(parser.parse_args(argv))
    methods = [m for m in METHODS if args.only is None or m in args.only]
    device = torch.device(args.device)
    info = machine_info(device)
    settings = {
        "in_features": args.in_features,
        "out_features": args.out_features,
        "density": args.density,
        "input_grad": args.input_grad,
        "repeats": args.repeats,
        "budget_s": args.budget,
        "dtype": "float32",
        "loss": "sum(output)",
    }
    rows = []
    for t in args.T:
        for batch in args.batch:
            x = spikes((t, batch, args.in_features), args.density, device, args.input_grad)
            linear = None
            for max_delay in args.max_delay:
                steps, notes = make_steps(methods, x, args.out_features, max_delay)
                if linear is not None:
                    steps.pop("linear", None)  # independent of max_delay: timed once
                results = measure(steps, device, args.repeats, args.budget)
                if "linear" in results and "time_ms" in results["linear"]:
                    linear = results["linear"]
                for method in methods:
                    res = linear if method == "linear" and linear else results.get(method)
                    if res is None:
                        res = {"skipped": notes.get(method, "not run")}
                    row = {"T": t, "batch": batch, "max_delay": max_delay, "method": method}
                    row.update(res)
                    if linear and "time_ms" in res:
                        row["x_linear"] = ratio(res["time_ms"], linear["time_ms"])
                    rows.append(row)
                    shown = f"{res['time_ms']:.1f} ms" if "time_ms" in res else res["skipped"]
                    print(
                        f"T={t} batch={batch} max_delay={max_delay} {method}: {shown}", flush=True
                    )
    write(args.out, "results", info, settings, rows, "Delayed layer: forward + backward", "linear")
    title = f"{args.in_features} -> {args.out_features}, spike density {args.density}"
    plot(rows, args.out / "time_vs_max_delay.png", title)
    print(f"wrote {args.out}")


def write(
    out: Path, stem: str, info: dict, settings: dict, rows: list[dict], title: str, base: str
) -> None:
    """``<stem>.json`` (machine, settings, every measurement) and ``<stem>.md``."""
    (out / f"{stem}.json").write_text(
        json.dumps({"machine": info, "settings": settings, "results": rows}, indent=1) + "\n"
    )
    (out / f"{stem}.md").write_text(markdown(info, settings, rows, title, base))


if __name__ == "__main__":
    main()
