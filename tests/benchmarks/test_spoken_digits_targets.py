"""benchmarks/spoken_digits_targets.py: Welch's interval and the targets' verdicts, on
records written here in the comparison's and the job's formats."""

from __future__ import annotations

import pytest
from scipy import stats


@pytest.fixture(scope="module")
def tg(benchmark_script):
    return benchmark_script("spoken_digits_targets")


@pytest.fixture(scope="module")
def records(benchmark_script):
    return benchmark_script("records")


def test_the_difference_interval_is_welchs(tg):
    a, b = [89.0, 90.5, 90.2, 91.0], [80.5, 84.8, 85.3]
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert tg.difference_interval(a, b) == pytest.approx(tuple(expected), rel=1e-9)
    assert tg.difference_interval(a, [85.0]) is None
    assert tg.difference_interval([2.0, 2.0], [1.0, 1.0]) == (1.0, 1.0)


def test_a_verdict_needs_the_whole_interval_for_met(tg):
    assert tg.verdict(2.0, (0.5, 3.5), 0.0) == "met"
    assert tg.verdict(2.0, (-0.5, 4.5), 0.0) == "met on the means only"
    assert tg.verdict(2.0, None, 0.0) == "met on the means only"
    assert tg.verdict(-1.0, (-3.0, 1.0), 0.0) == "not met"


def _compare(records, folder, row, training, seed, acc):
    record = {"row": row, "training": training, "seed": seed, "test_acc": acc}
    slug = training.replace(", ", "-").replace(" ", "")
    records.append_record(
        folder, {"script": "spoken_digits_compare.py", "run": f"{row}-{slug}-s{seed}", **record}
    )


def _job(records, folder, name, epochs, acc, job="default-recipe"):
    summary = {"epochs": epochs, "test_accuracy": acc}
    records.append_record(folder / job, {"script": "sj-spatial train", "run": name, **summary})


def test_targets_reads_the_60_epoch_runs_and_judges_both_targets(tg, records, tmp_path):
    for seed, acc in enumerate([0.90, 0.91, 0.89]):
        _compare(records, tmp_path, "gru", "lr 0.003, augmented, 60 epochs", seed, acc)
    _compare(records, tmp_path, "gru", "lr 0.003, augmented, 20 epochs", 0, 0.10)  # other training
    for seed, acc in enumerate([0.80, 0.84, 0.82]):
        _compare(records, tmp_path, "rec-none", "lr 0.01, augmented, 60 epochs", seed, acc)
    for seed, acc in enumerate([0.88, 0.89, 0.87]):
        _job(records, tmp_path, f"seed{seed}", 60, acc)
    _job(records, tmp_path, "dim3-seed0", 60, 0.10)  # not the defaults
    _job(records, tmp_path, "seed7", 20, 0.10)  # not 60 epochs

    text = tg.targets(tmp_path)
    assert (tmp_path / "targets.md").read_text() == text
    rows = {line.split(" | ")[0]: line for line in text.splitlines()}
    assert "| 3 (0, 1, 2) | 90.0 ± 1.0 |" in rows["| GRU 128, non-spiking"]
    positions = rows["| recurrent LIF 128, learned 2-D positions (the defaults)"]
    assert "| 3 (0, 1, 2) | 88.0 ± 1.0 |" in positions and "88.0 / 89.0 / 87.0" in positions
    assert "| 3 (0, 1, 2) | 82.0 ± 2.0 |" in rows["| recurrent LIF 128, no delays"]

    gru_gap = tg.difference_interval([90.0, 91.0, 89.0], [88.0, 89.0, 87.0])
    above = tg.difference_interval([88.0, 89.0, 87.0], [80.0, 84.0, 82.0])
    assert gru_gap[1] > 3 > 2 and above[0] > 0  # a gap of 2 not shown; 6 above, shown
    assert (
        f"| GRU - positions = 2.0 | {gru_gap[0]:.2f} to {gru_gap[1]:.2f} | "
        "met on the means only |" in text
    )
    assert f"| positions - no delays = 6.0 | {above[0]:.2f} to {above[1]:.2f} | met |" in text
    assert tg.targets(tmp_path, gap=8.0).splitlines()[-2].endswith("| met |")  # 4.3 < 8

    # the runs of other options, judged against the same GRU and no-delay runs
    for seed, acc in enumerate([0.80, 0.81]):
        _job(records, tmp_path, f"seed{seed}", 60, acc, job="max-delay25-scale3")
    other = tg.targets(tmp_path, job="max-delay25-scale3")
    assert (tmp_path / "targets-max-delay25-scale3.md").read_text() == other
    assert "| recurrent LIF 128, learned 2-D positions (max-delay25-scale3/) | 2 (0, 1) |" in other
    assert "| GRU - positions = 9.5 |" in other and "not met |" in other
    assert tg.targets(tmp_path, gap=8.0) == (tmp_path / "targets.md").read_text()
    _job(records, tmp_path, "seed0", 60, 0.85, job="more/runs")
    assert "(more/runs/) | 1 (0) | 85.0 |" in tg.targets(tmp_path, job="more/runs")
    assert (tmp_path / "targets-more-runs.md").is_file()


def test_a_missing_folder_is_one_line(tg, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        tg.main([str(tmp_path / "nowhere")])
    assert stop.value.code == 2
    assert "results: " in capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(SystemExit) as stop:
        tg.main([str(tmp_path), "--job", "nothing"])
    assert stop.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(f"--job: {tmp_path / 'nothing'} is not a folder")
    )
