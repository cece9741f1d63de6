"""``sj-spatial``: the project's command line. ``sj-spatial train`` is the main job.

It trains the paper's recurrent model (700 -> recurrent LIF with spatial delays -> 20
leaky readouts) on SHD, or, without ``--data-root``, on the built-in SHD-format data,
and writes into ``--logdir``: TensorBoard events (losses, accuracies, topology),
``checkpoint.pt`` after every epoch (``--resume`` continues from it), ``summary.md`` /
``summary.json`` and PNG figures (positions, |w|-weighted delay histogram, learning
curves).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from . import __version__, topology
from .callbacks import TopologyLogger, position_figure
from .cost import WiringCost
from .data import builtin_shd_root, collate, shd_splits
from .layers import SpatialRecurrentContainer
from .models import recurrent_shd_model
from .positions import NeuronPositions, param_groups

CHECKPOINT = "checkpoint.pt"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sj-spatial", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sj-spatial {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train the recurrent spatial model on SHD (default: built-in data)",
        description="Train 700 -> recurrent LIF with spatial delays -> 20 leaky readouts.",
    )
    add = train.add_argument
    add(
        "--data-root",
        type=Path,
        default=None,
        help="folder with shd_train.h5 and shd_test.h5 (default: built-in SHD-format data)",
    )
    add("--epochs", type=int, default=10)
    add("--dt", type=float, default=10e-3, help="time step in seconds (default 0.01)")
    add("--duration", type=float, default=1.0, help="seconds of each sample used")
    add("--dim", type=int, default=2, help="dimension of the position space")
    add("--max-delay", type=int, default=25, help="longest delay in time steps")
    add(
        "--delay-scale",
        type=float,
        default=3.0,
        help="time steps per unit of distance (default 3: initial delays up to ~8 steps)",
    )
    add("--hidden", type=int, default=128)
    add("--batch-size", type=int, default=64)
    add("--lr", type=float, default=1e-3, help="Adam learning rate of weights")
    add("--position-lr", type=float, default=0.05, help="Adam learning rate of positions")
    add("--clip", type=float, default=1.0, help="gradient norm clipping (0: off)")
    add(
        "--wiring-cost",
        type=float,
        default=0.0,
        help="strength of the L1 wiring cost sum |w| * distance (0: none)",
    )
    add("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    add("--backend", default="torch", choices=("torch", "cupy"))
    add("--logdir", type=Path, default=Path("runs/train"))
    add("--resume", action="store_true", help="continue from LOGDIR/checkpoint.pt")
    add("--seed", type=int, default=0)
    add(
        "--limit",
        type=int,
        default=None,
        help="use a fixed random subset of this many samples per split",
    )
    add("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.command == "train":
        summary = train(args)
        print(summary_table(summary))
    return 0


def _check_args(args) -> None:
    for name in ("epochs", "batch_size", "hidden", "dim"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.dt > 0 or not args.duration > 0:
        raise SystemExit(f"--dt and --duration must be > 0, got {args.dt} and {args.duration}")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _datasets(args):
    if args.data_root is None:
        source = f"built-in SHD-format data ({builtin_shd_root()})"
    else:
        source = f"SHD files in {args.data_root}"
    splits = shd_splits(args.data_root, args.dt, args.duration, args.limit, seed=args.seed)
    return splits, source


def _optimizers(model: nn.Module, args):
    return [torch.optim.Adam(param_groups(model, args.lr, args.position_lr))]


def _anneal(optimizers, args, epoch: int) -> None:
    """Cosine learning-rate decay over the run, a function of the epoch (so resume-safe)."""
    factor = 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))
    for opt in optimizers:
        for group, base in zip(opt.param_groups, (args.lr, args.position_lr), strict=False):
            group["lr"] = base * factor


def _run_epoch(model, loader, device, optimizers=None, cost=None, progress=None, clip=None):
    """One pass; trains when ``optimizers`` are given. Returns (mean loss, accuracy)."""
    model.train(optimizers is not None)
    total_loss = correct = count = 0
    with torch.set_grad_enabled(optimizers is not None):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x).mean(0)
            loss = F.cross_entropy(logits, y)
            if optimizers is not None:
                full = loss + cost() if cost is not None else loss
                for opt in optimizers:
                    opt.zero_grad()
                full.backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                for opt in optimizers:
                    opt.step()
            functional.reset_net(model)
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{total_loss / count:.3f}", acc=f"{correct / count:.3f}")
    return total_loss / max(count, 1), correct / max(count, 1)


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by ``sj-spatial train`` (tensors and plain data only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SystemExit(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc


def train(args) -> dict:
    """Run the main job with parsed ``args``; returns the summary dict."""
    from tqdm.auto import tqdm

    _check_args(args)
    args.logdir.mkdir(parents=True, exist_ok=True)
    device = _device(args.device)
    torch.manual_seed(args.seed)
    (train_set, test_set), source = _datasets(args)
    model = recurrent_shd_model(
        dt=args.dt,
        hidden=args.hidden,
        dim=args.dim,
        max_delay=args.max_delay,
        delay_scale=args.delay_scale,
        backend=args.backend,
    ).to(device)
    optimizers = _optimizers(model, args)
    cost = WiringCost(model, strength=args.wiring_cost) if args.wiring_cost > 0 else None
    history = {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
    start_epoch = 0
    checkpoint_path = args.logdir / CHECKPOINT
    if args.resume:
        if not checkpoint_path.exists():
            raise SystemExit(f"--resume: no checkpoint at {checkpoint_path}")
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        history, start_epoch = state["history"], state["epoch"] + 1
        torch.set_rng_state(state["rng"])
        print(f"resuming from {checkpoint_path} after epoch {start_epoch}")
    print(f"data: {source}; train {len(train_set)}, test {len(test_set)} samples; device {device}")

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(args.logdir))
    topo = TopologyLogger(writer, model, nulls=5, seed=args.seed)
    test_loader = torch.utils.data.DataLoader(test_set, args.batch_size, collate_fn=collate)
    for epoch in range(start_epoch, args.epochs):
        shuffle = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        train_loader = torch.utils.data.DataLoader(
            train_set, args.batch_size, shuffle=True, generator=shuffle, collate_fn=collate
        )
        _anneal(optimizers, args, epoch)
        t0 = time.perf_counter()
        with tqdm(
            total=len(train_loader),
            desc=f"epoch {epoch + 1}/{args.epochs}",
            disable=True if args.quiet else None,  # None: off when not a terminal
            leave=False,
        ) as bar:
            train_loss, train_acc = _run_epoch(
                model, train_loader, device, optimizers, cost, bar, args.clip or None
            )
        test_loss, test_acc = _run_epoch(model, test_loader, device)
        for key, value in zip(history, (train_loss, train_acc, test_loss, test_acc), strict=True):
            history[key].append(value)
            writer.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
        topo.log(epoch + 1)
        writer.flush()
        print(
            f"epoch {epoch + 1}: train loss {train_loss:.3f} acc {train_acc:.3f} | "
            f"test loss {test_loss:.3f} acc {test_acc:.3f} ({time.perf_counter() - t0:.0f} s)"
        )
        _save_atomic(
            {
                "model": model.state_dict(),
                "optimizers": [o.state_dict() for o in optimizers],
                "epoch": epoch,
                "history": history,
                "rng": torch.get_rng_state(),
                "args": {k: str(v) for k, v in vars(args).items()},
            },
            checkpoint_path,
        )
    topo.close()
    summary = _summary(model, history, source, args)
    (args.logdir / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.logdir / "summary.md").write_text(summary_table(summary) + "\n")
    _figures(model, history, args.logdir)
    return summary


def _recurrent(model: nn.Module) -> SpatialRecurrentContainer:
    return next(m for m in model.modules() if isinstance(m, SpatialRecurrentContainer))


def _summary(model, history, source, args) -> dict:
    rec = _recurrent(model)
    positions = sum(
        p.numel() for m in model.modules() if isinstance(m, NeuronPositions) for p in m.parameters()
    )
    total = sum(p.numel() for p in model.parameters())
    metrics = topology.analyze(rec, seed=args.seed, nulls=5)
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
    lines = ["| quantity | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _figures(model, history, logdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rec = _recurrent(model)
    weight = rec.effective_weight().detach().cpu().numpy()
    pos = rec.positions.positions.detach().cpu().numpy()
    labels = topology.communities(weight) if hasattr(topology, "communities") else None
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


if __name__ == "__main__":
    sys.exit(main())
