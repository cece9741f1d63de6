"""Yin-Yang with learned neuron positions, and its ablations: accuracy against parameters.

Model: the Yin-Yang inputs ``(x, y, 1-x, 1-y)`` plus a bias spike, time-to-first-spike
encoded (``sj_spatial.data.yinyang.ttfs_encode``) -> delayed linear ``5 -> hidden`` ->
LIF -> delayed linear ``hidden -> 3`` -> leaky integrator readout; the class is the
readout with the largest membrane maximum over time (cross-entropy on those maxima;
``--readout mean``: on the membranes' means over time instead).
Variants (``--variant``):

- ``spatial``: ``SpatialDelayLinear`` layers; the hidden population has one set of
  ``--dim``-D positions shared by both layers; input and output positions are learned too.
- ``fixed``: the same, every position frozen at its random initial value.
- ``none``: ``layer.Linear`` layers, no delays.
- ``free``: ``sj_spatial.baselines.FreeDelayLinear``, one learned delay per synapse.

``--readout-bias zero`` starts the readout's bias at zero instead of ``nn.Linear``'s
uniform draw. With a maximum-over-time readout, a start where every readout bias is
negative and the hidden layer spikes rarely is a trap: each maximum sits at the first step,
which no hidden spike reaches, so only the biases get gradients, and cross-entropy's
gradients sum to zero over the classes, so they cannot lift all three. Without delays
(``none``) 2 of 10 seeds stayed at chance that way (benchmarks/RESULTS.md).

Training: Adam on ``sj_spatial.param_groups`` (positions / free delays at
``--position-lr``), cosine learning-rate decay over the epochs; the model of the epoch
with the best validation accuracy is kept and its test accuracy reported. Each
(variant, seed) adds its record, run ``<tag>-s<seed>``, to ``records.jsonl`` in ``--out``
(``benchmarks/records.py``); ``summary.md``, ``summary.json`` and
``accuracy_vs_params.png`` are rebuilt from every record there after each run, or alone
with ``--summarize``. See benchmarks/README.md.

Numerics: run as a script, the benchmark pins the instruction set of torch's, MKL's,
oneDNN's and numba's CPU kernels to AVX2 (``--isa avx2``, the default; :data:`AVX2`),
whose rounding any x86-64 CPU of the last decade reproduces, instead of each machine's
widest (AVX-512 on many Intel CPUs); ``--isa native`` leaves them alone. Each record
holds what decides its numbers (``machine.numerics``: code commit, instruction sets,
thread counts, library versions). benchmarks/RESULTS.md, "What a seed decides".
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_layers import machine_info
from records import append_record, read_records
from seeding import draw_like_positions
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from sj_spatial import NeuronPositions, SpatialDelayLinear, param_groups
from sj_spatial.baselines import FreeDelayLinear
from sj_spatial.data.yinyang import NUM_CHANNELS, NUM_CLASSES, make_yinyang, ttfs_encode
from sj_spatial.models import ExponentialSynapse
from sj_spatial.train_job import Callback, EpochRecord, fit

VARIANTS = ("spatial", "fixed", "none", "free")
READOUT_BIAS = ("uniform", "zero")
#: Class scores from the readout membranes ``[T, N, 3]``: their maximum or mean over time.
READOUTS = {"max": torch.amax, "mean": torch.mean}
#: The environment that pins every CPU kernel library to its AVX2 code path (read when
#: each library loads, so it is set before the process starts: :func:`run_pinned`).
AVX2 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NUMBA_CPU_NAME": "haswell",
}
DEFAULT_EPOCHS = 40
DEFAULT_OUT = Path(__file__).parent / "results" / "yinyang-2026-11-28"
#: Median test accuracies (%) in the SpSNN results notebook (llandsmeer/spatial_snns).
SPSNN = {
    ("spatial", 2): 98.04,
    ("spatial", 3): 98.12,
    ("free", None): 97.61,
    ("none", None): 93.2,
}


@dataclass
class Config:
    """One training run. Times (``steps``, ``t_*``, ``tau_*``, delays) are in time steps."""

    variant: str = "spatial"
    dim: int = 2
    hidden: int = 45
    seed: int = 0
    epochs: int = DEFAULT_EPOCHS
    batch: int = 128
    lr: float = 1e-2
    position_lr: float = 3e-2
    steps: int = 40
    t_early: float = 2.0
    t_late: float = 22.0
    bias_time: float = 12.0
    interpolate: bool = True
    max_delay: int = 8
    delay_scale: float = 3.0
    tau_mem: float = 8.0
    tau_out: float = 8.0
    init_gain: float = 2.0
    readout_bias: str = "uniform"
    readout: str = "max"
    train_size: int = 5000
    val_size: int = 1000
    test_size: int = 1000

    @property
    def tag(self) -> str:
        """``variant[-dD]-hH[-eE][-rb0][-rmean]``: the epoch count appears when it is not
        the default, ``-rb0`` for a readout bias that starts at zero, ``-rmean`` for the
        mean-over-time readout."""
        dim = f"-d{self.dim}" if self.variant in ("spatial", "fixed") else ""
        epochs = "" if self.epochs == DEFAULT_EPOCHS else f"-e{self.epochs}"
        bias = "-rb0" if self.readout_bias == "zero" else ""
        readout = "" if self.readout == "max" else f"-r{self.readout}"
        return f"{self.variant}{dim}-h{self.hidden}{epochs}{bias}{readout}"


def expected_params(variant: str, hidden: int, dim: int) -> int:
    """Trainable parameters of :func:`build_model`: weights ``5 H`` (no bias: the bias
    spike plays it) and ``3 H + 3``, plus ``(5 + H + 3) D`` positions (``spatial``) or
    ``8 H`` delays (``free``).
    """
    weights = NUM_CHANNELS * hidden + NUM_CLASSES * hidden + NUM_CLASSES
    if variant == "spatial":
        return weights + (NUM_CHANNELS + hidden + NUM_CLASSES) * dim
    if variant == "free":
        return weights + (NUM_CHANNELS + NUM_CLASSES) * hidden
    return weights


def _synapses(cfg: Config) -> tuple[nn.Module, nn.Module]:
    h = cfg.hidden
    if cfg.variant == "none":
        return (
            layer.Linear(NUM_CHANNELS, h, bias=False, step_mode="m"),
            layer.Linear(h, NUM_CLASSES, step_mode="m"),
        )
    if cfg.variant == "free":
        kw = dict(step_mode="m", max_delay=cfg.max_delay, init_max=2.0 * cfg.delay_scale)
        draw_like_positions(NUM_CHANNELS, h)  # the draws of the records (seeding.py)
        first = FreeDelayLinear(NUM_CHANNELS, h, bias=False, **kw)
        draw_like_positions(h, NUM_CLASSES)
        return first, FreeDelayLinear(h, NUM_CLASSES, **kw)
    hidden = NeuronPositions(h, cfg.dim)
    kw = dict(step_mode="m", dim=cfg.dim, max_delay=cfg.max_delay, delay_scale=cfg.delay_scale)
    first = SpatialDelayLinear(NUM_CHANNELS, h, bias=False, post_positions=hidden, **kw)
    second = SpatialDelayLinear(h, NUM_CLASSES, pre_positions=hidden, **kw)
    return first, second


def build_model(cfg: Config) -> nn.Sequential:
    """``[T, N, 5]`` spikes -> readout membranes ``[T, N, 3]`` for ``cfg.variant``."""
    if cfg.variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {cfg.variant!r}")
    if cfg.readout_bias not in READOUT_BIAS:
        raise ValueError(
            f"readout_bias must be one of {list(READOUT_BIAS)}, got {cfg.readout_bias!r}"
        )
    if cfg.readout not in READOUTS:
        raise ValueError(f"readout must be one of {list(READOUTS)}, got {cfg.readout!r}")
    torch.manual_seed(cfg.seed)
    first, second = _synapses(cfg)
    with torch.no_grad():
        first.weight.mul_(cfg.init_gain)
        if cfg.readout_bias == "zero":
            second.bias.zero_()
    lif = neuron.LIFNode(
        tau=cfg.tau_mem,
        decay_input=False,
        detach_reset=True,
        surrogate_function=surrogate.ATan(),
        step_mode="m",
    )
    model = nn.Sequential(first, lif, second, ExponentialSynapse(cfg.tau_out, step_mode="m"))
    if cfg.variant == "fixed":
        for module in model.modules():
            if isinstance(module, NeuronPositions):
                module.requires_grad_(False)
    return model


def count_params(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def logits(model: nn.Module, x: torch.Tensor, readout: str = "max") -> torch.Tensor:
    """Maximum (or, with ``readout='mean'``, mean) over time of the readout membranes:
    ``[T, N, 5]`` -> ``[N, 3]``."""
    functional.reset_net(model)
    return READOUTS[readout](model(x), dim=0)


def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int = 1000,
    readout: str = "max",
) -> float:
    """Fraction of ``x [T, N, 5]`` classified as ``y [N]``."""
    with torch.no_grad():
        hits = sum(
            int((logits(model, x[:, i : i + batch], readout).argmax(1) == y[i : i + batch]).sum())
            for i in range(0, y.shape[0], batch)
        )
    return hits / y.shape[0]


def encoded(size: int, seed: int, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, labels = make_yinyang(size, seed)
    x = ttfs_encode(
        inputs,
        cfg.steps,
        t_early=cfg.t_early,
        t_late=cfg.t_late,
        bias_time=cfg.bias_time,
        interpolate=cfg.interpolate,
    )
    return x, torch.from_numpy(labels)


def train(cfg: Config, log=print) -> dict:
    """Train one model; its record as :func:`main` keeps it, without the name, the command
    and the machine."""
    start = time.perf_counter()
    train_x, train_y = encoded(cfg.train_size, 42, cfg)
    val_x, val_y = encoded(cfg.val_size, 41, cfg)
    test_x, test_y = encoded(cfg.test_size, 40, cfg)
    model = build_model(cfg)
    optimizer = torch.optim.Adam(param_groups(model, cfg.lr, cfg.position_lr))
    batches = math.ceil(cfg.train_size / cfg.batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * batches)
    generator = torch.Generator().manual_seed(cfg.seed)
    best = {"val_acc": -1.0}
    history = []

    def epoch_batches(epoch: int):
        order = torch.randperm(cfg.train_size, generator=generator)
        for b in range(batches):
            idx = order[b * cfg.batch : (b + 1) * cfg.batch]
            yield train_x[:, idx], train_y[idx]

    val_batches = [
        (val_x[:, i : i + 1000], val_y[i : i + 1000]) for i in range(0, len(val_y), 1000)
    ]

    def predict(output: torch.Tensor) -> torch.Tensor:
        return READOUTS[cfg.readout](output, dim=0)

    class Track(Callback):
        """The per-batch cosine schedule; the history and the best epoch's state."""

        def on_step_end(self, loss: float) -> None:
            schedule.step()

        def on_epoch_end(self, record: EpochRecord) -> None:
            nonlocal best
            history.append(
                {"epoch": record.epoch, "train_loss": record.train_loss, "val_acc": record.test_acc}
            )
            log(
                f"{cfg.tag} seed {cfg.seed} epoch {record.epoch}: loss {record.train_loss:.4f} "
                f"val {record.test_acc:.4f}"
            )
            if record.test_acc > best["val_acc"]:
                state = copy.deepcopy(model.state_dict())
                best = {"val_acc": record.test_acc, "epoch": record.epoch, "state": state}

    fit(
        model,
        [optimizer],
        epoch_batches,
        val_batches,
        epochs=cfg.epochs,
        loss_fn=lambda output, y: F.cross_entropy(predict(output), y),
        predict=predict,
        callbacks=[Track()],
    )
    model.load_state_dict(best["state"])
    return {
        "variant": cfg.variant,
        "dim": cfg.dim if cfg.variant in ("spatial", "fixed") else None,
        "hidden": cfg.hidden,
        "seed": cfg.seed,
        "tag": cfg.tag,
        "params": count_params(model),
        "best_epoch": best["epoch"],
        "val_acc": best["val_acc"],
        "test_acc": accuracy(model, test_x, test_y, readout=cfg.readout),
        "train_acc": accuracy(model, train_x, train_y, readout=cfg.readout),
        "time_s": round(time.perf_counter() - start, 2),
        "config": asdict(cfg),
        "history": history,
    }


def _group_key(run: dict) -> tuple:
    config = run["config"]
    bias = config.get("readout_bias", "uniform")
    readout = config.get("readout", "max")
    return (run["variant"], run["dim"] or 0, run["hidden"], config["epochs"], bias, readout)


def _spsnn(run: dict) -> float | None:
    key = (run["variant"], run["dim"] if run["variant"] == "spatial" else None)
    return SPSNN.get(key) if run["hidden"] == 45 or run["variant"] != "spatial" else None


def mean_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean (None for fewer than two values)."""
    if len(values) < 2:
        return None
    from scipy import stats

    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    mean = statistics.fmean(values)
    return float(mean - half), float(mean + half)


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median: the order statistics
    ``(x_(k), x_(n+1-k))`` with the largest ``k`` whose coverage ``1 - 2 P(B < k)``,
    ``B ~ Binomial(n, 1/2)``, is at least ``level`` (None when no ``k`` reaches it, as for
    fewer than 6 values at 95 %)."""
    n = len(values)
    ordered = sorted(values)
    best = None
    for k in range(1, n // 2 + 1):
        below = sum(math.comb(n, i) for i in range(k)) / 2**n
        if 1 - 2 * below >= level:
            best = (ordered[k - 1], ordered[n - k])
    return best


def verdict(interval: tuple[float, float] | None, reference: float | None) -> str:
    """Where a reference value lies against an interval: the interval is ``above`` or
    ``below`` it, or ``overlaps``; ``-`` without both."""
    if interval is None or reference is None:
        return "-"
    if interval[0] > reference:
        return "above"
    if interval[1] < reference:
        return "below"
    return "overlaps"


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (variant, dim, hidden): test accuracy statistics over seeds (in %)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(_group_key(run), []).append(run)
    rows = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda r: r["seed"])
        test = [100 * r["test_acc"] for r in group]
        rows.append(
            {
                "tag": group[0]["tag"],
                "variant": key[0],
                "readout_bias": key[4],
                "readout": key[5],
                "dim": group[0]["dim"],
                "hidden": key[2],
                "params": group[0]["params"],
                "seeds": [r["seed"] for r in group],
                "mean": statistics.fmean(test),
                "std": statistics.stdev(test) if len(test) > 1 else 0.0,
                "test": test,
                "median": statistics.median(test),
                "min": min(test),
                "max": max(test),
                "val_mean": statistics.fmean(100 * r["val_acc"] for r in group),
                "epochs": group[0]["config"]["epochs"],
                "time_s": statistics.fmean(r["time_s"] for r in group),
                "spsnn_median": _spsnn(group[0]),
                "mean_ci95": mean_interval(test),
                "median_ci95": median_interval(test),
            }
        )
        rows[-1]["vs_spsnn"] = verdict(rows[-1]["median_ci95"], rows[-1]["spsnn_median"])
    return rows


def markdown(rows: list[dict]) -> str:
    """The summary table of :func:`summarize` rows."""
    lines = [
        "| variant | D | hidden | trainable params | seeds | test acc mean ± std (%) | "
        "95% CI of mean | median | 95% CI of median | min / max | val mean | epochs | "
        "s / run | SpSNN median | median CI vs SpSNN |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def interval(ci):
        return "-" if ci is None else f"{ci[0]:.2f} - {ci[1]:.2f}"

    for r in rows:
        spsnn = "-" if r["spsnn_median"] is None else f"{r['spsnn_median']:.2f}"
        variant = r["variant"] + (" (readout bias 0)" if r.get("readout_bias") == "zero" else "")
        variant += " (mean readout)" if r.get("readout", "max") == "mean" else ""
        lines.append(
            f"| {variant} | {r['dim'] or '-'} | {r['hidden']} | {r['params']} | "
            f"{','.join(map(str, r['seeds']))} | {r['mean']:.2f} ± {r['std']:.2f} | "
            f"{interval(r['mean_ci95'])} | {r['median']:.2f} | {interval(r['median_ci95'])} | "
            f"{r['min']:.2f} / {r['max']:.2f} | {r['val_mean']:.2f} | "
            f"{r['epochs']} | {r['time_s']:.0f} | {spsnn} | {r['vs_spsnn']} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    """Test accuracy against trainable parameters: every seed (small dots) and the
    median (large marker) per row, the SpSNN medians as horizontal lines; seeds below the
    axis are drawn on it as triangles. False when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    floor = min([r["median"] for r in rows] + list(SPSNN.values())) - 2.0
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for r in rows:
        color = ax.plot(r["params"], r["median"], "o", markersize=8, label=r["tag"])[0].get_color()
        seeds = [max(acc, floor) for acc in r["test"]]
        markers = ["v" if acc < floor else "." for acc in r["test"]]
        for acc, marker in zip(seeds, markers, strict=True):
            ax.plot(r["params"], acc, marker, color=color, alpha=0.6)
    for ((variant, dim), value), style in zip(SPSNN.items(), ("-", "--", "-.", ":"), strict=True):
        name = f"SpSNN {variant}" + (f" {dim}-D" if dim else "") + f" median {value}"
        ax.axhline(value, linestyle=style, linewidth=0.9, color="grey", label=name)
    ax.set(xlabel="trainable parameters", ylabel="test accuracy (%)", xscale="log")
    ax.set_ylim(floor - 0.5, 100.0)
    ax.set_title("Yin-Yang: test accuracy against trainable parameters (median, seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def load_runs(out: Path) -> list[dict]:
    """Every run recorded in ``out`` (the records :func:`main` adds)."""
    return read_records(out)


def _texts(rows: list[dict]) -> dict[str, str]:
    return {"summary.md": markdown(rows), "summary.json": json.dumps(rows, indent=1)}


def summary_files(out: Path) -> dict[str, str]:
    """``summary.md`` and ``summary.json`` of the runs recorded in ``out``, by file name."""
    return _texts(summarize(load_runs(out)))


def write_summary(out: Path) -> list[dict]:
    """Rebuild ``summary.md``, ``summary.json`` and ``accuracy_vs_params.png`` in ``out``."""
    rows = summarize(load_runs(out))
    for name, text in _texts(rows).items():
        (out / name).write_text(text)
    plot(rows, out / "accuracy_vs_params.png")
    return rows


QUICK = dict(train_size=300, val_size=100, test_size=100, epochs=1, hidden=8, batch=50)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = Config()
    parser.add_argument("--variant", choices=VARIANTS, default="spatial")
    parser.add_argument("--dim", type=int, default=defaults.dim)
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--summarize", action="store_true", help="only rebuild the summary")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--isa",
        choices=("avx2", "native"),
        default="avx2",
        help="CPU kernels' instruction set: AVX2 everywhere (default), or the machine's widest",
    )
    for name in (
        "batch",
        "lr",
        "position_lr",
        "steps",
        "max_delay",
        "delay_scale",
        "tau_mem",
        "tau_out",
        "init_gain",
        "t_early",
        "t_late",
        "bias_time",
    ):
        value = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument(
        "--readout-bias",
        choices=READOUT_BIAS,
        default=defaults.readout_bias,
        help="the readout bias's start: nn.Linear's uniform draw (default) or zero",
    )
    parser.add_argument(
        "--readout",
        choices=READOUTS,
        default=defaults.readout,
        help="class scores: the readout membranes' maximum over time (default) or their mean",
    )
    parser.add_argument(
        "--interpolate",
        action=argparse.BooleanOptionalAction,
        default=defaults.interpolate,
        help="sub-step spike times split between two steps (default) or rounded",
    )
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the command line ``argv``; returns the summary rows of ``--out``."""
    args = make_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        return write_summary(args.out)
    torch.set_num_threads(args.threads)
    fields = {k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__}
    if args.quick:
        fields.update(QUICK)
    command = "python benchmarks/yinyang.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    pinned = all(os.environ.get(k) == v for k, v in AVX2.items())
    if args.isa == "avx2" and not pinned:
        print("yinyang.py: the AVX2 pins are not in this process's environment (run the")
        print("script itself, which sets them); the records say what was used instead")
    numerics = machine_info(torch.device("cpu"))["numerics"]  # the code as it starts
    numerics["isa_pinned"] = pinned
    for seed in args.seeds:
        cfg = Config(**{**fields, "seed": seed})
        record = train(cfg)
        machine = machine_info(torch.device("cpu"))
        machine["numerics"] = numerics
        record = {"script": "yinyang.py", "run": f"{cfg.tag}-s{seed}", **record}
        record.update(command=command, machine=machine)
        append_record(args.out, record)
        print(
            f"{cfg.tag} seed {seed}: val {record['val_acc']:.4f} test {record['test_acc']:.4f} "
            f"params {record['params']} ({record['time_s']:.0f} s)"
        )
    return write_summary(args.out)


def run_pinned(argv: list[str]) -> None:
    """Restart this script with :data:`AVX2` in its environment when ``--isa avx2`` (the
    default) asks for it and the environment lacks it; the libraries read it on loading."""
    known, _ = make_parser().parse_known_args(argv)
    if known.isa == "avx2" and any(os.environ.get(k) != v for k, v in AVX2.items()):
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, __file__, *argv], {**os.environ, **AVX2})


if __name__ == "__main__":
    run_pinned(sys.argv[1:])
    main()
