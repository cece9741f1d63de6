"""benchmarks/structure.py: the structure and ablation runs write what the report promises."""

from __future__ import annotations

import json
import math

import numpy as np
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
    records = {r["config"]["name"]: r for r in bench.read_records(quick)}
    assert sorted(records) == sorted(RUNS)
    assert {r["run"] for r in records.values()} == {f"{name}-s0" for name in RUNS}
    assert {r["script"] for r in records.values()} == {"structure.py"}
    assert sorted(p.stem for p in (quick / "runs").glob("*.pt")) == sorted(f"{n}-s0" for n in RUNS)
    for name in RUNS:
        record = records[name]
        assert record["trainable_parameters"] == _params(name, HIDDEN), name
        assert record["settings"]["hidden"] == HIDDEN
        assert record["settings"]["command"].startswith("python benchmarks/structure.py --quick")
        assert [h["epoch"] for h in record["history"]] == [0, 1]
        assert 0.0 <= record["test_acc"] <= 1.0
        assert 0.0 <= record["history"][-1]["train_acc"] <= 1.0


def test_pruning_removes_the_requested_fractions_and_reports_accuracy(bench, quick):
    (record,) = bench.read_records(quick, run="spatial-d2-s0")
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
    assert "pruning" not in bench.read_records(quick, run="free-s0")[0]


def test_delay_histogram_weights_sum_to_the_recurrent_weight(bench, quick):
    for name in ("spatial-d2", "free"):
        (record,) = bench.read_records(quick, run=f"{name}-s0")
        state = torch.load(quick / "runs" / f"{name}-s0.pt", weights_only=True)
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


def test_summarize_gives_the_mean_and_its_student_t_interval(bench):
    rows = [{"a": 1.0, "b": 5.0}, {"a": 2.0, "b": math.nan}, {"a": 3.0}]
    out = bench.summarize(rows, ("a", "b"))
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 dof) * sd 1 / sqrt(3)
    assert out["a"] == 2.0
    assert out["a_ci"] == pytest.approx((2.0 - half, 2.0 + half))
    assert out["b"] == 5.0 and out["b_ci"] is None  # NaN and missing values are left out


def test_distance_correlation_is_negative_when_neighbours_share_inputs(bench):
    rng = np.random.default_rng(0)
    n, channels = 60, 100
    positions = rng.uniform(0, 4, size=(n, 2))
    centres = positions[:, 0] / 4 * channels  # tuned to a channel that follows x
    weight = np.exp(-(((np.arange(channels) - centres[:, None]) / 8) ** 2))
    similarity = bench.input_similarity(weight)
    i, j = np.triu_indices(n, k=1)
    norms = np.linalg.norm(weight, axis=1)
    cosine = (weight[i] * weight[j]).sum(1) / (norms[i] * norms[j])
    np.testing.assert_allclose(similarity[i, j], cosine, rtol=1e-9)  # matmul vs sum: rounding
    r = bench.distance_correlation(similarity, positions)
    expected = np.corrcoef(np.linalg.norm(positions[i] - positions[j], axis=1), cosine)[0, 1]
    assert r == pytest.approx(expected, rel=1e-9)
    shuffled = [
        bench.distance_correlation(similarity, rng.permutation(positions)) for _ in range(20)
    ]
    assert r < -0.2 and r < min(shuffled)  # y is noise here, so r is well away from -1
    assert abs(np.mean(shuffled)) < 0.1


def test_data_root_reads_those_files_and_augments_by_default(bench):
    from sj_spatial.data import AugmentedSHD, builtin_shd_root

    root = str(builtin_shd_root())
    parse = bench.make_parser().parse_args
    train, test = bench.datasets(parse(["--data-root", root, "--limit", "16"]))
    assert isinstance(train, AugmentedSHD) and len(test) == 16
    train, _ = bench.datasets(parse(["--data-root", root, "--limit", "16", "--no-augment"]))
    assert not isinstance(train, AugmentedSHD) and len(train) == 16
    train, _ = bench.datasets(parse(["--limit", "16"]))  # built-in data: not augmented
    assert not isinstance(train, AugmentedSHD)


@pytest.fixture(scope="module")
def two_seeds(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("two-seeds")
    for seed in (0, 1):
        argv = ["--quick", "--out", str(out), "--seed", str(seed), "--no-report"]
        assert bench.main([*argv, "--only", "spatial-d2", "dist-1e-03", "l1-1e-03"]) == 0
    assert bench.main(["--report-only", "--out", str(out)]) == 0
    return out


def test_each_seed_is_a_run_and_the_report_gives_intervals_over_them(bench, two_seeds):
    records = bench.read_records(two_seeds)
    assert sorted(r["run"] for r in records) == sorted(
        f"{n}-s{s}" for n in ("spatial-d2", "dist-1e-03", "l1-1e-03") for s in (0, 1)
    )
    results = json.loads((two_seeds / "results.json").read_text())
    assert results["seeds"] == [0, 1]
    by_name = {
        n: [r for r in records if r["config"]["name"] == n] for n in ("dist-1e-03", "l1-1e-03")
    }
    for row in results["cost_sweep"]:
        runs = [r for r in records if r["config"]["name"] == row["run"]]
        accuracies = [r["test_acc"] for r in runs]
        assert row["seeds"] == [0, 1]
        assert row["test_acc"] == pytest.approx(np.mean(accuracies))
        modularity = [r["structure"]["modularity"] for r in runs]
        assert row["modularity"] == pytest.approx(np.mean(modularity))
        assert row["modularity_ci"] == pytest.approx(bench.mean_interval(modularity))
    (matched,) = results["matched"]
    assert (matched["distance"], matched["l1"]) == ("dist-1e-03", "l1-1e-03")
    dist_q = [r["structure"]["modularity"] for r in by_name["dist-1e-03"]]
    l1_q = [r["structure"]["modularity"] for r in by_name["l1-1e-03"]]
    assert matched["modularity"] == pytest.approx(np.mean(dist_q) - np.mean(l1_q))
    assert matched["modularity_ci"] == pytest.approx(bench.difference_interval(dist_q, l1_q))
    diff = results["pruning"]["dist-1e-03"]["distance - magnitude"]
    for i, point in enumerate(diff):
        paired = [
            r["pruning"]["distance"][i]["test_acc"] - r["pruning"]["magnitude"][i]["test_acc"]
            for r in by_name["dist-1e-03"]
        ]
        assert point["test_acc"] == pytest.approx(np.mean(paired))
    spec = results["specialisation"]["spatial-d2"]
    assert [h["epoch"] for h in spec] == [0, 1]
    for h in spec:
        assert {"r2_sd_above", "mantel", "mantel_null", "r2_sd_above_ci"} <= set(h)
    table = (two_seeds / "results.md").read_text()
    assert table.startswith("Seeds: 0, 1;")
    assert "Distance cost minus L1 at matched accuracy" in table
    assert "| distance - magnitude | 0.2 |" in table


def test_tables_for_results_md_show_means_and_intervals(bench, two_seeds):
    results = bench.report(two_seeds)
    sweep = bench.sweep_table(results).splitlines()
    assert len(sweep) == 2 + 3  # header, rule, no cost / distance / L1
    base = next(r for r in results["cost_sweep"] if r["cost"] == "none")
    lo, hi = base["test_acc_ci"]
    joint = " to " if lo < 0 else "-"
    assert sweep[2].startswith(f"| none | 0 | {base['test_acc']:.3f} ({lo:.3f}{joint}{hi:.3f}) |")
    (matched,) = bench.matched_table(results).splitlines()[2:]
    m = results["matched"][0]
    assert matched.startswith(f"| 0.001 | 0.001 | {m['test_acc']:+.3f} (")
    pruning = bench.pruning_table(results, ["dist-1e-03"]).splitlines()
    assert [row.split(" | ")[1] for row in pruning[2:]] == ["length", "magnitude"]
    diff = results["pruning"]["dist-1e-03"]["distance - magnitude"][1]
    assert pruning[2].endswith(
        f" | {diff['test_acc']:+.3f} ({diff['test_acc_ci'][0]:.3f} to "
        f"{diff['test_acc_ci'][1]:.3f}) |"
    )
    spec = bench.specialisation_table(results, epochs=(0,)).splitlines()
    assert len(spec) == 2 + 3 and spec[2].startswith("| no cost | ")


def test_a_data_root_without_shd_files_is_one_line(bench, tmp_path):
    with pytest.raises(SystemExit, match=r"^--data-root: .*shd_train") as exc:
        bench.main(["--quick", "--data-root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "\n" not in str(exc.value)
