"""benchmarks/records.py and benchmarks/summaries.py: a records file holds one run per line,
a rerun replaces its run's record, a run of the job becomes a record that gives back its
log, and every committed summary and marked table of RESULTS.md is what the records give."""

from __future__ import annotations

import json
import shutil

import pytest

from sj_spatial import cli
from sj_spatial.data import make_synthetic_shd


@pytest.fixture(scope="module")
def records(benchmark_script):
    return benchmark_script("records")


@pytest.fixture(scope="module")
def summaries(benchmark_script):
    return benchmark_script("summaries")


def test_a_rerun_replaces_its_record_and_keeps_the_order(records, tmp_path):
    records.append_record(tmp_path, {"run": "a-s0", "seed": 0, "acc": 0.5})
    records.append_record(tmp_path, {"run": "a-s1", "seed": 1, "acc": 0.6})
    records.append_record(tmp_path, {"seed": 9})  # no run name: appended, replaces none
    records.append_record(tmp_path, {"seed": 9})
    records.append_record(tmp_path, {"run": "a-s0", "seed": 0, "acc": 0.7})
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert [json.loads(line).get("run") for line in lines] == ["a-s1", None, None, "a-s0"]
    assert records.read_records(tmp_path, run="a-s0") == [{"run": "a-s0", "seed": 0, "acc": 0.7}]
    assert [r["seed"] for r in records.read_records(tmp_path, seed=9)] == [9, 9]
    assert records.read_records(tmp_path, acc=0.6, seed=0) == []
    assert records.read_records(tmp_path / "none") == []  # a folder without records


def test_floats_and_nan_come_back_to_the_last_bit(records, tmp_path):
    values = [0.1 + 0.2, 1 / 3, float("nan"), 1e-300]
    records.write_records(tmp_path, [{"run": "x", "values": values}])
    (back,) = records.read_records(tmp_path)
    assert back["values"][:2] == values[:2] and back["values"][3] == values[3]
    assert back["values"][2] != back["values"][2]  # NaN


def test_a_bad_file_or_record_names_the_file_and_line(records, tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"run": "a"}\n\n{"run": "b"}\n{"run": "a"}\n')
    with pytest.raises(
        records.RecordError, match=r"records.jsonl:4: run 'a' again \(first on line 1\)"
    ):
        records.read_records(tmp_path)
    path.write_text('{"run": "a"}\n{"run": \n')
    with pytest.raises(records.RecordError, match=r"records.jsonl:2: not JSON"):
        records.read_records(tmp_path)
    path.write_text("[1, 2]\n")
    with pytest.raises(
        records.RecordError, match=r"records.jsonl:1: a record must be a JSON object"
    ):
        records.read_records(tmp_path)
    with pytest.raises(records.RecordError, match=r"run 'x' is not JSON"):
        records.append_record(tmp_path / "new", {"run": "x", "value": object()})
    with pytest.raises(records.RecordError, match=r"'run' must be a non-empty str"):
        records.append_record(tmp_path / "new", {"run": ""})
    with pytest.raises(records.RecordError, match=r"run 'a' again"):
        records.write_records(tmp_path / "new", [{"run": "a"}, {"run": "a"}])
    assert not (tmp_path / "new").exists()  # nothing written


def test_a_job_run_becomes_a_record_that_gives_back_its_log(records, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(tmp_path / "cache"))
    make_synthetic_shd(tmp_path / "shd", num_train=32, num_test=16, seed=1)
    logdir = tmp_path / "seed3"
    options = ["--hidden", "8", "--duration", "0.2", "--batch-size", "16", "--max-delay", "4"]
    options += ["--epochs", "2", "--seed", "3", "--no-augment", "--threads", "1"]
    capsys.readouterr()
    assert (
        cli.main(
            ["train", "--data-root", str(tmp_path / "shd"), "--logdir", str(logdir)]
            + options
            + ["--quiet"]
        )
        == 0
    )
    log = capsys.readouterr().out
    (logdir / "train.log").write_text(log)
    record = records.job_record(logdir)
    summary = json.loads((logdir / "summary.json").read_text())
    assert record["script"] == "sj-spatial train" and record["run"] == "seed3"
    assert record["seed"] == 3 and record["config"]["epochs"] == "2"  # as the checkpoint keeps it
    assert {k: record[k] for k in summary} == summary
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    head, history, tail = records.parse_job_log(log)
    assert "\n".join(record["log_head"] + records.epoch_lines(history) + tail) + "\n" == log
    assert record["history"][-1]["test_acc"] == round(summary["test_accuracy"], 3)

    folder = tmp_path / "results"
    assert records.main(["add-job", str(folder), str(logdir)]) is None
    assert records.read_records(folder) == [json.loads(json.dumps(record))]
    with pytest.raises(SystemExit, match=r"records.py: .*nowhere: no summary.json"):
        records.main(["add-job", str(folder), str(tmp_path / "nowhere")])


def test_the_committed_summaries_and_tables_are_what_the_records_give(summaries):
    """Every summary under benchmarks/results and every marked table of RESULTS.md."""
    assert summaries.differences() == []
    names = [name for name, _, _ in summaries.marked_tables(summaries.RESULTS_MD.read_text())]
    assert sorted(names) == sorted(summaries.TABLES)  # each table RESULTS.md copies is marked


def test_a_changed_record_shows_in_its_summary_and_in_results_md(summaries, tmp_path):
    source = summaries.RESULTS / "yinyang-2026-12-01"
    root = tmp_path / "results"
    shutil.copytree(source, root / source.name)
    results = tmp_path / "RESULTS.md"
    results.write_text(summaries.RESULTS_MD.read_text())
    assert summaries.differences(root, results) == []

    path = root / source.name / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[0])
    record["test_acc"] = 0.0
    path.write_text(json.dumps(record) + "\n" + "".join(lines[1:]))
    found = summaries.differences(root, results)
    assert f"{root / source.name / 'summary.md'}: differs from its records" in found
    assert f"{root / source.name / 'summary.json'}: differs from its records" in found

    # the RESULTS.md tables read the repository's records: change a table's text instead
    text = results.read_text()
    results.write_text(
        text.replace("| spatial (learned positions) | 2 | 45 | 469 |", "| x | 2 | 45 | 469 |", 1)
    )
    assert any(
        "table 'yinyang-2026-12-01 summary' differs" in line
        for line in summaries.differences(root, results)
    )
    written = summaries.write(root, results)
    assert results in written and root / source.name / "summary.md" in written
    assert results.read_text() == text
    assert summaries.differences(root, results) == []


def test_markers_without_their_pair_or_name_are_errors_naming_the_line(summaries, tmp_path):
    path = tmp_path / "R.md"
    with pytest.raises(ValueError, match=r"R.md:2: unknown table 'nothing'"):
        summaries.marked_tables("x\n<!-- table: nothing -->\n<!-- /table -->\n", path)
    name = next(iter(summaries.TABLES))
    with pytest.raises(ValueError, match=rf"R.md:1: table '{name}' is not closed"):
        summaries.marked_tables(f"<!-- table: {name} -->\n|a|\n", path)
    with pytest.raises(ValueError, match=r"R.md:3: <!-- /table --> without its opening marker"):
        summaries.marked_tables("a\nb\n<!-- /table -->\n", path)
