"""`sj-spatial train`: a short run writes events, checkpoint, summary and figures, and
`--resume` continues from the saved epoch."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sj_spatial import cli
from sj_spatial.data import make_synthetic_shd


@pytest.fixture(scope="module")
def tiny_shd(tmp_path_factory):
    root = tmp_path_factory.mktemp("shd")
    make_synthetic_shd(root, num_train=48, num_test=24, seed=1)
    return root


def run(args, monkeypatch, tmp_path):
    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(tmp_path / "cache"))
    return cli.main(
        [
            "train",
            "--hidden",
            "12",
            "--dt",
            "0.01",
            "--duration",
            "0.3",
            "--batch-size",
            "16",
            "--max-delay",
            "4",
            "--quiet",
            *args,
        ]
    )


def test_train_writes_events_checkpoint_summary_and_figures(
    tiny_shd, tmp_path, monkeypatch, capsys
):
    logdir = tmp_path / "run"
    assert (
        run(
            ["--data-root", str(tiny_shd), "--epochs", "1", "--logdir", str(logdir)],
            monkeypatch,
            tmp_path,
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "test accuracy (last / best)" in out and "train 48, test 24 samples" in out
    for name in (
        "checkpoint.pt",
        "summary.md",
        "summary.json",
        "positions.png",
        "delay_histogram.png",
        "learning_curves.png",
    ):
        assert (logdir / name).stat().st_size > 0, name
    summary = json.loads((logdir / "summary.json").read_text())
    assert summary["epochs"] == 1 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["position_parameters"] == 12 * 2
    assert "modularity" in summary["topology"]
    events = EventAccumulator(str(logdir)).Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "test/acc"} <= set(tags)
    assert any(tag.startswith("topology/1/") for tag in tags)
    state = torch.load(logdir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0 and len(state["history"]["test_acc"]) == 1


def test_resume_continues_from_the_saved_epoch(tiny_shd, tmp_path, monkeypatch, capsys):
    logdir = tmp_path / "run"
    common = ["--data-root", str(tiny_shd), "--logdir", str(logdir)]
    run([*common, "--epochs", "1"], monkeypatch, tmp_path)
    first = torch.load(logdir / "checkpoint.pt", weights_only=True)
    run([*common, "--epochs", "2", "--resume"], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "resuming from" in out and "after epoch 1" in out
    assert "epoch 1:" not in out.split("resuming from")[1]  # epoch 1 was not trained again
    second = torch.load(logdir / "checkpoint.pt", weights_only=True)
    assert second["epoch"] == 1
    assert second["history"]["test_acc"][0] == first["history"]["test_acc"][0]
    assert len(second["history"]["test_acc"]) == 2


def test_resume_without_checkpoint_and_bad_options_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="no checkpoint"):
        run(["--logdir", str(tmp_path / "none"), "--resume"], monkeypatch, tmp_path)
    with pytest.raises(SystemExit, match="--epochs must be >= 1"):
        run(["--epochs", "0", "--logdir", str(tmp_path / "x")], monkeypatch, tmp_path)
    bad = tmp_path / "broken" / "checkpoint.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot read checkpoint"):
        run(["--logdir", str(bad.parent), "--resume"], monkeypatch, tmp_path)
