"""The recipe search's wrapper around ``sj-spatial train`` (runs marked * in README.md).

    python wrapper.py NAME root=DATA_DIR [key=value ...]

Every ``TrainConfig`` field can be set as ``key=value`` (e.g. ``epochs=30 augment=True
lr=0.01 dt=0.005``); beyond the job's options: ``tau_mem``, ``tau_syn``, ``tau_out``
(seconds), ``readout=mean|max`` (over time), ``in_drop=p`` (input dropout),
``in_scale=c`` (input counts times c), ``wd=x`` (AdamW weight decay on the weights),
``max_shift=k`` (the augmentation's largest channel shift), ``thin=q`` (in training,
each sample keeps each input spike with a probability drawn from ``[q, 1]``),
``smooth=e`` (label smoothing of the cross-entropy), ``hid_drop=p`` (dropout of the
hidden spikes before the readout, one mask per sample for all time steps),
``fmask=F`` and ``tmask=K`` (in training, each sample loses a band of up to F adjacent
input channels and a span of up to K time steps, as SpecAugment masks a spectrogram),
``threads=n``. The run's files go to ``runs/NAME``. The variations are the job's own
extension points (``sj_spatial.train_job.train``'s model, optimiser and data factories and
its loss), not changes to its modules.
"""

import functools
import sys
from pathlib import Path

import torch
from spikingjelly.activation_based import layer
from torch import nn

from sj_spatial.data import AugmentedSHD
from sj_spatial.models import recurrent_shd_model
from sj_spatial.positions import param_groups
from sj_spatial.train_job import recipe, train
from sj_spatial.train_job.config import TrainConfig

name = sys.argv[1]
over = dict(a.split("=") for a in sys.argv[2:])
model_kw = {k: float(over.pop(k)) for k in list(over) if k in ("tau_mem", "tau_syn", "tau_out")}
readout = over.pop("readout", "mean")
in_drop = float(over.pop("in_drop", 0))
in_scale = float(over.pop("in_scale", 1))
wd = float(over.pop("wd", 0))
max_shift = over.pop("max_shift", None)
thin = float(over.pop("thin", 1))
smooth = float(over.pop("smooth", 0))
hid_drop = float(over.pop("hid_drop", 0))
fmask = int(over.pop("fmask", 0))
tmask = int(over.pop("tmask", 0))
threads = int(over.pop("threads", 0))
if threads:
    torch.set_num_threads(threads)
root = Path(over.pop("root"))
cfg_kw = {}
d = TrainConfig()
for k, v in over.items():
    cur = getattr(d, k)
    cfg_kw[k] = (
        (v == "True")
        if isinstance(cur, bool)
        else (int(v) if k in ("limit", "tbptt", "recompute") else type(cur)(v))
    )
cfg = TrainConfig(data_root=root, logdir=Path("runs") / name, quiet=True, **cfg_kw)


class MaxOverTime(nn.Module):
    def forward(self, x):
        return x.max(0, keepdim=True).values


class InScale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return x * self.c


class InDrop(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return (
            nn.functional.dropout(x, self.p, self.training) * (1 - self.p) if self.training else x
        )


class Thin(nn.Module):
    """Binomial thinning of the input counts, one keep probability per sample."""

    def __init__(self, low):
        super().__init__()
        self.low = low

    def forward(self, x):
        if not self.training:
            return x
        keep = torch.empty(1, x.shape[1], 1).uniform_(self.low, 1.0).expand_as(x)
        return torch.binomial(x.contiguous(), keep.contiguous())


class Mask(nn.Module):
    """In training, zero a band of up to ``f`` adjacent channels and a span of up to ``k``
    time steps of each sample (width and start drawn per sample)."""

    def __init__(self, f, k):
        super().__init__()
        self.f, self.k = f, k

    @staticmethod
    def _band(length, width, n):
        w = torch.randint(0, width + 1, (n, 1))
        start = (torch.rand(n, 1) * (length - w + 1)).floor()
        idx = torch.arange(length).unsqueeze(0)
        return (idx >= start) & (idx < start + w)  # [n, length]

    def forward(self, x):
        if not self.training:
            return x
        t, n, c = x.shape
        keep = torch.ones(t, n, c, dtype=torch.bool)
        if self.f:
            keep &= ~self._band(c, self.f, n).unsqueeze(0)
        if self.k:
            keep &= ~self._band(t, self.k, n).t().unsqueeze(2)
        return x * keep


def build_model(config):
    m = recurrent_shd_model(
        dt=config.dt,
        hidden=config.hidden,
        dim=config.dim,
        max_delay=config.max_delay,
        delay_scale=config.delay_scale,
        backend=config.backend,
        **model_kw,
    )
    if hid_drop:
        m = nn.Sequential(*m[:2], layer.Dropout(hid_drop, step_mode="m"), *m[2:])
    if fmask or tmask:
        m = nn.Sequential(Mask(fmask, tmask), *m)
    if in_drop:
        m = nn.Sequential(InDrop(in_drop), *m)
    if thin < 1:
        m = nn.Sequential(Thin(thin), *m)
    if in_scale != 1:
        m = nn.Sequential(InScale(in_scale), *m)
    if readout == "max":
        m = nn.Sequential(*m, MaxOverTime())
    return m


def build_optimizers(model, config):
    """The recipe's Adam, or with ``wd`` AdamW with weight decay on the weights only."""
    if not wd:
        return recipe.build_optimizers(model, config)
    groups = param_groups(model, config.lr, config.position_lr)
    for g in groups:
        g["initial_lr"] = g["lr"]
    for g in groups[1:]:
        g["weight_decay"] = 0.0
    return [torch.optim.AdamW(groups, weight_decay=wd)]


def loss_fn(output, y):
    """The recipe's loss, with ``smooth`` label smoothing."""
    return nn.functional.cross_entropy(output.mean(0), y, label_smoothing=smooth)


augmentation = AugmentedSHD
if max_shift is not None:
    augmentation = functools.partial(AugmentedSHD, max_shift=int(max_shift))
print(
    name,
    cfg,
    model_kw,
    readout,
    in_drop,
    in_scale,
    wd,
    max_shift,
    thin,
    smooth,
    hid_drop,
    fmask,
    tmask,
    flush=True,
)
train(
    cfg,
    model_factory=build_model,
    optimizer_factory=build_optimizers,
    data_factory=functools.partial(recipe.datasets, augmentation=augmentation),
    loss_fn=loss_fn,
)
