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
# # 2. From per-synapse delays (DCLS) to neuron positions
#
# Hammouamri, Khalfaoui-Hassani and Masquelier (2023, "Learning delays in spiking neural
# networks using dilated convolutions with learnable spacings", code: SNN-delays) learn one
# delay per synapse with DCLS: every synapse is a one-tap temporal convolution kernel
# (`Dcls1d`, `kernel_count=1`) whose tap position `P` is learned, blurred by a Gaussian of
# width `SIG` that shrinks during training. Their SHD model:
# `[Dcls1d -> BatchNorm -> LIF -> Dropout] x 2 -> Dcls1d -> LIF readout (membrane)`.
#
# A layer `in -> out` then has `in * out` delay parameters. With neuron positions the same
# layer has `(in + out) * D`: the delay of synapse j <- i is
# `delay_scale * ||q_j - p_i||`. This tutorial builds both models, trains both briefly,
# compares accuracy, parameter counts and time per batch, and then asks the reverse
# question: can a trained DCLS model's delays be written as distances between neurons?
#
# Run as a script, `python tutorials/02_dcls_to_positions.py [--quick] [--data-root DIR]
# [--device cpu|cuda] [--seed S] [--json FILE] [--no-fit]`, or open it as a notebook with
# jupytext. It needs `dcls` (`pip install dcls`).

# %%
import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from DCLS.construct.modules import Dcls1d
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from sj_spatial import NeuronPositions, SpatialDelayLinear
from sj_spatial.data import collate, shd_splits
from sj_spatial.train_job import Callback, EpochRecord, fit

# %% [markdown]
# ## Settings
#
# The full settings follow SNN-delays' SHD configuration where it matters here: 10 ms time
# steps, the 700 channels summed in groups of 5 (140 inputs), 2 hidden layers of 256 LIF
# neurons (`tau` 10.05 ms, `decay_input=False`, ATan surrogate), batch norm, dropout 0.4,
# no biases, delays of 0 .. 24 steps (kernel size 25), Adam with learning rate 1e-3 for
# weights and 0.1 for DCLS positions, `SIG` starting at `K // 2` and shrinking
# exponentially to 0.23 over the first quarter of training. Their schedulers (one-cycle,
# cosine), weight decay, augmentations and right padding of the time axis are left out.
# Quick mode (`--quick` or `SJ_SPATIAL_QUICK=1`) uses 50 ms steps, delays of 0 .. 4 steps,
# 64 hidden neurons, a few hundred samples and one epoch: a smoke test, not a result.

# %%
parser = argparse.ArgumentParser(
    description="DCLS delays versus neuron positions on SHD.", allow_abbrev=False
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
    "--no-fit", action="store_true", help="stop after training, before fitting positions"
)
parser.add_argument(
    "--json", type=Path, default=None, help="also write the settings and results to this file"
)
parser.add_argument(
    "--only",
    choices=("DCLS", "positions"),
    default=None,
    help="train only this model (the fit of positions to DCLS's delays needs both)",
)
parser.add_argument(
    "--positions-hidden",
    type=int,
    default=None,
    help="hidden neurons per layer of the positions model (default: as DCLS's), e.g. "
    "for as many trainable parameters as DCLS",
)
args, _ = parser.parse_known_args()  # Jupyter passes its own arguments: ignore them

QUICK = args.quick or os.environ.get("SJ_SPATIAL_QUICK") == "1"
DATA_ROOT = args.data_root  # in a notebook, set this to your SHD folder
DEVICE = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
SEED = args.seed
DT = 0.05 if QUICK else 0.01  # seconds per time step
DURATION = 1.0  # seconds of each recording
CHANNEL_GROUP = 5  # 700 channels -> 140 inputs
HIDDEN = 64 if QUICK else 256
POSITIONS_HIDDEN = HIDDEN if args.positions_hidden is None else args.positions_hidden
if POSITIONS_HIDDEN < 1:
    parser.error(f"--positions-hidden must be positive, got {POSITIONS_HIDDEN}")
EPOCHS = args.epochs or (1 if QUICK else 50)
SAMPLES = args.samples or (256 if QUICK else None)  # per split; None: all
BATCH_SIZE = 32 if QUICK else 256
KERNEL = round(0.25 / DT) // 2 * 2 + 1  # DCLS kernel: odd, delays 0 .. KERNEL - 1 steps
MAX_DELAY = KERNEL - 1  # the same range for the spatial layers
DELAY_SCALE = MAX_DELAY / 2  # positions U(-1, 1)^2: initial delays spread like DCLS's
TAU = max(10.05e-3 / DT, 1.005)  # LIF time constant in steps (LIFNode needs > 1)
LR = 1e-3
DCLS_POSITION_LR = 0.1  # time steps
# The same speed for the spatial model: a position step of lr moves delays by about
# lr * DELAY_SCALE time steps.
POSITION_LR = DCLS_POSITION_LR / DELAY_SCALE
SIG_START, SIG_END = KERNEL // 2, 0.23
if QUICK and DEVICE.type == "cpu":
    torch.set_num_threads(1)  # tensors this small run faster on one thread than on several
print(
    f"{'quick' if QUICK else 'full'} mode: dt {DT * 1e3:.0f} ms, T {round(DURATION / DT)}, "
    f"hidden {HIDDEN}, kernel {KERNEL} (delays 0..{MAX_DELAY} steps), epochs {EPOCHS}, "
    f"device {DEVICE}"
)

# %% [markdown]
# ## Data
#
# Frames `[T, 700]` from `SHD`, summed over groups of 5 neighbouring channels to
# `[T, 140]` as SNN-delays does; `collate` makes time-major batches `[T, N, 140]`.


# %%
def group_channels(frames: torch.Tensor) -> torch.Tensor:
    return frames.reshape(frames.shape[0], -1, CHANNEL_GROUP).sum(-1)


train_set, test_set = shd_splits(DATA_ROOT, DT, DURATION, SAMPLES, group_channels)
INPUTS = 700 // CHANNEL_GROUP
print(
    f"data: {'built-in SHD-format' if DATA_ROOT is None else DATA_ROOT}; "
    f"train {len(train_set)}, test {len(test_set)} samples, {INPUTS} inputs"
)

# %% [markdown]
# ## Two kinds of delayed synapses, one network
#
# `Dcls1d` works on `[N, C, L]`; `DclsSynapses` adapts it to SpikingJelly's time-major
# `[T, N, C]` and pads the time axis on the left by `KERNEL - 1` steps, so that output step
# t sees inputs t - (KERNEL - 1) .. t and T stays the same. Kernel tap k then carries a
# delay of `KERNEL - 1 - k` steps, and DCLS places its tap at `P + KERNEL // 2`: the delay
# of synapse j <- i is `KERNEL // 2 - P[0, j, i, 0]`, in 0 .. KERNEL - 1.
#
# `SpatialDelayLinear` already is a time-major delayed linear layer. The four populations
# (inputs, two hidden layers, outputs) each get one `NeuronPositions`, shared by the layers
# on either side.


# %%
class DclsSynapses(nn.Module):
    """Dcls1d with one learnable delay per synapse, on time-major ``[T, N, in]``."""

    def __init__(self, n_in: int, n_out: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv = Dcls1d(
            n_in, n_out, kernel_count=1, dilated_kernel_size=kernel, bias=False, version="gauss"
        )
        nn.init.kaiming_uniform_(self.conv.weight, nonlinearity="relu")
        with torch.no_grad():  # SNN-delays: delays uniform over the kernel, fixed SIG
            self.conv.P.uniform_(-(kernel // 2), kernel // 2)
            self.conv.SIG.fill_(SIG_START)
        self.conv.SIG.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x.permute(1, 2, 0), (self.kernel - 1, 0))
        return self.conv(x).permute(2, 0, 1)

    def delays(self) -> torch.Tensor:
        """Delays ``[out, in]`` in time steps."""
        return self.kernel // 2 - self.conv.P[0, :, :, 0]


def spatial_synapses(sizes: list[int], dim: int = 2) -> list[SpatialDelayLinear]:
    """Bias-free delayed synapses between populations of ``sizes``, sharing positions."""
    populations = [NeuronPositions(n, dim=dim) for n in sizes]
    synapses = []
    for pre, post in zip(populations[:-1], populations[1:], strict=True):
        synapse = SpatialDelayLinear(
            pre.num_neurons,
            post.num_neurons,
            bias=False,
            step_mode="m",
            dim=dim,
            max_delay=MAX_DELAY,
            delay_scale=DELAY_SCALE,
            pre_positions=pre,
            post_positions=post,
            backend=args.backend,
        )
        nn.init.kaiming_uniform_(synapse.weight, nonlinearity="relu")  # as the DCLS model
        synapses.append(synapse)
    return synapses


def lif(**kwargs) -> neuron.LIFNode:
    return neuron.LIFNode(
        tau=TAU,
        decay_input=False,
        surrogate_function=surrogate.ATan(5.0),
        detach_reset=True,
        step_mode="m",
        **kwargs,
    )


class DelaySNN(nn.Module):
    """SNN-delays' SHD network around any time-major delayed synapses ``[T, N, in] -> out``.

    Returns the readout membrane potentials ``[T, N, classes]`` (a LIF that never fires).
    """

    def __init__(self, synapses: list[nn.Module], hidden: int = HIDDEN, dropout: float = 0.4):
        super().__init__()
        self.synapses = nn.ModuleList(synapses)
        self.hidden = nn.ModuleList(
            nn.Sequential(
                layer.SeqToANNContainer(nn.BatchNorm1d(hidden)),
                lif(),
                layer.Dropout(dropout, step_mode="m"),
            )
            for _ in synapses[:-1]
        )
        self.readout = lif(v_threshold=1e9, store_v_seq=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for synapse, block in zip(self.synapses[:-1], self.hidden, strict=True):
            x = block(synapse(x))
        self.readout(self.synapses[-1](x))
        return self.readout.v_seq


sizes = [INPUTS, HIDDEN, HIDDEN, 20]
torch.manual_seed(SEED)
dcls_model = DelaySNN(
    [DclsSynapses(a, b, KERNEL) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
)
torch.manual_seed(SEED)
spatial_sizes = [INPUTS, POSITIONS_HIDDEN, POSITIONS_HIDDEN, 20]
spatial_model = DelaySNN(spatial_synapses(spatial_sizes), hidden=POSITIONS_HIDDEN)
print(dcls_model.synapses[0].conv, spatial_model.synapses[0], sep="\n")

# %% [markdown]
# ## Parameter counts
#
# DCLS learns `P` (one delay per synapse); `SIG` has one entry per synapse too but is set
# by the schedule, not learned. The spatial model learns `2 * (140 + 256 + 256 + 20)`
# coordinates in full mode.


# %%
def is_delay(name: str) -> bool:
    """Whether a parameter name is a delay parameter: DCLS's ``P`` or a position set."""
    return name.endswith((".P", "positions"))


def delay_parameters(model: DelaySNN) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if is_delay(n))


def other_parameters(model: DelaySNN) -> int:
    learned = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    return learned - delay_parameters(model)


for name, model in (("DCLS", dcls_model), ("positions", spatial_model)):
    print(
        f"{name:10s} weights + BN {other_parameters(model):,}, "
        f"learned delay parameters {delay_parameters(model):,}"
    )

# %% [markdown]
# ## Training
#
# SNN-delays' loss: the readout's softmax summed over time, fed to cross-entropy. Two
# Adams per model (weights, delay parameters). After every DCLS step its positions are
# clamped to the kernel and `SIG` follows its schedule (per batch here, so that one quick
# epoch also reaches the final width). Both train through `sj_spatial.train_job.fit`, the
# project's epoch loop: the loss and the class scores are its `loss_fn` and `predict`,
# DCLS's schedule a callback after every step. Times per epoch cover the whole training
# pass (batches loaded, forward, backward, steps).


# %%
def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table, with a blank line before and after it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n" + "\n".join(lines) + "\n"


def scores(v_seq: torch.Tensor) -> torch.Tensor:
    """SNN-delays' class scores: the readout's softmax summed over time."""
    return v_seq.softmax(-1).sum(0)


def loss_fn(v_seq: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(scores(v_seq), y)


def evaluate(model: nn.Module, dataset) -> float:
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, BATCH_SIZE, collate_fn=collate)
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((scores(model(x.to(DEVICE))).argmax(-1) == y.to(DEVICE)).sum())
            functional.reset_net(model)
    return correct / len(dataset)


class SigmaSchedule(Callback):
    """DCLS's kernel width after every step: clamped positions, ``SIG`` shrinking
    geometrically from ``SIG_START`` to ``SIG_END`` over the first quarter of the steps."""

    def __init__(self, model: DelaySNN, steps: int):
        self.synapses, self.shrink_steps, self.step = model.synapses, max(1, steps // 4), 0

    def on_step_end(self, loss: float) -> None:
        self.step += 1
        sig = SIG_START * (SIG_END / SIG_START) ** min(1.0, self.step / self.shrink_steps)
        for synapse in self.synapses:
            synapse.conv.clamp_parameters()
            synapse.conv.SIG.data.fill_(sig)


def train(model: DelaySNN, name: str, epochs: int = EPOCHS) -> dict:
    model.to(DEVICE)
    torch.manual_seed(SEED)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    delays = [p for n, p in named if is_delay(n)]
    weights = [p for n, p in named if not is_delay(n)]
    is_dcls = isinstance(model.synapses[0], DclsSynapses)
    optimizers = [
        torch.optim.Adam(weights, lr=LR),
        torch.optim.Adam(delays, lr=DCLS_POSITION_LR if is_dcls else POSITION_LR),
    ]
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
                f"{name}: epoch {record.epoch}/{epochs} train loss {record.train_loss:.3f}, "
                f"test accuracy {record.test_acc:.3f}"
            )

    schedule = [SigmaSchedule(model, epochs * len(loader))] if is_dcls else []
    records = fit(
        model,
        optimizers,
        lambda epoch: loader,  # one shuffle generator for the whole run
        test_loader,
        epochs=epochs,
        loss_fn=loss_fn,
        predict=scores,
        device=DEVICE,
        callbacks=[*schedule, Report()],
    )
    seconds = [r.seconds for r in records]
    return {
        "test_accuracy": records[-1].test_acc,
        "test_accuracy_per_epoch": [r.test_acc for r in records],
        "ms_per_batch": 1e3 * sum(seconds) / (epochs * len(loader)),
        "seconds_per_epoch": sum(seconds) / epochs,
    }


models = {"DCLS": dcls_model, "positions": spatial_model}
if args.only is not None:
    models = {args.only: models[args.only]}
results = {name: train(model, name) for name, model in models.items()}

# %%
header = [
    "model",
    "test accuracy",
    "weights + BN",
    "learned delay parameters",
    "ms / batch (train)",
]
rows = [
    [
        name,
        f"{results[name]['test_accuracy']:.3f}",
        f"{other_parameters(model):,}",
        f"{delay_parameters(model):,}",
        f"{results[name]['ms_per_batch']:.1f}",
    ]
    for name, model in models.items()
]
print(markdown_table(header, rows))

# %% [markdown]
# With `--json FILE` the script also writes the settings and both models' results
# (accuracy per epoch, training seconds per epoch, trainable parameters) for benchmarks
# to collect; with `--no-fit` or `--only positions` it stops here, before the fit below.

# %%
if args.json is not None:
    for name, model in models.items():
        results[name]["trainable_parameters"] = other_parameters(model) + delay_parameters(model)
    settings = {"seed": SEED, "dt": DT, "hidden": HIDDEN, "epochs": EPOCHS, "lr": LR}
    settings |= {"positions_hidden": POSITIONS_HIDDEN}
    settings |= {"position_lr": POSITION_LR, "max_delay": MAX_DELAY, "batch_size": BATCH_SIZE}
    args.json.write_text(json.dumps({"settings": settings, "models": results}, indent=1))
if args.no_fit or "DCLS" not in models:
    raise SystemExit(0)

# %% [markdown]
# ## Are DCLS's delays spatial? Fit positions to them
#
# If a trained DCLS model's delays were distances between neurons, positions could
# reproduce them. We take a fresh spatial network of the same shape and move only its
# positions by Adam on the squared error between each layer's `delays()` (that is
# `min(delay_scale * ||q_j - p_i||, max_delay)`, with the shared populations) and the
# DCLS delays of the same synapses.
#
# Fitted directly in 2-D from random positions, such a fit gets stuck in folded layouts
# (it explains only about 60% of the variance of delays that *are* 2-D distances). So we
# fit in 8 dimensions, where it does not get stuck, push the 6 extra coordinates to zero
# with a penalty that grows during the fit, and keep the first two. The fit reports R²
# per layer, also weighted by the DCLS synapse's `|w|` (weak synapses matter less), and
# two controls fitted the same way:
#
# - the same DCLS delays shuffled among the synapses of each layer: what a fit achieves
#   on delays with no geometry at all;
# - the delays of the position model trained above: truly spatial delays, so its R² is
#   about the best the fit can do (near 1; lower when many delays sit at `max_delay`,
#   which hides how far apart those neurons are).


# %%
def r2(fitted: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> float:
    weight = torch.ones_like(target) if weight is None else weight
    mean = (weight * target).sum() / weight.sum()
    residual = (weight * (target - fitted) ** 2).sum()
    return float(1 - residual / (weight * (target - mean) ** 2).sum())


def fit_positions(targets: list[torch.Tensor], steps: int = 300, lr: float = 0.05, dim: int = 8):
    """2-D spatial synapses whose delays approximate ``targets`` (``[out, in]`` per layer)."""
    torch.manual_seed(SEED + 1)  # not the position model's initial positions
    wide = spatial_synapses(sizes, dim=dim)
    shared = {id(p): p.positions for s in wide for p in (s.pre_positions, s.post_positions)}
    positions = list(shared.values())  # each population once
    optimizer = torch.optim.Adam(positions, lr=lr)
    for step in range(steps):
        error = sum(((s.delays() - t) ** 2).mean() for s, t in zip(wide, targets, strict=True))
        extra = sum((p[:, 2:] ** 2).sum(1).mean() for p in positions)
        squeeze = 100 * min(1.0, 1.5 * step / steps) ** 2  # full strength after 2/3 of the steps
        optimizer.zero_grad()
        (error + squeeze * extra).backward()
        optimizer.step()
    synapses = spatial_synapses(sizes)
    for s, w in zip(synapses, wide, strict=True):
        with torch.no_grad():
            s.pre_positions.positions.copy_(w.pre_positions.positions[:, :2])
            s.post_positions.positions.copy_(w.post_positions.positions[:, :2])
    return synapses


dcls_delays = [s.delays().detach().cpu() for s in dcls_model.synapses]
dcls_weights = [s.conv.weight.detach().cpu()[:, :, 0].abs() for s in dcls_model.synapses]
shuffled = [d.flatten()[torch.randperm(d.numel())].reshape(d.shape) for d in dcls_delays]
spatial_delays = [s.delays().detach().cpu() for s in spatial_model.synapses]
fits = {
    name: fit_positions(targets)
    for name, targets in (
        ("DCLS", dcls_delays),
        ("shuffled", shuffled),
        ("spatial", spatial_delays),
    )
}

header = [
    "layer",
    "synapses",
    "R²",
    "R² (magnitude-weighted)",
    "RMSE (steps)",
    "R² shuffled",
    "R² spatial control",
]
rows = []
for k, (target, weight) in enumerate(zip(dcls_delays, dcls_weights, strict=True)):
    fitted = {name: synapses[k].delays().detach() for name, synapses in fits.items()}
    rmse = float(((fitted["DCLS"] - target) ** 2).mean().sqrt())
    rows.append(
        [
            f"{sizes[k]} -> {sizes[k + 1]}",
            f"{target.numel():,}",
            f"{r2(fitted['DCLS'], target):.3f}",
            f"{r2(fitted['DCLS'], target, weight):.3f}",
            f"{rmse:.2f}",
            f"{r2(fitted['shuffled'], shuffled[k]):.3f}",
            f"{r2(fitted['spatial'], spatial_delays[k]):.3f}",
        ]
    )
print(markdown_table(header, rows))

# %% [markdown]
# Reading the fit: DCLS gives every synapse its own delay and starts them uniformly at
# random, so nothing in its parametrisation makes delays consistent across synapses
# that share a neuron. Two dimensions per neuron cannot express an arbitrary `in x out`
# matrix: for random delays the best fit explains little, about what it explains for the
# shuffled control. An R² close to the shuffled control therefore says that the DCLS
# delays (as trained here) carry no geometry; an R² well above it would mean that
# training made them partly spatial, i.e. compressible to neuron positions. The spatial
# control shows that the fit recovers geometry where there is some. (Positions with more
# dimensions, `dim > 2`, give the fit more freedom: every R² rises, the shuffled one too.)
#
# ## Optional: start the position model from DCLS
#
# The fitted positions, together with DCLS's trained weights and batch-norm statistics,
# give a position model that approximates the DCLS model; we evaluate it as it is, and
# after one epoch of training.

# %%
converted = DelaySNN(fits["DCLS"])
state = {k.replace("conv.weight", "weight"): v for k, v in dcls_model.state_dict().items()}
state = {
    k: v[:, :, 0] if k.endswith(".weight") and v.dim() == 3 else v
    for k, v in state.items()
    if not k.endswith((".P", ".SIG"))
}
loaded = converted.load_state_dict(state, strict=False)  # everything but the positions
if loaded.unexpected_keys or not all(k.endswith("positions") for k in loaded.missing_keys):
    raise RuntimeError(f"state_dict mismatch: {loaded}")
converted.to(DEVICE)
as_is = evaluate(converted, test_set)
tuned = train(converted, "converted, fine-tuned", epochs=1)["test_accuracy"]
rows = [
    ["DCLS", f"{results['DCLS']['test_accuracy']:.3f}"],
    ["DCLS -> fitted positions, as is", f"{as_is:.3f}"],
    ["DCLS -> fitted positions, 1 more epoch", f"{tuned:.3f}"],
]
print(markdown_table(["model", "test accuracy"], rows))

# %% [markdown]
# The first row is what the DCLS model reaches; the second how much of it survives when
# its delays are replaced by the nearest spatial ones (the gap grows as the fit's R²
# falls); the third how quickly training recovers. The DCLS model's Gaussian kernels
# (width `SIG`) and sj_spatial's linear interpolation between the two nearest steps also
# differ slightly for the same delay.
