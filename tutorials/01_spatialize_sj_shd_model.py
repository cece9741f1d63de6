# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Make a SpikingJelly SHD model spatial in three lines
#
# A common SpikingJelly model for the Spiking Heidelberg Digits (SHD): two hidden layers of
# 256 LIF neurons, each `layer.Linear -> BatchNorm -> LIFNode -> Dropout`, and a linear
# readout of 20 classes whose output is averaged over time. Its synapses have no delays.
#
# `sj_spatial.spatialize` replaces every linear layer with a `SpatialDelayLinear` that
# keeps the layer's weight and bias and gives each neuron a learnable position: the delay
# of synapse j <- i becomes `delay_scale * ||q_j - p_i||` time steps (at most
# `max_delay`). Consecutive layers share the positions of the population between them, so
# each neuron has one place. Here both models start from the same weights, train with
# the same seed, epochs and optimiser, and we compare test accuracy and parameter counts.
#
# Run it as a script, `python tutorials/01_spatialize_sj_shd_model.py [--quick]
# [--data-root DIR] [--device cpu|cuda] [--seed S] [--json FILE]`, or open it as a
# notebook with jupytext.
# Without `--data-root` it trains on sj_spatial's built-in SHD-format data (generated
# once into the cache folder); with `--data-root` it reads a folder that holds the real
# `shd_train.h5` and `shd_test.h5` (or their `.gz`).

# %%
import argparse
import json
import os
from pathlib import Path

import torch
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

from sj_spatial import SpatialDelayLinear, param_groups, spatialize
from sj_spatial.data import collate, shd_splits
from sj_spatial.train_job import Callback, EpochRecord, fit

# %% [markdown]
# ## Settings
#
# Quick mode (`--quick`, or the environment variable `SJ_SPATIAL_QUICK=1` in a notebook)
# uses tiny sizes so that the whole tutorial runs in seconds on a CPU: 50 ms time steps,
# 64 hidden neurons, a few hundred samples, one epoch. Its accuracies only show that the
# code runs. Full mode is meant for the real SHD on a GPU: 10 ms steps (T = 100 for the
# first second of each recording), 256 hidden neurons, all samples, 30 epochs.

# %%
parser = argparse.ArgumentParser(
    description="Spatialize a SpikingJelly SHD model.", allow_abbrev=False
)
parser.add_argument("--quick", action="store_true", help="tiny sizes, one epoch (CPU, seconds)")
parser.add_argument(
    "--data-root",
    type=Path,
    default=None,
    help="folder with the SHD files (default: built-in SHD-format data)",
)
parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
parser.add_argument("--epochs", type=int, default=None)
parser.add_argument(
    "--samples", type=int, default=None, help="use at most this many samples of each split"
)
parser.add_argument(
    "--backend",
    default="torch",
    choices=("torch", "cupy"),
    help="kernel of the spatial layers ('cupy' needs CuPy and a GPU)",
)
parser.add_argument("--seed", type=int, default=0, help="seed of weights, batches and dropout")
parser.add_argument(
    "--json", type=Path, default=None, help="also write the settings and results to this file"
)
args, _ = parser.parse_known_args()  # Jupyter passes its own arguments: ignore them

QUICK = args.quick or os.environ.get("SJ_SPATIAL_QUICK") == "1"
DATA_ROOT = args.data_root  # in a notebook, set this to your SHD folder
DEVICE = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
SEED = args.seed
DT = 0.05 if QUICK else 0.01  # seconds per time step
DURATION = 1.0  # seconds of each recording
HIDDEN = 64 if QUICK else 256
EPOCHS = args.epochs or (1 if QUICK else 30)
SAMPLES = args.samples or (256 if QUICK else None)  # per split; None: all
BATCH_SIZE = 32 if QUICK else 64
LR = 1e-3  # Adam, weights
POSITION_LR = 0.05  # Adam, positions (the paper's value)
MAX_DELAY = round(0.25 / DT)  # longest delay: 250 ms, in time steps
DELAY_SCALE = MAX_DELAY / 2  # time steps per distance unit
if QUICK and DEVICE.type == "cpu":
    torch.set_num_threads(1)  # tensors this small run faster on one thread than on several
print(
    f"{'quick' if QUICK else 'full'} mode: dt {DT * 1e3:.0f} ms, T {round(DURATION / DT)}, "
    f"hidden {HIDDEN}, epochs {EPOCHS}, max_delay {MAX_DELAY} steps, device {DEVICE}"
)

# %% [markdown]
# ## Data
#
# `SHD` bins each recording into frames `[T, 700]` of spike counts; `collate` stacks a
# batch time-major, `[T, N, 700]`, as SpikingJelly's multi-step modules expect.


# %%
train_set, test_set = shd_splits(DATA_ROOT, DT, DURATION, SAMPLES)
print(
    f"data: {'built-in SHD-format' if DATA_ROOT is None else DATA_ROOT}; "
    f"train {len(train_set)}, test {len(test_set)} samples"
)

# %% [markdown]
# ## The SpikingJelly model
#
# Multi-step throughout (`step_mode="m"`, input `[T, N, 700]`). `nn.BatchNorm1d` is
# wrapped in `layer.SeqToANNContainer`, which folds time into the batch; this works in
# both spikingjelly 0.0.0.0.14 and 2.0.0 (0.0.0.0.14's multi-step `layer.BatchNorm1d`
# expects `[T, N, C, L]`).


# %%
def sj_shd_model(hidden: int = 256, dropout: float = 0.4) -> nn.Sequential:
    def block(n_in: int, n_out: int) -> list[nn.Module]:
        return [
            layer.Linear(n_in, n_out, step_mode="m"),
            layer.SeqToANNContainer(nn.BatchNorm1d(n_out)),
            neuron.LIFNode(
                tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m"
            ),
            layer.Dropout(dropout, step_mode="m"),
        ]

    return nn.Sequential(
        *block(700, hidden), *block(hidden, hidden), layer.Linear(hidden, 20, step_mode="m")
    )


torch.manual_seed(SEED)
sj_model = sj_shd_model(HIDDEN)

# %% [markdown]
# ## Three lines: make it spatial
#
# In your own training script the change is three lines: import `spatialize`, convert the
# model, and give the positions their own learning rate:
#
# ```python
# from sj_spatial import spatialize
# model = spatialize(model, max_delay=25, delay_scale=12.5)
# optimizer = torch.optim.Adam([{"params": weights}, {"params": positions, "lr": 0.05}])
# ```
#
# `spatialize` converts every `layer.Linear` into a `SpatialDelayLinear` with the same
# weight and bias (here `inplace=False` works on a copy, so that both models start from
# identical weights). With `share_positions=True` (the default) each hidden population
# shares its `NeuronPositions` between the layer that feeds it and the layer it feeds. The
# input channels get positions too, so even the 700 cochlea channels are placed in space.

# %%
spatial_model = spatialize(
    sj_model,
    dim=2,
    max_delay=MAX_DELAY,
    delay_scale=DELAY_SCALE,
    inplace=False,
    backend=args.backend,
)
print(spatial_model)

# %% [markdown]
# The positions are ordinary parameters held by `NeuronPositions` modules
# (`0.pre_positions.positions`, `0.post_positions.positions`, ...).
# `sj_spatial.param_groups(model, lr, position_lr)` splits them from the weights: as in the
# paper the positions learn faster than the weights (Adam, 0.05 against 1e-3); one Adam
# with two parameter groups is the same as two Adams.


# %%
def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    # Positions (if any) get their own, larger learning rate.
    return torch.optim.Adam(param_groups(model, LR, POSITION_LR))


for name, p in spatial_model.named_parameters():
    if name.endswith("positions"):
        print(f"{name:28s} {tuple(p.shape)}")

# %% [markdown]
# ## Training
#
# The same training for both, through `sj_spatial.train_job.fit`, the epoch loop of the
# project's own job: the cross-entropy of the readout averaged over time, one Adam step
# per batch, `functional.reset_net` after every batch (it clears the neurons and the
# spatial layers' delay memories), and a test pass after every epoch. Seeding before each
# run gives both models the same batch order and dropout masks.


# %%
def train(model: nn.Module, name: str) -> dict:
    model.to(DEVICE)
    torch.manual_seed(SEED)
    optimizer = make_optimizer(model)
    loader = torch.utils.data.DataLoader(
        train_set,
        BATCH_SIZE,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(SEED),
    )
    test_loader = torch.utils.data.DataLoader(test_set, BATCH_SIZE, collate_fn=collate)

    class Report(Callback):
        def on_epoch_end(self, record: EpochRecord) -> None:
            print(
                f"{name}: epoch {record.epoch}/{EPOCHS} train loss {record.train_loss:.3f}, "
                f"test accuracy {record.test_acc:.3f} ({record.seconds:.1f} s)"
            )

    records = fit(
        model,
        [optimizer],
        lambda epoch: loader,  # one shuffle generator for the whole run
        test_loader,
        epochs=EPOCHS,
        device=DEVICE,
        callbacks=[Report()],
    )
    return {
        "test_accuracy": records[-1].test_acc,
        "test_accuracy_per_epoch": [r.test_acc for r in records],
        "seconds_per_epoch": sum(r.seconds for r in records) / len(records),
    }


results = {
    "SpikingJelly (no delays)": train(sj_model, "SpikingJelly"),
    "spatialized (positions)": train(spatial_model, "spatialized"),
}

# %% [markdown]
# ## Accuracy and parameter counts
#
# The spatial model learns one delay per synapse, but pays only `D` numbers per neuron for
# them. The last column counts what learning the same delays one per synapse (as DCLS
# does, see tutorial 2) would add.


# %%
def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table, with a blank line before and after it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n" + "\n".join(lines) + "\n"


def parameter_counts(model: nn.Module) -> dict:
    named = list(model.named_parameters())
    positions = sum(p.numel() for n, p in named if n.endswith("positions"))
    synapses = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, SpatialDelayLinear))
    )
    return {
        "other": sum(p.numel() for _, p in named) - positions,
        "positions": positions,
        "synapses": synapses,
    }


header = [
    "model",
    "test accuracy",
    "weights, biases, BN",
    "position parameters",
    "per-synapse delays would need",
    "s / epoch",
]
rows = []
for (name, result), model in zip(results.items(), (sj_model, spatial_model), strict=True):
    counts = parameter_counts(model)
    rows.append(
        [
            name,
            f"{result['test_accuracy']:.3f}",
            f"{counts['other']:,}",
            f"{counts['positions']:,}",
            f"{counts['synapses']:,}",
            f"{result['seconds_per_epoch']:.1f}",
        ]
    )
print(markdown_table(header, rows))

# %% [markdown]
# With `--json FILE` the script also writes the settings and each model's results
# (accuracy per epoch, seconds per epoch, trainable parameters) for benchmarks to collect.

# %%
if args.json is not None:
    for result, model in zip(results.values(), (sj_model, spatial_model), strict=True):
        result["trainable_parameters"] = sum(
            p.numel() for p in model.parameters() if p.requires_grad
        )
    settings = {"seed": SEED, "dt": DT, "hidden": HIDDEN, "epochs": EPOCHS, "lr": LR}
    settings |= {"position_lr": POSITION_LR, "max_delay": MAX_DELAY, "batch_size": BATCH_SIZE}
    args.json.write_text(json.dumps({"settings": settings, "models": results}, indent=1))

# %% [markdown]
# How to read it: both models have the same weights, biases and batch-norm parameters;
# the spatial one adds `2 * (700 + 256 + 256 + 20)` position parameters in full mode
# (2,464, about 1% of the weights), where per-synapse delays would add as many parameters
# as there are synapses (249,856). Accuracies in quick mode come from one epoch on a few
# hundred built-in samples and say nothing about SHD; in full mode on the real SHD, run
# both and read the table. The spatial layers cost more time per epoch than `layer.Linear`
# (their kernel reads two delayed taps per synapse); on a GPU, `--backend cupy` uses
# sj_spatial's CUDA kernels.
