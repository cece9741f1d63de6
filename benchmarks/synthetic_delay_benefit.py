"""Do learned delays help on the synthetic SHD? A no-delay SNN against spatial ones.

Three networks 700 -> 128 LIF -> 20, read out as the mean over time of the output
layer, trained with the same seed, data, epochs and optimiser on the synthetic SHD
(:func:`sj_spatial.data.ensure_synthetic_shd`) binned at 10 ms (T = 100). Only the first
layer differs: spikingjelly's ``layer.Linear`` (``linear``: every synapse delay 0), or
``SpatialDelayLinear`` with delays ``delay_scale * distance`` (at most ``--max-delay``
steps) between 2-D positions drawn from U(-1, 1), either left where they start
(``frozen``) or learned with their own Adam (``spatial``). With the default
``--delay-scale 3`` the starting delays are short (0 to 8.5 steps, 3 on average),
shorter than the 12-step intervals that tell the classes apart, so only the network that
learns its positions can line the bursts up. Prints train and test accuracy after every
epoch, then the final test accuracies.

    python benchmarks/synthetic_delay_benefit.py [--epochs 15] [--kinds linear frozen spatial]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn
from torch.utils.data import DataLoader

from sj_spatial import NeuronPositions, SpatialDelayLinear
from sj_spatial.data import SHD, collate, ensure_synthetic_shd
from sj_spatial.train_job import Callback, EpochRecord, fit


def make_model(kind: str, hidden: int, max_delay: int, delay_scale: float) -> nn.Module:
    """``'linear'``: no delays; ``'spatial'`` / ``'frozen'``: position-derived delays."""
    if kind == "linear":
        first = layer.Linear(700, hidden, step_mode="m")
    else:
        first = SpatialDelayLinear(
            700,
            hidden,
            step_mode="m",
            max_delay=max_delay,
            delay_scale=delay_scale,
            pre_positions=NeuronPositions(700),
            post_positions=NeuronPositions(hidden),
        )
    return nn.Sequential(
        first,
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m"),
        layer.Linear(hidden, 20, step_mode="m"),
    )


def train(kind: str, args, train_set, test_set) -> float:
    torch.manual_seed(args.seed)
    model = make_model(kind, args.hidden, args.max_delay, args.delay_scale)
    positions = [p for n, p in model.named_parameters() if n.endswith("positions")]
    for p in positions:
        p.requires_grad_(kind == "spatial")
    positions = [p for p in positions if p.requires_grad]
    others = [p for n, p in model.named_parameters() if not n.endswith("positions")]
    groups = [{"params": others, "lr": args.lr}]
    if positions:
        groups.append({"params": positions, "lr": args.position_lr})
    optimizer = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(
        train_set, args.batch_size, shuffle=True, collate_fn=collate, generator=gen
    )
    test_loader = DataLoader(test_set, 256, collate_fn=collate)
    start = time.perf_counter()

    class Print(Callback):
        def on_epoch_end(self, record: EpochRecord) -> None:
            print(
                f"{kind:8s} epoch {record.epoch:2d}: train {record.train_acc:.3f}  test "
                f"{record.test_acc:.3f}  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )

    records = fit(
        model,
        [optimizer],
        lambda epoch: train_loader,  # one shuffle generator for the whole run
        test_loader,
        epochs=args.epochs,
        callbacks=[Print()],
    )
    return records[-1].test_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder of the synthetic files")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["linear", "frozen", "spatial"],
        choices=["linear", "frozen", "spatial"],
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--max-delay", type=int, default=25)
    parser.add_argument("--delay-scale", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--position-lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data if args.data is not None else Path(tmp)
        start = time.perf_counter()
        ensure_synthetic_shd(root)
        print(f"synthetic SHD in {root} ready in {time.perf_counter() - start:.1f} s")
        cache = Path(tmp) / "cache"
        train_set = SHD(root, train=True, dt=0.01, T=100, cache_dir=cache)
        test_set = SHD(root, train=False, dt=0.01, T=100, cache_dir=cache)
        results = {kind: train(kind, args, train_set, test_set) for kind in args.kinds}
    summary = ", ".join(f"{kind} {acc:.3f}" for kind, acc in results.items())
    print(f"test accuracy after {args.epochs} epochs: {summary} (chance 0.050)")


if __name__ == "__main__":
    main()
