"""benchmarks/structure.py: the structure and ablation runs write what the report promises."""

from __future__ import annotations

import json
import math

import pytest
import torch

HIDDEN = 8  # --quick
FIGURES = ("fig5_wiring_cost", "fig6_pruning", "fig2a_specialisation", "fig4b_delays")
FIGURES += ("fig7_ablation",)
RUNS = ("spatial-d2", "dist-1e-03", "l1-1e-03", "none", "free", "fixed-d2")
RUNS += ("spatial-d1", "spatial-d3", "spatial-d4")


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("structure")


@pytest.fixture(scope="module")
def quick(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("structure")
    assert bench.main(["--quick", "--out", str(out)]) == 0
    return out


def _timing(name: str, n: int) -> int:
    """Delay parameters of a variant: N*D learned positions, N*N free delays, else none."""
    if name.startswith("spatial-d"):
        return n * int(name[-1])
    if name.startswith(("dist-", "l1-")):
        return n * 2
    return n * n if name == "free" else 0


def _params(name: str, n: int) -> int:
    # 700 -> n (weight + bias), n -> n recurrent (no bias), n -> 20 (weight + bias)
    return 700 * n + n + n * n + n * 20 + 20 + _timing(name, n)


@pytest.mark.parametrize("name", ["spatial-d2", "none", "free", "fixed-d2", "spatial-d4"])
def test_trainable_parameters_of_the_full_size_models_match_the_formula(bench, name):
    args = bench.make_parser().parse_args([])
    config = next(c for c in bench.configs() if c.name == name)
    model = bench.build_model(config, args)
    assert bench.trainable_parameters(model) == _params(name, 128)
    assert bench.expected_parameters(config, 128) == _params(name, 128)


def test_free_delays_start_where_the_spatial_ones_do(bench):
    args = bench.make_parser().parse_args([])
    spatial = bench.build_model(bench.Config("spatial-d2"), args)
    free = bench.build_model(bench.Config("free", kind="free"), args)
    torch.testing.assert_close(free[1].delays(), spatial[1].delays())
    torch.testing.assert_close(free[1].weight, spatial[1].weight)
    groups = bench.optimizer(free, args).param_groups
    assert groups[-1]["params"] == [free[1].delay]
    assert groups[-1]["lr"] == pytest.approx(args.position_lr * args.delay_scale)


def test_quick_run_writes_every_run_with_the_formula_parameter_count(bench, quick):
    records = {r["run"]: r for r in bench.read_records(quick)}
    assert sorted(records) == sorted(RUNS)
    assert {r["script"] for r in records.values()} == {"structure.py"}
    assert sorted(p.stem for p in (quick / "runs").glob("*.pt")) == sorted(RUNS)
    for name in RUNS:
        record = records[name]
        assert record["trainable_parameters"] == _params(name, HIDDEN), name
        assert record["settings"]["hidden"] == HIDDEN
        assert record["settings"]["command"].startswith("python benchmarks/structure.py --quick")
        assert [h["epoch"] for h in record["history"]] == [0, 1]
        assert 0.0 <= record["test_acc"] <= 1.0
        assert 0.0 <= record["history"][-1]["train_acc"] <= 1.0


def test_pruning_removes_the_requested_fractions_and_reports_accuracy(bench, quick):
    (record,) = bench.read_records(quick, run="spatial-d2")
    total = HIDDEN * HIDDEN
    for method in ("distance", "magnitude"):
        rows = record["pruning"][method]
        assert [r["fraction"] for r in rows] == [0.0, 0.2, 0.4, 0.6, 0.8, 0.9]
        for r in rows:
            assert r["pruned"] == math.floor(r["fraction"] * total + 0.5)
            assert r["pruned_fraction"] == pytest.approx(r["pruned"] / total)
            assert 0.0 <= r["test_acc"] <= 1.0
            assert "modularity" in r and "clustering" in r
    unpruned = {r["test_acc"] for m in ("distance", "magnitude") for r in record["pruning"][m][:1]}
    assert unpruned == {record["test_acc"]}  # fraction 0 is the trained model itself
    assert "pruning" not in bench.read_records(quick, run="free")[0]


def test_delay_histogram_weights_sum_to_the_recurrent_weight(bench, quick):
    for name in ("spatial-d2", "free"):
        (record,) = bench.read_records(quick, run=name)
        state = torch.load(quick / "runs" / f"{name}.pt", weights_only=True)
        total = float(state["1.weight"].abs().sum())
        assert sum(record["delays"]["weighted_counts"]) == pytest.approx(total, rel=1e-5)
        assert record["delays"]["edges"][0] == 0 and record["delays"]["edges"][-1] == 8


def test_results_json_markdown_and_figures(quick):
    results = json.loads((quick / "results.json").read_text())
    costs = {(r["cost"], r["strength"]) for r in results["cost_sweep"]}
    assert costs == {("none", 0.0), ("distance", 1e-3), ("L1", 1e-3)}
    for row in results["cost_sweep"]:
        assert {"test_acc", "modularity", "clustering", "wiring_efficiency", "mean_length"} <= set(
            row
        )
        assert 0.0 <= row["test_acc"] <= 1.0
    assert set(results["pruning"]) == {"spatial-d2", "dist-1e-03", "l1-1e-03"}
    spec = results["specialisation"]["spatial-d2"]
    assert [h["epoch"] for h in spec] == [0, 1]
    assert all(-1.0 <= h["r2"] <= 1.0 and h["r2_null_std"] >= 0 for h in spec)
    assert "free" not in results["specialisation"]  # no positions to regress on
    assert set(results["delays"]) == {"spatial-d2", "free"}
    ablation = {r["run"]: r for r in results["ablation"]}
    assert set(ablation) == {
        "none",
        "free",
        "fixed-d2",
        "spatial-d1",
        "spatial-d2",
        "spatial-d3",
        "spatial-d4",
    }
    for name, row in ablation.items():
        assert row["trainable_parameters"] == _params(name, HIDDEN)
        assert row["timing_parameters"] == _timing(name, HIDDEN)
    assert {"torch", "spikingjelly", "date"} <= set(results["environment"])
    table = (quick / "results.md").read_text()
    for title in ("Wiring cost sweep", "Pruning `spatial-d2`", "Specialisation", "Ablation"):
        assert title in table
    assert f"| free per-synapse delays | {_params('free', HIDDEN)} | {HIDDEN * HIDDEN} |" in table
    for figure in FIGURES:
        data = (quick / f"{figure}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_report_only_rebuilds_from_the_runs(bench, quick):
    (quick / "results.md").unlink()
    assert bench.main(["--report-only", "--out", str(quick)]) == 0
    assert "Wiring cost sweep" in (quick / "results.md").read_text()


def test_unknown_run_name_is_refused(bench, tmp_path):
    with pytest.raises(SystemExit, match="unknown runs"):
        bench.main(["--quick", "--only", "nope", "--out", str(tmp_path)])
