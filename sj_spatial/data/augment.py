"""The paper's data augmentation of SHD spikes: shift in channel, and blend of two samples.

It follows the authors' training code (Mészáros, Knight, Nowotny; repository
``mbalazs98/deventprop``, ``data.py`` and ``shd.py``, classes ``Shift`` and ``Blend``, used
with ``AUGMENT_SHIFT = 40`` and ``P_BLEND = 0.5`` set in ``arguments.py``):

- **shift**: one random integer offset per sample is added to every spike's channel;
  spikes that leave ``0..699`` are dropped; times are unchanged.
- **blend**: two samples of the same class are moved half-way towards each other (the
  channel and the time of their centres of mass, each offset truncated towards zero as
  ``int()`` does), spikes that leave the channels or the window are dropped, each
  remaining spike of either sample is kept with probability ``p`` (0.5), and the kept
  spikes, sorted by time, are a new sample of that class. Each epoch adds as many blended
  samples as the training set has, and every sample, blended or not, is then shifted.

:func:`shift_units` and :func:`blend_events` act on spike events (times, units).
:class:`AugmentedSHD` applies them to an :class:`~sj_spatial.data.SHD` dataset on its
binned spikes, with the time step as the unit of time: a shift gives exactly the frames of
the shifted events, and a blend aligns the two samples by whole time steps.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .._checks import check_float, check_int
from .shd import NUM_CHANNELS, SHD, frames_from_index

#: Largest channel shift of the paper's training (channels).
DEFAULT_MAX_SHIFT = 40
#: Probability of keeping each spike of a parent in a blended sample.
DEFAULT_P_BLEND = 0.5


def _events(times, units) -> tuple[np.ndarray, np.ndarray]:
    times, units = np.asarray(times), np.asarray(units)
    if times.ndim != 1 or units.shape != times.shape:
        raise ValueError(
            f"times and units must be 1-D arrays of one length, got shapes {times.shape} "
            f"and {units.shape}"
        )
    if units.dtype.kind not in "iu":
        raise TypeError(f"units must be integers, got dtype {units.dtype}")
    if times.dtype.kind not in "iuf":
        raise TypeError(f"times must be numbers, got dtype {times.dtype}")
    return times, units.astype(np.int64)


def shift_units(
    times: np.ndarray, units: np.ndarray, offset: int, num_channels: int = NUM_CHANNELS
) -> tuple[np.ndarray, np.ndarray]:
    """Add ``offset`` (channels) to every unit and drop the spikes that leave
    ``0..num_channels-1``. ``times`` ``[S]`` (any unit) and ``units`` ``[S]`` integers;
    returns the kept ``(times [S'], units [S'] int64)`` in their order, times unchanged."""
    times, units = _events(times, units)
    offset = int(offset)
    moved = units + offset
    keep = (moved >= 0) & (moved < num_channels)
    return times[keep], moved[keep]


def random_shift(
    times: np.ndarray,
    units: np.ndarray,
    rng: np.random.Generator,
    max_shift: int = DEFAULT_MAX_SHIFT,
    num_channels: int = NUM_CHANNELS,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shift_units` by one offset drawn uniformly from ``-max_shift..max_shift``."""
    check_int("max_shift", max_shift, minimum=0)
    offset = int(rng.integers(-max_shift, max_shift + 1))
    return shift_units(times, units, offset, num_channels)


def stretch_times(
    times: np.ndarray, units: np.ndarray, factor: float, max_time: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Multiply every time by ``factor`` (> 0): a faster (``factor < 1``) or slower
    utterance. Integer times (time steps) are rounded down to whole steps, so spikes of
    neighbouring steps may share one; spikes at or after ``max_time`` (when given) are
    dropped. Returns the kept ``(times [S'], units [S'] int64)`` in their order."""
    times, units = _events(times, units)
    factor = check_float("factor", factor, strict=True)
    moved = times * factor
    if times.dtype.kind in "iu":
        moved = np.floor(moved).astype(times.dtype)
    keep = np.ones(len(moved), dtype=bool) if max_time is None else moved < max_time
    return moved[keep], units[keep]


def _half_way(mine: np.ndarray, other: np.ndarray, whole: bool):
    """Offset that moves ``mine``'s mean half-way to ``other``'s, truncated towards zero
    when ``whole`` (as ``int()`` does); 0 when either is empty."""
    if len(mine) == 0 or len(other) == 0:
        return 0
    half = (float(np.mean(other)) - float(np.mean(mine))) / 2
    return int(half) if whole else half


def blend_events(
    times_a: np.ndarray,
    units_a: np.ndarray,
    times_b: np.ndarray,
    units_b: np.ndarray,
    rng: np.random.Generator,
    p: float = DEFAULT_P_BLEND,
    num_channels: int = NUM_CHANNELS,
    max_time: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A new sample made of two: ``(times [S], units [S] int64)`` sorted by time.

    Each parent is moved half-way to the other's centre of mass: its units by
    ``int((mean(units_other) - mean(units_own)) / 2)`` channels, its times by half the
    difference of the mean times (truncated to a whole number when the times are
    integers, e.g. time steps or microseconds). Spikes outside ``0..num_channels-1``,
    before 0 or at or after ``max_time`` (when given) are dropped; each remaining spike
    is kept with probability ``p``, drawn from ``rng`` (first parent ``a``, then ``b``).
    """
    times_a, units_a = _events(times_a, units_a)
    times_b, units_b = _events(times_b, units_b)
    p = check_float("p", p)
    if p > 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    whole = times_a.dtype.kind in "iu" and times_b.dtype.kind in "iu"
    parts = []
    for times, units, times_o, units_o in (
        (times_a, units_a, times_b, units_b),
        (times_b, units_b, times_a, units_a),
    ):
        times = times + _half_way(times, times_o, whole)
        units = units + _half_way(units, units_o, True)
        keep = (units >= 0) & (units < num_channels) & (times >= 0)
        if max_time is not None:
            keep &= times < max_time
        times, units = times[keep], units[keep]
        chosen = rng.random(len(times)) < p
        parts.append((times[chosen], units[chosen]))
    times = np.concatenate([parts[0][0], parts[1][0]])
    units = np.concatenate([parts[0][1], parts[1][1]])
    order = np.argsort(times, kind="stable")
    return times[order], units[order]


def _base(dataset) -> tuple[SHD, np.ndarray]:
    """The SHD dataset under ``dataset`` (an SHD or nested ``Subset`` s of one) and the
    SHD index of each of ``dataset``'s items."""
    if isinstance(dataset, SHD):
        return dataset, np.arange(len(dataset))
    if isinstance(dataset, Subset):
        shd, positions = _base(dataset.dataset)
        return shd, positions[np.asarray(dataset.indices, dtype=np.int64)]
    raise TypeError(
        f"dataset must be an SHD dataset or a torch Subset of one, got {type(dataset).__name__}"
    )


class AugmentedSHD(Dataset):
    """A training set of :class:`~sj_spatial.data.SHD` with the paper's augmentation:
    item ``i`` is ``(frames [T, 700] float32, label int)`` like SHD's.

    Items ``0..N-1`` are the samples of ``dataset``, each shifted by a random offset in
    ``-max_shift..max_shift`` channels; items ``N..N+num_blend-1`` are blends
    (:func:`blend_events`, keep probability ``p_blend``, aligned by whole time steps) of a
    random sample and a random sample of the same class (possibly itself), labelled with
    that class and then shifted too. The draws of an item depend only on ``seed``, the
    epoch (:meth:`set_epoch`) and ``i``: they repeat exactly, do not depend on the order
    or the worker that reads them, and change from epoch to epoch.

    Args:
        dataset: an SHD dataset, or a ``torch.utils.data.Subset`` of one.
        max_shift: largest channel shift; 0 turns shifting off.
        p_blend: probability of keeping each spike of a parent in a blended sample.
        num_blend: blended samples per epoch; default ``len(dataset)`` (as in the paper);
            0 turns blending off.
        seed: seed of every draw.
        max_stretch: each item's times are then multiplied by a factor drawn uniformly
            from ``[1 - max_stretch, 1 + max_stretch]`` (:func:`stretch_times`; a
            speaking rate augmentation, not in the paper); 0 (default) turns it off and
            leaves every other draw as it was.
    """

    def __init__(
        self,
        dataset: SHD | Subset,
        max_shift: int = DEFAULT_MAX_SHIFT,
        p_blend: float = DEFAULT_P_BLEND,
        num_blend: int | None = None,
        seed: int = 0,
        max_stretch: float = 0.0,
    ):
        super().__init__()
        self.shd, self.positions = _base(dataset)
        self.max_shift = check_int("max_shift", max_shift, minimum=0)
        self.p_blend = check_float("p_blend", p_blend)
        if self.p_blend > 1:
            raise ValueError(f"p_blend must be in [0, 1], got {p_blend}")
        num_blend = len(self.positions) if num_blend is None else num_blend
        self.num_blend = check_int("num_blend", num_blend, minimum=0)
        if self.num_blend and not len(self.positions):
            raise ValueError(f"num_blend must be 0 for an empty dataset, got {num_blend}")
        self.seed = check_int("seed", seed, minimum=0)
        self.max_stretch = check_float("max_stretch", max_stretch)
        if self.max_stretch >= 1:
            raise ValueError(f"max_stretch must be in [0, 1), got {max_stretch}")
        self.epoch = 0
        #: Labels ``[N]`` of the samples of ``dataset`` (items ``0..N-1``).
        self.labels: np.ndarray = self.shd.labels[self.positions]
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(self.labels.max(initial=0) + 2))
        #: For each class, the items of ``dataset`` that have it.
        self._classes = [order[bounds[c] : bounds[c + 1]] for c in range(len(bounds) - 1)]

    num_channels = NUM_CHANNELS

    def set_epoch(self, epoch: int) -> None:
        """Draw a new augmentation: call once per epoch, before iterating."""
        self.epoch = check_int("epoch", epoch, minimum=0)

    def __len__(self) -> int:
        return len(self.positions) + self.num_blend

    def events(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Augmented spikes of item ``i``: time steps ``[S]``, channels ``[S]`` (int64) and
        the label."""
        i, n = operator.index(i), len(self)
        if not -n <= i < n:
            raise IndexError(f"item index {i} out of range for {n} items")
        i %= n
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if i < len(self.positions):
            steps, units = self.shd.binned(int(self.positions[i]))
            label = int(self.labels[i])
        else:
            first = int(rng.integers(len(self.positions)))
            label = int(self.labels[first])
            same = self._classes[label]
            second = int(same[rng.integers(len(same))])
            steps, units = blend_events(
                *self.shd.binned(int(self.positions[first])),
                *self.shd.binned(int(self.positions[second])),
                rng,
                p=self.p_blend,
                max_time=self.shd.num_steps,
            )
        if self.max_shift:
            steps, units = random_shift(steps, units, rng, self.max_shift)
        if self.max_stretch:
            factor = rng.uniform(1 - self.max_stretch, 1 + self.max_stretch)
            steps, units = stretch_times(steps, units, factor, self.shd.num_steps)
        return steps, units, label

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        steps, units, label = self.events(i)
        index = steps * NUM_CHANNELS + units
        frames = frames_from_index(index, self.shd.num_steps, self.shd.binary)
        frames = torch.from_numpy(frames)
        if self.shd.transform is not None:
            frames = self.shd.transform(frames)
        if self.shd.target_transform is not None:
            label = self.shd.target_transform(label)
        return frames, label

    def __repr__(self) -> str:
        return (
            f"AugmentedSHD({self.shd!r}, items={len(self.positions)} + {self.num_blend} "
            f"blended, max_shift={self.max_shift}, p_blend={self.p_blend}, "
            f"max_stretch={self.max_stretch}, seed={self.seed}, epoch={self.epoch})"
        )
