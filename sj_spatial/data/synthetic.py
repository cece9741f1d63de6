"""A synthetic stand-in for SHD, written in SHD's exact HDF5 format, whose classes differ
only in the relative timing of activity across channel bands.

Each class is three bursts of spikes in three of eight channel bands. Classes come in
groups of ``classes_per_group``: the classes of one group use the same three bands with
the same number of spikes and differ only in the order in which the bands fire,
``interval`` seconds apart. A network that sees only coincidences within a few
milliseconds can tell the groups apart but not the classes inside a group; one whose
synapses delay one band relative to another can tell them all. On top come what makes
SHD hard: random onsets, jittered bursts, twelve speakers (two only in the test set) who
shift the bands by a few channels and speak faster or slower and louder or softer, and
background spikes in every channel.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._checks import check_float, check_int
from ._files import atomic_path
from .shd import NUM_CHANNELS, NUM_CLASSES, write_shd

NUM_SPEAKERS = 12
#: Speakers who appear only in the test file, as two of SHD's twelve do.
TEST_ONLY_SPEAKERS = (10, 11)
NUM_BANDS = 8
BAND_WIDTH = 56
#: First channel of each band (before a speaker's shift): evenly spread over 700 channels.
BAND_STARTS = tuple(22 + 85 * k for k in range(NUM_BANDS))
MANIFEST = "synthetic_shd.json"


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generator (times in seconds, rates in spikes per second)."""

    num_train: int = 2000
    num_test: int = 500
    seed: int = 0
    duration: float = 1.0
    classes_per_group: int = 4
    interval: float = 0.12
    jitter: float = 0.012
    burst_length: float = 0.04
    spikes_per_channel: float = 1.5
    noise_rate: float = 1.0
    max_shift: int = 10
    tempo_range: float = 0.1
    gain_range: float = 0.3


def _check(config: SyntheticConfig) -> SyntheticConfig:
    check_int("num_train", config.num_train, minimum=0)
    check_int("num_test", config.num_test, minimum=0)
    check_int("seed", config.seed, minimum=0)
    check_int("max_shift", config.max_shift, minimum=0)
    cpg = check_int("classes_per_group", config.classes_per_group, minimum=1)
    if NUM_CLASSES % cpg or cpg > 6:
        raise ValueError(
            f"classes_per_group must divide 20 and be <= 6 (orders of 3 bands), got {cpg}"
        )
    check_float("duration", config.duration, strict=True)
    for name in ("interval", "jitter", "burst_length", "spikes_per_channel", "noise_rate"):
        check_float(name, getattr(config, name))
    for name in ("tempo_range", "gain_range"):
        if not 0 <= check_float(name, getattr(config, name)) < 1:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(config, name)}")
    return config


def class_patterns(classes_per_group: int = 4) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """For each of the 20 classes, ``(bands, order)``: the three bands it uses and the
    order (a permutation of 0, 1, 2) in which they fire."""
    triples = list(itertools.combinations(range(NUM_BANDS), 3))
    groups = NUM_CLASSES // classes_per_group
    # Triples spread over the list so that groups share few bands.
    chosen = [triples[(k * len(triples)) // groups] for k in range(groups)]
    orders = list(itertools.permutations(range(3)))
    # A fixed choice of firing orders (rank of each band); the first two are each other's reverse.
    orders = [orders[k] for k in (0, 5, 3, 2, 1, 4)][:classes_per_group]
    return [(bands, order) for bands in chosen for order in orders]


def _speakers(rng: np.random.Generator, config: SyntheticConfig) -> dict:
    """Per-speaker channel shift, tempo and loudness, and SHD-style metadata."""
    return {
        "shift": rng.integers(-config.max_shift, config.max_shift + 1, NUM_SPEAKERS),
        "tempo": 1 + rng.uniform(-config.tempo_range, config.tempo_range, NUM_SPEAKERS),
        "gain": 1 + rng.uniform(-config.gain_range, config.gain_range, NUM_SPEAKERS),
        "gender": rng.integers(0, 2, NUM_SPEAKERS),
        "age": rng.integers(20, 60, NUM_SPEAKERS),
        "body_height": rng.integers(155, 195, NUM_SPEAKERS),
    }


def _sample(rng, label: int, speaker: int, speakers: dict, patterns, config) -> tuple:
    """Spike times (seconds, sorted) and channels of one sample."""
    bands, order = patterns[label]
    tempo, gain = speakers["tempo"][speaker], speakers["gain"][speaker]
    span = 2 * config.interval * tempo + config.burst_length
    onset = rng.uniform(0.05, max(0.05, config.duration - span - 0.1))
    times, units = [], []
    for band, rank in zip(bands, order, strict=True):
        start = onset + rank * config.interval * tempo + rng.normal(0, config.jitter)
        first = BAND_STARTS[band] + speakers["shift"][speaker]
        channels = np.arange(first, first + BAND_WIDTH)
        counts = rng.poisson(config.spikes_per_channel * gain, BAND_WIDTH)
        units.append(np.repeat(channels, counts))
        times.append(start + rng.uniform(0, config.burst_length, counts.sum()))
    noise = rng.poisson(config.noise_rate * config.duration * NUM_CHANNELS)
    units.append(rng.integers(0, NUM_CHANNELS, noise))
    times.append(rng.uniform(0, config.duration, noise))
    t, u = np.concatenate(times), np.concatenate(units)
    keep = (t >= 0) & (t < config.duration) & (u >= 0) & (u < NUM_CHANNELS)
    t, u = t[keep], u[keep]
    by_time = np.argsort(t, kind="stable")
    return t[by_time].astype(np.float16), u[by_time].astype(np.uint16)


def _split(rng, n: int, speaker_pool, speakers: dict, patterns, config) -> dict:
    labels = rng.integers(0, NUM_CLASSES, n)
    who = rng.choice(np.asarray(speaker_pool), n)
    samples = [
        _sample(rng, int(y), int(s), speakers, patterns, config)
        for y, s in zip(labels, who, strict=True)
    ]
    return {"samples": samples, "labels": labels, "speakers": who}


def _write(target: Path, split: dict, speakers: dict) -> None:
    """Write one split in SHD's layout and dtypes, atomically."""
    write_shd(
        target,
        split["samples"],
        split["labels"],
        split["speakers"],
        keys=[f"synthetic-{c:02d}" for c in range(NUM_CLASSES)],
        gender=np.array(["female", "male"])[speakers["gender"]],
        age=speakers["age"],
        body_height=speakers["body_height"],
    )


def make_synthetic_shd(
    root: str | os.PathLike,
    num_train: int = 2000,
    num_test: int = 500,
    seed: int = 0,
    **options,
) -> tuple[Path, Path]:
    """Write ``root/shd_train.h5`` and ``root/shd_test.h5`` in SHD's format and return
    their paths.

    Same layout and dtypes as the real files: ``/spikes/times`` variable-length float16
    seconds, ``/spikes/units`` variable-length uint16 channels ``0..699``, ``/labels`` and
    ``/extra/speaker`` uint16, ``/extra/keys`` (class names, bytes) and
    ``/extra/meta_info/{gender, age, body_height}`` (one entry per speaker). The same
    ``seed`` and options give identical files. ``options`` are the other fields of
    :class:`SyntheticConfig`.
    """
    config = _check(SyntheticConfig(num_train=num_train, num_test=num_test, seed=seed, **options))
    root = Path(root).expanduser()
    speaker_rng, train_rng, test_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(3)
    )
    speakers = _speakers(speaker_rng, config)
    patterns = class_patterns(config.classes_per_group)
    seen = [s for s in range(NUM_SPEAKERS) if s not in TEST_ONLY_SPEAKERS]
    train = _split(train_rng, config.num_train, seen, speakers, patterns, config)
    test = _split(test_rng, config.num_test, range(NUM_SPEAKERS), speakers, patterns, config)
    paths = root / "shd_train.h5", root / "shd_test.h5"
    _write(paths[0], train, speakers)
    _write(paths[1], test, speakers)
    return paths


def ensure_synthetic_shd(
    root: str | os.PathLike,
    num_train: int = 2000,
    num_test: int = 500,
    seed: int = 0,
    **options,
) -> tuple[Path, Path]:
    """:func:`make_synthetic_shd` once: reuse the files in ``root`` when a previous call
    with the same arguments completed and they are still the files it wrote (same size
    and modification time), otherwise (re)build them. Returns the two paths."""
    config = _check(SyntheticConfig(num_train=num_train, num_test=num_test, seed=seed, **options))
    root = Path(root).expanduser()
    paths = root / "shd_train.h5", root / "shd_test.h5"
    manifest = root / MANIFEST
    wanted = _manifest(config, paths)
    if wanted is not None and _recorded(manifest) == wanted:
        return paths
    manifest.unlink(missing_ok=True)
    make_synthetic_shd(root, **asdict(config))
    # The manifest is written last: an interrupted build leaves none and is redone.
    with atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps(_manifest(config, paths), sort_keys=True))
    return paths


def _manifest(config: SyntheticConfig, paths) -> dict | None:
    """What a completed build records: the configuration and each file's size and mtime
    (None when a file is missing)."""
    files = {}
    for path in paths:
        if not path.is_file():
            return None
        stat = path.stat()
        files[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"config": asdict(config), "files": files}


def _recorded(manifest: Path):
    """The manifest's content, or None when it is missing or unreadable."""
    try:
        return json.loads(manifest.read_bytes().decode())
    except (OSError, ValueError):
        return None
