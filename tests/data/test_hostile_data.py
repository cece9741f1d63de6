"""sj_spatial.data against hostile input: malformed, truncated and damaged SHD files, and
caches left by interrupted or concurrent builds."""

from __future__ import annotations

import gzip
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from sj_spatial.data import SHD, SHDFormatError, ensure_synthetic_shd, make_synthetic_shd, read_shd
from sj_spatial.data import shd as shd_module
from sj_spatial.data._files import atomic_path, remove_stale_temps, temp_path

GOOD_TIMES = [[0.1, 0.2], [0.3, 0.4], [0.5]]
GOOD_UNITS = [[1, 2], [3, 4], [5]]
GOOD_LABELS = [1, 2, 3]


def vlen(rows, dtype):
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        out[i] = np.asarray(row, dtype=dtype)
    return out


def write(path: Path, times=None, units=None, labels=None, *, skip=(), raw=None):
    """An SHD-layout file; ``skip`` leaves datasets out, ``raw`` maps names to
    ``(data, dtype)`` written as given instead."""
    raw = dict(raw or {})
    times = GOOD_TIMES if times is None else times
    units = GOOD_UNITS if units is None else units
    labels = GOOD_LABELS if labels is None else labels
    standard = {
        "spikes/times": (vlen(times, np.float16), h5py.vlen_dtype(np.float16)),
        "spikes/units": (vlen(units, np.uint16), h5py.vlen_dtype(np.uint16)),
        "labels": (np.asarray(labels, np.uint16), None),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, (data, dtype) in {**standard, **raw}.items():
            if name not in skip:
                f.create_dataset(name, data=data, dtype=dtype)
    return path


STR = h5py.string_dtype()

# case -> (file contents, regular expression of the message, sample at fault or None)
CASES = {
    "unit negative": (
        {
            "raw": {
                "spikes/units": (vlen([[1, 2], [3, 4], [-1]], np.int16), h5py.vlen_dtype(np.int16))
            }
        },
        r"sample 2 has unit -1 in /spikes/units; channels must be whole numbers 0\.\.699",
        2,
    ),
    "unit 700": (
        {"units": [[1, 2], [3, 700], [5]]},
        r"sample 1 has unit 700 in /spikes/units",
        1,
    ),
    "unit 65535": (
        {"units": [[65535, 2], [3, 4], [5]]},
        r"sample 0 has unit 65535",
        0,
    ),
    "unit a fraction": (
        {
            "raw": {
                "spikes/units": (
                    vlen([[1, 2], [3, 4], [5.5]], np.float32),
                    h5py.vlen_dtype(np.float32),
                )
            }
        },
        r"sample 2 has unit 5\.5 in /spikes/units; channels must be whole numbers",
        2,
    ),
    "unit nan": (
        {
            "raw": {
                "spikes/units": (
                    vlen([[1, np.nan], [3, 4], [5]], np.float64),
                    h5py.vlen_dtype(np.float64),
                )
            }
        },
        r"sample 0 has unit nan",
        0,
    ),
    "time negative": (
        {"times": [[0.1, 0.2], [0.3, 0.4], [-0.5]]},
        r"sample 2 has spike time -0\.5 in /spikes/times; times must be finite and >= 0",
        2,
    ),
    "time nan": ({"times": [[0.1, 0.2], [np.nan, 0.4], [0.5]]}, r"sample 1 has spike time nan", 1),
    "time +inf": ({"times": [[0.1, 0.2], [0.3, np.inf], [0.5]]}, r"sample 1 has spike time inf", 1),
    "time -inf": (
        {"times": [[0.1, -np.inf], [0.3, 0.4], [0.5]]},
        r"sample 0 has spike time -inf",
        0,
    ),
    "lengths differ": (
        {"units": [[1, 2], [3, 4], [5, 6]]},
        r"sample 2 has 1 spike times in /spikes/times but 2 units in /spikes/units",
        2,
    ),
    "units fewer samples": (
        {"units": [[1, 2], [3, 4]]},
        r"datasets disagree on the number of samples: /spikes/times has 3, /spikes/units has 2, "
        r"/labels has 3",
        None,
    ),
    "labels more samples": (
        {"labels": [1, 2, 3, 4]},
        r"/spikes/times has 3, /spikes/units has 3, /labels has 4",
        None,
    ),
    "label 20": ({"labels": [1, 20, 3]}, r"sample 1 has label 20 in /labels; classes must be", 1),
    "label negative": (
        {"raw": {"labels": (np.array([1, 2, -3], np.int8), None)}},
        r"sample 2 has label -3 in /labels; classes must be whole numbers 0\.\.19",
        2,
    ),
    "label a fraction": (
        {"raw": {"labels": (np.array([1.5, 2, 3]), None)}},
        r"sample 0 has label 1\.5 in /labels",
        0,
    ),
    "labels strings": (
        {"raw": {"labels": (np.array(["one", "two", "three"], dtype=object), STR)}},
        r"/labels must hold integers, got dtype object",
        None,
    ),
    "labels booleans": (
        {"raw": {"labels": (np.array([True, False, True]), None)}},
        r"/labels must hold integers, got dtype bool",
        None,
    ),
    "times strings": (
        {"raw": {"spikes/times": (vlen([["a"], ["b"], ["c"]], object), h5py.vlen_dtype(STR))}},
        r"/spikes/times must hold floating-point spike times \(seconds\), got object",
        None,
    ),
    "times a string per sample": (
        {"raw": {"spikes/times": (np.array(["0.1", "0.2", "0.3"], dtype=object), STR)}},
        r"/spikes/times must hold floating-point spike times \(seconds\), got str",
        None,
    ),
    "times integers": (
        {
            "raw": {
                "spikes/times": (vlen([[1, 2], [3, 4], [5]], np.int32), h5py.vlen_dtype(np.int32))
            }
        },
        r"/spikes/times must hold floating-point spike times \(seconds\), got int32",
        None,
    ),
    "times fixed 2-D": (
        {"raw": {"spikes/times": (np.zeros((3, 2), np.float32), None)}},
        r"/spikes/times must be 1-D \(one entry per sample\), got shape \(3, 2\)",
        None,
    ),
    "times not variable-length": (
        {"raw": {"spikes/times": (np.zeros(3, np.float32), None)}},
        r"/spikes/times must be a variable-length array \(one array per sample\), got dtype "
        r"float32",
        None,
    ),
    "units strings": (
        {
            "raw": {
                "spikes/units": (
                    vlen([[b"a"], [b"b"], [b"c"]], "S1"),
                    h5py.vlen_dtype(np.dtype("S1")),
                )
            }
        },
        r"/spikes/units must hold channel numbers, got \|S1",
        None,
    ),
    "labels missing": ({"skip": ("labels",)}, r"/labels is missing; an SHD file holds", None),
    "units missing": ({"skip": ("spikes/units",)}, r"/spikes/units is missing", None),
    "spikes missing": (
        {"skip": ("spikes/times", "spikes/units")},
        r"/spikes/times is missing",
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_file_is_a_format_error_naming_file_and_sample(tmp_path, monkeypatch, case):
    contents, message, sample = CASES[case]
    monkeypatch.setattr(shd_module, "CHUNK", 1)  # each sample in its own chunk
    path = write(tmp_path / "shd_train.h5", **contents)
    for call in (lambda: SHD(tmp_path, cache_dir=tmp_path / "c"), lambda: read_shd(path)):
        with pytest.raises(SHDFormatError, match=message) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert str(info.value).startswith(f"{path}: ")
        assert info.value.path == str(path) and info.value.sample == sample
    assert not list((tmp_path / "c").glob("*.npz"))  # nothing cached from a bad file


def _write_structure(path: Path, case: str) -> None:
    with h5py.File(path, "w") as f:
        if case == "spikes a dataset":
            f.create_dataset("spikes", data=np.zeros(3))
            f.create_dataset("labels", data=np.zeros(3, np.uint16))
        elif case == "labels a group":
            f.create_dataset(
                "spikes/times", data=vlen(GOOD_TIMES, np.float16), dtype=h5py.vlen_dtype(np.float16)
            )
            f.create_dataset(
                "spikes/units", data=vlen(GOOD_UNITS, np.uint16), dtype=h5py.vlen_dtype(np.uint16)
            )
            f.create_group("labels")


@pytest.mark.parametrize(
    "case, message",
    [
        ("spikes a dataset", "/spikes is a dataset; an SHD file has a group /spikes"),
        ("labels a group", "/labels is a Group, not a dataset"),
    ],
)
def test_wrong_structure(tmp_path, case, message):
    path = tmp_path / "shd_train.h5"
    _write_structure(path, case)
    with pytest.raises(SHDFormatError, match=message) as info:
        SHD(tmp_path, cache_dir=tmp_path / "c")
    assert str(path) in str(info.value)


def test_integral_float_units_and_labels_are_read_as_integers(tmp_path):
    units = vlen([[1.0, 2.0], [3.0, 699.0], [5.0]], np.float32)
    path = write(
        tmp_path / "shd_train.h5",
        raw={
            "spikes/units": (units, h5py.vlen_dtype(np.float32)),
            "labels": (np.array([1.0, 2.0, 19.0]), None),
        },
    )
    events = read_shd(path)
    assert events.units.dtype == np.int64 and list(events.units) == [1, 2, 3, 699, 5]
    assert list(events.labels) == [1, 2, 19]
    ds = SHD(tmp_path, dt=0.1, T=10, cache_dir=tmp_path / "c")
    assert ds[1][1] == 2 and list(ds.binned(1)[1]) == [3, 699] and ds[1][0].sum() == 2


def test_a_sample_with_no_spikes_is_valid(tmp_path):
    write(tmp_path / "shd_train.h5", times=[[], [0.3], []], units=[[], [3], []])
    ds = SHD(tmp_path, dt=0.1, T=10, cache_dir=tmp_path / "c")
    assert ds[0][0].sum() == 0 and ds[1][0][3, 3] == 1 and ds[2][0].sum() == 0


# ---------------------------------------------------------------- damaged files


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    make_synthetic_shd(root, num_train=40, num_test=5, seed=2)
    return root / "shd_train.h5"


def _heap_objects(data: bytes) -> int:
    """Offset of the first object header of the file's first global heap collection."""
    start = data.find(b"GCOL")
    assert start >= 0
    return start + 16


def _damage(data: bytes, case: str) -> bytes:
    if case == "empty":
        return b""
    if case == "text":
        return b"shd_train: 8156 samples\n"
    if case == "truncated":
        return data[: len(data) // 2]
    if case == "truncated header":
        return data[:100]
    b = bytearray(data)
    k = _heap_objects(data) + 64
    if case == "zeroed spikes":
        b[k : k + 4096] = bytes(4096)
    elif case == "overwritten spikes":
        b[k : k + 4096] = b"\xff" * 4096
    return bytes(b)


DAMAGED = {
    "empty": r"shd_train\.h5: an empty file",
    "text": r"shd_train\.h5: not a readable HDF5 file",
    "truncated": r"shd_train\.h5: not a readable HDF5 file \(.*truncated file",
    "truncated header": r"shd_train\.h5: not a readable HDF5 file",
    "zeroed spikes": r"shd_train\.h5: the variable-length data at byte \d+ are zeroed or damaged",
    "overwritten spikes": r"shd_train\.h5: cannot read samples 0\.\.39 of /spikes/times \(OSError",
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_file_is_a_format_error(good_file, tmp_path, case):
    (tmp_path / "shd_train.h5").write_bytes(_damage(good_file.read_bytes(), case))
    with pytest.raises(SHDFormatError, match=DAMAGED[case]) as info:
        SHD(tmp_path, cache_dir=tmp_path / "c")
    assert info.value.sample is None


def _gzip(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as out:
        out.write(data)
    return path


def _damaged_archive(good: bytes, root: Path, case: str) -> Path:
    if case.startswith("zip"):
        root.mkdir(parents=True)
        path = root / "shd_train.h5.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("other.h5" if case == "zip without the file" else "shd_train.h5", good)
        if case == "zip truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif case == "zip empty":
            path.write_bytes(b"")
        return path
    path = _gzip(good, root / "shd_train.h5.gz")
    data = path.read_bytes()
    if case == "gz truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case == "gz bad checksum":
        path.write_bytes(data[:-8] + bytes(4) + data[-4:])
    elif case == "gz empty":
        path.write_bytes(b"")
    elif case == "gz of an empty file":
        _gzip(b"", path)
    elif case == "gz of text":
        _gzip(b"not hdf5", path)
    return path


ARCHIVES = {
    "gz truncated": r"shd_train\.h5\.gz: cannot decompress \(EOFError",
    "gz bad checksum": r"shd_train\.h5\.gz: cannot decompress \(BadGzipFile: CRC check failed",
    "gz empty": r"shd_train\.h5\.gz \(decompressed to .*\.h5\): an empty file",
    "gz of an empty file": r"shd_train\.h5\.gz \(decompressed to .*\.h5\): an empty file",
    "gz of text": r"shd_train\.h5\.gz \(decompressed to .*\): not a readable HDF5 file",
    "zip truncated": r"shd_train\.h5\.zip: cannot decompress \(BadZipFile",
    "zip empty": r"shd_train\.h5\.zip: cannot decompress \(BadZipFile: File is not a zip file",
    "zip without the file": r"shd_train\.h5\.zip: the archive holds no shd_train\.h5, only "
    r"\['other\.h5'\]",
}


@pytest.mark.parametrize("case", sorted(ARCHIVES))
def test_damaged_archive_is_a_format_error_naming_the_archive(good_file, tmp_path, case):
    archive = _damaged_archive(good_file.read_bytes(), tmp_path / "root", case)
    with pytest.raises(SHDFormatError, match=ARCHIVES[case]) as info:
        SHD(tmp_path / "root", cache_dir=tmp_path / "c")
    assert info.value.path == str(archive) and info.value.sample is None
    if "decompressed to" in str(info.value):
        assert Path(info.value.copy).parent == tmp_path / "c"
    else:
        assert info.value.copy is None
    leftovers = [p.name for p in (tmp_path / "c").glob("*")] if (tmp_path / "c").exists() else []
    assert not [name for name in leftovers if name.endswith((".tmp", ".npz"))]


def test_format_error_survives_pickling():
    error = pickle.loads(pickle.dumps(SHDFormatError("/d/shd_train.h5", "has label 20", 4)))
    assert str(error) == "/d/shd_train.h5: sample 4 has label 20"
    assert (error.path, error.copy, error.sample) == ("/d/shd_train.h5", None, 4)
    error = pickle.loads(pickle.dumps(SHDFormatError(("/d/a.h5.gz", "/c/a.h5"), "an empty file")))
    assert str(error) == "/d/a.h5.gz (decompressed to /c/a.h5): an empty file"
    assert (error.path, error.copy, error.sample) == ("/d/a.h5.gz", "/c/a.h5", None)


# ---------------------------------------------------------------- caches


@pytest.fixture()
def root(good_file, tmp_path):
    shutil.copy(good_file, tmp_path / "shd_train.h5")
    return tmp_path


def _no_build(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(shd_module, "_build", fail)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftover_temp_of_a_dead_build_is_removed_and_never_used(root):
    good = SHD(root, dt=0.01, cache_dir=root / "c")
    target = good.cache_path
    target.unlink()
    stale = temp_path(target)
    stale = stale.with_name(stale.name.replace(f".{os.getpid()}.", f".{_dead_pid()}.", 1))
    stale.write_bytes(b"half a cache")
    live = temp_path(target)  # this process's: a write in progress, kept
    live.write_bytes(b"in progress")
    again = SHD(root, dt=0.01, cache_dir=root / "c")
    assert not stale.exists() and live.exists()
    np.testing.assert_array_equal(again[7][0].numpy(), good[7][0].numpy())
    assert remove_stale_temps(target) == []


@pytest.mark.parametrize(
    "damage", ["truncated", "other key", "index out of range", "float index", "bad labels"]
)
def test_cache_with_wrong_content_is_rebuilt(root, tmp_path, monkeypatch, damage):
    good = SHD(root, dt=0.01, cache_dir=root / "c")
    data = good.cache_path.read_bytes()
    if damage == "truncated":
        good.cache_path.write_bytes(data[: len(data) - 100])
    else:
        with np.load(good.cache_path) as npz:
            arrays = {name: npz[name] for name in npz.files}
        if damage == "other key":
            other = SHD(root, dt=0.02, cache_dir=root / "c")
            shutil.copy(other.cache_path, good.cache_path)
        else:
            if damage == "index out of range":
                arrays["index"][3] = 100 * 700
            elif damage == "float index":
                arrays["index"] = arrays["index"].astype(np.float32)
            elif damage == "bad labels":
                arrays["labels"][0] = 25
            with open(good.cache_path, "wb") as out:
                np.savez(out, **arrays)
    again = SHD(root, dt=0.01, cache_dir=root / "c")
    assert good.cache_path.read_bytes() == data
    np.testing.assert_array_equal(again[3][0].numpy(), good[3][0].numpy())
    _no_build(monkeypatch)
    SHD(root, dt=0.01, cache_dir=root / "c")  # and the rebuilt cache is used


def test_cache_of_a_changed_source_is_not_used(root):
    first = SHD(root, dt=0.01, cache_dir=root / "c")
    write(root / "shd_train.h5", labels=[4, 5, 6])
    again = SHD(root, dt=0.01, cache_dir=root / "c")
    assert again.cache_path != first.cache_path and list(again.labels) == [4, 5, 6]


@pytest.mark.parametrize("damage", ["truncated", "garbage of the same size", "deleted"])
def test_damaged_decompressed_copy_is_decompressed_again(good_file, tmp_path, damage):
    _gzip(good_file.read_bytes(), tmp_path / "gz" / "shd_train.h5.gz")
    first = SHD(tmp_path / "gz", dt=0.01, cache_dir=tmp_path / "c")
    (copy,) = (tmp_path / "c").glob("shd_train-*.h5")
    size = copy.stat().st_size
    first.cache_path.unlink()  # so that the copy is read again
    if damage == "truncated":
        copy.write_bytes(copy.read_bytes()[: size // 3])
    elif damage == "garbage of the same size":
        copy.write_bytes(b"\x00" * size)
    else:
        copy.unlink()
    again = SHD(tmp_path / "gz", dt=0.01, cache_dir=tmp_path / "c")
    assert copy.read_bytes() == good_file.read_bytes()
    np.testing.assert_array_equal(again[5][0].numpy(), first[5][0].numpy())


def _die_while_saving(root: str) -> None:
    def half_and_die(out, **arrays):
        out.write(b"PK\x03\x04 half a cache")
        out.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    np.savez = half_and_die
    SHD(root, dt=0.01, cache_dir=os.path.join(root, "c"))


def test_a_build_killed_while_writing_the_cache_is_redone(root):
    child = multiprocessing.get_context("fork").Process(target=_die_while_saving, args=(str(root),))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    (left,) = (root / "c").iterdir()  # the killed build's temporary file, nothing else
    assert left.name.startswith(".shd_train-") and left.name.endswith(".tmp")
    assert f".{child.pid}." in left.name
    ds = SHD(root, dt=0.01, cache_dir=root / "c")
    assert sorted(p.name for p in (root / "c").iterdir()) == [ds.cache_path.name]
    assert len(ds) == 40 and ds[0][0].shape == (100, 700)


def test_a_build_that_fails_while_writing_leaves_no_cache(root, monkeypatch):
    def broken(out, **arrays):
        out.write(b"PK\x03\x04 half a cache")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="No space left"):
        SHD(root, dt=0.01, cache_dir=root / "c")
    assert list((root / "c").iterdir()) == []
    monkeypatch.undo()
    assert len(SHD(root, dt=0.01, cache_dir=root / "c")) == 40


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_paths_of_one_target_are_separate(tmp_path):
    target = tmp_path / "f.bin"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b and a.parent == b.parent == tmp_path
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert target.read_bytes() == b"a"  # the outer block ends last, its rename wins
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def _build_in_child(root: str, cache: str, start, queue) -> None:
    start.wait()
    ds = SHD(root, dt=0.005, cache_dir=cache)
    queue.put((str(ds.cache_path), ds[9][0].numpy()))


def test_two_processes_building_one_cache(root, tmp_path):
    context = multiprocessing.get_context("fork")
    start, queue = context.Event(), context.Queue()
    workers = [
        context.Process(target=_build_in_child, args=(str(root), str(root / "c"), start, queue))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    start.set()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert sorted(p.suffix for p in (root / "c").iterdir()) == [".npz"]
    loaded = SHD(root, dt=0.005, cache_dir=root / "c")
    np.testing.assert_array_equal(loaded[9][0].numpy(), results[0][1])


# ---------------------------------------------------------------- built-in synthetic data


@pytest.mark.parametrize(
    "damage", ["one file missing", "truncated file", "manifest garbage", "manifest missing"]
)
def test_interrupted_synthetic_build_is_redone(tmp_path, damage):
    paths = ensure_synthetic_shd(tmp_path, num_train=20, num_test=10, seed=4)
    data = [p.read_bytes() for p in paths]
    if damage == "one file missing":
        paths[1].unlink()
    elif damage == "truncated file":
        paths[0].write_bytes(data[0][: len(data[0]) // 2])
    elif damage == "manifest garbage":
        (tmp_path / "synthetic_shd.json").write_bytes(b"\xff\xfe{")
    else:
        (tmp_path / "synthetic_shd.json").unlink()
    assert ensure_synthetic_shd(tmp_path, num_train=20, num_test=10, seed=4) == paths
    assert [p.read_bytes() for p in paths] == data
    train = SHD(tmp_path, dt=0.01, cache_dir=tmp_path / "c")
    assert len(train) == 20


def test_intact_synthetic_files_are_reused(tmp_path, monkeypatch):
    ensure_synthetic_shd(tmp_path, num_train=20, num_test=10)
    from sj_spatial.data import synthetic

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(synthetic, "make_synthetic_shd", fail)
    ensure_synthetic_shd(tmp_path, num_train=20, num_test=10)
    with pytest.raises(AssertionError, match="rebuilt"):
        ensure_synthetic_shd(tmp_path, num_train=21, num_test=10)
