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
# # 3. A recurrent spatial network: positions, modules and pruning
#
# The model of "Space as Time Through Neuron Position Learning" (Mészáros, Knight, Akarca,
# Nowotny 2025): 700 SHD channels -> 128 recurrent LIF neurons (membrane 20 ms,
# exponential synapses 5 ms) -> 20 leaky-integrator readouts. Only the hidden->hidden
# synapses have delays, the distances between the neurons' learnable 2-D positions (one
# distance unit = one time step). `sj_spatial.models.recurrent_shd_model` builds it.
#
# We train it with a distance-dependent wiring cost (`WiringCost`: L1 on the weights times
# synapse length), watch its topology in TensorBoard (`TopologyLogger`), compare the
# network's structure before and after training (`topology.analyze`), draw where the
# neurons went, and finally prune the trained recurrent layer by distance and by
# magnitude.
#
# Run as a script, `python tutorials/03_recurrent_topology.py [--quick] [--data-root DIR]
# [--device cpu|cuda] [--out DIR]`, or open it as a notebook with jupytext. Figures and
# TensorBoard logs go to `--out` (default `runs/03_recurrent_topology`).

# %%
import argparse
import copy
import os
import sys
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib import pyplot as plt
from spikingjelly.activation_based import functional

from sj_spatial import (
    SpatialRecurrentContainer,
    WiringCost,
    param_groups,
    prune_by_distance,
    prune_by_magnitude,
    topology,
)
from sj_spatial.callbacks import TopologyLogger, position_figure
from sj_spatial.data import collate, shd_splits
from sj_spatial.models import recurrent_shd_model
from sj_spatial.train_job import Callback, EpochRecord, fit

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # a script writes the figures to files; a notebook also shows them

# %% [markdown]
# ## Settings
#
# Full mode uses the paper's model and optimiser on the real SHD: 1 ms time steps
# (T = 1000 for the first second), 128 hidden neurons, weights Adam(1e-3), positions
# Adam(0.05); 50 epochs of batches of 64, a wiring cost of strength 1e-3 and delays of at
# most 25 steps are this tutorial's choices. Quick mode (`--quick` or
# `SJ_SPATIAL_QUICK=1`) uses 10 ms steps, 32 neurons, a few hundred samples and one epoch:
# a smoke test whose numbers mean nothing.

# %%
parser = argparse.ArgumentParser(
    description="Recurrent spatial SNN: topology and pruning.", allow_abbrev=False
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
    "--wiring-cost", type=float, default=1e-3, help="strength of the wiring cost sum |w| * distance"
)
parser.add_argument(
    "--backend",
    default="torch",
    choices=("torch", "cupy"),
    help="kernel of the recurrent layer ('cupy' needs CuPy and a GPU)",
)
parser.add_argument("--out", type=Path, default=Path("runs/03_recurrent_topology"))
args, _ = parser.parse_known_args()  # Jupyter passes its own arguments: ignore them

QUICK = args.quick or os.environ.get("SJ_SPATIAL_QUICK") == "1"
DATA_ROOT = args.data_root  # in a notebook, set this to your SHD folder
DEVICE = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
SEED = 0
DT = 0.01 if QUICK else 0.001  # seconds per time step
DURATION = 1.0  # seconds of each recording
HIDDEN = 32 if QUICK else 128
EPOCHS = args.epochs or (1 if QUICK else 50)
SAMPLES = args.samples or (256 if QUICK else None)  # per split; None: all
BATCH_SIZE = 32 if QUICK else 64
LR, POSITION_LR = 1e-3, 0.05
MAX_DELAY = 25  # time steps; watch `clamped_fraction` below
NULLS = 5  # random graphs per clustering / efficiency normalisation
OUT = args.out
OUT.mkdir(parents=True, exist_ok=True)
if QUICK and DEVICE.type == "cpu":
    torch.set_num_threads(1)  # tensors this small run faster on one thread than on several
torch.manual_seed(SEED)
print(
    f"{'quick' if QUICK else 'full'} mode: dt {DT * 1e3:.0f} ms, T {round(DURATION / DT)}, "
    f"hidden {HIDDEN}, epochs {EPOCHS}, wiring cost {args.wiring_cost}, device {DEVICE}"
)

# %% [markdown]
# ## Data


# %%
train_set, test_set = shd_splits(DATA_ROOT, DT, DURATION, SAMPLES)
print(
    f"data: {'built-in SHD-format' if DATA_ROOT is None else DATA_ROOT}; "
    f"train {len(train_set)}, test {len(test_set)} samples"
)

# %% [markdown]
# ## The model
#
# `recurrent_shd_model` returns a multi-step `nn.Sequential`:
# `layer.Linear(700, hidden)`, `SpatialRecurrentContainer` (exponential synapse + LIF,
# recurrent weights with position-derived delays), `layer.Linear(hidden, 20)` and a
# `LeakyIntegrator` readout; its output `[T, N, 20]` is averaged over time for the loss.

# %%
model = recurrent_shd_model(
    hidden=HIDDEN, dt=DT, max_delay=MAX_DELAY, delay_scale=1.0, backend=args.backend
).to(DEVICE)
print(model)


def recurrent_layer(m) -> SpatialRecurrentContainer:
    return next(x for x in m.modules() if isinstance(x, SpatialRecurrentContainer))


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table, with a blank line before and after it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n" + "\n".join(lines) + "\n"


def structure(m) -> dict:
    """Topology of the recurrent layer, and whether place follows the neurons' inputs."""
    rec = recurrent_layer(m)
    metrics = topology.analyze(rec, seed=SEED, nulls=NULLS)
    inputs = m[0].weight.detach().cpu().numpy()  # [hidden, 700]: what each neuron listens to
    positions = rec.positions.positions.detach().cpu().numpy()
    metrics["specialization_r2"] = topology.specialization_r2(inputs, positions)
    metrics["specialization_r2_shuffled"] = topology.specialization_r2(
        inputs, np.random.default_rng(SEED).permutation(positions)
    )
    return metrics


def snapshot(m) -> dict:
    """Effective recurrent weights and positions, as numpy copies."""
    rec = recurrent_layer(m)
    return {
        "weight": rec.effective_weight().detach().cpu().numpy().copy(),
        "positions": rec.positions.positions.detach().cpu().numpy().copy(),
    }


before, before_snapshot = structure(model), snapshot(model)

# %% [markdown]
# ## Training with a wiring cost, logged to TensorBoard
#
# `WiringCost(model, strength)` finds the model's spatial layers and returns
# `strength * sum |w_ji| * d_ji`; adding it to the loss makes long synapses expensive.
# `TopologyLogger` writes, for the recurrent layer, every metric of `topology.analyze`,
# histograms of delays, distances and weights, and an image of the neurons in the plane
# coloured by community. We log before training and after every epoch, from a callback of
# `sj_spatial.train_job.fit` (the project's epoch loop; `cost=` adds the wiring cost to
# every step's loss).

# %%
optimizer = torch.optim.Adam(param_groups(model, LR, POSITION_LR))
cost = WiringCost(model, strength=args.wiring_cost)
logdir = OUT / "tensorboard"
logger = TopologyLogger(logdir, model, nulls=NULLS, seed=SEED)
logger.log(0)


def evaluate(m, dataset) -> float:
    m.eval()
    loader = torch.utils.data.DataLoader(dataset, BATCH_SIZE, collate_fn=collate)
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            logits = m(x.to(DEVICE)).mean(0)
            functional.reset_net(m)
            correct += int((logits.argmax(-1).cpu() == y).sum())
    return correct / len(dataset)


loader = torch.utils.data.DataLoader(
    train_set,
    BATCH_SIZE,
    shuffle=True,
    collate_fn=collate,
    generator=torch.Generator().manual_seed(SEED),
)
test_loader = torch.utils.data.DataLoader(test_set, BATCH_SIZE, collate_fn=collate)


class Watch(Callback):
    """Per step the task loss and the wiring cost; per epoch the test accuracy and the
    topology (TensorBoard), and a line."""

    step = 0

    def on_step_end(self, loss: float) -> None:
        self.step += 1
        logger.writer.add_scalar("train/loss", loss, self.step)
        logger.writer.add_scalar("train/wiring_cost", cost().item(), self.step)

    def on_epoch_end(self, record: EpochRecord) -> None:
        logger.writer.add_scalar("test/accuracy", record.test_acc, self.step)
        logger.log(self.step)
        print(
            f"epoch {record.epoch}/{EPOCHS}: task loss {record.train_loss:.3f}, wiring cost "
            f"{cost().item():.3f}, test accuracy {record.test_acc:.3f} "
            f"({record.seconds:.1f} s)"
        )


records = fit(
    model,
    [optimizer],
    lambda epoch: loader,  # one shuffle generator for the whole run
    test_loader,
    epochs=EPOCHS,
    device=DEVICE,
    cost=cost,  # added to the task loss of every step
    callbacks=[Watch()],
)
accuracy = records[-1].test_acc
logger.close()
print(f"TensorBoard: tensorboard --logdir {logdir}")

# %% [markdown]
# ## Before and after
#
# Graph metrics of the recurrent layer (`docs/topology.md` has the formulas):
# `modularity` (Louvain communities), `clustering` and `efficiency` relative to random
# graphs with the same weights (1 = random), `wiring_efficiency` (0.5 = random wiring,
# 1 = strongest synapses on the shortest distances), `mean_length` (|w|-weighted synapse
# length) and `clamped_fraction` (synapses at `max_delay`, which get no position
# gradient). `specialization_r2` asks whether a neuron's position can be predicted from
# its input weights; compare it with the same regression on shuffled positions.

# %%
after, after_snapshot = structure(model), snapshot(model)
keys = [
    "modularity",
    "num_communities",
    "clustering",
    "efficiency",
    "small_world",
    "wiring_efficiency",
    "mean_length",
    "wiring_cost",
    "clamped_fraction",
    "specialization_r2",
    "specialization_r2_shuffled",
]
rows = [[key, f"{before[key]:.4g}", f"{after[key]:.4g}"] for key in keys]
print(markdown_table(["metric", "before training", "after training"], rows))

# %% [markdown]
# Where the neurons are, coloured by Louvain community, with the strongest recurrent
# synapses drawn (darker = stronger). Spatially compact communities and short strong
# synapses are the paper's signature of a network that uses space.

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
for ax, (title, snap) in zip(
    axes, (("before training", before_snapshot), ("after training", after_snapshot)), strict=True
):
    labels = topology.communities(snap["weight"], seed=SEED)
    ax.imshow(
        position_figure(
            snap["weight"], snap["positions"], snap["positions"], labels=labels, title=title
        )
    )
    ax.axis("off")
fig.tight_layout()
fig.savefig(OUT / "positions.png", dpi=120)
print(f"saved {OUT / 'positions.png'}")

# %% [markdown]
# ## Pruning: the longest or the weakest synapses
#
# On copies of the trained model, remove a fraction of the recurrent synapses, either the
# longest (`prune_by_distance`) or the weakest (`prune_by_magnitude`), and measure test
# accuracy and structure without retraining. The paper finds that distance-based pruning
# costs about as much accuracy as magnitude-based pruning while keeping a local, modular
# network.

# %%
FRACTIONS = (0.25, 0.5, 0.75)
pruning = [
    {
        "pruned by": "none",
        "fraction": 0.0,
        "test accuracy": accuracy,
        "modularity": after["modularity"],
        "clustering": after["clustering"],
    }
]
for method, prune in (("distance", prune_by_distance), ("magnitude", prune_by_magnitude)):
    for fraction in FRACTIONS:
        pruned = copy.deepcopy(model)
        prune(recurrent_layer(pruned), fraction)
        metrics = topology.analyze(recurrent_layer(pruned), seed=SEED, nulls=NULLS)
        pruning.append(
            {
                "pruned by": method,
                "fraction": fraction,
                "test accuracy": evaluate(pruned, test_set),
                "modularity": metrics["modularity"],
                "clustering": metrics["clustering"],
            }
        )

header = list(pruning[0])
rows = [
    [r["pruned by"], f"{r['fraction']:.2f}", *(f"{r[k]:.3f}" for k in header[2:])] for r in pruning
]
print(markdown_table(header, rows))

fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
for ax, key in zip(axes, header[2:], strict=True):
    for method, marker in (("distance", "o"), ("magnitude", "s")):
        points = [pruning[0]] + [r for r in pruning if r["pruned by"] == method]
        ax.plot(
            [r["fraction"] for r in points], [r[key] for r in points], marker=marker, label=method
        )
    ax.set(xlabel="fraction of recurrent synapses pruned", ylabel=key)
axes[0].legend(title="pruned by")
fig.tight_layout()
fig.savefig(OUT / "pruning.png", dpi=120)
print(f"saved {OUT / 'pruning.png'}")

# %% [markdown]
# In quick mode these numbers come from a 32-neuron network trained for one epoch on a
# few hundred built-in samples; run full mode on the real SHD for numbers worth reading.
# Things to try: `--wiring-cost 0` (positions alone), a larger cost, `WiringCost(...,
# normalize="mean")` or `communicability=True`, and pruning followed by a few epochs of
# retraining (the pruning mask keeps removed synapses at zero).
