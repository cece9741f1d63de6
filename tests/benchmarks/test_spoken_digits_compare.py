"""benchmarks/spoken_digits_compare.py: each row is the model it names, a run writes its
record, and the summary tabulates every record."""

from __future__ import annotations

import pytest
import torch

from sj_spatial import cli, param_groups
from sj_spatial.baselines import FreeDelayRecurrentContainer
from sj_spatial.data import make_synthetic_shd
from sj_spatial.train_job.checkpoints import load_checkpoint
from sj_spatial.train_job.config import TrainConfig


@pytest.fixture(scope="module")
def cmp(benchmark_script):
    return benchmark_script("spoken_digits_compare")


@pytest.fixture(scope="module")
def tiny_shd(tmp_path_factory):
    root = tmp_path_factory.mktemp("shd")
    make_synthetic_shd(root, num_train=40, num_test=20, seed=2)
    return root


def recurrent(model):
    return model[1]


def test_rows_differ_only_in_their_recurrent_delays(cmp):
    config = TrainConfig(hidden=16, dt=0.01, max_delay=25, delay_scale=3.0)
    models = {name: cmp.build_model(name, config) for name in cmp.RECURRENT}
    none, fixed = recurrent(models["rec-none"]), recurrent(models["rec-fixed"])
    assert torch.equal(none.delays(), torch.zeros(16, 16))  # one step: no delay
    assert fixed.delays().max() > 1.0  # random positions, real delays
    for frozen in (none, fixed):
        assert not frozen.positions.positions.requires_grad
    assert recurrent(models["rec-d2"]).positions.positions.shape == (16, 2)
    assert recurrent(models["rec-d3"]).positions.positions.shape == (16, 3)
    free = recurrent(models["rec-free"])
    assert isinstance(free, FreeDelayRecurrentContainer)
    assert 0.0 <= free.delay.min() and free.delay.max() <= 2 * config.delay_scale
    # The free delays train with the positions' learning rate.
    groups = param_groups(models["rec-free"], 1e-3, 0.05)
    assert any(p is free.delay for p in groups[1]["params"]) and groups[1]["lr"] == 0.05
    count = {name: cmp.count_params(m) for name, m in models.items()}
    assert count["rec-d2"] - count["rec-none"] == 16 * 2
    assert count["rec-d3"] - count["rec-none"] == 16 * 3
    assert count["rec-free"] - count["rec-none"] == 16 * 16
    assert count["rec-fixed"] == count["rec-none"]


def test_gru_reads_out_every_state(cmp):
    model = cmp.build_model("gru", TrainConfig(hidden=8))
    x = torch.rand(30, 4, 700)
    out = model(x)
    assert out.shape == (30, 4, 20)
    states, _ = model.gru(x)
    assert torch.equal(out, model.readout(states))
    assert cmp.count_params(model) == 3 * (700 * 8 + 8 * 8 + 2 * 8) + 8 * 20 + 20


def test_a_run_writes_its_record_and_the_summary_tabulates_seeds(
    cmp, tiny_shd, tmp_path, monkeypatch
):
    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    common = ["--data-root", str(tiny_shd), "--out", str(out), "--epochs", "2", "--limit", "24"]
    cmp.main(["--model", "rec-d2", "--seeds", "0,1", *common])
    cmp.main(["--model", "gru", "--seeds", "0", "--no-augment", *common])
    (record,) = cmp.read_records(out, run="rec-d2-lr0.01-aug-2epochs-maxdelay25-scale3-s1")
    assert record["script"] == "spoken_digits_compare.py"
    assert record["row"] == "rec-d2" and record["seed"] == 1
    assert record["training"] == "lr 0.01, augmented, 2 epochs, max delay 25, scale 3"
    assert len(record["test_acc_per_epoch"]) == 2
    assert record["best_test_acc"] == max(record["test_acc_per_epoch"])
    assert record["config"]["augment"] == "True" and record["config"]["limit"] == "24"
    assert record["config"]["lr"] == str(TrainConfig().lr)
    assert record["seconds_per_epoch"] > 0 and record["machine"]["cpu_count"] >= 1
    (gru,) = cmp.read_records(out, run="gru-lr0.01-noaug-2epochs-s0")
    assert [r["run"] for r in cmp.read_records(out)] == [
        "rec-d2-lr0.01-aug-2epochs-maxdelay25-scale3-s0",
        "rec-d2-lr0.01-aug-2epochs-maxdelay25-scale3-s1",
        "gru-lr0.01-noaug-2epochs-s0",
    ]
    assert (
        gru["config"]["augment"] == "False"
        and gru["training"] == "lr 0.01, not augmented, 2 epochs"
    )

    summary = (out / "summary.md").read_text().splitlines()
    assert summary[0].startswith("| model | training | trainable params | s / epoch | seeds |")
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in summary[2:]}
    assert list(rows) == [cmp.ROWS["gru"], cmp.ROWS["rec-d2"]]  # the table's order
    d2 = rows[cmp.ROWS["rec-d2"]]
    assert d2[1] == "lr 0.01, augmented, 2 epochs, max delay 25, scale 3" and d2[4] == "2 (0, 1)"
    accs = [100 * r["test_acc"] for r in cmp.read_records(out, row="rec-d2")]
    assert len(accs) == 2
    assert d2[5].startswith(f"{sum(accs) / 2:.1f} ± ")
    assert rows[cmp.ROWS["gru"]][6] == "-"  # no interval from one seed


def test_rows_with_delays_name_their_delays_and_default_to_the_jobs(cmp):
    job = TrainConfig.from_options(cli.make_parser().parse_args(["train", "--data-root", "x"]))
    args = cmp.make_parser().parse_args(["--out", "x"])
    assert (args.max_delay, args.delay_scale) == (job.max_delay, job.delay_scale)
    args = cmp.make_parser().parse_args(["--out", "x", "--max-delay", "50", "--delay-scale", "6"])
    assert (args.max_delay, args.delay_scale) == (50, 6.0)
    words = cmp.training(0.01, True, 20, (25, 3.0))
    assert words == "lr 0.01, augmented, 20 epochs, max delay 25, scale 3"
    record = {"row": "rec-free", "training": words, "seed": 2}
    assert cmp.run_name(record) == "rec-free-lr0.01-aug-20epochs-maxdelay25-scale3-s2"
    assert cmp.training(0.003, False, 60) == "lr 0.003, not augmented, 60 epochs"


def test_the_learned_2d_row_is_the_main_job_with_its_data_root_defaults(
    cmp, tiny_shd, tmp_path, monkeypatch
):
    """So the job's runs with ``--data-root`` stand for this row at the job's 60 epochs:
    the same code on the same machine, so the same bits."""
    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(tmp_path / "cache"))
    common = ["--data-root", str(tiny_shd), "--epochs", "2", "--limit", "24"]
    logdir = tmp_path / "job"
    assert cli.main(["train", *common, "--seed", "1", "--logdir", str(logdir), "--quiet"]) == 0
    built = []
    build = cmp.build_model
    monkeypatch.setattr(cmp, "build_model", lambda *args: built.append(build(*args)) or built[-1])
    cmp.main(["--model", "rec-d2", "--seeds", "1", "--out", str(tmp_path / "out"), *common])
    (record,) = cmp.read_records(
        tmp_path / "out", run="rec-d2-lr0.01-aug-2epochs-maxdelay25-scale3-s1"
    )
    saved = load_checkpoint(logdir / "checkpoint.pt")
    assert record["test_acc_per_epoch"] == saved["history"]["test_acc"]
    state = built[0].state_dict()
    assert state.keys() == saved["model"].keys()
    for name, value in state.items():
        assert torch.equal(saved["model"][name], value), name


@pytest.mark.slow  # trains a tutorial in a subprocess
def test_the_tutorial_rows_come_from_the_tutorial_itself(cmp, tiny_shd, tmp_path, monkeypatch):
    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    cmp.main(
        ["--model", "tutorial01", "--seeds", "3", "--data-root", str(tiny_shd)]
        + ["--out", str(out), "--epochs", "1", "--limit", "16"]
    )
    (plain,) = cmp.read_records(out, run="ff-none-lr0.001-1epochs-s3")
    (spatial,) = cmp.read_records(out, run="ff-d2-lr0.001-1epochs-s3")
    assert plain["training"] == "the tutorial's: lr 0.001, 1 epochs"
    assert plain["config"]["seed"] == spatial["config"]["seed"] == 3
    assert plain["config"]["hidden"] == 256 and plain["config"]["epochs"] == 1
    # The spatial copy adds 2-D positions for 700 + 256 + 256 + 20 neurons.
    assert spatial["params"] - plain["params"] == 2 * (700 + 256 + 256 + 20)


def test_summarize_needs_no_data_and_a_run_needs_a_model(cmp, tmp_path, capsys):
    with pytest.raises(SystemExit, match="--model and --data-root"):
        cmp.main(["--out", str(tmp_path)])
    cmp.main(["--summarize", "--out", str(tmp_path)])
    assert (tmp_path / "summary.md").read_text().count("\n") == 2  # header only
    assert cmp.parse_seeds("0..2") == [0, 1, 2] and cmp.parse_seeds("4,7") == [4, 7]


@pytest.mark.slow  # trains a tutorial in a subprocess
def test_tutorial02_positions_trains_only_positions_at_the_width_it_is_given(
    cmp, tiny_shd, tmp_path, monkeypatch
):
    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    cmp.main(
        ["--model", "tutorial02-positions", "--seeds", "1", "--data-root", str(tiny_shd)]
        + ["--out", str(out), "--epochs", "1", "--limit", "16", "--positions-hidden", "70"]
    )
    (record,) = cmp.read_records(out)  # no DCLS record: the tutorial trained positions only
    assert record["row"] == "dcls-positions-d2-wide"
    assert record["training"] == "the tutorial's: lr 0.001, 1 epochs, 2 x 70 hidden"
    assert record["run"] == "dcls-positions-d2-wide-lr0.001-1epochs-2x70hidden-s1"
    # 140 -> 70 -> 70 -> 20 weights, two BatchNorms, 2-D positions of 140 + 70 + 70 + 20
    assert record["params"] == 140 * 70 + 70 * 70 + 70 * 20 + 4 * 70 + 2 * (140 + 70 + 70 + 20)
    assert record["config"]["positions_hidden"] == 70 and record["config"]["hidden"] == 256
    assert cmp.ROWS["dcls-positions-d2-wide"] in (out / "summary.md").read_text()
