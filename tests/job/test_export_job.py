"""`sj-spatial export`: a finished run of the main job becomes a NIR graph that computes
what the run's model computes, with the test accuracy at integer and bounded delays;
mistakes are one line on stderr.

Under spikingjelly 0.0.0.0.14 (no ``nir_exchange``) the command's only outcome is the
one-line error that names the release it needs, which ``test_export_...`` assert there.
"""

import functools
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from spikingjelly.activation_based import functional

from sj_spatial import cli
from sj_spatial.data import make_synthetic_shd
from sj_spatial.export_job import accuracy_of, deployed, evaluation_split, export_run, load_run

HAS_SJ_NIR = importlib.util.find_spec("spikingjelly.activation_based.nir_exchange") is not None


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run of ``sj-spatial train``: 12 recurrent neurons, max_delay 4, one epoch."""
    root = tmp_path_factory.mktemp("export")
    make_synthetic_shd(root / "shd", num_train=48, num_test=24, seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SJ_SPATIAL_CACHE", str(root / "cache"))
        options = ["--hidden", "12", "--dt", "0.01", "--duration", "0.3", "--batch-size", "16"]
        options += ["--max-delay", "4", "--epochs", "1", "--quiet", "--no-augment"]
        cli.main(
            ["train", "--data-root", str(root / "shd"), "--logdir", str(root / "run"), *options]
        )
        yield root / "run"


def or_release_error(test):
    """Run ``test`` where spikingjelly has ``nir_exchange``; elsewhere assert that the
    command fails in one line that names the release (``test`` takes the fixtures
    ``finished_run``, ``tmp_path`` and ``capsys``)."""
    if HAS_SJ_NIR:
        return test

    @functools.wraps(test)
    def release_error(finished_run, tmp_path, capsys, *args, **kwargs):
        err = fails(["export", str(finished_run), "--out", str(tmp_path / "m.nir")], capsys)
        assert "sj-spatial export: error: sj_spatial.nir_exchange" in err
        assert not (tmp_path / "m.nir").exists()

    return release_error


def fails(argv, capsys) -> str:
    """Run ``sj-spatial ARGV`` expecting a mistake: exit 1, one line on stderr (returned)."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.endswith("\n") and "Traceback" not in err, err
    return err


@or_release_error
def test_export_writes_a_graph_that_computes_the_runs_model(finished_run, tmp_path, capsys):
    from sj_spatial.nir_exchange import import_from_nir

    out = tmp_path / "model.nir"
    assert cli.main(["export", str(finished_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"wrote {out}: ") and "NIR nodes" in printed[0]
    assert printed[1].startswith("test accuracy: as trained ")
    model, config = load_run(finished_run)
    state = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    # The run measured its test accuracy with the same model, batches and kernels.
    assert accuracy_of(model, config, evaluation_split(config)) == state["history"]["test_acc"][-1]
    x = (torch.rand(30, 3, 700) < 0.05).float()
    imported = import_from_nir(out, dt=config.dt)
    outputs, memory = [], None
    with torch.no_grad():
        want = model(x)
        functional.reset_net(model)
        assert 0.05 < float(model[:2](x).mean()) < 0.95  # the hidden neurons fire, not always
        for x_t in x:
            readout, memory = imported(x_t, memory)
            outputs.append(readout)
    # Same spikes; the leaky readouts agree to float32 rounding of their constants.
    torch.testing.assert_close(torch.stack(outputs), want, rtol=1e-5, atol=1e-6)


@or_release_error
def test_the_report_measures_rounded_and_clamped_delays(finished_run, tmp_path, capsys):
    report = export_run(finished_run / "checkpoint.pt", tmp_path / "m.nir", 1, clamp=True)
    model, config = load_run(finished_run)
    test_set = evaluation_split(config)
    acc = report["accuracy"]
    assert acc["trained"] == accuracy_of(model, config, test_set)
    assert acc["rounded"] == accuracy_of(deployed(model), config, test_set)
    assert acc["clamped"] == accuracy_of(deployed(model, 1), config, test_set)
    assert report["clamped"] > 0 and report["max_delay_steps"] == 1 and report["dt"] == 0.01
    assert report["bytes"] == (tmp_path / "m.nir").stat().st_size and report["nodes"] > 6
    unbounded = export_run(finished_run, tmp_path / "n.nir")
    assert unbounded["accuracy"]["clamped"] is None and unbounded["clamped"] == 0


def test_deployed_copies_have_integer_bounded_delays(finished_run):
    model, _ = load_run(finished_run)
    target = deployed(model, 2)
    assert (target[1].delay_mode, target[1].max_delay) == ("round", 2)
    assert (model[1].delay_mode, model[1].max_delay) == ("interpolate", 4)
    assert deployed(model)[1].max_delay == 4


@or_release_error
def test_export_mistakes_are_one_line_and_write_nothing(finished_run, tmp_path, capsys):
    out = tmp_path / "model.nir"
    run = str(finished_run)
    err = fails(["export", run, "--out", str(out), "--max-delay-steps", "1"], capsys)
    assert err.startswith("sj-spatial export: error: --max-delay-steps 1: ")
    assert "synapses of RUN need longer delays (largest " in err and "pass --clamp" in err
    err = fails(["export", run, "--out", str(out), "--clamp"], capsys)
    assert err == "sj-spatial export: error: --clamp needs --max-delay-steps N, the bound to " \
        "clamp the delays to\n"  # fmt: skip
    err = fails(["export", str(tmp_path / "nowhere"), "--out", str(out)], capsys)
    assert err.startswith(f"sj-spatial export: error: RUN {tmp_path / 'nowhere'}: not a run")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    err = fails(["export", str(tmp_path / "junk.pt"), "--out", str(out)], capsys)
    assert "RUN" in err and "cannot read checkpoint" in err
    err = fails(["export", run, "--out", str(tmp_path)], capsys)
    assert err.startswith(f"sj-spatial export: error: --out {tmp_path} is a folder")
    assert not out.exists()


@pytest.mark.slow  # a job in a subprocess
def test_the_command_line_reports_a_mistake_in_one_line(tmp_path):
    """End to end, as a user runs it: no traceback, exit status 1, nothing created."""
    out = tmp_path / "model.nir"
    command = [sys.executable, "-m", "sj_spatial.cli", "export", str(tmp_path / "none")]
    env = {**os.environ, "SJ_SPATIAL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 1 and done.stdout == "" and not out.exists()
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("sj-spatial export: ")
    if HAS_SJ_NIR:
        assert f"RUN {tmp_path / 'none'}: not a run of sj-spatial train" in done.stderr
    else:
        assert "needs spikingjelly >= 2.0.0" in done.stderr


def test_export_options_are_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", "run", "--out", "m.nir", "--max-delay-steps", "-2"])
    assert exc.value.code == 2
    assert "argument --max-delay-steps: must be >= 0, got -2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", "run"])
    assert "the following arguments are required: --out" in capsys.readouterr().err
