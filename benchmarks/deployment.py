"""Deploying trained spatial models through NIR: what integer and bounded delays cost in
test accuracy, and how the graph grows with the hidden size.

For each finished run of ``sj-spatial train`` (``--run NAME=LOGDIR``): the test accuracy
as trained, with delays rounded to integers, and rounded and clamped to each bound of
``--bounds`` (time steps), the synapses each bound clamps, and the accuracy of the
exported graph itself, imported back and run one step per call (it must equal the
trained model's). For each hidden size of ``--hidden``: the paper model of the main job
(its defaults, untrained, seed 0) exported to a NIR file: nodes, nonzero weights, bytes
of the arrays and of the (gzip-compressed) file, export and import time (median of
``--repeats``). Writes ``results.json`` and ``results.md`` into
``--out``.

    python benchmarks/deployment.py --run main=/tmp/run --out benchmarks/results/deployment-DATE
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_layers import _version, machine_info

from sj_spatial.distributed import World
from sj_spatial.export_job import accuracy_of, count_nodes, deployed, evaluation_split, load_run
from sj_spatial.nir_exchange import DelayBudget, export_to_nir, import_from_nir
from sj_spatial.nir_exchange.lags import apply_budget, deployed_lags, layer_synapses
from sj_spatial.train_job.config import TrainConfig
from sj_spatial.train_job.recipe import build_model, evaluation_loader

BOUNDS = (62, 31, 15, 8, 4)
HIDDEN = (128, 256, 512)


def imported_accuracy(graph_path: Path, config: TrainConfig, test_set) -> tuple[float, int]:
    """Accuracy on ``test_set`` of the graph at ``graph_path`` imported back (one step per
    call, the readout averaged over time as the job does), and the samples."""
    module = import_from_nir(graph_path, dt=config.dt)
    correct = count = 0
    with torch.no_grad():
        for x, y in evaluation_loader(test_set, config, World()):
            readouts, state = [], None
            for x_t in x:
                readout, state = module(x_t, state)
                readouts.append(readout)
            correct += int((torch.stack(readouts).mean(0).argmax(-1) == y).sum())
            count += len(y)
    return correct / count, count


def delay_profile(model: torch.nn.Module) -> dict:
    """The hidden layer's delays: largest real delay and largest lag a graph needs."""
    layer = model[1]
    weight, delays = layer_synapses(layer)
    lags = deployed_lags(weight, delays, layer.delay_mode)
    return {"max_delay": float(delays.max()), "max_lag": int(lags.max()), "synapses": lags.numel()}


def graph_arrays(graph) -> tuple[int, int]:
    """``(bytes, nonzero weights)`` of a NIR graph's arrays, subgraphs included: what a
    target stores densely, and the synapses it places (a lag's matrix holds the synapses
    of that lag; with interpolation a synapse has two)."""
    import nir

    total = nonzero = 0
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            sub = graph_arrays(node)
            total, nonzero = total + sub[0], nonzero + sub[1]
            continue
        for value in vars(node).values():
            if isinstance(value, np.ndarray) and value.dtype != object:
                total += value.nbytes
        if isinstance(node, (nir.Linear, nir.Affine)):
            nonzero += int(np.count_nonzero(node.weight))
    return total, nonzero


def timed_export(model, example, path: Path, dt: float, repeats: int) -> dict:
    """Export ``model`` to ``path`` ``repeats`` times, import it as many: graph size and
    the median seconds of each."""
    export_s, import_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph = export_to_nir(model, example, path, dt)
        export_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        import_from_nir(path, dt=dt)
        import_s.append(time.perf_counter() - t0)
    dense, nonzero = graph_arrays(graph)
    return {
        "nodes": count_nodes(graph),
        "bytes": path.stat().st_size,
        "array_bytes": dense,
        "nonzero_weights": nonzero,
        "lags": len(graph.nodes["_1"].metadata["lags"]),
        "export_s": statistics.median(export_s),
        "import_s": statistics.median(import_s),
        "export_all_s": export_s,
        "import_all_s": import_s,
    }


def run_record(name: str, logdir: Path, bounds, repeats: int, folder: Path) -> dict:
    """Accuracy as trained / rounded / rounded and clamped, and the graph of one run."""
    model, config = load_run(logdir)
    record = {"name": name, "logdir": str(logdir), "config": {"dt": config.dt,
              "hidden": config.hidden, "max_delay": config.max_delay,
              "delay_scale": config.delay_scale, "data_root": str(config.data_root)}}  # fmt: skip
    record["delays"] = delay_profile(model)
    test_set = evaluation_split(config)
    record["accuracy"] = {"trained": accuracy_of(model, config, test_set)}
    rounded = deployed(model)
    record["accuracy"]["rounded"] = accuracy_of(rounded, config, test_set)
    for bound in bounds:
        clamped = apply_budget(rounded, DelayBudget(bound, clamp=True))
        record["accuracy"][f"clamped_{bound}"] = accuracy_of(
            deployed(model, bound), config, test_set
        )
        record[f"clamped_synapses_{bound}"] = sum(clamped.values())
    path = folder / f"{name}.nir"
    record["graph"] = timed_export(model, torch.zeros(1, 1, 700), path, config.dt, repeats)
    record["accuracy"]["imported_graph"], record["test_samples"] = imported_accuracy(
        path, config, test_set
    )
    return record


def size_record(hidden: int, repeats: int, folder: Path) -> dict:
    """The graph of the main job's model with ``hidden`` neurons, untrained (seed 0)."""
    torch.manual_seed(0)
    config = TrainConfig(hidden=hidden)
    model = build_model(config)
    graph = timed_export(
        model, torch.zeros(1, 1, 700), folder / f"h{hidden}.nir", config.dt, repeats
    )
    return {"hidden": hidden, **delay_profile(model), **graph}


def markdown(results: dict) -> str:
    """The tables of ``results``."""
    m = results["machine"]
    lines = [
        "# Deployment through NIR",
        "",
        f"{m['date']}, {m['cpu']}, {m['threads']} threads, torch {m['versions']['torch']}, "
        f"spikingjelly {m['versions']['spikingjelly']}, nir {m['versions']['nir']}, "
        f"nirtorch {m['versions']['nirtorch']}; load average {m['load_average_before'][0]:.1f} "
        f"before, {m['load_average_after'][0]:.1f} after. Command: `{results['command']}`.",
        "",
    ]
    bounds = results["bounds"]
    head = ["run", "test samples", "as trained", "rounded"] + [f"clamped {b}" for b in bounds]
    lines += ["| " + " | ".join(head + ["imported graph"]) + " |"]
    lines += ["|" + "---|" * (len(head) + 1)]
    for run in results["runs"]:
        acc = run["accuracy"]
        cells = [run["name"], str(run["test_samples"]), f"{acc['trained']:.3f}"]
        cells.append(f"{acc['rounded']:.3f}")
        for b in bounds:
            cells.append(f"{acc[f'clamped_{b}']:.3f} ({run[f'clamped_synapses_{b}']})")
        cells.append(f"{acc['imported_graph']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Clamped N: delays rounded to integers and clamped to N steps (in brackets: the "
        "recurrent synapses clamped, of hidden^2). Imported graph: the as-trained graph "
        "read back and run one step per call.",
        "",
        "| model | hidden | largest delay (steps) | lags | NIR nodes | nonzero weights "
        "| array MB | file MB | export (s) | import (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(r["name"] + " (trained)", r["config"]["hidden"], r["delays"], r["graph"])
            for r in results["runs"]]  # fmt: skip
    rows += [("untrained, job defaults", s["hidden"], s, s) for s in results["sizes"]]
    for name, hidden, delays, graph in rows:
        lines.append(
            f"| {name} | {hidden} | {delays['max_delay']:.2f} | {graph['lags']} | "
            f"{graph['nodes']} | {graph['nonzero_weights']} | {graph['array_bytes'] / 1e6:.2f} | "
            f"{graph['bytes'] / 1e6:.2f} | {graph['export_s']:.2f} | {graph['import_s']:.2f} |"
        )
    lines += [
        "",
        "Lags: weight matrices of the recurrent subgraph. Nonzero weights: matrix entries of "
        "the whole graph (a synapse with a fractional delay has two). Array MB: the graph's "
        "arrays uncompressed; file MB: nir.write's gzip file. Times: medians.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], metavar="NAME=LOGDIR")
    parser.add_argument("--bounds", type=int, nargs="+", default=list(BOUNDS))
    parser.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(torch.device("cpu"))
    machine["versions"].update(nir=_version("nir"), nirtorch=_version("nirtorch"))
    machine["load_average_before"] = os.getloadavg()  # the times share the CPU with these
    results = {"command": " ".join(["python", *sys.argv]), "machine": machine}
    results.update(bounds=args.bounds, runs=[], sizes=[])
    with tempfile.TemporaryDirectory() as scratch:
        for spec in args.run:
            name, _, logdir = spec.partition("=")
            results["runs"].append(
                run_record(name, Path(logdir), args.bounds, args.repeats, Path(scratch))
            )
            print(json.dumps(results["runs"][-1]["accuracy"]), flush=True)
        for hidden in args.hidden:
            results["sizes"].append(size_record(hidden, args.repeats, Path(scratch)))
            print(json.dumps(results["sizes"][-1]), flush=True)
    machine["load_average_after"] = os.getloadavg()
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
