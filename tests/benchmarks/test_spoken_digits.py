"""benchmarks/spoken_digits.py: the cochlea-like front end on known sounds, the split plan,
and a tiny build with the real synthesizers (where espeak-ng and flite are installed)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from sj_spatial.data import SHD, read_shd


@pytest.fixture(scope="module")
def sd(benchmark_script):
    return benchmark_script("spoken_digits")


def tone(freq, seconds=0.3, fs=16000, rms=0.05):
    t = np.arange(round(seconds * fs)) / fs
    return rms * np.sqrt(2) * np.sin(2 * np.pi * freq * t)


def test_channels_are_evenly_spaced_on_the_erb_rate_scale(sd):
    f = sd.erb_space(100.0, 7500.0, 700)
    assert f[0] == pytest.approx(100.0) and f[-1] == pytest.approx(7500.0)
    rate = 21.4 * np.log10(1 + 0.00437 * f)
    assert np.allclose(np.diff(rate), np.diff(rate)[0])
    assert np.all(np.diff(f) > 0)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 4000.0])
def test_a_pure_tone_fires_the_channels_tuned_to_it(sd, freq):
    front = sd.FrontEnd()
    times, units = sd.cochlea(tone(freq), front)
    centre = sd.erb_space(front.low, front.high, front.channels)
    best = np.argmin(np.abs(centre - freq))
    counts = np.bincount(units, minlength=front.channels)
    assert abs(int(np.argmax(counts)) - best) <= 25  # within ~1 ERB of the tone
    assert counts[np.abs(np.arange(front.channels) - best) > 150].sum() == 0
    assert times.min() >= 0 and times.max() < 0.3 and np.all(np.diff(times) >= 0)


def test_louder_sounds_fire_more_and_silence_fires_nothing(sd):
    counts = [sd.cochlea(tone(1000.0, rms=r))[0].size for r in (0.02, 0.05, 0.2)]
    assert 0 < counts[0] < counts[1] < counts[2]  # compressed: 10x the level, 8.5x spikes
    assert sd.cochlea(tone(1000.0, rms=0.005))[0].size == 0  # below threshold
    assert sd.cochlea(np.zeros(4000))[0].size == 0


def test_no_channel_fires_twice_within_its_refractory_period(sd):
    front = sd.FrontEnd()
    times, units = sd.cochlea(tone(500.0, rms=0.5), front)
    busy = [c for c in np.unique(units) if np.sum(units == c) > 50]
    assert busy  # a loud tone drives some channels near their maximum rate
    for c in np.unique(units):
        gaps = np.diff(times[units == c])
        assert gaps.size == 0 or gaps.min() > front.refractory - 1e-9


def test_silences_are_trimmed_to_the_loud_frames(sd):
    audio = np.concatenate([np.zeros(1600), tone(440.0, 0.1), 1e-6 * np.ones(3200)])
    trimmed = sd._trim(audio, 16000)
    assert trimmed.size == 1600 and np.array_equal(trimmed, audio[1600:3200])


def test_the_plan_balances_each_speakers_classes(sd):
    speakers = sd.TRAIN_SPEAKERS
    pairs = sd.plan(speakers, 2 * sum(len(s.labels) for s in speakers), seed=3)
    assert pairs == sd.plan(speakers, len(pairs), seed=3)
    counts = {p: pairs.count(p) for p in set(pairs)}
    assert set(counts.values()) == {2}
    flite = [i for i, s in enumerate(speakers) if s.engine == "flite"]
    assert all(label < 10 for s, label in pairs if s in flite)  # flite speaks English only
    assert sd.plan(speakers, 0, seed=3) == []


def test_speakers_of_the_test_file_never_speak_in_training(sd):
    train = {s.name for s in sd.TRAIN_SPEAKERS}
    test = {s.name for s in sd.TEST_SPEAKERS}
    assert not train & test
    assert len(sd.KEYS) == 20 and sd.KEYS[0] == "english-zero" and sd.KEYS[19] == "german-neun"
    assert {s.gender for s in sd.TEST_SPEAKERS} == {"female", "male"}


def test_split_0_is_the_published_set_and_split_1_holds_out_other_speakers(sd):
    assert sd.split_speakers(0) == (sd.TRAIN_SPEAKERS, sd.TEST_SPEAKERS)
    train, test = sd.split_speakers(1)
    assert len(test) == 6 and len(train) == len(sd.SPEAKERS) - 6
    assert {s.name for s in test} == set(sd.SPLITS[1])  # every name is a real speaker
    assert not {s.name for s in train} & {s.name for s in test}
    assert not {s.name for s in test} & {s.name for s in sd.TEST_SPEAKERS}
    for group in (train, test):
        assert {s.gender for s in group} == {"female", "male"}
        assert {s.engine for s in group} == {"espeak-ng", "flite"}
    with pytest.raises(ValueError, match="split must be in 0..2, got 3"):
        sd.split_speakers(3)


def test_split_2_tests_on_a_synthesizer_that_no_training_voice_comes_from(sd):
    train, test = sd.split_speakers(2)
    assert train == sd.TRAIN_SPEAKERS  # split 0's training file, the same recordings
    assert test == sd.FESTIVAL_SPEAKERS and len(test) == 5
    assert {s.engine for s in test} == {"festival"}
    assert not {s.engine for s in train} & {s.engine for s in test}
    assert len({s.name for s in test}) == len(test) and {s.gender for s in test} == {
        "female",
        "male",
    }
    assert all(s.labels == tuple(range(10)) for s in test)  # festival speaks English here


def test_festival_prosody_sets_the_mean_f0_and_the_duration(sd):
    hts = sd._festival_prosody("cmu_us_slt_arctic_hts", 340.0, 0.8)
    assert hts == [
        "-eval",
        '(set! hts_engine_params (append hts_engine_params (list (list "-r" 1.2500) '
        '(list "-fm" 12.0000))))',
    ]  # twice the voice's mean F0: an octave up; stretched to 0.8: 1.25 times as fast
    assert '(list "-fm" 0.0000)' in sd._festival_prosody("cmu_us_slt_arctic_hts", 170.0, 1.0)[1]
    diphone = sd._festival_prosody("ked_diphone", 110.0, 1.1)
    assert diphone[1] == "(Parameter.set 'Duration_Stretch 1.1000)"
    assert diphone[3].startswith("(set! int_lr_params '((target_f0_mean 110.00)")


def test_the_command_line_builds_the_split_it_is_given(sd, monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(sd, "build", lambda *a, **kw: calls.append((a, kw)))
    sd.main(["--out", str(tmp_path), "--split", "1", "--train", "4", "--test", "2"])
    ((args, kw),) = calls
    assert args[:3] == (tmp_path, 4, 2)
    assert (kw["train_speakers"], kw["test_speakers"]) == sd.split_speakers(1)
    with pytest.raises(SystemExit):
        sd.main(["--out", str(tmp_path), "--split", "3"])
    assert "--split: invalid choice: 3" in capsys.readouterr().err


def test_a_missing_synthesizer_is_one_clear_message(sd, monkeypatch, tmp_path):
    monkeypatch.setattr(sd.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="apt-get install espeak-ng flite"):
        sd.main(["--out", str(tmp_path), "--train", "2", "--test", "2"])
    assert not any(tmp_path.iterdir())
    with pytest.raises(
        SystemExit, match="install espeak-ng festival festvox-kdlpc16k festvox-us-slt-hts flite"
    ):
        sd.main(["--out", str(tmp_path), "--split", "2", "--train", "2", "--test", "2"])
    assert not any(tmp_path.iterdir())


def test_a_missing_festival_voice_is_one_clear_message(sd, monkeypatch, tmp_path):
    monkeypatch.setattr(sd.shutil, "which", lambda name: f"/usr/bin/{name}")
    runs = []

    def run(command, **kw):
        runs.append(command)
        return subprocess.CompletedProcess(command, 255 if "ked" in command[-1] else 0)

    monkeypatch.setattr(sd.subprocess, "run", run)
    with pytest.raises(SystemExit, match="festival has no voice ked_diphone; install with"):
        sd.main(["--out", str(tmp_path), "--split", "2", "--train", "2", "--test", "2"])
    assert ["festival", "-b", "(voice_ked_diphone)"] in runs
    assert not any(tmp_path.iterdir())


SYNTHESIZERS = shutil.which("espeak-ng") and shutil.which("flite")
FESTIVAL = shutil.which("text2wave") and shutil.which("festival")


@pytest.mark.slow  # runs speech synthesizers
@pytest.mark.skipif(not SYNTHESIZERS, reason="needs the Debian packages espeak-ng and flite")
def test_a_tiny_build_is_shd_and_repeats_exactly(sd, tmp_path):
    train = (sd.TRAIN_SPEAKERS[0], sd.TRAIN_SPEAKERS[-1])  # espeak-ng and flite
    test = (sd.TEST_SPEAKERS[0],)
    kw = dict(num_train=6, num_test=3, seed=5, jobs=2, train_speakers=train, test_speakers=test)
    paths = sd.build(tmp_path / "a", **kw)
    sd.build(tmp_path / "b", **{**kw, "jobs": 1})
    for path in paths:
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()
    events = read_shd(paths[0])
    assert len(events.labels) == 6 and set(events.speakers.tolist()) <= {0, 1}
    assert set(read_shd(paths[1]).speakers.tolist()) == {2}
    assert events.units.max() < 700 and 0 <= events.times.min() and events.times.max() < 1.4
    per_sample = np.diff(events.offsets)
    assert per_sample.min() > 500  # every recording is heard
    record = json.loads((tmp_path / "a" / "build.json").read_text())
    assert record["files"]["shd_train.h5"]["recordings"] == 6
    assert set(record["synthesizers"]) == {"espeak-ng", "flite"}
    assert [s["name"] for s in record["speakers"]["test"]] == [test[0].name]
    frames = SHD(tmp_path / "a", train=True, cache_dir=tmp_path / "cache")
    assert frames[0][0].shape == (1000, 700)


@pytest.mark.slow  # runs a speech synthesizer
@pytest.mark.skipif(not FESTIVAL, reason="needs the Debian package festival and its voices")
def test_festival_voices_are_heard_at_their_pitch_and_rate(sd, tmp_path):
    for speaker in sd.FESTIVAL_SPEAKERS[::3]:  # a diphone and the HTS voice
        slow = sd.synthesize(speaker, 7, speaker.pitch, 1.2, tmp_path)
        fast = sd.synthesize(speaker, 7, speaker.pitch, 0.8, tmp_path)
        assert slow[0].size / slow[1] > 1.3 * fast[0].size / fast[1], speaker.name
        times, units = sd.recording(speaker, 7, seed=1, folder=tmp_path)
        assert times.size > 500 and units.max() < 700
