"""benchmarks/bench_layers.py's record of the code a benchmark ran: commit and changed code."""

from __future__ import annotations

import shutil
import subprocess

import pytest


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dirty_means_changed_code_not_results_or_documents(benchmark_script, tmp_path):
    bench = benchmark_script("bench_layers")

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    files = ["sj_spatial.py", "benchmarks/results/summary.md", "README.md"]
    for name in files:
        (tmp_path / name).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    clean = bench._checkout(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False and clean["changed"] == []
    for name in files[1:]:  # a run rewrites its summary; documents are not code
        (tmp_path / name).write_text("2\n")
    (tmp_path / "new.py").write_text("untracked\n")
    assert bench._checkout(tmp_path)["dirty"] is False
    (tmp_path / "sj_spatial.py").write_text("2\n")
    record = bench._checkout(tmp_path)
    assert record["dirty"] is True and record["changed"] == ["sj_spatial.py"]
    assert record["commit"] == clean["commit"]
