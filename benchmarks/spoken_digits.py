"""Spoken digits in SHD's file layout, from speech synthesizers and a cochlea-like front end.

Builds ``shd_train.h5`` and ``shd_test.h5`` (the layout of ``sj_spatial.data.write_shd``,
read unchanged by ``sj_spatial.data.SHD`` and ``sj-spatial train --data-root``): the
digits 0-9 in English (labels 0-9) and German (labels 10-19), as in SHD, spoken by the
synthetic speakers of :data:`SPEAKERS`. The test file's speakers never speak in the
training file. Each recording goes through :func:`cochlea`: a 700-channel gammatone
filterbank on the ERB-rate scale, hair-cell rectification, compression and smoothing, and
one leaky integrate-and-fire neuron per channel. The model, its parameters and the data's
limits are in docs/data.md ("Spoken digits from speech synthesizers").

Needs the Debian packages ``espeak-ng`` (English and German) and ``flite`` (more English
voices); ``--split 2``, whose test voices come from festival, also ``festival``,
``festvox-kdlpc16k`` and ``festvox-us-slt-hts``::

    apt-get install espeak-ng flite
    python benchmarks/spoken_digits.py --out data/spoken_digits
    sj-spatial train --data-root data/spoken_digits

The same arguments and synthesizer versions give identical files (each recording draws
its variations from its own seed); ``build.json`` beside the files records both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numba
import numpy as np
from scipy import signal

from sj_spatial.data import write_shd
from sj_spatial.data._files import atomic_path

ENGLISH = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GERMAN = ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun")
#: Class names in label order, as SHD's ``/extra/keys``.
KEYS = tuple(f"english-{w}" for w in ENGLISH) + tuple(f"german-{w}" for w in GERMAN)
PACKAGES = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "festival": "festival festvox-kdlpc16k festvox-us-slt-hts",
}


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: a synthesizer voice with its own pitch and speaking rate.

    ``espeak-ng`` speakers are a voice variant (``m3``, ``f2``, ``klatt``, ...) speaking an
    English accent (``english``) and German; ``flite`` and ``festival`` speakers are one of
    that synthesizer's voices and speak English only. ``pitch``: espeak-ng's 0-99 scale,
    or the mean F0 in Hz (flite, festival); ``rate``: words per minute (espeak-ng) or a
    duration stretch (flite, festival; 1 = normal).
    """

    name: str
    engine: str
    voice: str
    english: str
    pitch: float
    rate: float
    gender: str

    @property
    def labels(self) -> tuple[int, ...]:
        """Classes this speaker says: all 20 (espeak-ng), or the 10 English ones."""
        return tuple(range(20)) if self.engine == "espeak-ng" else tuple(range(10))


def _espeak(variant, english, pitch, rate, gender):
    return Speaker(
        f"espeak-{variant}-{english}", "espeak-ng", variant, english, pitch, rate, gender
    )


def _flite(voice, pitch, rate, gender):
    return Speaker(f"flite-{voice}", "flite", voice, "en", pitch, rate, gender)


def _festival(voice, pitch, rate, gender, tag):
    return Speaker(f"festival-{voice}-{tag}", "festival", voice, "en", pitch, rate, gender)


#: Training speakers: 16 espeak-ng voices over 8 English accents, and 3 flite voices.
TRAIN_SPEAKERS = (
    _espeak("m1", "en-us", 45, 165, "male"),
    _espeak("m2", "en-gb", 35, 150, "male"),
    _espeak("m3", "en-gb-scotland", 50, 175, "male"),
    _espeak("m5", "en-029", 40, 140, "male"),
    _espeak("m6", "en-gb-x-rp", 30, 160, "male"),
    _espeak("m8", "en-us-nyc", 55, 185, "male"),
    _espeak("klatt", "en-gb-x-gbclan", 45, 150, "male"),
    _espeak("klatt2", "en-us", 60, 170, "male"),
    _espeak("Andy", "en-gb-x-gbcwmd", 40, 160, "male"),
    _espeak("edward", "en-us", 35, 145, "male"),
    _espeak("f1", "en-gb", 55, 160, "female"),
    _espeak("f2", "en-us", 65, 175, "female"),
    _espeak("f5", "en-gb-scotland", 50, 150, "female"),
    _espeak("Annie", "en-029", 60, 165, "female"),
    _espeak("linda", "en-gb-x-rp", 70, 155, "female"),
    _espeak("steph", "en-us-nyc", 55, 180, "female"),
    _flite("awb", 110, 1.0, "male"),
    _flite("kal16", 100, 1.05, "male"),
    _flite("slt", 170, 0.95, "female"),
)
#: Test speakers, never heard in training: other variants, accents and a flite voice.
TEST_SPEAKERS = (
    _espeak("m4", "en-gb-x-gbcwmd", 40, 155, "male"),
    _espeak("m7", "en-us", 50, 170, "male"),
    _espeak("klatt3", "en-gb", 45, 160, "male"),
    _espeak("f3", "en-gb-x-gbclan", 60, 165, "female"),
    _espeak("f4", "en-us-nyc", 65, 150, "female"),
    _flite("rms", 105, 1.0, "male"),
)
SPEAKERS = TRAIN_SPEAKERS + TEST_SPEAKERS

#: Held-out speakers of each split (``--split``), by name. Split 0 is :data:`TEST_SPEAKERS`;
#: split 1 holds out six other speakers of the same kind (three male and two female
#: espeak-ng voices, one flite voice), so that a recipe chosen on split 0 can be checked
#: on voices it was never chosen on.
SPLITS = (
    tuple(s.name for s in TEST_SPEAKERS),
    (
        "espeak-m2-en-gb",
        "espeak-m8-en-us-nyc",
        "espeak-Andy-en-gb-x-gbcwmd",
        "espeak-f5-en-gb-scotland",
        "espeak-linda-en-gb-x-rp",
        "flite-kal16",
    ),
)


#: The voices of split 2's test file: festival, a synthesizer that no training voice comes
#: from. ``ked_diphone`` (festvox-kdlpc16k, an American male speaker whom no other
#: synthesizer here has) at three pitches and rates; ``cmu_us_slt_arctic_hts`` (the speaker
#: of flite's ``slt`` voice, a training voice, but from festival's HTS engine) at two.
#: Diphone voices take the pitch as their target mean F0; the HTS voice as a shift from its
#: own mean, :data:`FESTIVAL_F0`.
FESTIVAL_SPEAKERS = (
    _festival("ked_diphone", 105, 1.0, "male", "a"),
    _festival("ked_diphone", 125, 0.92, "male", "b"),
    _festival("ked_diphone", 90, 1.1, "male", "c"),
    _festival("cmu_us_slt_arctic_hts", 170, 1.0, "female", "a"),
    _festival("cmu_us_slt_arctic_hts", 195, 0.92, "female", "b"),
)
#: The mean F0 (Hz) of festival's HTS voices, from which their pitch is shifted.
FESTIVAL_F0 = {"cmu_us_slt_arctic_hts": 170.0}
#: The splits ``--split`` takes: :data:`SPLITS`, then split 2, which trains on split 0's
#: training speakers (the same training file) and tests on :data:`FESTIVAL_SPEAKERS`.
NUM_SPLITS = len(SPLITS) + 1


def split_speakers(split: int) -> tuple[tuple[Speaker, ...], tuple[Speaker, ...]]:
    """The training and the held-out speakers of split ``split`` (:data:`SPLITS`, each in
    the order of :data:`SPEAKERS`; split 2: split 0's training speakers and
    :data:`FESTIVAL_SPEAKERS`)."""
    if not 0 <= split < NUM_SPLITS:
        raise ValueError(f"split must be in 0..{NUM_SPLITS - 1}, got {split}")
    if split == len(SPLITS):
        return TRAIN_SPEAKERS, FESTIVAL_SPEAKERS
    held_out = set(SPLITS[split])
    train = tuple(s for s in SPEAKERS if s.name not in held_out)
    test = tuple(s for s in SPEAKERS if s.name in held_out)
    return train, test


@dataclass(frozen=True)
class FrontEnd:
    """The cochlea-like front end (docs/data.md). Frequencies in Hz, times in seconds."""

    sample_rate: int = 16000
    channels: int = 700
    low: float = 100.0
    high: float = 7500.0
    preemphasis: float = 0.95
    rms: float = 0.05
    compression: float = 0.3
    smoothing: float = 300.0
    tau: float = 0.002
    gain: float = 10.0
    refractory: float = 0.001
    max_duration: float = 1.4


@dataclass(frozen=True)
class Variation:
    """How each recording varies around its speaker (drawn uniformly per recording)."""

    pitch: float = 8.0
    rate: float = 0.12
    level_db: float = 6.0
    lead: tuple[float, float] = (0.02, 0.2)
    snr_db: tuple[float, float] = (25.0, 45.0)


def erb_space(low: float, high: float, n: int) -> np.ndarray:
    """``n`` frequencies evenly spaced on the ERB-rate scale of Glasberg and Moore (1990),
    ``21.4 log10(1 + 0.00437 f)``, from ``low`` to ``high`` Hz."""
    rate = np.linspace(*(21.4 * np.log10(1 + 0.00437 * f) for f in (low, high)), n)
    return (10 ** (rate / 21.4) - 1) / 0.00437


@numba.njit(cache=True)
def _fire(drive, dt, tau, refractory):  # pragma: no cover - compiled
    """Leaky integrate-and-fire per channel: ``drive [channels, samples]`` -> the sample
    index and channel of every spike, in time order."""
    channels, samples = drive.shape
    v = np.zeros(channels)
    quiet = np.zeros(channels)
    steps, units = [], []
    decay = math.exp(-dt / tau)
    for k in range(samples):
        for c in range(channels):
            if quiet[c] > 0:
                quiet[c] -= dt
                continue
            v[c] = decay * v[c] + (1 - decay) * drive[c, k]
            if v[c] >= 1.0:
                v[c] = 0.0
                quiet[c] = refractory
                steps.append(k)
                units.append(c)
    return np.array(steps, dtype=np.int64), np.array(units, dtype=np.int64)


def cochlea(audio: np.ndarray, front: FrontEnd = FrontEnd()) -> tuple[np.ndarray, np.ndarray]:
    """Spike times (s) and channels of a recording ``audio`` at ``front.sample_rate``.

    Pre-emphasis ``x[n] - preemphasis x[n-1]`` (the outer and middle ear's rise of about
    6 dB per octave up to a few kHz) -> gammatone filter (4th order, one per channel, low
    to high frequency) -> half-wave rectification -> power-law compression -> first-order
    low-pass (``smoothing`` Hz: the hair cell's loss of phase locking) -> leaky
    integrate-and-fire neuron (time constant ``tau``, threshold 1, reset to 0,
    ``refractory``), driven by ``gain`` times the smoothed signal. The caller sets the
    level (:func:`recording` scales each recording to RMS ``front.rms``)."""
    fs = front.sample_rate
    audio = signal.lfilter([1.0, -front.preemphasis], [1.0], audio)
    out = np.empty((front.channels, audio.size), dtype=np.float64)
    for c, f in enumerate(erb_space(front.low, front.high, front.channels)):
        b, a = signal.gammatone(f, "iir", fs=fs)
        out[c] = signal.lfilter(b, a, audio)
    np.maximum(out, 0.0, out=out)
    np.power(out, front.compression, out=out)
    pole = math.exp(-2 * math.pi * front.smoothing / fs)
    out = signal.lfilter([1 - pole], [1, -pole], out, axis=1)
    steps, units = _fire(front.gain * out, 1.0 / fs, front.tau, front.refractory)
    return steps / fs, units


def _check_tools(speakers) -> None:
    tools = {"festival": "text2wave"}
    missing = sorted(
        {s.engine for s in speakers if shutil.which(tools.get(s.engine, s.engine)) is None}
    )
    if missing:
        packages = " ".join(PACKAGES[m] for m in missing)
        raise SystemExit(
            f"spoken_digits.py: {', '.join(missing)} not found; install with "
            f"'apt-get install {packages}' (Debian/Ubuntu)"
        )
    for voice in sorted({s.voice for s in speakers if s.engine == "festival"}):
        if subprocess.run(["festival", "-b", f"(voice_{voice})"], capture_output=True).returncode:
            raise SystemExit(
                f"spoken_digits.py: festival has no voice {voice}; install with "
                f"'apt-get install {PACKAGES['festival']}' (Debian/Ubuntu)"
            )


def synthesize(speaker: Speaker, label: int, pitch: float, rate: float, folder: Path) -> tuple:
    """``(samples, sample_rate)`` of ``speaker`` saying class ``label``, written by the
    synthesizer to a file in ``folder``."""
    wav = folder / "say.wav"
    if speaker.engine == "espeak-ng":
        voice = (speaker.english if label < 10 else "de") + "+" + speaker.voice
        word = ENGLISH[label] if label < 10 else GERMAN[label - 10]
        command = ["espeak-ng", "-v", voice, "-p", str(round(pitch)), "-s", str(round(rate))]
        command += ["-w", str(wav), word]
    elif speaker.engine == "flite":
        command = ["flite", "-voice", speaker.voice, "-t", ENGLISH[label], "-o", str(wav)]
        command += ["--setf", f"duration_stretch={rate:.4f}"]
        command += ["--setf", f"int_f0_target_mean={pitch:.2f}"]
    else:
        text = folder / "say.txt"
        text.write_text(ENGLISH[label] + "\n")
        command = ["text2wave", "-eval", f"(voice_{speaker.voice})"] + _festival_prosody(
            speaker.voice, pitch, rate
        )
        command += ["-o", str(wav), str(text)]
    subprocess.run(command, check=True, capture_output=True)
    with wave.open(str(wav)) as f:
        rate_hz, width = f.getframerate(), f.getsampwidth()
        frames = f.readframes(f.getnframes())
    if width != 2:
        raise RuntimeError(f"{speaker.engine} wrote {8 * width}-bit audio, expected 16-bit")
    return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0, rate_hz


def _festival_prosody(voice: str, pitch: float, rate: float) -> list[str]:
    """``text2wave`` options that set ``voice``'s mean F0 (Hz) and duration stretch."""
    if voice in FESTIVAL_F0:  # HTS: the engine's speed ratio and a shift in half-tones
        shift = 12.0 * math.log2(pitch / FESTIVAL_F0[voice])
        params = f'(list (list "-r" {1.0 / rate:.4f}) (list "-fm" {shift:.4f}))'
        return ["-eval", f"(set! hts_engine_params (append hts_engine_params {params}))"]
    intonation = (
        f"'((target_f0_mean {pitch:.2f}) (target_f0_std 14) (model_f0_mean 170) (model_f0_std 34))"
    )
    return [
        "-eval",
        f"(Parameter.set 'Duration_Stretch {rate:.4f})",
        "-eval",
        f"(set! int_lr_params {intonation})",
    ]


def _trim(audio: np.ndarray, fs: int, frame: float = 0.01, floor_db: float = 40.0):
    """``audio`` without its leading and trailing 10 ms frames more than ``floor_db``
    below the loudest frame (the synthesizers' silences differ in length)."""
    size = round(frame * fs)
    frames = audio[: audio.size // size * size].reshape(-1, size)
    energy = np.mean(frames**2, axis=1)
    if not energy.size or energy.max() <= 0:
        return audio
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (-floor_db / 10))
    return audio[loud[0] * size : (loud[-1] + 1) * size]


def recording(
    speaker: Speaker, label: int, seed: int, folder: Path, front=FrontEnd(), vary=Variation()
) -> tuple[np.ndarray, np.ndarray]:
    """One recording's spikes: the speaker's voice varied by ``seed`` (pitch, rate, level,
    leading silence, background noise), resampled, scaled and passed to :func:`cochlea`."""
    rng = np.random.default_rng(seed)
    pitch = speaker.pitch + rng.uniform(-vary.pitch, vary.pitch) * (
        1.0 if speaker.engine == "espeak-ng" else 2.0
    )
    stretch = 1.0 + rng.uniform(-vary.rate, vary.rate)
    rate = speaker.rate * stretch if speaker.engine == "espeak-ng" else speaker.rate / stretch
    audio, rate_hz = synthesize(speaker, label, pitch, rate, folder)
    if rate_hz != front.sample_rate:
        g = math.gcd(rate_hz, front.sample_rate)
        audio = signal.resample_poly(audio, front.sample_rate // g, rate_hz // g)
    audio = _trim(audio, front.sample_rate)
    lead = np.zeros(round(rng.uniform(*vary.lead) * front.sample_rate))
    audio = np.concatenate([lead, audio])[: round(front.max_duration * front.sample_rate)]
    level = front.rms * 10 ** (rng.uniform(-vary.level_db, vary.level_db) / 20)
    audio *= level / max(float(np.sqrt(np.mean(audio[lead.size :] ** 2))), 1e-12)
    noise = level * 10 ** (-rng.uniform(*vary.snr_db) / 20)
    audio += rng.normal(0.0, noise, audio.size)
    return cochlea(audio, front)


def plan(speakers, n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` (speaker index, label) pairs: each speaker's classes in turn, as evenly as
    ``n`` allows, in a shuffled order."""
    pairs = [(s, label) for s, speaker in enumerate(speakers) for label in speaker.labels]
    rounds = math.ceil(n / len(pairs)) if pairs else 0
    rng = np.random.default_rng(seed)
    chosen = [pairs[i] for _ in range(rounds) for i in rng.permutation(len(pairs))]
    return chosen[:n]


def _one(job):
    speaker, label, seed, front, vary = job
    with tempfile.TemporaryDirectory(prefix="spoken-digit-") as folder:
        times, units = recording(speaker, label, seed, Path(folder), front, vary)
    return times.astype(np.float32), units.astype(np.int16)


def build_split(speakers, n: int, seed: int, jobs: int, front: FrontEnd, vary: Variation):
    """Recordings of one split: ``(samples, labels, speaker indices into speakers)``."""
    pairs = plan(speakers, n, seed)
    seeds = np.random.SeedSequence(seed).generate_state(len(pairs)) if pairs else []
    work = [
        (speakers[s], label, int(k), front, vary)
        for (s, label), k in zip(pairs, seeds, strict=True)
    ]
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(jobs) as pool:
            samples = list(pool.map(_one, work, chunksize=8))
    else:
        samples = [_one(w) for w in work]
    labels = np.array([label for _, label in pairs], dtype=np.int64)
    return samples, labels, np.array([s for s, _ in pairs], dtype=np.int64)


def synthesizer_versions(speakers) -> dict:
    versions = {}
    for engine in sorted({s.engine for s in speakers}):
        done = subprocess.run([engine, "--version"], capture_output=True, text=True)
        lines = (done.stdout or done.stderr).strip().splitlines() or [""]
        versions[engine] = next((x.strip() for x in lines if "version" in x), lines[0])
    return versions


def build(
    out: Path,
    num_train: int = 2000,
    num_test: int = 600,
    seed: int = 0,
    jobs: int = 1,
    front: FrontEnd = FrontEnd(),
    vary: Variation = Variation(),
    train_speakers=TRAIN_SPEAKERS,
    test_speakers=TEST_SPEAKERS,
) -> tuple[Path, Path]:
    """Write ``out/shd_train.h5``, ``out/shd_test.h5`` and ``out/build.json``."""
    _check_tools(train_speakers + test_speakers)
    out.mkdir(parents=True, exist_ok=True)
    speakers = tuple(train_speakers) + tuple(test_speakers)
    meta = dict(
        gender=[s.gender for s in speakers],
        age=[0] * len(speakers),  # synthetic voices have neither age nor height
        body_height=[0] * len(speakers),
    )
    train_seed, test_seed = np.random.SeedSequence(seed).generate_state(2)
    paths = out / "shd_train.h5", out / "shd_test.h5"
    counts = {}
    for path, pool, n, offset, s in (
        (paths[0], train_speakers, num_train, 0, train_seed),
        (paths[1], test_speakers, num_test, len(train_speakers), test_seed),
    ):
        start = time.perf_counter()
        print(f"{path}: {n} recordings of {len(pool)} speakers ({jobs} processes)...", flush=True)
        samples, labels, who = build_split(tuple(pool), n, int(s), jobs, front, vary)
        print(f"{path}: done in {time.perf_counter() - start:.0f} s", flush=True)
        write_shd(path, samples, labels, who + offset, keys=KEYS, **meta)
        spikes = [t.size for t, _ in samples]
        counts[path.name] = {
            "recordings": len(samples),
            "spikes_per_recording_mean": float(np.mean(spikes)) if spikes else 0.0,
            "duration_max_s": max((float(t.max()) for t, _ in samples if t.size), default=0.0),
        }
    record = {
        "command": "python benchmarks/spoken_digits.py " + " ".join(sys.argv[1:]),
        "arguments": dict(num_train=num_train, num_test=num_test, seed=seed),
        "front_end": asdict(front),
        "variation": asdict(vary),
        "speakers": {
            "train": [asdict(s) for s in train_speakers],
            "test": [asdict(s) for s in test_speakers],
        },
        "keys": list(KEYS),
        "synthesizers": synthesizer_versions(speakers),
        "files": counts,
    }
    with atomic_path(out / "build.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False))
    return paths


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the two files")
    parser.add_argument("--train", type=int, default=2000, help="training recordings")
    parser.add_argument("--test", type=int, default=600, help="test recordings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split",
        type=int,
        default=0,
        choices=range(NUM_SPLITS),
        help="which speakers are held out for the test file; 2: festival's voices (default: 0)",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    return parser


def main(argv: list[str] | None = None) -> tuple[Path, Path]:
    parser = make_parser()
    args = parser.parse_args(argv)
    for name in ("train", "test", "jobs"):
        if getattr(args, name) < (1 if name == "jobs" else 0):
            parser.error(f"--{name} must be {'positive' if name == 'jobs' else '>= 0'}")
    train, test = split_speakers(args.split)
    return build(
        args.out,
        args.train,
        args.test,
        args.seed,
        args.jobs,
        train_speakers=train,
        test_speakers=test,
    )


if __name__ == "__main__":
    main()
