"""`sj-spatial train`: a short run writes events, checkpoint, summary and figures, and
`--resume` continues from the saved epoch."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sj_spatial import cli
from sj_spatial._rng import rng_state, set_rng_state
from sj_spatial.backends import cupy_missing
from sj_spatial.data import make_synthetic_shd
from sj_spatial.train_job import loop
from sj_spatial.train_job.checkpoints import save_checkpoint
from sj_spatial.train_job.config import TrainConfig


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
    assert "test accuracy (last / best)" in out
    # With --data-root the recipe augments: 48 recordings and 48 blends.
    assert "augmented (shift + blend); train 96, test 24 samples" in out
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


def test_augment_doubles_the_training_set_with_blends(tiny_shd, tmp_path, monkeypatch, capsys):
    options = ["--data-root", str(tiny_shd), "--epochs", "1"]
    run([*options, "--logdir", str(tmp_path / "aug")], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "augmented (shift + blend); train 96, test 24 samples" in out
    summary = json.loads((tmp_path / "aug" / "summary.json").read_text())
    assert summary["data"].endswith("augmented (shift + blend)")
    run([*options, "--no-augment", "--logdir", str(tmp_path / "plain")], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "train 48, test 24 samples" in out and "augmented" not in out


def test_stretch_joins_the_augmentation_and_needs_it(tiny_shd, tmp_path, monkeypatch, capsys):
    options = ["--data-root", str(tiny_shd), "--epochs", "1", "--stretch", "0.2"]
    run([*options, "--logdir", str(tmp_path / "aug")], monkeypatch, tmp_path)
    summary = json.loads((tmp_path / "aug" / "summary.json").read_text())
    assert summary["data"].endswith("augmented (shift + blend + stretch ±0.2)")
    logdir = tmp_path / "plain"
    err = fails([*options, "--no-augment", "--logdir", str(logdir)], monkeypatch, tmp_path, capsys)
    assert err == (
        "sj-spatial train: error: --stretch 0.2 stretches augmented samples; add --augment\n"
    )
    assert not logdir.exists()


def test_time_chunks_bound_memory_with_truncated_or_exact_gradients(
    tiny_shd, tmp_path, monkeypatch, capsys
):
    """T = 30 steps here: --tbptt 30 is one chunk (plain BPTT), --recompute 7 recomputes
    exact gradients, --tbptt 7 truncates them."""

    def params(*extra):
        logdir = tmp_path / "_".join(extra or ("plain",))
        options = ["--data-root", str(tiny_shd), "--epochs", "1", "--logdir", str(logdir)]
        run([*options, "--wiring-cost", "0.01", *extra], monkeypatch, tmp_path)
        return torch.load(logdir / "checkpoint.pt", weights_only=True)["model"]

    plain = params()
    for name, value in params("--tbptt", "30").items():
        assert torch.equal(value, plain[name]), name
    for name, value in params("--recompute", "7").items():
        assert torch.allclose(value, plain[name], rtol=1e-4, atol=1e-6), name
    truncated = params("--tbptt", "7")
    assert all(torch.isfinite(v).all() for v in truncated.values())
    # (Adam's first steps follow the gradient's sign, so the difference is small.)
    assert any(not torch.equal(v, plain[name]) for name, v in truncated.items())
    with pytest.raises(SystemExit):
        run(["--tbptt", "0", "--logdir", str(tmp_path / "zero")], monkeypatch, tmp_path)
    assert "argument --tbptt: must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not allowed together
        run(["--tbptt", "5", "--recompute", "5"], monkeypatch, tmp_path)
    assert "not allowed with argument" in capsys.readouterr().err


def test_resume_without_checkpoint_and_bad_options_fail_clearly(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit, match="no checkpoint"):
        run(["--logdir", str(tmp_path / "none"), "--resume"], monkeypatch, tmp_path)
    with pytest.raises(SystemExit):
        run(["--epochs", "0", "--logdir", str(tmp_path / "x")], monkeypatch, tmp_path)
    assert "argument --epochs: must be >= 1, got 0" in capsys.readouterr().err
    bad = tmp_path / "broken" / "checkpoint.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot read checkpoint"):
        run(["--logdir", str(bad.parent), "--resume"], monkeypatch, tmp_path)


def _params(state):
    return {k: v.clone() for k, v in state["model"].items()}


def test_resumed_run_continues_exactly_like_an_uninterrupted_one(tiny_shd, tmp_path, monkeypatch):
    options = ["--data-root", str(tiny_shd), "--epochs", "3", "--wiring-cost", "0.01"]
    options += ["--lr", "0.01"]
    run([*options, "--logdir", str(tmp_path / "straight")], monkeypatch, tmp_path)
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)

    # Interrupt the same run while it trains epoch 2 (the third pass: train, test, train).
    calls = []
    run_epoch = loop.run_epoch

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run_epoch(*args, **kwargs)

    logdir = tmp_path / "resumed"
    monkeypatch.setattr(loop, "run_epoch", interrupted)
    with pytest.raises(SystemExit) as exc:
        run([*options, "--logdir", str(logdir)], monkeypatch, tmp_path)
    assert exc.value.code == 130
    monkeypatch.setattr(loop, "run_epoch", run_epoch)
    assert torch.load(logdir / "checkpoint.pt", weights_only=True)["epoch"] == 0
    torch.manual_seed(123)  # the resumed run restores the random state it saved
    run([*options, "--logdir", str(logdir), "--resume"], monkeypatch, tmp_path)
    resumed = torch.load(logdir / "checkpoint.pt", weights_only=True)
    # TensorBoard shows each epoch once, in order, across the two processes' event files.
    events = EventAccumulator(str(logdir)).Reload()
    assert [e.step for e in events.Scalars("test/acc")] == [1, 2, 3]

    assert resumed["history"] == straight["history"]
    for name, value in _params(straight).items():
        assert torch.equal(resumed["model"][name], value), name
    for a, b in zip(
        resumed["optimizers"][0]["state"].values(),
        straight["optimizers"][0]["state"].values(),
        strict=True,
    ):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"]) and a["step"] == b["step"]
    groups = resumed["optimizers"][0]["param_groups"], straight["optimizers"][0]["param_groups"]
    assert [g["lr"] for g in groups[0]] == [g["lr"] for g in groups[1]]
    assert torch.equal(resumed["rng"]["torch"], straight["rng"]["torch"])


def test_random_states_survive_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    path = tmp_path / "rng.pt"
    save_checkpoint({"rng": rng_state(torch.device("cpu"))}, path)
    draws = torch.rand(3), np.random.rand(3), random.random()
    set_rng_state(torch.load(path, weights_only=True)["rng"], torch.device("cpu"))
    again = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(draws[0], again[0]) and (draws[1] == again[1]).all()
    assert draws[2] == again[2]


@pytest.fixture()
def checkpoint_dir(tiny_shd, tmp_path, monkeypatch):
    logdir = tmp_path / "run"
    run(
        ["--data-root", str(tiny_shd), "--epochs", "1", "--logdir", str(logdir)],
        monkeypatch,
        tmp_path,
    )
    return logdir


def test_unusable_checkpoints_raise_errors_that_name_the_file(checkpoint_dir, tmp_path):
    good = checkpoint_dir / "checkpoint.pt"
    cases = {
        "truncated.pt": (good.read_bytes()[: good.stat().st_size // 2], "truncated"),
        "notes.txt": (b"epoch 3 went well\n", "truncated, or not a file that torch.save"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=f"cannot read checkpoint {path}.*{message}"):
            cli.load_checkpoint(path)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match=f"{tensor}: expected a dict .* got a Tensor"):
        cli.load_checkpoint(tensor)
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(good, weights_only=True)["model"], bare)
    with pytest.raises(ValueError, match=f"{bare}: not a checkpoint of sj-spatial train, it lacks"):
        cli.load_checkpoint(bare)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        cli.load_checkpoint(tmp_path / "absent.pt")


def test_resume_from_another_model_fails_clearly(checkpoint_dir, tiny_shd, tmp_path, monkeypatch):
    path = checkpoint_dir / "checkpoint.pt"
    options = ["--data-root", str(tiny_shd), "--epochs", "2", "--resume"]
    with pytest.raises(
        SystemExit, match=f"{path} is of another model: .*--hidden 12, .*--hidden 16"
    ):
        run([*options, "--logdir", str(checkpoint_dir), "--hidden", "16"], monkeypatch, tmp_path)
    # Without the recorded options the parameter shapes still tell.
    state = torch.load(path, weights_only=True)
    del state["args"]["hidden"]
    torch.save(state, path)
    with pytest.raises(SystemExit, match=f"{path} does not fit this model: .*size mismatch"):
        run([*options, "--logdir", str(checkpoint_dir), "--hidden", "16"], monkeypatch, tmp_path)


def test_failed_or_interrupted_saves_leave_the_last_checkpoint(
    checkpoint_dir, tiny_shd, tmp_path, monkeypatch
):
    path = checkpoint_dir / "checkpoint.pt"
    before = path.read_bytes()

    def failing_save(obj, f):
        f.write(b"half a checkpo")
        raise OSError("disk full")

    monkeypatch.setattr(cli.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 5}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and not (checkpoint_dir / "checkpoint.pt.tmp").exists()

    # A leftover temporary file of a killed save does not disturb the next run.
    (checkpoint_dir / "checkpoint.pt.tmp").write_bytes(b"half a checkpo")
    options = ["--data-root", str(tiny_shd), "--epochs", "2", "--resume"]
    run([*options, "--logdir", str(checkpoint_dir)], monkeypatch, tmp_path)
    assert cli.load_checkpoint(path)["epoch"] == 1
    assert not (checkpoint_dir / "checkpoint.pt.tmp").exists()


# ---------------------------------------------------------------- user mistakes


def fails(args, monkeypatch, tmp_path, capsys, status=1) -> str:
    """Run ``args`` expecting a user's mistake: exit ``status``, exactly one line on stderr
    (returned) and no traceback."""
    with pytest.raises(SystemExit) as exc:
        run(args, monkeypatch, tmp_path)
    assert exc.value.code == status
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err


def _not_shd(root):
    root.mkdir()
    for name in ("shd_train.h5", "shd_test.h5"):
        (root / name).write_text("spike times, one per line\n")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, r"--data-root \S+/data: no such folder$"),
        (lambda root: root.mkdir(), r"--data-root \S+ holds no shd_train.h5 and no shd_test.h5"),
        (lambda root: root.write_text("x"), r"--data-root \S+ is a file, not a folder"),
        (_not_shd, r"--data-root: \S+/shd_train.h5: not a readable HDF5 file"),
    ],
    ids=["missing", "empty", "file", "not-shd"],
)
def test_bad_data_roots_fail_in_one_line_and_create_nothing(
    make, message, tmp_path, monkeypatch, capsys
):
    root, logdir = tmp_path / "data", tmp_path / "run"
    make(root)
    err = fails(["--data-root", str(root), "--logdir", str(logdir)], monkeypatch, tmp_path, capsys)
    assert err.startswith("sj-spatial train: error: --data-root")
    assert re.search(message, err.strip()), err
    assert not logdir.exists()


def test_a_data_root_without_the_test_file_names_it(tiny_shd, tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "shd_train.h5").write_bytes((tiny_shd / "shd_train.h5").read_bytes())
    logdir = tmp_path / "run"
    err = fails(["--data-root", str(root), "--logdir", str(logdir)], monkeypatch, tmp_path, capsys)
    assert "holds no shd_test.h5 (nor .h5.gz / .h5.zip)" in err and "shd_train" not in err
    assert not logdir.exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--lr", "-1", "must be > 0, got -1"),
        ("--lr", "0", "must be > 0, got 0"),
        ("--lr", "inf", "must be a finite number > 0, got inf"),
        ("--lr", "abc", "expected a number, got 'abc'"),
        ("--position-lr", "-5", "must be > 0, got -5"),
        ("--clip", "-1", "must be >= 0, got -1"),
        ("--wiring-cost", "-0.1", "must be >= 0, got -0.1"),
        ("--wiring-cost", "nan", "must be a finite number >= 0, got nan"),
        ("--delay-scale", "-3", "must be >= 0, got -3"),
        ("--max-delay", "-1", "must be >= 0, got -1"),
        ("--limit", "0", "must be >= 1, got 0"),
        ("--duration", "0", "must be > 0, got 0"),
        ("--dt", "-0.01", "must be > 0, got -0.01"),
        ("--seed", "-1", "must be >= 0, got -1"),
        ("--epochs", "2.5", "expected an integer, got '2.5'"),
        ("--batch-size", "0", "must be >= 1, got 0"),
        ("--hidden", "0", "must be >= 1, got 0"),
        ("--recompute", "0", "must be >= 1, got 0"),
        ("--device", "gpu0", "expected auto, cpu, cuda, cuda:N or mps, got 'gpu0'"),
        ("--stretch", "1", "must be < 1, got 1"),
        ("--stretch", "-0.1", "must be >= 0, got -0.1"),
        ("--threads", "0", "must be >= 1, got 0"),
        ("--threads", "many", "expected an integer, got 'many'"),
    ],
)
def test_bad_option_values_fail_in_one_line_naming_the_option(
    option, value, message, tmp_path, monkeypatch, capsys
):
    logdir = tmp_path / "run"
    err = fails([option, value, "--logdir", str(logdir)], monkeypatch, tmp_path, capsys, status=2)
    assert err == (
        f"sj-spatial train: error: argument {option}: {message} (see sj-spatial train --help)\n"
    )
    assert not logdir.exists()


def test_argparse_errors_are_one_line(tmp_path, monkeypatch, capsys):
    err = fails(["--lerning-rate", "1"], monkeypatch, tmp_path, capsys, status=2)
    assert err.startswith("sj-spatial train: error: unrecognized arguments: --lerning-rate 1")
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "sj-spatial: error: the following arguments are required: command (see sj-spatial --help)\n"
    )


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, default in (
        ("--epochs EPOCHS", "12; 60 with --data-root"),
        ("--batch-size BATCH_SIZE", "64"),
        ("--dt DT", "0.01"),
        ("--lr LR", "0.01"),
        ("--seed SEED", "0"),
        ("--device DEVICE", "auto"),
        ("--logdir LOGDIR", "runs/train"),
    ):
        assert re.search(rf"{option} [^()]*\(default: {re.escape(default)}\)", text), option
    assert "default: None" not in text and "default: False" not in text
    assert text.count("(default: 0.01)") == 2 and "(default 3" not in text
    assert "--augment, --no-augment" in text
    assert "default: on with --data-root, off on the built-in data" in text


@pytest.mark.parametrize(
    "options, expected",
    [
        ([], (12, 1e-2, False)),
        (["--data-root", "shd"], (60, 1e-2, True)),
        (["--data-root", "shd", "--no-augment", "--epochs", "3"], (3, 1e-2, False)),
        (["--data-root", "shd", "--lr", "0.002"], (60, 2e-3, True)),
        (["--augment", "--lr", "0.003"], (12, 3e-3, True)),
    ],
)
def test_data_root_takes_the_speech_recipe_unless_options_say_otherwise(options, expected):
    args = cli.make_parser().parse_args(["train", *options])
    config = TrainConfig.from_options(args)
    assert (config.epochs, config.lr, config.augment) == expected
    assert config.position_lr == 0.05 and config.batch_size == 64  # the same either way
    assert TrainConfig().epochs == 12 and not TrainConfig().augment  # the dataclass's own


def test_unavailable_devices_and_backends_fail_in_one_line(tmp_path, monkeypatch, capsys):
    logdir = tmp_path / "run"
    monkeypatch.setattr(cli.torch.cuda, "is_available", lambda: False)
    err = fails(["--device", "cuda", "--logdir", str(logdir)], monkeypatch, tmp_path, capsys)
    assert "error: --device cuda: no CUDA GPU is visible to torch" in err
    monkeypatch.undo()
    err = fails(
        ["--device", "cpu", "--backend", "cupy", "--logdir", str(logdir)],
        monkeypatch,
        tmp_path,
        capsys,
    )
    reason = cupy_missing()
    expected = "runs on CUDA GPUs" if reason is None else f"is unavailable: {reason}"
    assert f"error: --backend cupy {expected}" in err
    assert not logdir.exists()


def test_unusable_logdirs_fail_in_one_line(tmp_path, monkeypatch, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("not a folder")
    err = fails(["--logdir", str(file)], monkeypatch, tmp_path, capsys)
    assert err.endswith(f"error: --logdir {file} is a file, not a folder\n")
    err = fails(["--logdir", str(file / "run")], monkeypatch, tmp_path, capsys)
    assert err.endswith(f"{file} is a file, not a folder\n")
    assert file.read_text() == "not a folder"
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != readonly)
    err = fails(["--logdir", str(readonly / "run")], monkeypatch, tmp_path, capsys)
    assert err.endswith(f"no permission to write in {readonly}\n")
    assert not (readonly / "run").exists()


def test_resume_failures_create_nothing(tmp_path, monkeypatch, capsys):
    logdir = tmp_path / "none"
    err = fails(["--logdir", str(logdir), "--resume"], monkeypatch, tmp_path, capsys)
    assert err == f"sj-spatial train: error: --resume: no checkpoint at {logdir}/checkpoint.pt\n"
    assert not logdir.exists()
    (tmp_path / "dir" / "checkpoint.pt").mkdir(parents=True)  # a folder, not a file
    err = fails(["--logdir", str(tmp_path / "dir"), "--resume"], monkeypatch, tmp_path, capsys)
    assert "no checkpoint at" in err
    assert [p.name for p in (tmp_path / "dir").iterdir()] == ["checkpoint.pt"]


def test_resume_of_a_finished_run_does_nothing(
    checkpoint_dir, tiny_shd, tmp_path, monkeypatch, capsys
):
    capsys.readouterr()

    def files():
        return {
            str(p.relative_to(checkpoint_dir)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in checkpoint_dir.rglob("*")
            if p.is_file()
        }

    before = files()
    assert {"checkpoint.pt", "summary.md"} <= set(before)
    options = ["--data-root", str(tiny_shd), "--logdir", str(checkpoint_dir), "--resume"]
    assert run([*options, "--epochs", "1"], monkeypatch, tmp_path) == 0
    captured = capsys.readouterr()
    assert captured.out == (
        f"--resume: the run in {checkpoint_dir} already trained 1 epoch of --epochs 1; "
        "nothing to do (raise --epochs to train longer)\n"
    )
    assert captured.err == ""
    assert files() == before  # no file rewritten, none added (no new events file)


@pytest.mark.slow  # a job in a subprocess
def test_the_command_line_reports_a_mistake_in_one_line(tmp_path):
    """End to end, as a user runs it: no traceback, exit status 1, nothing created."""
    logdir = tmp_path / "run"
    env = {**os.environ, "SJ_SPATIAL_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "sj_spatial.cli", "train", "--data-root"]
    command += [str(tmp_path / "nowhere"), "--logdir", str(logdir)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"sj-spatial train: error: --data-root {tmp_path / 'nowhere'}: no such folder\n"
    )
    assert done.stdout == "" and not logdir.exists()


# ---------------------------------------------------------------- runs are never lost


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_same_command_run_twice_keeps_the_first_run(
    checkpoint_dir, tiny_shd, tmp_path, monkeypatch, capsys
):
    capsys.readouterr()
    before = _snapshot(checkpoint_dir)
    args = ["--data-root", str(tiny_shd), "--epochs", "1", "--logdir", str(checkpoint_dir)]
    err = fails(args, monkeypatch, tmp_path, capsys)
    assert err == (
        f"sj-spatial train: error: --logdir {checkpoint_dir} holds a run (checkpoint.pt and "
        "summary.json), which a new run would overwrite; continue it with --resume (raise "
        "--epochs to train longer), or pass another --logdir\n"
    )
    assert _snapshot(checkpoint_dir) == before  # not a byte changed, no events file added


def test_a_logdir_with_other_files_but_no_run_is_used(tiny_shd, tmp_path, monkeypatch):
    logdir = tmp_path / "notes"
    logdir.mkdir()
    (logdir / "README.txt").write_text("my notes")
    run(
        ["--data-root", str(tiny_shd), "--epochs", "1", "--logdir", str(logdir)],
        monkeypatch,
        tmp_path,
    )
    assert (logdir / "checkpoint.pt").exists()
    assert (logdir / "README.txt").read_text() == "my notes"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--limit", "20"], "written with no --limit, this run has --limit 20"),
        (["--seed", "3"], "written with --seed 0, this run has --seed 3"),
        (["--no-augment"], "written with --augment, this run has --no-augment"),
        (["--duration", "0.2"], "written with --duration 0.3, this run has --duration 0.2"),
        (
            ["--hidden", "16"],
            "is of another model: it was written with --hidden 12, this run has --hidden 16",
        ),
    ],
    ids=["limit", "seed", "augment", "duration", "hidden"],
)
def test_resume_refuses_options_that_change_the_data_or_the_model(
    extra, message, checkpoint_dir, tiny_shd, tmp_path, monkeypatch, capsys
):
    capsys.readouterr()
    before = _snapshot(checkpoint_dir)
    args = ["--data-root", str(tiny_shd), "--epochs", "2", "--logdir", str(checkpoint_dir)]
    err = fails([*args, "--resume", *extra], monkeypatch, tmp_path, capsys)
    assert err.startswith(f"sj-spatial train: error: --resume: checkpoint {checkpoint_dir}")
    assert message in err
    assert _snapshot(checkpoint_dir) == before


def test_resume_from_another_data_folder_is_refused_the_same_folder_is_not(
    checkpoint_dir, tiny_shd, tmp_path, monkeypatch, capsys
):
    other = tmp_path / "other-shd"
    make_synthetic_shd(other, num_train=48, num_test=24, seed=1)
    args = ["--epochs", "2", "--logdir", str(checkpoint_dir), "--resume"]
    capsys.readouterr()
    err = fails([*args, "--data-root", str(other)], monkeypatch, tmp_path, capsys)
    assert f"written with --data-root {tiny_shd}, this run has --data-root {other}" in err
    # The same folder by another path (relative, through "..") is the same data.
    monkeypatch.chdir(tiny_shd.parent)
    same = Path("..") / tiny_shd.parent.name / tiny_shd.name
    run([*args, "--data-root", str(same)], monkeypatch, tmp_path)
    assert cli.load_checkpoint(checkpoint_dir / "checkpoint.pt")["epoch"] == 1


def test_resume_with_other_training_options_writes_them_into_the_summary(
    checkpoint_dir, tiny_shd, tmp_path, monkeypatch, capsys
):
    args = ["--data-root", str(tiny_shd), "--logdir", str(checkpoint_dir), "--resume"]
    run([*args, "--epochs", "2", "--lr", "0.02", "--clip", "0"], monkeypatch, tmp_path)
    run([*args, "--epochs", "3", "--lr", "0.03"], monkeypatch, tmp_path)
    summary = json.loads((checkpoint_dir / "summary.json").read_text())
    assert summary["epochs"] == 3
    assert summary["resumed"] == [
        {"after_epoch": 1, "changed": {"lr": ["0.01", "0.02"], "clip": ["1.0", "0.0"]}},
        {"after_epoch": 2, "changed": {"lr": ["0.02", "0.03"], "clip": ["0.0", "1.0"]}},
    ]
    table = (checkpoint_dir / "summary.md").read_text()
    assert "| resumed after epoch 1 | changed --lr 0.01 -> 0.02, --clip 1.0 -> 0.0 |" in table


@pytest.mark.slow  # a job in a subprocess
def test_ctrl_c_is_one_line_exit_130_and_the_checkpoint_resumes(tiny_shd, tmp_path):
    """End to end, as a user does it: SIGINT to a running job after its first epoch."""
    logdir = tmp_path / "run"
    env = {**os.environ, "SJ_SPATIAL_CACHE": str(tmp_path / "cache")}
    args = ["train", "--data-root", str(tiny_shd), "--hidden", "12", "--dt", "0.01"]
    args += ["--duration", "0.3", "--batch-size", "16", "--max-delay", "4", "--quiet"]
    args += ["--epochs", "200", "--logdir", str(logdir)]
    job = subprocess.Popen(
        [sys.executable, "-m", "sj_spatial.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 240
    while not (logdir / "checkpoint.pt").exists() and job.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.05)
    job.send_signal(signal.SIGINT)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 130, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    match = re.fullmatch(
        r"sj-spatial train: interrupted during epoch (\d+) of 200; (\S+) is intact: continue "
        r"with sj-spatial (.*)\n",
        err,
    )
    assert match, err
    assert match[2] == str(logdir / "checkpoint.pt")
    assert match[3] == shlex.join([*args, "--resume"])
    saved = cli.load_checkpoint(logdir / "checkpoint.pt")
    assert saved["epoch"] + 2 == int(match[1])  # the last finished epoch is the one before


@pytest.mark.slow  # a job in a subprocess
def test_the_readme_command_into_a_logdir_with_a_run_changes_nothing(checkpoint_dir, tmp_path):
    """`sj-spatial train` as the README gives it, where runs/train holds a finished run."""
    home = tmp_path / "work"
    shutil.copytree(checkpoint_dir, home / "runs" / "train")
    before = _snapshot(home)
    env = {**os.environ, "SJ_SPATIAL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "sj_spatial.cli", "train"],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=300,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(
        "sj-spatial train: error: --logdir runs/train holds a run (checkpoint.pt and "
        "summary.json), which a new run would overwrite; continue it with --resume"
    )
    assert _snapshot(home) == before


def test_the_start_line_says_how_many_threads_run(tiny_shd, tmp_path, monkeypatch, capsys):
    args = ["--data-root", str(tiny_shd), "--epochs", "1", "--no-augment"]
    run([*args, "--logdir", str(tmp_path / "auto")], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert re.search(
        r"; \d+ threads? of \d+ usable CPUs \(auto: fewer while other processes "
        r"are busy\)\n",
        out,
    ), out
    previous = torch.get_num_threads()
    try:
        run([*args, "--threads", "1", "--logdir", str(tmp_path / "one")], monkeypatch, tmp_path)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    assert "; 1 thread (--threads)\n" in capsys.readouterr().out
