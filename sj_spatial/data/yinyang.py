"""The Yin-Yang dataset (Kriener, Göltz, Petrovici 2021) and a time-to-first-spike encoder.

Points ``(x, y)`` in the square ``[0, 2 r_big]^2`` inside the circle of radius ``r_big``
around ``(r_big, r_big)`` fall in one of three classes: yin (0), yang (1) and the two
dots of radius ``r_small`` (2). The generator follows the published definition
(https://github.com/lkriener/yin_yang_data_set, ``dataset.py``; arXiv 2102.08211) draw
for draw: a ``numpy.random.RandomState(seed)`` picks the class of each sample uniformly
(``randint(3)``), then draws ``rand(2) * 2 r_big`` until the point lies in the big
circle and has that class. Each sample is ``(x, y, 1 - x, 1 - y)``, so a given seed gives
the original numbers exactly. The usual splits are train 5000 (seed 42), validation
1000 (seed 41) and test 1000 (seed 40).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_choice, check_float, check_int

R_SMALL = 0.1
R_BIG = 0.5
NUM_CLASSES = 3
CLASS_NAMES = ("yin", "yang", "dot")
#: split -> (size, seed) of the published definition.
SPLITS = {"train": (5000, 42), "validation": (1000, 41), "test": (1000, 40)}
#: Channels of the encoded input: x, y, 1 - x, 1 - y and the bias spike.
NUM_CHANNELS = 5


def yinyang_class(x: float, y: float, r_small: float = R_SMALL, r_big: float = R_BIG) -> int:
    """Class of the point ``(x, y)`` by the published rule: 2 inside either dot (radius
    ``r_small`` around ``(r_big / 2, r_big)`` and ``(3 r_big / 2, r_big)``); 1 within
    ``r_big / 2`` of the left dot's centre, or above ``y = r_big`` and farther than
    ``r_big / 2`` from the right dot's centre; 0 elsewhere (names in :data:`CLASS_NAMES`).
    """
    d_right = math.hypot(x - 1.5 * r_big, y - r_big)
    d_left = math.hypot(x - 0.5 * r_big, y - r_big)
    if d_right < r_small or d_left < r_small:
        return 2
    is_yin = (
        d_right <= r_small
        or r_small < d_left <= 0.5 * r_big
        or (y > r_big and d_right > 0.5 * r_big)
    )
    return int(is_yin)


def _sample(rng: np.random.RandomState, goal: int, r_small: float, r_big: float):
    while True:
        x, y = rng.rand(2) * 2.0 * r_big
        if math.hypot(x - r_big, y - r_big) > r_big:
            continue
        if yinyang_class(x, y, r_small, r_big) == goal:
            return x, y


def make_yinyang(
    size: int, seed: int, r_small: float = R_SMALL, r_big: float = R_BIG
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``size`` samples: inputs ``[size, 4]`` float64 ``(x, y, 1-x, 1-y)`` and
    labels ``[size]`` int64 in {0, 1, 2}.
    """
    check_int("size", size, minimum=0)
    check_int("seed", seed, minimum=0)
    check_float("r_small", r_small, strict=True)
    check_float("r_big", r_big, minimum=r_small, strict=True)
    rng = np.random.RandomState(seed)
    inputs = np.empty((size, 4))
    labels = np.empty(size, dtype=np.int64)
    for n in range(size):
        goal = rng.randint(3)
        x, y = _sample(rng, goal, r_small, r_big)
        inputs[n] = (x, y, 1.0 - x, 1.0 - y)
        labels[n] = goal
    return inputs, labels


def yinyang_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The published ``'train'`` / ``'validation'`` / ``'test'`` split (size and seed of
    :data:`SPLITS`), as :func:`make_yinyang` returns it.
    """
    check_choice("split", split, tuple(SPLITS))
    size, seed = SPLITS[split]
    return make_yinyang(size, seed)


class YinYang(Dataset):
    """``torch`` Dataset of one split: item ``i`` is ``(inputs [4] float32, label int)``.

    ``split`` picks the published size and seed; ``size`` / ``seed`` override them.
    """

    def __init__(self, split: str = "train", size: int | None = None, seed: int | None = None):
        check_choice("split", split, tuple(SPLITS))
        default_size, default_seed = SPLITS[split]
        self.split = split
        self.size = default_size if size is None else check_int("size", size, minimum=0)
        self.seed = default_seed if seed is None else check_int("seed", seed, minimum=0)
        inputs, labels = make_yinyang(self.size, self.seed)
        self.inputs = torch.from_numpy(inputs).float()
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs[index], int(self.labels[index])


def spike_times(inputs, t_early: float, t_late: float) -> np.ndarray:
    """Time-to-first-spike of each input value, in time steps: ``t_early + v (t_late -
    t_early)`` for ``v`` in [0, 1] (larger values spike later). ``[N, C]`` -> ``[N, C]``.
    """
    values = np.asarray(inputs, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"inputs must have shape [N, channels], got shape {values.shape}")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise ValueError(
            f"inputs must lie in [0, 1], got values in [{values.min()}, {values.max()}]"
        )
    return t_early + values * (t_late - t_early)


def ttfs_encode(
    inputs,
    num_steps: int,
    *,
    t_early: float = 2.0,
    t_late: float = 22.0,
    bias_time: float | None = 12.0,
    interpolate: bool = False,
) -> torch.Tensor:
    """Encode values in [0, 1] as one spike per channel: ``[N, C]`` -> ``[T, N, C + 1]``
    float32 (the last channel is the bias spike at ``bias_time``; no bias channel when
    ``bias_time`` is None).

    Value ``v`` spikes at ``t = t_early + v (t_late - t_early)`` time steps (the
    "Fast and deep" TTFS code: earlier spike, smaller value; the bias spike at a fixed
    time gives the network a reference, as in Göltz et al. 2021 and EventProp). With
    ``interpolate=False`` the spike is a 1 at step ``round(t)``. With ``interpolate=True``
    a spike between steps is split linearly, ``1 - f`` at ``floor(t)`` and ``f`` at
    ``floor(t) + 1`` (``f = t - floor(t)``), as the delayed layers interpolate delays,
    so sub-step timing reaches the network. All times must lie in ``[0, num_steps - 1]``.
    """
    check_int("num_steps", num_steps, minimum=1)
    t_early = check_float("t_early", t_early)
    t_late = check_float("t_late", t_late, minimum=t_early)
    times = spike_times(inputs, t_early, t_late)
    if bias_time is not None:
        bias_time = check_float("bias_time", bias_time)
        times = np.concatenate([times, np.full((times.shape[0], 1), bias_time)], axis=1)
    if times.size and times.max() > num_steps - 1:
        raise ValueError(
            f"num_steps must exceed the latest spike time {times.max()}, got {num_steps}"
        )
    num, channels = times.shape
    out = np.zeros((num_steps, num, channels), dtype=np.float32)
    rows, cols = np.indices((num, channels))
    if not interpolate:
        out[np.rint(times).astype(np.int64), rows, cols] = 1.0
        return torch.from_numpy(out)
    low = np.floor(times).astype(np.int64)
    frac = (times - low).astype(np.float32)
    out[low, rows, cols] = 1.0 - frac
    # A spike exactly at the last step has f = 0; clipping keeps its index in range.
    np.add.at(out, (np.minimum(low + 1, num_steps - 1), rows, cols), frac)
    return torch.from_numpy(out)
