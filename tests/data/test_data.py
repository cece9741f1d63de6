"""sj_spatial.data: SHD files read unchanged, binned exactly, cached safely; the generator."""

from __future__ import annotations

import filecmp
import gzip
import os
import shutil
import socket
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sj_spatial.data import SHD, collate, ensure_synthetic_shd, make_synthetic_shd, read_shd
from sj_spatial.data import shd as shd_module
from sj_spatial.data.synthetic import TEST_ONLY_SPEAKERS

F16 = h5py.vlen_dtype(np.float16)
U16 = h5py.vlen_dtype(np.uint16)


def write_shd(path, times, units, labels, speakers=None, times_dtype=np.float16):
    """A hand-made SHD file: one list of spike times (s) and one of channels per sample."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    t = np.empty(n, dtype=object)
    u = np.empty(n, dtype=object)
    for i in range(n):
        t[i] = np.asarray(times[i], dtype=times_dtype)
        u[i] = np.asarray(units[i], dtype=np.uint16)
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes/times", data=t, dtype=h5py.vlen_dtype(times_dtype))
        f.create_dataset("spikes/units", data=u, dtype=U16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        f.create_dataset(
            "extra/speaker",
            data=np.asarray(speakers if speakers is not None else [0] * n, np.uint16),
        )
    return path


def reference_frames(times, units, dt, num_steps, binary=False):
    """Slow, obvious binning of one sample: step floor(t / dt), dropped past the window."""
    frames = np.zeros((num_steps, 700), np.float32)
    for t, c in zip(times, units, strict=True):
        k = int(np.floor(float(t) / dt + 1e-9))
        if k < num_steps:
            frames[k, c] = 1 if binary else frames[k, c] + 1
    return frames


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_shd(root, num_train=60, num_test=30, seed=1)
    return root


# ---------------------------------------------------------------- generated files


def test_generated_files_have_the_shd_layout(synthetic):
    names = {
        "spikes",
        "spikes/times",
        "spikes/units",
        "labels",
        "extra",
        "extra/speaker",
        "extra/keys",
        "extra/meta_info",
        "extra/meta_info/gender",
        "extra/meta_info/age",
        "extra/meta_info/body_height",
    }
    for name, n in (("shd_train.h5", 60), ("shd_test.h5", 30)):
        with h5py.File(synthetic / name, "r") as f:
            found = set()
            f.visit(found.add)
            assert found == names
            assert h5py.check_vlen_dtype(f["spikes/times"].dtype) == np.float16
            assert h5py.check_vlen_dtype(f["spikes/units"].dtype) == np.uint16
            assert f["labels"].dtype == np.uint16 and f["extra/speaker"].dtype == np.uint16
            assert f["extra/keys"].dtype.kind == "S" and len(f["extra/keys"]) == 20
            assert f["extra/meta_info/gender"].dtype.kind == "S"
            assert len(f["extra/meta_info/age"]) == len(f["extra/meta_info/body_height"]) == 12
            assert f["spikes/times"].shape == f["spikes/units"].shape == (n,)
            assert f["labels"].shape == f["extra/speaker"].shape == (n,)
            for t, u in zip(f["spikes/times"], f["spikes/units"], strict=True):
                assert len(t) == len(u) > 0
                assert np.all(np.diff(t.astype(float)) >= 0) and t.min() >= 0
                assert u.max() < 700
            assert f["labels"][:].max() < 20
    with h5py.File(synthetic / "shd_train.h5", "r") as f:
        assert not set(f["extra/speaker"][:]) & set(TEST_ONLY_SPEAKERS)


def test_same_seed_gives_identical_files(tmp_path):
    a = make_synthetic_shd(tmp_path / "a", num_train=20, num_test=10, seed=5)
    b = make_synthetic_shd(tmp_path / "b", num_train=20, num_test=10, seed=5)
    c = make_synthetic_shd(tmp_path / "c", num_train=20, num_test=10, seed=6)
    assert all(filecmp.cmp(x, y, shallow=False) for x, y in zip(a, b, strict=True))
    assert not filecmp.cmp(a[0], c[0], shallow=False)


def test_ensure_builds_once_and_rebuilds_when_asked_for_other_data(tmp_path):
    paths = ensure_synthetic_shd(tmp_path, num_train=20, num_test=10)
    stamp = [p.stat().st_mtime_ns for p in paths]
    assert ensure_synthetic_shd(tmp_path, num_train=20, num_test=10) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamp
    ensure_synthetic_shd(tmp_path, num_train=30, num_test=10)
    assert len(read_shd(paths[0]).labels) == 30
    (tmp_path / "synthetic_shd.json").unlink()  # as after an interrupted build
    ensure_synthetic_shd(tmp_path, num_train=30, num_test=10)
    assert (tmp_path / "synthetic_shd.json").is_file()


def test_loader_reads_generated_files_true_to_the_file(synthetic, tmp_path):
    ds = SHD(synthetic, train=False, dt=0.01, T=100, cache_dir=tmp_path)
    with h5py.File(synthetic / "shd_test.h5", "r") as f:
        labels, speakers = f["labels"][:], f["extra/speaker"][:]
        times, units = f["spikes/times"][:], f["spikes/units"][:]
    assert len(ds) == 30
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_array_equal(ds.speakers, speakers)
    for i in (0, 7, 29):
        frames, label = ds[i]
        assert frames.dtype == torch.float32 and frames.shape == (100, 700)
        assert label == int(labels[i]) and isinstance(label, int)
        np.testing.assert_array_equal(
            frames.numpy(), reference_frames(times[i], units[i], 0.01, 100)
        )


def test_spikingjelly_reads_the_generated_files(synthetic, tmp_path):
    sj_shd = pytest.importorskip("spikingjelly.datasets.shd")
    for sub in ("extract", "events_h5"):  # spikingjelly 0.0.0.0.14's and 2.0.0's folders
        (tmp_path / sub).mkdir()
        for name in ("shd_train.h5", "shd_test.h5"):
            shutil.copy(synthetic / name, tmp_path / sub / name)
    ds = sj_shd.SpikingHeidelbergDigits(str(tmp_path), train=True, data_type="event")
    ours = read_shd(synthetic / "shd_train.h5")
    assert len(ds) == 60
    for i in (0, 33):
        events, label = ds[i]
        lo, hi = ours.offsets[i], ours.offsets[i + 1]
        np.testing.assert_array_equal(events["t"].astype(float), ours.times[lo:hi])
        np.testing.assert_array_equal(events["x"], ours.units[lo:hi])
        assert int(label) == ours.labels[i]


# ---------------------------------------------------------------- binning


def hand_file(tmp_path):
    # dt = 0.1 s, T = 3: bins [0, .1), [.1, .2), [.2, .3). float64 times so that the
    # decimal bin edges 0.1, 0.2, 0.3 are tested as written.
    times = [[0.0, 0.05, 0.07, 0.1, 0.2, 0.2999, 0.3, 0.9], [], [0.15, 0.15]]
    units = [[0, 0, 0, 1, 2, 1, 3, 4], [], [699, 699]]
    return write_shd(
        tmp_path / "root" / "shd_train.h5", times, units, [3, 0, 19], times_dtype=np.float64
    )


def test_binning_equals_a_hand_computed_case(tmp_path):
    hand_file(tmp_path)
    counts = SHD(tmp_path / "root", dt=0.1, T=3, cache_dir=tmp_path / "c")
    binary = SHD(tmp_path / "root", dt=0.1, duration=0.3, binary=True, cache_dir=tmp_path / "c")
    expected = np.zeros((3, 700), np.float32)
    expected[0, 0] = 3  # 0.0 (on the first edge), 0.05, 0.07
    expected[1, 1] = 1  # 0.1: on an edge, starts bin 1
    expected[2, 2] = 1  # 0.2: on an edge, starts bin 2
    expected[2, 1] = 1  # 0.2999
    # 0.3 (the window's end edge) and 0.9 are dropped
    np.testing.assert_array_equal(counts[0][0].numpy(), expected)
    np.testing.assert_array_equal(binary[0][0].numpy(), np.minimum(expected, 1))
    assert counts.num_steps == binary.num_steps == 3 and counts.num_dropped == 2
    assert counts[1][0].sum() == 0
    assert counts[2][0][1, 699] == 2 and binary[2][0][1, 699] == 1
    assert [counts[i][1] for i in range(3)] == [3, 0, 19]


def test_float16_times_on_bin_edges(tmp_path):
    # 0.25, 0.5 and 0.75 are exact in float16, as SHD stores its times; 0.7495 becomes
    # 0.74951171875, the float16 just below 0.75.
    write_shd(tmp_path / "shd_test.h5", [[0.25, 0.5, 0.75, 0.7495]], [[1, 2, 3, 4]], [7])
    frames, label = SHD(tmp_path, train=False, dt=0.25, T=3, cache_dir=tmp_path / "c")[0]
    assert label == 7
    assert frames[1, 1] == 1 and frames[2, 2] == 1 and frames[2, 4] == 1
    assert frames.sum() == 3  # 0.75 is the end of the window


def test_collate_gives_time_major_batches(synthetic, tmp_path):
    ds = SHD(synthetic, train=False, dt=0.02, duration=1.0, cache_dir=tmp_path)
    frames, labels = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert frames.shape == (50, 4, 700) and frames.dtype == torch.float32
    assert labels.dtype == torch.long
    np.testing.assert_array_equal(labels.numpy(), ds.labels[:4])
    torch.testing.assert_close(frames[:, 2], ds[2][0])


# ---------------------------------------------------------------- cache


def test_cache_is_used_the_second_time(synthetic, tmp_path, monkeypatch):
    first = SHD(synthetic, dt=0.01, T=100, cache_dir=tmp_path)
    assert first.cache_path.is_file()

    def no_build(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(shd_module, "_build", no_build)
    second = SHD(synthetic, dt=0.01, T=100, binary=True, cache_dir=tmp_path)
    np.testing.assert_array_equal(second[5][0].numpy(), np.minimum(first[5][0].numpy(), 1))
    with pytest.raises(AssertionError, match="cache was not used"):
        SHD(synthetic, dt=0.01, T=50, cache_dir=tmp_path)  # another T is another cache


def test_cache_is_rebuilt_when_the_source_changes(tmp_path):
    path = write_shd(tmp_path / "shd_train.h5", [[0.1]], [[5]], [4])
    assert SHD(tmp_path, dt=0.01, cache_dir=tmp_path / "c")[0][1] == 4
    write_shd(path, [[0.2], [0.3]], [[6], [7]], [8, 9])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    ds = SHD(tmp_path, dt=0.01, cache_dir=tmp_path / "c")
    assert len(ds) == 2 and ds[1][1] == 9 and ds[1][0][30, 7] == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_cache_file_is_detected_and_rebuilt(synthetic, tmp_path, damage):
    good = SHD(synthetic, dt=0.01, T=100, cache_dir=tmp_path)
    data = good.cache_path.read_bytes()
    damaged = {"truncate": data[: len(data) // 2], "garbage": b"x" * 1000, "empty": b""}[damage]
    good.cache_path.write_bytes(damaged)
    again = SHD(synthetic, dt=0.01, T=100, cache_dir=tmp_path)
    assert good.cache_path.read_bytes() == data
    np.testing.assert_array_equal(again[3][0].numpy(), good[3][0].numpy())


def test_no_temporary_files_are_left_behind(synthetic, tmp_path):
    SHD(synthetic, dt=0.01, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ---------------------------------------------------------------- where the files are


def test_compressed_and_spikingjelly_layouts_are_found(synthetic, tmp_path):
    plain = SHD(synthetic, train=False, dt=0.01, cache_dir=tmp_path / "c0")
    gz_root = tmp_path / "gz"
    gz_root.mkdir()
    with (
        open(synthetic / "shd_test.h5", "rb") as src,
        gzip.open(gz_root / "shd_test.h5.gz", "wb") as out,
    ):
        shutil.copyfileobj(src, out)
    zip_root = tmp_path / "zip"
    (zip_root / "download").mkdir(parents=True)
    with zipfile.ZipFile(zip_root / "download" / "shd_test.h5.zip", "w") as archive:
        archive.write(synthetic / "shd_test.h5", "shd_test.h5")
    for sub in ("events_h5", "extract"):
        (tmp_path / sub / sub).mkdir(parents=True)
        shutil.copy(synthetic / "shd_test.h5", tmp_path / sub / sub / "shd_test.h5")
    for k, root in enumerate((gz_root, zip_root, tmp_path / "events_h5", tmp_path / "extract")):
        ds = SHD(root, train=False, dt=0.01, cache_dir=tmp_path / f"c{k + 1}")
        np.testing.assert_array_equal(ds.labels, plain.labels)
        np.testing.assert_array_equal(ds[11][0].numpy(), plain[11][0].numpy())
    assert len(list((tmp_path / "c1").glob("shd_test-*.h5"))) == 1  # decompressed once


def test_no_network_access(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    ensure_synthetic_shd(tmp_path / "data", num_train=10, num_test=5)
    with open(tmp_path / "data" / "shd_test.h5", "rb") as src:
        (tmp_path / "gz").mkdir()
        with gzip.open(tmp_path / "gz" / "shd_test.h5.gz", "wb") as out:
            shutil.copyfileobj(src, out)
    for root in (tmp_path / "data", tmp_path / "gz"):
        for _ in range(2):  # building the cache, then reading it
            ds = SHD(root, train=False, dt=0.01, cache_dir=tmp_path / "cache")
            ds[0]


def test_missing_files_raise_file_not_found_naming_the_root(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no shd_train.h5 .* found under .*empty"):
        SHD(empty)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SHD(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_shd(tmp_path / "missing.h5")


# ---------------------------------------------------------------- malformed files


def _malformed(path: Path, case: str) -> None:
    times = [[0.1, 0.2], [0.3, 0.4], [0.5]]
    units = [[1, 2], [3, 4], [5]]
    labels = [1, 2, 3]
    if case == "unit out of range":
        units[1][1] = 700
    elif case == "negative time":
        times[1][0] = -0.1
    elif case == "non-finite time":
        times[1][1] = float("nan")
    elif case == "label out of range":
        labels[1] = 20
    elif case == "lengths differ":
        units[1] = [3]
    write_shd(path, times, units, labels)
    with h5py.File(path, "a") as f:
        if case == "missing labels":
            del f["labels"]
        elif case == "sample counts differ":
            del f["labels"]
            f.create_dataset("labels", data=np.array([1, 2], np.uint16))
        elif case == "times not variable-length":
            del f["spikes/times"]
            f.create_dataset("spikes/times", data=np.zeros(3, np.float32))
        elif case == "units not integers":
            del f["spikes/units"]
            rows = np.empty(3, dtype=object)
            rows[:] = [
                np.array([1.0, 2.0], np.float32),
                np.array([3.0, 4.5], np.float32),
                np.array([5.0], np.float32),
            ]
            f.create_dataset("spikes/units", data=rows, dtype=h5py.vlen_dtype(np.float32))
        elif case == "labels not integers":
            del f["labels"]
            f.create_dataset("labels", data=np.array([1.0, 2.5, 3.0]))


MALFORMED = {
    "unit out of range": "sample 1 has unit 700",
    "negative time": "sample 1 has spike time -0.09",
    "non-finite time": "sample 1 has spike time nan",
    "label out of range": "sample 1 has label 20",
    "lengths differ": "sample 1 has 2 spike times .* but 1 units",
    "missing labels": "/labels is missing",
    "sample counts differ": "/labels has 2",
    "times not variable-length": "/spikes/times must be a variable-length array",
    "units not integers": "sample 1 has unit 4.5 in /spikes/units; channels must be whole",
    "labels not integers": "sample 1 has label 2.5 in /labels; classes must be whole",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_name_the_file_and_sample(tmp_path, monkeypatch, case):
    monkeypatch.setattr(shd_module, "CHUNK", 1)  # sample 1 is read in a later chunk
    path = tmp_path / "shd_train.h5"
    _malformed(path, case)
    with pytest.raises(ValueError, match=MALFORMED[case]) as info:
        SHD(tmp_path, cache_dir=tmp_path / "c")
    assert str(path) in str(info.value)


def test_speaker_is_optional_metadata(tmp_path):
    path = write_shd(tmp_path / "shd_train.h5", [[0.1], [0.2]], [[1], [2]], [5, 6])
    with h5py.File(path, "a") as f:
        del f["extra/speaker"]
    assert SHD(tmp_path, cache_dir=tmp_path / "c").speakers is None
    with h5py.File(path, "a") as f:
        f.create_dataset("extra/speaker", data=np.array([b"anna", b"ben"]))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    ds = SHD(tmp_path, cache_dir=tmp_path / "c")
    assert ds.speakers is None and [ds[i][1] for i in range(2)] == [5, 6]


def test_a_file_that_is_not_hdf5(tmp_path):
    (tmp_path / "shd_train.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="shd_train.h5: not a readable HDF5 file"):
        SHD(tmp_path, cache_dir=tmp_path / "c")
    (tmp_path / "shd_train.h5").unlink()
    (tmp_path / "shd_train.h5.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="shd_train.h5.gz: cannot decompress"):
        SHD(tmp_path, cache_dir=tmp_path / "c")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"dt": 0.0}, ValueError, "dt must be finite and > 0"),
        ({"dt": "1ms"}, TypeError, "dt must be a number"),
        ({"duration": -1.0}, ValueError, "duration must be"),
        ({"T": 0}, ValueError, "T must be >= 1"),
        ({"duration": 1.0, "T": 100}, ValueError, "give duration or T, not both"),
        ({"binary": 1}, TypeError, "binary must be a bool"),
        ({"train": "yes"}, TypeError, "train must be a bool"),
    ],
)
def test_bad_arguments(synthetic, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        SHD(synthetic, cache_dir=tmp_path, **kwargs)


def test_index_out_of_range(synthetic, tmp_path):
    ds = SHD(synthetic, train=False, dt=0.01, cache_dir=tmp_path)
    assert torch.equal(ds[-1][0], ds[29][0])
    with pytest.raises(IndexError, match="30"):
        ds[30]


def test_shd_splits_reads_a_folder_and_takes_a_fixed_random_subset(tmp_path):
    from sj_spatial.data import make_synthetic_shd, shd_splits

    make_synthetic_shd(tmp_path / "d", num_train=30, num_test=12, seed=3)
    train, test = shd_splits(tmp_path / "d", dt=0.01, duration=0.5)
    assert (len(train), len(test)) == (30, 12) and train[0][0].shape == (50, 700)
    a, _ = shd_splits(tmp_path / "d", dt=0.01, duration=0.5, samples=7, seed=1)
    b, _ = shd_splits(tmp_path / "d", dt=0.01, duration=0.5, samples=7, seed=1)
    assert len(a) == 7 and list(a.indices) == list(b.indices)


def test_builtin_shd_root_generates_once_into_the_cache(tmp_path, monkeypatch):
    from sj_spatial.data import builtin_shd_root

    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(tmp_path))
    root = builtin_shd_root()
    assert root == tmp_path / "synthetic_shd" and (root / "shd_train.h5").is_file()
    mtime = (root / "shd_train.h5").stat().st_mtime_ns
    assert builtin_shd_root() == root and (root / "shd_train.h5").stat().st_mtime_ns == mtime


def test_write_shd_round_trips_through_read_shd_and_shd(tmp_path):
    from sj_spatial.data import write_shd as write

    samples = [([0.5, 0.001, 1.25], [699, 0, 3]), ([], [])]
    path = write(
        tmp_path / "shd_train.h5",
        samples,
        labels=[19, 0],
        speakers=[2, 0],
        keys=[f"k{c}" for c in range(20)],
        gender=["female", "male", "female"],
        age=[30, 40, 50],
        body_height=[170, 180, 160],
    )
    events = read_shd(path)
    assert events.offsets.tolist() == [0, 3, 3] and events.labels.tolist() == [19, 0]
    assert events.units.tolist() == [699, 0, 3] and events.speakers.tolist() == [2, 0]
    assert events.times.tolist() == np.float16([0.5, 0.001, 1.25]).astype(float).tolist()
    with h5py.File(path) as f:
        assert f["spikes/times"].dtype.metadata["vlen"] == np.float16
        assert f["spikes/units"].dtype.metadata["vlen"] == np.uint16
        assert f["extra/keys"][19] == b"k19"
        assert f["extra/meta_info/gender"][:].tolist() == [b"female", b"male", b"female"]
        assert f["extra/meta_info/body_height"][:].tolist() == [170, 180, 160]
    assert len(SHD(tmp_path, train=True, cache_dir=tmp_path / "cache")) == 2


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(labels=[0]), "one entry per sample"),
        (dict(labels=[0, 20]), "labels must lie in 0..19"),
        (dict(keys=["a"]), "keys must name the 20 classes"),
        (dict(samples=[([0.1], [700]), ([], [])]), "sample 0: units must be whole numbers"),
        (dict(samples=[([0.1], [1.5]), ([], [])]), "sample 0: units must be whole numbers"),
        (dict(samples=[([0.1], [1]), ([-0.1], [1])]), "sample 1: times must be finite"),
        (dict(samples=[([0.1, 0.2], [1]), ([], [])]), "sample 0: times and units"),
    ],
)
def test_write_shd_refuses_what_is_not_shd_and_keeps_the_old_file(tmp_path, change, match):
    from sj_spatial.data import write_shd as write

    target = tmp_path / "shd_test.h5"
    target.write_bytes(b"the user's file")
    kwargs = dict(
        samples=[([0.1], [1]), ([], [])],
        labels=[0, 1],
        speakers=[0, 0],
        keys=[str(c) for c in range(20)],
        gender=["male"],
        age=[0],
        body_height=[0],
    )
    with pytest.raises(ValueError, match=match):
        write(target, **{**kwargs, **change})
    assert target.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shd_test.h5"]
