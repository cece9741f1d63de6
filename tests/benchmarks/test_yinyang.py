"""Yin-Yang: the published generator, the time-to-first-spike encoder, the benchmark."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sj_spatial.data
from sj_spatial.data.yinyang import (
    SPLITS,
    YinYang,
    make_yinyang,
    ttfs_encode,
    yinyang_class,
    yinyang_split,
)


def test_splits_are_the_published_sizes_and_seeds():
    assert SPLITS == {"train": (5000, 42), "validation": (1000, 41), "test": (1000, 40)}
    inputs, labels = yinyang_split("validation")
    assert inputs.shape == (1000, 4) and labels.shape == (1000,)
    again, _ = make_yinyang(1000, 41)
    np.testing.assert_array_equal(inputs, again)


def test_public_names_are_exported_from_the_data_package():
    names = ("YinYang", "make_yinyang", "ttfs_encode", "yinyang_class", "yinyang_split")
    assert all(getattr(sj_spatial.data, name) is globals()[name] for name in names)
    assert set(names) <= set(sj_spatial.data.__all__)


def test_first_training_sample_of_seed_42():
    # Regression pin of the draw-for-draw generator (RandomState(42): randint(3), rand(2)).
    inputs, labels = make_yinyang(3, 42)
    np.testing.assert_allclose(inputs[0], [0.68030754, 0.45049925, 0.31969246, 0.54950075])
    assert labels.tolist() == [2, 1, 2]


def test_classes_are_balanced():
    _, labels = yinyang_split("train")
    counts = np.bincount(labels, minlength=3)
    assert counts.tolist() == [1681, 1702, 1617]
    assert np.all(np.abs(counts / labels.size - 1 / 3) < 0.02)


def test_same_seed_same_data_other_seed_other_data():
    a_x, a_y = make_yinyang(200, 7)
    b_x, b_y = make_yinyang(200, 7)
    c_x, _ = make_yinyang(200, 8)
    np.testing.assert_array_equal(a_x, b_x)
    np.testing.assert_array_equal(a_y, b_y)
    assert not np.any(a_x[:, 0] == c_x[:, 0])


def test_points_lie_in_the_big_circle_with_mirrored_coordinates_and_their_class():
    inputs, labels = yinyang_split("test")
    x, y = inputs[:, 0], inputs[:, 1]
    assert np.all(np.hypot(x - 0.5, y - 0.5) <= 0.5)
    np.testing.assert_allclose(inputs[:, 2], 1 - x)
    np.testing.assert_allclose(inputs[:, 3], 1 - y)
    assert [yinyang_class(a, b) for a, b in zip(x, y, strict=True)] == labels.tolist()


@pytest.mark.parametrize(
    ("point", "label"),
    [
        ((0.75, 0.5), 2),  # centre of the right dot
        ((0.25, 0.52), 2),  # inside the left dot
        ((0.75, 0.65), 0),  # lobe around the right dot (d_right = 0.15): class 0
        ((0.25, 0.65), 1),  # lobe around the left dot (d_left = 0.15): class 1
        ((0.5, 0.9), 1),  # top half, farther than r_big / 2 from the right dot
        ((0.5, 0.1), 0),  # bottom half, farther than r_big / 2 from the left dot
    ],
)
def test_class_rule_on_hand_computed_points(point, label):
    assert yinyang_class(*point) == label


def test_torch_dataset_items():
    data = YinYang("validation", size=50)
    x, label = data[3]
    inputs, labels = make_yinyang(50, 41)
    assert len(data) == 50 and x.dtype == torch.float32 and isinstance(label, int)
    np.testing.assert_allclose(x.numpy(), inputs[3], rtol=1e-6)
    assert label == labels[3]


def test_encoding_puts_one_spike_per_channel_at_the_rounded_time():
    inputs = np.array([[0.0, 1.0, 0.5, 0.26]])
    out = ttfs_encode(inputs, 30, t_early=2.0, t_late=22.0, bias_time=12.0)
    assert out.shape == (30, 1, 5) and out.dtype == torch.float32
    assert out.sum(0).tolist() == [[1.0] * 5]
    steps = out[:, 0].argmax(0).tolist()
    assert steps == [2, 22, 12, 7, 12]  # 2 + 0.26 * 20 = 7.2 -> 7; bias at 12


def test_interpolated_encoding_keeps_sub_step_times():
    inputs = np.random.default_rng(0).random((20, 4))
    out = ttfs_encode(inputs, 30, t_early=1.0, t_late=21.0, bias_time=3.5, interpolate=True)
    steps = torch.arange(30.0)[:, None, None]
    assert torch.allclose(out.sum(0), torch.ones(20, 5))
    mean_time = (out * steps).sum(0)
    expected = np.concatenate([1 + 20 * inputs, np.full((20, 1), 3.5)], axis=1)
    np.testing.assert_allclose(mean_time.numpy(), expected, atol=1e-5)
    assert int((out > 0).sum(0).max()) <= 2


def test_encoding_without_bias_and_bad_arguments():
    assert ttfs_encode(np.zeros((2, 4)), 10, bias_time=None, t_late=5.0).shape == (10, 2, 4)
    with pytest.raises(ValueError, match="inputs must lie in"):
        ttfs_encode(np.array([[1.5, 0.0]]), 30)
    with pytest.raises(ValueError, match="num_steps must exceed"):
        ttfs_encode(np.ones((1, 4)), 20, t_late=22.0)
    with pytest.raises(ValueError, match="split must be one of"):
        yinyang_split("dev")


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("yinyang")


def _params(variant: str, hidden: int, dim: int) -> int:
    weights = 5 * hidden + 3 * hidden + 3  # no hidden bias; readout bias
    extra = {"spatial": (5 + hidden + 3) * dim, "free": 8 * hidden}.get(variant, 0)
    return weights + extra


@pytest.mark.parametrize(
    ("variant", "dim"), [("spatial", 2), ("spatial", 3), ("fixed", 2), ("none", 2), ("free", 2)]
)
def test_parameter_counts_by_formula(bench, variant, dim):
    model = bench.build_model(bench.Config(variant=variant, dim=dim, hidden=11))
    assert bench.count_params(model) == _params(variant, 11, dim)
    assert bench.expected_params(variant, 11, dim) == _params(variant, 11, dim)
    if variant in ("spatial", "fixed"):
        first, second = model[0], model[2]
        assert first.post_positions is second.pre_positions
        learned = variant == "spatial"
        assert all(p.requires_grad == learned for p in first.post_positions.parameters())


def test_run_tags_name_the_variant_and_a_non_default_epoch_count(bench):
    assert bench.Config(variant="spatial", dim=3).tag == "spatial-d3-h45"
    assert bench.Config(variant="free", dim=3, hidden=100).tag == "free-h100"
    assert bench.Config(variant="none", epochs=80).tag == "none-h45-e80"
    assert bench.Config(variant="none", readout_bias="zero").tag == "none-h45-rb0"
    assert bench.Config(readout="mean", epochs=160).tag == "spatial-d2-h45-e160-rmean"


def test_the_mean_readout_scores_the_membranes_mean_over_time(bench):
    cfg = bench.Config(hidden=8, seed=1)
    model = bench.build_model(cfg)
    x = bench.encoded(6, 0, cfg)[0]
    bench.functional.reset_net(model)
    membranes = model(x)
    assert torch.equal(bench.logits(model, x), membranes.amax(0))
    assert torch.equal(bench.logits(model, x, "mean"), membranes.mean(0))
    with pytest.raises(ValueError, match="readout"):
        bench.build_model(bench.Config(readout="last"))
    assert bench.make_parser().parse_args(["--readout", "mean"]).readout == "mean"


def test_readout_bias_starts_at_zero_on_request_and_nothing_else_moves(bench):
    base = bench.build_model(bench.Config(variant="none", seed=3))
    zero = bench.build_model(bench.Config(variant="none", seed=3, readout_bias="zero"))
    assert base[2].bias.abs().min() > 0 and torch.equal(zero[2].bias, torch.zeros(3))
    for name, value in base.state_dict().items():
        if name != "2.bias":
            assert torch.equal(zero.state_dict()[name], value), name
    with pytest.raises(ValueError, match="readout_bias"):
        bench.build_model(bench.Config(readout_bias="none"))


def test_quick_pipeline_writes_runs_and_summary(bench, tmp_path):
    runs = [("spatial", "2"), ("none", "2"), ("free", "2"), ("fixed", "3")]
    for variant, dim in runs:
        bench.main(["--quick", "--variant", variant, "--dim", dim, "--out", str(tmp_path)])
    bench.main(["--quick", "--variant", "none", "--readout-bias", "zero", "--out", str(tmp_path)])
    bench.main(["--quick", "--readout", "mean", "--out", str(tmp_path)])
    records = {r["run"]: r for r in bench.read_records(tmp_path)}
    assert sorted(records) == [
        "fixed-d3-h8-e1-s0",
        "free-h8-e1-s0",
        "none-h8-e1-rb0-s0",
        "none-h8-e1-s0",
        "spatial-d2-h8-e1-rmean-s0",
        "spatial-d2-h8-e1-s0",
    ]
    assert {r["script"] for r in records.values()} == {"yinyang.py"}
    assert list(tmp_path.glob("*.json")) == [tmp_path / "summary.json"]  # no file per run
    for variant, dim in runs:
        space = f"-d{dim}" if variant in ("spatial", "fixed") else ""
        tag = f"{variant}{space}-h8-e1"  # the epoch count is in the tag when not the default
        record = records[f"{tag}-s0"]
        assert record["params"] == _params(variant, 8, int(dim))
        assert 0.0 <= record["val_acc"] <= 1.0 and 0.0 <= record["test_acc"] <= 1.0
        assert record["best_epoch"] == 1 and len(record["history"]) == 1
        assert record["config"]["train_size"] == 300 and record["seed"] == 0
        assert record["command"].startswith("python benchmarks/yinyang.py --quick")
        assert {"torch", "spikingjelly"} <= set(record["machine"]["versions"])
        numerics = record["machine"]["numerics"]
        assert numerics["torch_cpu_capability"] and numerics["torch_threads"] == 1
        assert set(numerics["environment"]) == set(bench.AVX2)
        assert numerics["isa_pinned"] is False  # in-process: the script alone sets the pins
        assert len(numerics["sj_spatial"]["commit"] or "0" * 40) == 40
    (tmp_path / "summary.md").unlink()
    rows = bench.main(["--summarize", "--out", str(tmp_path)])
    table = (tmp_path / "summary.md").read_text()
    assert [r["tag"] for r in rows] == [
        "fixed-d3-h8-e1",
        "free-h8-e1",
        "none-h8-e1",
        "none-h8-e1-rb0",
        "spatial-d2-h8-e1",
        "spatial-d2-h8-e1-rmean",
    ]
    assert table.count("\n") == 4 + len(runs) and "| spatial | 2 | 8 | 99 | 0 |" in table
    assert "| none (readout bias 0) | - | 8 | 67 | 0 |" in table
    assert "| spatial (mean readout) | 2 | 8 | 99 | 0 |" in table
    assert (tmp_path / "accuracy_vs_params.png").stat().st_size > 0


def test_the_script_restarts_itself_with_the_avx2_pins_unless_asked_not_to(bench, monkeypatch):
    calls = []
    monkeypatch.setattr(bench.os, "execve", lambda *args: calls.append(args))
    for name in bench.AVX2:
        monkeypatch.delenv(name, raising=False)
    bench.run_pinned(["--quick", "--seeds", "1"])
    bench.run_pinned(["--quick", "--isa", "native"])
    assert len(calls) == 1
    executable, argv, env = calls[0]
    assert argv[1:] == [bench.__file__, "--quick", "--seeds", "1"]
    assert {k: env[k] for k in bench.AVX2} == bench.AVX2
    for name, value in bench.AVX2.items():
        monkeypatch.setenv(name, value)
    bench.run_pinned(["--quick"])  # already pinned: no restart
    assert len(calls) == 1


def test_intervals_of_the_mean_and_the_median_and_the_verdict_against_spsnn(bench):
    values = [97.6, 98.7, 97.9, 98.3, 98.0, 97.2, 98.5, 98.1, 97.7, 98.4]
    lo, hi = bench.mean_interval(values)
    # mean 98.04, std 0.4575: half width t(0.975, 9) * std / sqrt(10) = 2.2622 * 0.14467
    assert abs((lo + hi) / 2 - 98.04) < 1e-9 and abs((hi - lo) / 2 - 0.32727) < 1e-4
    # n = 10: (x_(2), x_(9)) covers the median with 1 - 2 * 11 / 1024 = 97.9 %; x_(3)
    # and x_(8) would cover only 89.1 %.
    assert bench.median_interval(values) == (97.6, 98.5)
    assert bench.median_interval(values[:5]) is None  # 5 values cannot reach 95 %
    assert bench.mean_interval([98.0]) is None
    assert bench.verdict((97.6, 98.5), 98.12) == "overlaps"
    assert bench.verdict((98.2, 98.5), 98.12) == "above"
    assert bench.verdict((97.0, 98.0), 98.12) == "below"
    assert bench.verdict(None, 98.12) == bench.verdict((97.0, 98.0), None) == "-"
