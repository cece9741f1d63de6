"""benchmarks/spoken_digits_speakers.py: a run's test accuracy split by speaker adds up to
the accuracy the run reported."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sj_spatial import cli
from sj_spatial.data import SHD, make_synthetic_shd


@pytest.fixture(scope="module")
def sp(benchmark_script):
    return benchmark_script("spoken_digits_speakers")


def test_per_speaker_accuracies_add_up_to_the_runs_test_accuracy(sp, tmp_path, monkeypatch):
    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_synthetic_shd(root, num_train=40, num_test=30, seed=2)
    names = [f"voice-{i}" for i in range(12)]  # /extra/speaker indexes these
    voices = {"train": [{"name": n} for n in names[:10]], "test": [{"name": n} for n in names[10:]]}
    (root / "build.json").write_text(json.dumps({"speakers": voices}))
    logdir = tmp_path / "run"
    args = ["train", "--data-root", str(root), "--epochs", "2", "--hidden", "16", "--quiet"]
    assert cli.main([*args, "--logdir", str(logdir)]) == 0

    table = sp.per_speaker([logdir]).splitlines()
    cells = {line.split(" | ")[0][2:]: float(line.split(" | ")[1][:-2]) for line in table[2:]}
    test = SHD(root, train=False, dt=0.01)
    index, counts = np.unique(test.speakers, return_counts=True)
    assert list(cells)[:-1] == [names[s] for s in index]
    weighted = sum(cells[names[s]] * n for s, n in zip(index, counts, strict=True)) / len(test)
    reported = 100 * json.loads((logdir / "summary.json").read_text())["test_accuracy"]
    assert cells["all"] == pytest.approx(reported, abs=0.05)  # the table rounds to 0.1
    assert weighted == pytest.approx(reported, abs=0.1)

    second, elsewhere = tmp_path / "run2", tmp_path / "elsewhere"
    found = sp.predictions(logdir)
    monkeypatch.setattr(
        sp, "predictions", lambda d: (*found[:2], elsewhere if d == second else root)
    )
    with pytest.raises(
        SystemExit, match=re.escape(f"logdirs: {second} ran on {elsewhere}, not {root}")
    ):
        sp.per_speaker([logdir, second])


def test_a_folder_without_a_checkpoint_is_one_line(sp, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        sp.main([str(tmp_path)])
    assert stop.value.code == 2
    assert f"logdirs: no checkpoint.pt in {tmp_path}" in capsys.readouterr().err
