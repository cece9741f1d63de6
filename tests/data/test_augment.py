"""sj_spatial.data.augment: the paper's shift and blend augmentation of SHD spikes."""

from __future__ import annotations

from collections import Counter

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from sj_spatial.data import (
    SHD,
    AugmentedSHD,
    blend_events,
    collate,
    make_synthetic_shd,
    random_shift,
    shift_units,
    stretch_times,
)


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- shift


def test_shift_moves_units_keeps_times_and_drops_what_leaves_the_channels():
    times = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    units = np.array([0, 10, 650, 659, 699])
    t, u = shift_units(times, units, 41)
    np.testing.assert_array_equal(t, [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(u, [41, 51, 691])
    t, u = shift_units(times, units, -10)
    np.testing.assert_array_equal(t, [0.2, 0.3, 0.4, 0.5])
    np.testing.assert_array_equal(u, [0, 640, 649, 689])
    t, u = shift_units(times, units, 0)
    np.testing.assert_array_equal(t, times) and np.testing.assert_array_equal(u, units)
    assert u.dtype == np.int64


def test_random_shift_draws_every_offset_up_to_max_shift_and_repeats_under_a_seed():
    times, units = np.arange(5.0), np.full(5, 350)
    offsets = {int(random_shift(times, units, rng(s), max_shift=3)[1][0]) - 350 for s in range(200)}
    assert offsets == set(range(-3, 4))
    a = random_shift(times, units, rng(7), max_shift=40)
    b = random_shift(times, units, rng(7), max_shift=40)
    np.testing.assert_array_equal(a[1], b[1])


# ---------------------------------------------------------------- blend


def test_blend_moves_both_parents_half_way_to_each_other():
    # Centres of mass: channel 101 and 121, time 0.2 s and 0.6 s: both move to 111, 0.4 s.
    a = np.array([0.1, 0.3]), np.array([100, 102])
    b = np.array([0.5, 0.7]), np.array([120, 122])
    t, u = blend_events(*a, *b, rng(), p=1.0)
    np.testing.assert_allclose(t, [0.3, 0.3, 0.5, 0.5])
    np.testing.assert_array_equal(u, [110, 110, 112, 112])


def test_blend_truncates_offsets_towards_zero_as_int_does():
    # Channel means 10 and 15: offsets int(2.5) = 2 and int(-2.5) = -2. Integer times
    # (steps) with means 4 and 9: +2 and -2 steps.
    a = np.array([4, 4]), np.array([9, 11])
    b = np.array([9, 9]), np.array([14, 16])
    t, u = blend_events(*a, *b, rng(), p=1.0)
    assert t.dtype.kind == "i"
    assert sorted(zip(t.tolist(), u.tolist(), strict=True)) == [
        (6, 11),
        (6, 13),
        (7, 12),
        (7, 14),
    ]


def aligned(times_a, units_a, times_b, units_b):
    """The spikes of both parents after the half-way move (p = 1), as a multiset."""
    t, u = blend_events(times_a, units_a, times_b, units_b, rng(), p=1.0)
    return Counter(zip(t.tolist(), u.tolist(), strict=True))


def random_sample(generator, n, centre):
    times = np.sort(generator.uniform(0, 1, n))
    units = np.clip(generator.normal(centre, 60, n).astype(np.int64), 0, 699)
    return times, units


def test_blend_keeps_only_parent_spikes_sorted_by_time_each_with_probability_p():
    g = rng(1)
    a, b = random_sample(g, 3000, 200), random_sample(g, 2000, 400)
    everything = aligned(*a, *b)
    t, u = blend_events(*a, *b, rng(5), p=0.5)
    assert np.all(np.diff(t) >= 0)
    assert not Counter(zip(t.tolist(), u.tolist(), strict=True)) - everything  # a sub-multiset
    total = sum(everything.values())
    assert abs(len(t) - total / 2) < 5 * np.sqrt(total / 4)  # binomial(total, 0.5)
    assert len(blend_events(*a, *b, rng(5), p=0.0)[0]) == 0


def test_blend_is_deterministic_under_a_seed():
    g = rng(2)
    a, b = random_sample(g, 500, 300), random_sample(g, 500, 320)
    first, again, other = (blend_events(*a, *b, rng(s), p=0.5) for s in (3, 3, 4))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert len(first[0]) != len(other[0]) or not np.array_equal(first[0], other[0])


def test_blend_drops_spikes_outside_channels_and_window():
    # Channel means 349.5 and 600: a moves by int(125.25) = 125, b by -125; same times.
    a = np.array([0.5, 0.5]), np.array([0, 699])
    b = np.array([0.5]), np.array([600])
    t, u = blend_events(*a, *b, rng(), p=1.0)
    assert sorted(u.tolist()) == [125, 475]  # 699 + 125 left the channels
    # Time means 0.1 and 0.9: both move 0.4 s towards each other; max_time drops t >= 0.6.
    a = np.array([0.0, 0.2]), np.array([10, 10])
    b = np.array([0.8, 1.0]), np.array([20, 20])
    t, u = blend_events(*a, *b, rng(), p=1.0, max_time=0.6)
    np.testing.assert_allclose(t, [0.4, 0.4])
    assert sorted(u.tolist()) == [15, 15]
    # Negative times are dropped too: b (mean 0.25 s) moves back by 0.1 s, a forward.
    a = np.array([0.05, 0.05]), np.array([1, 1])
    b = np.array([0.0, 0.5]), np.array([1, 1])
    t, _ = blend_events(*a, *b, rng(), p=1.0)
    np.testing.assert_allclose(t, [0.15, 0.15, 0.4])


def test_blend_with_an_empty_parent_keeps_the_other_in_place():
    a = np.array([0.1, 0.2]), np.array([5, 6])
    t, u = blend_events(*a, np.zeros(0), np.zeros(0, np.int64), rng(), p=1.0)
    np.testing.assert_array_equal(t, a[0]) and np.testing.assert_array_equal(u, a[1])


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((np.zeros(2), np.zeros(3, np.int64)), ValueError, "times and units must be 1-D"),
        ((np.zeros(2), np.zeros(2)), TypeError, "units must be integers"),
    ],
)
def test_bad_events(args, error, match):
    with pytest.raises(error, match=match):
        shift_units(*args, 1)


def test_bad_blend_probability():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        blend_events(
            np.zeros(1), np.zeros(1, np.int64), np.zeros(1), np.zeros(1, np.int64), rng(), 1.5
        )


# ---------------------------------------------------------------- stretch


def test_stretch_scales_times_floors_steps_and_drops_what_leaves_the_window():
    steps, units = np.array([0, 1, 2, 3, 9]), np.array([5, 6, 7, 8, 9])
    fast = stretch_times(steps, units, 0.5)
    assert fast[0].tolist() == [0, 0, 1, 1, 4] and fast[0].dtype == steps.dtype
    assert fast[1].tolist() == units.tolist()  # channels unchanged
    slow = stretch_times(steps, units, 1.5, max_time=10)
    assert slow[0].tolist() == [0, 1, 3, 4] and slow[1].tolist() == [5, 6, 7, 8]  # 13.5 left
    seconds = stretch_times(np.array([0.1, 0.4]), np.array([1, 2]), 1.25)
    assert seconds[0] == pytest.approx([0.125, 0.5])
    with pytest.raises(ValueError, match="factor must be finite and > 0"):
        stretch_times(steps, units, 0.0)


# ---------------------------------------------------------------- the dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    make_synthetic_shd(root, num_train=40, num_test=10, seed=3)
    return root


@pytest.fixture(scope="module")
def shd(data, tmp_path_factory):
    return SHD(data, dt=0.01, T=100, cache_dir=tmp_path_factory.mktemp("cache"))


def test_augmented_items_have_the_shapes_of_shd_items(shd):
    augmented = AugmentedSHD(shd, seed=1)
    assert len(augmented) == 2 * len(shd)  # as many blended samples as samples
    for i in (0, 39, 40, 79):
        frames, label = augmented[i]
        assert frames.shape == shd[0][0].shape == (100, 700) and frames.dtype == torch.float32
        assert isinstance(label, int) and 0 <= label < 20
    frames, labels = next(iter(DataLoader(augmented, batch_size=8, collate_fn=collate)))
    assert frames.shape == (100, 8, 700) and labels.dtype == torch.long


def test_without_shift_and_blend_the_items_are_shds(shd):
    plain = AugmentedSHD(shd, max_shift=0, num_blend=0)
    assert len(plain) == len(shd)
    for i in (0, 17, 39):
        assert torch.equal(plain[i][0], shd[i][0]) and plain[i][1] == shd[i][1]


def shifted(frames: torch.Tensor, k: int) -> torch.Tensor:
    """Frames with every channel moved by k; channels leaving 0..699 dropped."""
    out = torch.zeros_like(frames)
    if k >= 0:
        out[:, k:] = frames[:, : 700 - k]
    else:
        out[:, :k] = frames[:, -k:]
    return out


def test_shifted_items_are_the_frames_of_the_shifted_events(shd):
    augmented = AugmentedSHD(shd, max_shift=40, num_blend=0, seed=2)
    offsets = []
    for i in range(len(shd)):
        steps, channels, label = augmented.events(i)
        assert label == shd[i][1]
        original = shd.binned(i)
        matches = [
            k
            for k in range(-40, 41)
            if all(
                np.array_equal(x, y)
                for x, y in zip(shift_units(*original, k), (steps, channels), strict=True)
            )
        ]
        assert matches, f"item {i} is no shift of sample {i}"
        assert torch.equal(augmented[i][0], shifted(shd[i][0], matches[0]))
        offsets.append(matches[0])
    assert len(set(offsets)) > 10  # one random offset per sample


def test_draws_depend_on_seed_epoch_and_item_only(shd):
    a, b = AugmentedSHD(shd, seed=5), AugmentedSHD(shd, seed=5)
    order = [45, 3, 60, 3]
    first = [a[i][0] for i in order]
    again = [b[i][0] for i in reversed(order)][::-1]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    b.set_epoch(1)
    assert not all(torch.equal(a[i][0], b[i][0]) for i in (3, 45, 60))
    c = AugmentedSHD(shd, seed=6)
    assert not all(torch.equal(a[i][0], c[i][0]) for i in (3, 45, 60))


def two_class_file(root):
    """Classes 0 and 3 with one sample each (channels 0..9 and 500..509) and class 7 with
    two samples."""
    samples = [
        (np.linspace(0.1, 0.5, 10), np.arange(10), 0),
        (np.linspace(0.2, 0.6, 10), np.arange(500, 510), 3),
        (np.linspace(0.1, 0.3, 5), np.arange(200, 205), 7),
        (np.linspace(0.5, 0.7, 5), np.arange(220, 225), 7),
    ]
    times = np.empty(len(samples), object)
    units = np.empty(len(samples), object)
    for i, (t, u, _) in enumerate(samples):
        times[i], units[i] = t.astype(np.float16), u.astype(np.uint16)
    root.mkdir()
    with h5py.File(root / "shd_train.h5", "w") as f:
        f.create_dataset("spikes/times", data=times, dtype=h5py.vlen_dtype(np.float16))
        f.create_dataset("spikes/units", data=units, dtype=h5py.vlen_dtype(np.uint16))
        f.create_dataset("labels", data=np.array([s[2] for s in samples], np.uint16))


def test_blended_items_mix_two_samples_of_their_class(tmp_path):
    two_class_file(tmp_path / "d")
    shd = SHD(tmp_path / "d", dt=0.01, T=100, cache_dir=tmp_path / "c")
    augmented = AugmentedSHD(shd, max_shift=0, num_blend=60, p_blend=0.5, seed=0)
    own = {0: set(range(10)), 3: set(range(500, 510))}
    labels = Counter()
    for i in range(4, 64):
        steps, channels, label = augmented.events(i)
        labels[label] += 1
        if label in own:  # the only sample of its class, blended with itself: no move
            assert set(channels.tolist()) <= own[label]
            assert set(steps.tolist()) <= set(shd.binned(0 if label == 0 else 1)[0].tolist())
        else:  # class 7: either sample with itself, or both moved to channels 210..214
            meeting = set(range(200, 205)) | set(range(210, 215)) | set(range(220, 225))
            assert label == 7 and set(channels.tolist()) <= meeting
        assert augmented[i][1] == label
    assert set(labels) == {0, 3, 7} and labels[7] > labels[0]  # parents drawn per sample


def test_a_subset_is_augmented_through_its_indices(data, shd, tmp_path):
    subset = Subset(shd, [5, 2, 30])
    plain = AugmentedSHD(subset, max_shift=0, num_blend=0)
    assert len(plain) == 3 and list(plain.labels) == [int(shd.labels[i]) for i in (5, 2, 30)]
    assert torch.equal(plain[1][0], shd[2][0])
    nested = AugmentedSHD(Subset(subset, [2]), max_shift=0, num_blend=0)
    assert torch.equal(nested[0][0], shd[30][0])
    binary = SHD(data, dt=0.05, T=20, binary=True, cache_dir=tmp_path, transform=lambda x: 2 * x)
    frames, _ = AugmentedSHD(binary, seed=1)[50]
    assert frames.shape == (20, 700) and set(frames.unique().tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_shift": -1}, ValueError, "max_shift must be >= 0"),
        ({"p_blend": 2.0}, ValueError, r"p_blend must be in \[0, 1\]"),
        ({"num_blend": 1.5}, TypeError, "num_blend must be an int"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_bad_arguments(shd, kwargs, error, match):
    with pytest.raises(error, match=match):
        AugmentedSHD(shd, **kwargs)


def test_not_an_shd_dataset_and_index_out_of_range(shd):
    with pytest.raises(TypeError, match="dataset must be an SHD dataset or a torch Subset"):
        AugmentedSHD([(torch.zeros(3, 700), 1)])
    augmented = AugmentedSHD(shd)
    with pytest.raises(IndexError, match="80"):
        augmented[80]
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        augmented.set_epoch(-1)


def test_stretched_items_are_their_unstretched_draws_stretched(shd):
    """Stretching comes after shift and blend: the same draws, then one factor per item
    in [1 - a, 1 + a]; the frames add the spikes that fall in one step."""
    plain, stretched = AugmentedSHD(shd, seed=4), AugmentedSHD(shd, seed=4, max_stretch=0.3)
    factors = []
    for i in (0, 7, 45, 70):
        steps, units, label = plain.events(i)
        new_steps, new_units, new_label = stretched.events(i)
        assert new_label == label
        found = [
            f
            for f in np.linspace(0.7, 1.3, 601)
            if np.array_equal(stretch_times(steps, units, f, 100)[0], new_steps)
        ]
        assert found, f"item {i} is no stretch of its draw"
        assert np.array_equal(stretch_times(steps, units, found[0], 100)[1], new_units)
        factors.append(found[0])
        frames = np.zeros((100, 700), dtype=np.float32)
        np.add.at(frames, (new_steps, new_units), 1.0)
        assert torch.equal(stretched[i][0], torch.from_numpy(frames))
    assert len({round(f, 1) for f in factors}) > 1  # one factor per item
    assert "max_stretch=0.3" in repr(stretched)
    with pytest.raises(ValueError, match=r"max_stretch must be in \[0, 1\), got 1.0"):
        AugmentedSHD(shd, max_stretch=1.0)
