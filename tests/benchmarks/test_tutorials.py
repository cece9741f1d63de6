"""The tutorials run end to end in quick mode and produce what they promise: comparison
tables, figures and TensorBoard events. Each runs as a script in a fresh process, in an
empty working folder, with a temporary cache."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Slow: each tutorial trains two models in a subprocess.
pytestmark = pytest.mark.slow

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"
SCRIPTS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
TIMEOUT = 180  # seconds per tutorial; quick mode takes a few on two CPU cores


@pytest.fixture(scope="session")
def shd_root(tmp_path_factory):
    """A small SHD-format data set, made once for all tutorials."""
    from sj_spatial.data import make_synthetic_shd

    root = tmp_path_factory.mktemp("shd")
    make_synthetic_shd(root, num_train=96, num_test=48, seed=1)
    return root


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def run(script: str, cwd: Path, cache: Path, *args: str, quick_env: bool = False) -> str:
    env = dict(os.environ, SJ_SPATIAL_CACHE=str(cache), MPLBACKEND="Agg")
    env.pop("SJ_SPATIAL_QUICK", None)
    if quick_env:
        env["SJ_SPATIAL_QUICK"] = "1"
    else:
        args = ("--quick", *args)
    result = subprocess.run(
        [sys.executable, "-W", "ignore", str(TUTORIALS / script), *args, "--device", "cpu"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, (
        f"{script} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    assert "quick mode" in result.stdout
    return result.stdout


def table_rows(stdout: str, header: str, exact: bool = False) -> list[list[str]]:
    """Cells of the markdown table whose header line starts with (or is) ``header``."""
    lines = stdout.splitlines()
    start = next(
        i for i, line in enumerate(lines) if (line == header if exact else line.startswith(header))
    )
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_there_are_three_tutorials():
    assert [p.name[:2] for p in SCRIPTS] == ["01", "02", "03"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_tutorial_is_a_percent_notebook(script):
    text = script.read_text()
    ast.parse(text)
    assert text.count("# %% [markdown]") >= 3
    assert re.search(r"^# %%$", text, re.M), "no code cells"
    assert "parse_known_args" in text and 'os.environ.get("SJ_SPATIAL_QUICK")' in text


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_tutorial_opens_as_notebook(script):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(script)
    kinds = {cell.cell_type for cell in notebook.cells}
    assert kinds == {"markdown", "code"}
    assert notebook.cells[0].cell_type == "markdown"


def test_01_spatialize(tmp_path, cache, shd_root):
    # Extra arguments, as Jupyter passes them, are ignored.
    out = run(
        "01_spatialize_sj_shd_model.py",
        tmp_path,
        cache,
        "--data-root",
        str(shd_root),
        "--seed",
        "4",
        "--json",
        "results.json",
        "-f",
        "kernel.json",
    )
    rows = table_rows(out, "| model | test accuracy | weights, biases, BN | position parameters")
    assert [r[0] for r in rows] == ["SpikingJelly (no delays)", "spatialized (positions)"]
    sj, spatial = rows
    assert sj[2] == spatial[2]  # same weights, biases and batch norm
    assert sj[3] == "0"
    assert spatial[3] == f"{2 * (700 + 64 + 64 + 20):,}"  # shared positions, 2-D, quick sizes
    assert spatial[4] == f"{700 * 64 + 64 * 64 + 64 * 20:,}"
    for row in rows:
        assert 0.0 <= float(row[1]) <= 1.0
    # --json: the settings and what the table shows, per model.
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"]["seed"] == 4 and saved["settings"]["hidden"] == 64
    for row, (name, result) in zip(rows, saved["models"].items(), strict=True):
        assert name == row[0] and f"{result['test_accuracy']:.3f}" == row[1]
        assert result["test_accuracy_per_epoch"] == [result["test_accuracy"]]  # one epoch
        weights = int(row[2].replace(",", "")) + int(row[3].replace(",", ""))
        assert result["trainable_parameters"] == weights


def test_02_stops_before_the_fit_with_no_fit(tmp_path, cache, shd_root):
    pytest.importorskip("DCLS")
    out = run(
        "02_dcls_to_positions.py",
        tmp_path,
        cache,
        "--data-root",
        str(shd_root),
        "--no-fit",
        "--json",
        "results.json",
    )
    rows = table_rows(out, "| model | test accuracy | weights + BN | learned delay parameters")
    assert "| layer | synapses | R² |" not in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert list(saved["models"]) == ["DCLS", "positions"] and saved["settings"]["seed"] == 0
    for row, result in zip(rows, saved["models"].values(), strict=True):
        assert f"{result['test_accuracy']:.3f}" == row[1]
        learned = int(row[2].replace(",", "")) + int(row[3].replace(",", ""))
        assert result["trainable_parameters"] == learned
        assert result["seconds_per_epoch"] > 0


def test_02_dcls_to_positions(tmp_path, cache, shd_root):
    pytest.importorskip("DCLS")
    out = run("02_dcls_to_positions.py", tmp_path, cache, "--data-root", str(shd_root))
    rows = table_rows(out, "| model | test accuracy | weights + BN | learned delay parameters")
    assert [r[0] for r in rows] == ["DCLS", "positions"]
    dcls, positions = rows
    assert dcls[2] == positions[2]
    assert dcls[3] == f"{140 * 64 + 64 * 64 + 64 * 20:,}"  # one delay per synapse
    assert positions[3] == f"{2 * (140 + 64 + 64 + 20):,}"  # two coordinates per neuron
    assert all(float(r[4]) > 0 for r in rows)  # ms per batch

    fit = table_rows(out, "| layer | synapses | R² |")
    assert [r[0] for r in fit] == ["140 -> 64", "64 -> 64", "64 -> 20"]
    for row in fit:
        # Truly spatial delays are fitted almost exactly, shuffled ones hardly at all.
        assert float(row[-1]) > 0.9
        assert float(row[-1]) > float(row[-2]) + 0.5
        assert float(row[2]) <= 1.0

    converted = table_rows(out, "| model | test accuracy |", exact=True)
    assert [r[0] for r in converted] == [
        "DCLS",
        "DCLS -> fitted positions, as is",
        "DCLS -> fitted positions, 1 more epoch",
    ]


def test_03_recurrent_topology(tmp_path, cache):
    # Built-in data from the (empty) cache, quick mode from the environment as in a notebook.
    out = run("03_recurrent_topology.py", tmp_path, cache, quick_env=True)
    results = tmp_path / "runs" / "03_recurrent_topology"
    assert f"tensorboard --logdir {Path('runs/03_recurrent_topology/tensorboard')}" in out
    assert list((results / "tensorboard").glob("events.out.tfevents.*"))
    for png in ("positions.png", "pruning.png"):
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = table_rows(out, "| metric | before training | after training |")
    names = [r[0] for r in metrics]
    assert {"modularity", "clustering", "wiring_efficiency", "specialization_r2"} <= set(names)

    pruning = table_rows(out, "| pruned by | fraction | test accuracy | modularity |")
    assert [(r[0], r[1]) for r in pruning] == [("none", "0.00")] + [
        (method, f"{f:.2f}") for method in ("distance", "magnitude") for f in (0.25, 0.5, 0.75)
    ]
    for row in pruning:
        assert 0.0 <= float(row[2]) <= 1.0
