"""Spiking Heidelberg Digits (SHD): the real HDF5 files, read unchanged and binned to frames.

An SHD file holds, per sample ``i``, ``/spikes/times[i]`` (seconds, variable length),
``/spikes/units[i]`` (channels ``0..699``), ``/labels[i]`` (class ``0..19``) and, in
``/extra``, the speaker and its metadata. :class:`SHD` bins the spikes of each sample
into a dense ``[T, 700]`` frame of time step ``dt`` and caches the binned spikes of a whole
file once, so later runs neither read the HDF5 file nor touch the network.
"""

from __future__ import annotations

import gzip
import json
import math
import mmap
import operator
import os
import shutil
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_float, check_int
from ._files import atomic_path, cache_key, default_cache_dir, file_identity

NUM_CHANNELS = 700
NUM_CLASSES = 20
#: Window length when neither ``duration`` nor ``T`` is given, in seconds.
DEFAULT_DURATION = 1.0
#: Sub-folders of ``root`` searched for the files: ``root`` itself, then spikingjelly
#: 2.0.0's and 0.0.0.0.14's folders of extracted files, then the download folder.
SEARCH_DIRS = ("", "events_h5", "extract", "download")
SUFFIXES = (".h5", ".h5.gz", ".h5.zip")
#: A spike at ``t`` goes to bin ``floor(t / dt + EDGE_TOLERANCE)``: a time on a bin edge
#: (``t == k * dt`` in decimal) starts bin ``k`` even when ``t / dt`` rounds just below k.
EDGE_TOLERANCE = 1e-9
#: Samples read and binned at once while a cache is built (bounds the memory used).
CHUNK = 1024
CACHE_VERSION = 1
_CACHE_FIELDS = ("offsets", "index", "labels", "speakers", "meta")
_CACHE_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error)
#: Smallest global heap collection HDF5 writes (bytes).
_HEAP_MIN_SIZE = 4096
#: What h5py raises on a damaged file (HDF5's own errors come as OSError or RuntimeError).
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)
_ARCHIVE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True)
class SpikeEvents:
    """Spikes of consecutive samples of an SHD file, flattened.

    ``times`` ``[S]`` float64 seconds and ``units`` ``[S]`` int64 channels; sample ``i``
    owns ``times[offsets[i]:offsets[i + 1]]`` (``offsets`` ``[N + 1]``); ``labels`` ``[N]``
    and ``speakers`` ``[N]`` (None without a usable ``/extra/speaker``) are int64.
    """

    times: np.ndarray
    units: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    speakers: np.ndarray | None


# ---------------------------------------------------------------- finding the files


def find_shd_file(root: str | os.PathLike, train: bool = True) -> Path:
    """Path of ``shd_train`` / ``shd_test`` under ``root``: ``.h5`` first, then ``.h5.gz``
    or ``.h5.zip``, each looked for in ``root``, ``root/events_h5``, ``root/extract`` and
    ``root/download``. Raises FileNotFoundError listing the paths tried."""
    root = Path(root).expanduser()
    stem = _stem(train)
    if not root.is_dir():
        raise FileNotFoundError(f"SHD root {str(root)!r} is not a directory")
    tried = []
    for suffix in SUFFIXES:
        for sub in SEARCH_DIRS:
            path = root / sub / (stem + suffix)
            if path.is_file():
                return path
            tried.append(str(path))
    raise FileNotFoundError(
        f"no {stem}.h5 (or {stem}.h5.gz / .h5.zip) found under {str(root)!r}; looked for "
        + ", ".join(tried)
    )


def _stem(train: bool) -> str:
    if not isinstance(train, bool):
        raise TypeError(f"train must be a bool, got {type(train).__name__} {train!r}")
    return "shd_train" if train else "shd_test"


def uncompressed(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The ``.h5`` file itself, or a ``.h5.gz`` / ``.h5.zip`` decompressed once into
    ``cache_dir`` (atomically, under a name keyed by the archive's size and mtime).

    A decompressed copy whose size differs from the one the archive declares (a damaged
    cache) is decompressed again. A damaged archive raises :class:`SHDFormatError`.
    """
    path = Path(path)
    if path.name.endswith(".h5"):
        return path
    stem = path.name.split(".h5")[0]
    cache_dir = _cache_folder(cache_dir)
    target = cache_dir / f"{stem}-{cache_key(file_identity(path))}.h5"
    try:
        if target.is_file() and target.stat().st_size == _declared_size(path, stem):
            return target
        with atomic_path(target) as tmp, open(tmp, "wb") as out:
            if path.name.endswith(".gz"):
                with gzip.open(path, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                with (
                    zipfile.ZipFile(path) as archive,
                    archive.open(_zip_member(archive, path, stem)) as src,
                ):
                    shutil.copyfileobj(src, out, 1 << 20)
    except _ARCHIVE_ERRORS as exc:
        raise SHDFormatError(
            path, f"cannot decompress ({type(exc).__name__}: {exc}); the archive is damaged"
        ) from exc
    return target


def _declared_size(path: Path, stem: str) -> int | None:
    """Size of the decompressed file as the archive records it: the zip member's size, or
    a gzip file's last four bytes (the size modulo 2**32, exact for single-member files)."""
    if path.name.endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 18:  # header + trailer of the smallest gzip file
                return None
            f.seek(-4, os.SEEK_END)
            return int.from_bytes(f.read(4), "little")
    with zipfile.ZipFile(path) as archive:
        return archive.getinfo(_zip_member(archive, path, stem)).file_size


def _cache_folder(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "shd"


def _zip_member(archive: zipfile.ZipFile, path: Path, stem: str) -> str:
    for name in archive.namelist():
        if os.path.basename(name) == stem + ".h5":
            return name
    raise SHDFormatError(path, f"the archive holds no {stem}.h5, only {archive.namelist()}")


# ---------------------------------------------------------------- reading and checking


class SHDFormatError(ValueError):
    """A file that is not readable SHD. The message starts with the file, and ``path`` is
    it (a string); for an archive, ``path`` is the archive and ``copy`` the decompressed
    file that was read (else None). ``sample`` is the index of the sample at fault, or
    None when the fault is not one sample's (a missing dataset, a wrong dtype, damage)."""

    def __init__(self, path, message: str, sample: int | None = None):
        # ``path`` may be a pair (archive, decompressed copy).
        path, copy = path if isinstance(path, tuple) else (path, None)
        self.path, self.copy = str(path), None if copy is None else str(copy)
        self.sample = sample
        self.detail = message
        where = self.path if copy is None else f"{self.path} (decompressed to {self.copy})"
        where += f": sample {sample} " if sample is not None else ": "
        super().__init__(where + message)

    def __reduce__(self):
        return type(self), ((self.path, self.copy), self.detail, self.sample)


def read_shd(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> SpikeEvents:
    """Read and check samples ``start:stop`` of an uncompressed SHD ``.h5`` file.

    Raises FileNotFoundError when the file is missing and :class:`SHDFormatError` (a
    ValueError) naming the file, and the sample where one is at fault, when it is not
    SHD: not HDF5, truncated or damaged, missing datasets, wrong dtypes, mismatched
    lengths, units that are not whole numbers in ``0..699``, negative or non-finite times,
    labels that are not whole numbers in ``0..19``.
    """
    path = Path(path)
    check_int("start", start, minimum=0)
    if stop is not None:
        check_int("stop", stop, minimum=0)
    if not path.is_file():
        raise FileNotFoundError(f"SHD file {str(path)!r} does not exist")
    _check_heaps(path, path)
    with _open(path) as f:
        return _read_block(f, path, start, stop)


def write_shd(
    path: str | os.PathLike,
    samples,
    labels,
    speakers,
    keys,
    gender,
    age,
    body_height,
) -> Path:
    """Write one file in SHD's layout and dtypes, atomically (a crash leaves the old file
    or none, never half of one); returns its path.

    ``samples`` holds one ``(times, units)`` pair per sample: spike times in seconds and
    their channels ``0..699``, stored as SHD stores them (float16 and uint16). ``labels``
    (``0..19``) and ``speakers`` have one entry per sample; ``keys`` names the 20 classes;
    ``gender`` (``"female"`` / ``"male"``), ``age`` and ``body_height`` have one entry per
    speaker (``/extra/meta_info``). :func:`read_shd` and :class:`SHD` read the file back.
    """
    path = Path(path)
    labels = np.asarray(labels)
    speakers = np.asarray(speakers)
    if len(samples) != len(labels) or len(speakers) != len(labels):
        raise ValueError(
            f"samples, labels and speakers must have one entry per sample, got "
            f"{len(samples)}, {len(labels)} and {len(speakers)}"
        )
    if len(keys) != NUM_CLASSES:
        raise ValueError(f"keys must name the {NUM_CLASSES} classes, got {len(keys)}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}")
    times = np.empty(len(labels), dtype=object)
    units = np.empty(len(labels), dtype=object)
    for i, (t, u) in enumerate(samples):
        t, u = np.asarray(t, dtype=np.float64), np.asarray(u)
        if t.shape != u.shape or t.ndim != 1:
            raise ValueError(f"sample {i}: times and units must be 1-D of one length")
        if u.size and (u.min() < 0 or u.max() >= NUM_CHANNELS or np.any(u != np.round(u))):
            raise ValueError(f"sample {i}: units must be whole numbers in 0..{NUM_CHANNELS - 1}")
        if not np.all(np.isfinite(t) & (t >= 0)):
            raise ValueError(f"sample {i}: times must be finite and non-negative")
        times[i], units[i] = t.astype(np.float16), u.astype(np.uint16)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("spikes/times", data=times, dtype=h5py.vlen_dtype(np.float16))
            f.create_dataset("spikes/units", data=units, dtype=h5py.vlen_dtype(np.uint16))
            f.create_dataset("labels", data=labels.astype(np.uint16))
            f.create_dataset("extra/speaker", data=speakers.astype(np.uint16))
            f.create_dataset("extra/keys", data=np.array([str(k).encode() for k in keys]))
            meta = f.create_group("extra/meta_info")
            meta.create_dataset("gender", data=np.array([str(g).encode() for g in gender]))
            meta.create_dataset("age", data=np.asarray(age).astype(np.uint16))
            meta.create_dataset("body_height", data=np.asarray(body_height).astype(np.uint16))
    return path


def _open(path: Path, where=None) -> h5py.File:
    where = path if where is None else where
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        size = path.stat().st_size
        what = "an empty file" if size == 0 else f"not a readable HDF5 file ({exc})"
        raise SHDFormatError(where, what) from exc


def _check_heaps(path: Path, where) -> None:
    """Raise when a global heap collection of the file (where HDF5 keeps variable-length
    data) holds an object of size 0 in its object list: HDF5 would loop forever reading it.
    Zeros written over part of a file (a preallocated file whose copy was interrupted, a
    damaged disk) leave exactly that."""
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return  # empty or unmappable: opening it reports what is wrong
    with data:
        spot = _zero_heap_object(data)
    if spot is not None:
        raise SHDFormatError(
            where,
            f"the variable-length data at byte {spot} are zeroed or damaged (a global heap "
            "object of size 0); the file is damaged",
        )


def _zero_heap_object(data) -> int | None:
    """Byte offset of the first size-0 object of a global heap collection, or None. Only
    collections found by walking from one to the next are read, so the spike data inside
    them (which may contain the signature by chance) are skipped."""
    pos = 0
    while (start := data.find(b"GCOL", pos)) >= 0:
        pos = start + 1
        if data[start + 4 : start + 8] != b"\x01\x00\x00\x00":  # version 1, reserved
            continue
        end = start + int.from_bytes(data[start + 8 : start + 16], "little")
        if end - start < _HEAP_MIN_SIZE or end > len(data):
            continue  # not a collection, or one HDF5 reports as bad itself
        p = start + 16
        while p + 16 <= end:  # a 16-byte header per object: index, count, size
            index = int.from_bytes(data[p : p + 2], "little")
            length = int.from_bytes(data[p + 8 : p + 16], "little")
            step = length if index == 0 else 16 + -(-length // 8) * 8
            if step == 0:
                return p
            p += step
        pos = end
    return None


def _lookup(f: h5py.File, where, name: str):
    """``f.get(name)``; an error in the file's own structure (a damaged file) names it."""
    parent = name.rsplit("/", 1)[0] if "/" in name else None
    try:
        parent_is_dataset = parent is not None and isinstance(f.get(parent), h5py.Dataset)
        obj = None if parent_is_dataset else f.get(name)
    except _H5_ERRORS as exc:
        raise SHDFormatError(
            where, f"cannot read /{name} ({type(exc).__name__}: {exc}); the file is damaged"
        ) from exc
    if parent_is_dataset:
        raise SHDFormatError(where, f"/{parent} is a dataset; an SHD file has a group /{parent}")
    return obj


def _dataset(f: h5py.File, where, name: str) -> h5py.Dataset:
    obj = _lookup(f, where, name)
    if not isinstance(obj, h5py.Dataset):
        what = "missing" if obj is None else f"a {type(obj).__name__}, not a dataset"
        raise SHDFormatError(
            where,
            f"/{name} is {what}; an SHD file holds the datasets /spikes/times, "
            "/spikes/units and /labels",
        )
    if obj.ndim != 1:
        raise SHDFormatError(
            where, f"/{name} must be 1-D (one entry per sample), got shape {obj.shape}"
        )
    return obj


def _vlen(f: h5py.File, where, name: str, kinds: str, what: str) -> h5py.Dataset:
    ds = _dataset(f, where, name)
    base = h5py.check_vlen_dtype(ds.dtype)
    if base is None:
        raise SHDFormatError(
            where,
            f"/{name} must be a variable-length array (one array per sample), got dtype {ds.dtype}",
        )
    if not isinstance(base, np.dtype) or base.kind not in kinds:
        shown = base.__name__ if isinstance(base, type) else base
        raise SHDFormatError(where, f"/{name} must hold {what}, got {shown}")
    return ds


def _numbers(f: h5py.File, where, name: str) -> h5py.Dataset:
    ds = _dataset(f, where, name)
    if ds.dtype.kind not in "iuf":
        raise SHDFormatError(where, f"/{name} must hold integers, got dtype {ds.dtype}")
    return ds


def _num_samples(f: h5py.File, where) -> int:
    sizes = {
        name: len(_dataset(f, where, name)) for name in ("spikes/times", "spikes/units", "labels")
    }
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"/{name} has {n}" for name, n in sizes.items())
        raise SHDFormatError(where, f"datasets disagree on the number of samples: {listed}")
    return sizes["labels"]


def _rows(ds: h5py.Dataset, where, start: int, stop: int) -> np.ndarray:
    """``ds[start:stop]``; a read error (a truncated or damaged file) names the file."""
    try:
        return ds[start:stop]
    except (*_H5_ERRORS, MemoryError) as exc:
        raise SHDFormatError(
            where,
            f"cannot read samples {start}..{stop - 1} of {ds.name} ({type(exc).__name__}: "
            f"{exc}); the file is truncated or damaged",
        ) from exc


def _flatten(ds: h5py.Dataset, where, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated values ``[S]`` (the file's dtype) and per-sample lengths ``[N]``."""
    rows = _rows(ds, where, start, stop)
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    if lengths.sum() == 0:
        return np.zeros(0, h5py.check_vlen_dtype(ds.dtype)), lengths
    return np.concatenate(rows), lengths


def _read_block(f: h5py.File, where, start: int, stop: int | None) -> SpikeEvents:
    n = _num_samples(f, where)
    stop = n if stop is None else min(stop, n)
    stop = max(stop, start)
    times_ds = _vlen(f, where, "spikes/times", "f", "floating-point spike times (seconds)")
    units_ds = _vlen(f, where, "spikes/units", "iuf", "channel numbers")
    labels_ds = _numbers(f, where, "labels")
    times, time_counts = _flatten(times_ds, where, start, stop)
    units, unit_counts = _flatten(units_ds, where, start, stop)
    labels = _rows(labels_ds, where, start, stop)
    bad = np.flatnonzero(time_counts != unit_counts)
    if bad.size:
        i = bad[0]
        raise SHDFormatError(
            where,
            f"has {time_counts[i]} spike times in /spikes/times but {unit_counts[i]} units "
            "in /spikes/units",
            sample=start + int(i),
        )
    offsets = np.concatenate(([0], np.cumsum(time_counts)))
    _check_values(times, units, labels, offsets, where, start)
    return SpikeEvents(
        times.astype(np.float64),
        units.astype(np.int64),
        offsets,
        labels.astype(np.int64),
        _speakers(f, n, start, stop),
    )


def _speakers(f: h5py.File, n: int, start: int, stop: int) -> np.ndarray | None:
    """``/extra/speaker[start:stop]``; None unless it is a readable 1-D integer array, one
    per sample (the speaker is metadata: the frames and labels do not depend on it)."""
    try:
        ds = f.get("extra/speaker")
        if not isinstance(ds, h5py.Dataset) or ds.shape != (n,) or ds.dtype.kind not in "iu":
            return None
        return ds[start:stop].astype(np.int64)
    except _H5_ERRORS:
        return None


def _not_whole(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """Indices of entries that are not whole numbers in ``low..high - 1``."""
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.floor(values))
        bad |= ~(values >= low) | ~(values < high)
    else:
        bad = (values < low) | (values >= high)
    return np.flatnonzero(bad)


def _check_values(times, units, labels, offsets, where, start: int) -> None:
    def sample_of(spike: int) -> int:
        return start + int(np.searchsorted(offsets, spike, side="right")) - 1

    bad = _not_whole(units, 0, NUM_CHANNELS)
    if bad.size:
        raise SHDFormatError(
            where,
            f"has unit {units[bad[0]]} in /spikes/units; channels must be whole numbers "
            f"0..{NUM_CHANNELS - 1}",
            sample=sample_of(bad[0]),
        )
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~np.isfinite(times) | ~(times >= 0))
    if bad.size:
        raise SHDFormatError(
            where,
            f"has spike time {times[bad[0]]} in /spikes/times; times must be finite and "
            ">= 0 (seconds)",
            sample=sample_of(bad[0]),
        )
    bad = _not_whole(labels, 0, NUM_CLASSES)
    if bad.size:
        raise SHDFormatError(
            where,
            f"has label {labels[bad[0]]} in /labels; classes must be whole numbers "
            f"0..{NUM_CLASSES - 1}",
            sample=start + int(bad[0]),
        )


# ---------------------------------------------------------------- binning


def window_steps(dt: float, duration: float | None = None, T: int | None = None) -> int:
    """Number of time steps T of the window ``[0, T * dt)``: ``T`` when given, else
    ``ceil(duration / dt)`` (``duration`` in seconds, default 1 s)."""
    dt = check_float("dt", dt, strict=True)
    if T is not None and duration is not None:
        raise ValueError(f"give duration or T, not both; got duration={duration!r}, T={T!r}")
    if T is not None:
        return check_int("T", T, minimum=1)
    duration = (
        DEFAULT_DURATION if duration is None else check_float("duration", duration, strict=True)
    )
    return max(1, math.ceil(duration / dt - EDGE_TOLERANCE))


def bin_events(events: SpikeEvents, dt: float, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin every spike of ``events`` at once: ``(index, offsets)``.

    A spike at ``t`` seconds in channel ``c`` falls in step ``k = floor(t / dt)`` (a time
    on a bin edge starts the later bin) and becomes ``index = k * 700 + c``; spikes with
    ``k >= num_steps`` are dropped. ``index`` keeps the file's order, so sample ``i`` owns
    ``index[offsets[i]:offsets[i + 1]]``.
    """
    steps = np.floor(events.times / dt + EDGE_TOLERANCE)
    keep = steps < num_steps
    sample = np.repeat(np.arange(len(events.labels)), np.diff(events.offsets))
    kept = np.bincount(sample[keep], minlength=len(events.labels))
    offsets = np.concatenate(([0], np.cumsum(kept)))
    index = steps[keep].astype(np.int64) * NUM_CHANNELS + events.units[keep]
    return index.astype(_index_dtype(num_steps)), offsets


def _index_dtype(num_steps: int):
    return np.int32 if num_steps * NUM_CHANNELS < 2**31 else np.int64


def frames_from_index(index: np.ndarray, num_steps: int, binary: bool = False) -> np.ndarray:
    """Dense frames ``[num_steps, 700]`` float32 of one sample's binned spikes: spike
    counts per step and channel, or 1 where at least one spike fell (``binary=True``)."""
    frames = np.zeros(num_steps * NUM_CHANNELS, np.float32)
    # Sorting the few spikes of a sample is cheaper than counting over all T * 700 bins.
    cells, counts = np.unique(index, return_counts=True)
    frames[cells] = 1 if binary else counts
    return frames.reshape(num_steps, NUM_CHANNELS)


def collate(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``DataLoader`` ``collate_fn``: ``(frames [T, 700], label)`` pairs to time-major
    ``frames [T, N, 700]`` float32 (SpikingJelly's multi-step layout) and labels ``[N]``
    int64."""
    frames, labels = zip(*batch, strict=True)
    return torch.stack(frames, dim=1), torch.as_tensor(labels, dtype=torch.long)


# ---------------------------------------------------------------- cache


def _build(source: Path, cache_dir: Path, dt: float, num_steps: int) -> dict:
    """Read, check and bin a whole file (an archive is decompressed first)."""
    path = uncompressed(source, cache_dir)
    if path == source:
        return _bin_file(path, path, dt, num_steps)
    # Errors name the file the user gave, then the decompressed copy.
    where = (source, path)
    try:
        return _bin_file(path, where, dt, num_steps)
    except SHDFormatError:
        # The copy itself may be what is damaged: decompress again and read that.
        path.unlink(missing_ok=True)
        return _bin_file(uncompressed(source, cache_dir), where, dt, num_steps)


def _bin_file(path: Path, where, dt: float, num_steps: int) -> dict:
    """Read, check and bin a whole ``.h5`` file, ``CHUNK`` samples at a time (only the
    binned spikes of the chunks already read are kept in memory)."""
    index, kept, labels, speakers, num_spikes = [], [], [], [], 0
    _check_heaps(path, where)
    with _open(path, where) as f:
        for lo in range(0, _num_samples(f, where), CHUNK):
            block = _read_block(f, where, lo, lo + CHUNK)
            block_index, offsets = bin_events(block, dt, num_steps)
            index.append(block_index)
            kept.append(np.diff(offsets))
            labels.append(block.labels)
            speakers.append(block.speakers)
            num_spikes += len(block.times)
    has_speakers = bool(speakers) and all(s is not None for s in speakers)
    index = np.concatenate(index) if index else np.zeros(0, _index_dtype(num_steps))
    return {
        "offsets": np.concatenate(([0], np.cumsum(np.concatenate(kept or [[]])))).astype(np.int64),
        "index": index,
        "labels": np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
        "speakers": np.concatenate(speakers) if has_speakers else np.zeros(0, np.int64),
        "has_speakers": has_speakers,
        "num_dropped": num_spikes - len(index),
    }


def _cache_record(source: Path, dt: float, num_steps: int) -> dict:
    return {
        "version": CACHE_VERSION,
        "source": file_identity(source),
        "dt": dt,
        "T": num_steps,
        "channels": NUM_CHANNELS,
    }


def _save(target: Path, record: dict, arrays: dict) -> None:
    meta = {
        "key": record,
        "has_speakers": arrays["has_speakers"],
        "num_dropped": arrays["num_dropped"],
    }
    payload = {name: arrays[name] for name in _CACHE_FIELDS if name != "meta"}
    payload["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        np.savez(out, **payload)


def _load(target: Path, record: dict) -> dict | None:
    """The cached arrays, or None when the file is absent, stale, truncated or corrupt."""
    if not target.is_file():
        return None
    try:
        with np.load(target, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in _CACHE_FIELDS}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        if not isinstance(meta, dict) or meta.get("key") != record:
            return None
        arrays["has_speakers"] = bool(meta["has_speakers"])
        arrays["num_dropped"] = int(meta["num_dropped"])
    except _CACHE_ERRORS:
        return None
    return arrays if _consistent(arrays, record["T"]) else None


def _consistent(arrays: dict, num_steps: int) -> bool:
    """Whether cached arrays have the shapes, dtypes and ranges that ``_build`` writes."""
    offsets, index, labels = arrays["offsets"], arrays["index"], arrays["labels"]
    speakers = arrays["speakers"]
    if not all(a.ndim == 1 and a.dtype.kind in "iu" for a in (offsets, index, labels, speakers)):
        return False
    n = len(labels)
    return (
        len(offsets) == n + 1
        and offsets[0] == 0
        and bool(np.all(np.diff(offsets) >= 0))
        and offsets[-1] == len(index)
        and (len(index) == 0 or (index.min() >= 0 and index.max() < num_steps * NUM_CHANNELS))
        and (n == 0 or (labels.min() >= 0 and labels.max() < NUM_CLASSES))
        and len(speakers) == (n if arrays["has_speakers"] else 0)
        and arrays["num_dropped"] >= 0
    )


# ---------------------------------------------------------------- dataset


class SHD(Dataset):
    """Spiking Heidelberg Digits as dense frames: item ``i`` is
    ``(frames [T, 700] float32, label int)``.

    Args:
        root: folder holding ``shd_train.h5`` / ``shd_test.h5`` (or ``.h5.gz`` / ``.h5.zip``),
            directly or in spikingjelly's ``events_h5/``, ``extract/`` or ``download/``.
        train: the training file (True) or the test file (False).
        dt: time step in seconds (``1e-3`` = 1 ms).
        duration: window in seconds, ``T = ceil(duration / dt)``; default 1 s.
        T: number of steps instead of ``duration`` (give one of them).
        binary: frames hold spike counts per step and channel (False) or 1 where at least
            one spike fell (True). Spikes at ``t >= T * dt`` are dropped.
        cache_dir: where the binned file (and a decompressed archive) is cached; default
            ``$SJ_SPATIAL_CACHE`` or ``~/.cache/sj_spatial``, sub-folder ``shd``.
        transform: called on each frames tensor; target_transform: on each label.

    Use ``DataLoader(dataset, batch_size, collate_fn=collate)`` for time-major batches
    ``[T, N, 700]``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        dt: float = 1e-3,
        duration: float | None = None,
        T: int | None = None,
        binary: bool = False,
        cache_dir: str | os.PathLike | None = None,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ):
        super().__init__()
        if not isinstance(binary, bool):
            raise TypeError(f"binary must be a bool, got {type(binary).__name__} {binary!r}")
        self.train = train
        self.dt = check_float("dt", dt, strict=True)
        self.num_steps = window_steps(self.dt, duration, T)
        self.binary = binary
        self.transform = transform
        self.target_transform = target_transform
        self.source = find_shd_file(root, train)
        cache_dir = _cache_folder(cache_dir)
        record = _cache_record(self.source, self.dt, self.num_steps)
        self.cache_path = cache_dir / f"{_stem(train)}-{cache_key(record)}.npz"
        arrays = _load(self.cache_path, record)
        if arrays is None:
            arrays = _build(self.source, cache_dir, self.dt, self.num_steps)
            _save(self.cache_path, record, arrays)
        self._offsets = arrays["offsets"]
        self._index = arrays["index"]
        self.labels: np.ndarray = arrays["labels"]
        self.speakers: np.ndarray | None = arrays["speakers"] if arrays["has_speakers"] else None
        #: Spikes of the file at or after ``T * dt``, left out of the frames.
        self.num_dropped: int = arrays["num_dropped"]

    num_channels = NUM_CHANNELS
    num_classes = NUM_CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def _position(self, i: int) -> int:
        i = operator.index(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample index {i} out of range for {n} samples")
        return i % n

    def binned(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The spikes of sample ``i`` inside the window: time steps ``[S]`` (``0..T-1``) and
        channels ``[S]`` (``0..699``), int64, in the file's order."""
        i = self._position(i)
        index = self._index[self._offsets[i] : self._offsets[i + 1]].astype(np.int64)
        return index // NUM_CHANNELS, index % NUM_CHANNELS

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = self._position(i)
        index = self._index[self._offsets[i] : self._offsets[i + 1]]
        frames = torch.from_numpy(frames_from_index(index, self.num_steps, self.binary))
        label = int(self.labels[i])
        if self.transform is not None:
            frames = self.transform(frames)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return frames, label

    def __repr__(self) -> str:
        return (
            f"SHD(source={str(self.source)!r}, samples={len(self)}, dt={self.dt}, "
            f"T={self.num_steps}, binary={self.binary})"
        )
