"""benchmarks/deployment.py: on a tiny finished run, the exported graph scores what the
run's model scores, and the tables hold every measurement."""

import importlib.util
import json

import pytest

from sj_spatial import cli
from sj_spatial.data import make_synthetic_shd
from sj_spatial.nir_exchange import NIRUnavailableError

HAS_SJ_NIR = importlib.util.find_spec("spikingjelly.activation_based.nir_exchange") is not None


def test_the_benchmark_measures_a_run_and_the_sizes(benchmark_script, tmp_path, monkeypatch):
    bench = benchmark_script("deployment")
    out = tmp_path / "out"
    if not HAS_SJ_NIR:  # spikingjelly 0.0.0.0.14: the export it measures says what it needs
        with pytest.raises(NIRUnavailableError, match=r"needs spikingjelly >= 2\.0\.0"):
            bench.main(["--hidden", "8", "--repeats", "1", "--out", str(out)])
        return
    monkeypatch.setenv("SJ_SPATIAL_CACHE", str(tmp_path / "cache"))
    make_synthetic_shd(tmp_path / "shd", num_train=32, num_test=16, seed=1)
    options = ["--hidden", "10", "--dt", "0.01", "--duration", "0.3", "--batch-size", "16"]
    options += ["--max-delay", "4", "--epochs", "1", "--quiet", "--no-augment"]
    logdir = tmp_path / "run"
    cli.main(["train", "--data-root", str(tmp_path / "shd"), "--logdir", str(logdir), *options])
    bench.main(
        ["--run", f"tiny={logdir}", "--bounds", "8", "1", "--hidden", "8", "--repeats", "1"]
        + ["--out", str(out)]
    )
    record = json.loads((out / "results.json").read_text())
    run = record["runs"][0]
    assert run["test_samples"] == 16
    assert run["accuracy"]["imported_graph"] == run["accuracy"]["trained"]
    assert run["clamped_synapses_8"] == 0 and run["clamped_synapses_1"] > 0
    assert run["accuracy"]["clamped_8"] == run["accuracy"]["rounded"]
    size = record["sizes"][0]
    # input, Affine, Affine, LI, output; the subgraph's input, cell, output; a weight per
    # lag and a Delay per lag but lag 0 (the self-synapses' delay rounds down to it)
    assert size["hidden"] == 8 and size["nodes"] == 5 + 3 + 2 * size["lags"] - 1
    table = (out / "results.md").read_text()
    assert "| tiny | 16 |" in table and "| untrained, job defaults | 8 |" in table
