"""Training-step time of the paper's recurrent model with and without position delays.

Model: spikes ``[T, N, 700]`` -> ``nn.Linear(700, 128)`` -> 128 recurrent LIF neurons
(``--cell lif``: ``neuron.LIFNode(tau=20.0)``; ``--cell paper``: the cell of
``sj_spatial.models.recurrent_shd_model`` at dt = 1 ms, an exponential synapse of 5 steps
before ``LIFNode(tau=20, decay_input=False)``) -> ``nn.Linear(128, 20)`` readout summed
over time -> cross-entropy. One training step = forward + backward. Methods:

- ``plain``: the same model without delays, the loop ``s[t] = lif(x[t] + s[t-1] W^T + b)``.
- ``sj-recurrent``: the same with spikingjelly's ``layer.LinearRecurrentContainer``.
- ``spatial-cpu`` / ``spatial-dense`` / ``spatial-cupy``: the recurrent layer is a
  ``SpatialRecurrentContainer`` (numba CPU kernels with the fused LIF loop, dense
  reference, CuPy backend with its fused loop).
- ``spatial-cpu-loop``: ``spatial-cpu`` with the step-by-step loop (one numba call per
  time step) instead of the fused one.

Writes ``recurrent.json``, ``recurrent.md`` and ``recurrent_time_vs_max_delay.png`` into
``--out``. See benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_layers import Skip, machine_info, make_parser, measure, plot, resolve, spikes, write
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from sj_spatial import SpatialRecurrentContainer, backends
from sj_spatial.models import ExponentialSynapse

METHODS = (
    "plain",
    "sj-recurrent",
    "spatial-cpu",
    "spatial-cpu-loop",
    "spatial-dense",
    "spatial-cupy",
)

#: (T, batch, max_delay, repeats); the paper's T=1000, batch 256 is the GPU default.
DEFAULTS = {
    "cpu": ([100], [32], [25, 250], 3),
    "cuda": ([1000], [256], [25, 250], 3),
    "quick": ([20], [4], [5, 25], 2),
}


CELLS = ("lif", "paper")


def make_cell(kind: str) -> nn.Module:
    """The recurrent population's per-step module (see the module docstring)."""
    if kind == "lif":
        return neuron.LIFNode(tau=20.0, detach_reset=True, step_mode="s")
    lif = neuron.LIFNode(
        tau=20.0, decay_input=False, surrogate_function=surrogate.ATan(), detach_reset=True
    )
    return nn.Sequential(ExponentialSynapse(5.0), lif)


class PlainRecurrent(nn.Module):
    """``s[t] = cell(x[t] + s[t-1] W^T + b)``: the recurrent layer without delays."""

    def __init__(self, n: int, cell: str):
        super().__init__()
        self.fc = nn.Linear(n, n)
        self.lif = make_cell(cell)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.zeros_like(x[0])
        out = []
        for x_t in x:
            s = self.lif(x_t + self.fc(s))
            out.append(s)
        return torch.stack(out)


def model_step(
    x: torch.Tensor, hidden: int, max_delay: int, method: str, cell: str = "lif"
) -> Callable[[], None]:
    """One training step (fwd + bwd) of the model with the recurrent layer of ``method``."""
    device = x.device
    if method == "plain":
        recurrent = PlainRecurrent(hidden, cell)
    elif method == "sj-recurrent":
        recurrent = layer.LinearRecurrentContainer(make_cell(cell), hidden, hidden, step_mode="m")
    else:
        backend = "cupy" if method == "spatial-cupy" else "torch"
        if method == "spatial-cupy" and device.type != "cuda":
            raise Skip("CUDA only")
        if method in ("spatial-cpu", "spatial-cpu-loop"):
            if device.type != "cpu":
                raise Skip("CPU only")
            if backends.numba_missing():
                raise Skip(backends.numba_missing())
        # Wrapped in a Sequential the same cell is not one the fused kernels recognise:
        # spatial-cpu-loop is the step-by-step loop of the same model.
        sub_module = make_cell(cell)
        if method == "spatial-cpu-loop":
            sub_module = nn.Sequential(sub_module)
        try:
            recurrent = SpatialRecurrentContainer(
                sub_module,
                hidden,
                step_mode="m",
                max_delay=max_delay,
                delay_scale=max(max_delay, 1) / 2,
                backend=backend,
            )
        except ValueError as exc:
            raise Skip(str(exc)) from exc
        recurrent.cpu_kernel = "numba" if method.startswith("spatial-cpu") else "dense"
    model = nn.Sequential(nn.Linear(x.shape[-1], hidden), recurrent, nn.Linear(hidden, 20))
    model.to(device)
    labels = torch.randint(0, 20, (x.shape[1],), generator=torch.Generator().manual_seed(0))
    labels = labels.to(device)

    def step() -> None:
        functional.reset_net(model)
        model.zero_grad(set_to_none=True)
        logits = model(x).sum(0)
        F.cross_entropy(logits, labels).backward()

    return step


def main(argv=None) -> None:
    """Run the recurrent benchmark and write recurrent.json / .md / _time_vs_max_delay.png."""
    parser = make_parser(__doc__)
    parser.add_argument("--in-features", type=int, default=700)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--cell", choices=CELLS, default="lif", help="the recurrent neuron")
    args = parser.parse_args(argv)
    device_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t, batch, delays, repeats = DEFAULTS["quick" if args.quick else device_name]
    args.T, args.batch = args.T or t, args.batch or batch
    args.max_delay, args.repeats = args.max_delay or delays, args.repeats or repeats
    args = resolve(args)
    device = torch.device(args.device)
    methods = [m for m in METHODS if args.only is None or m in args.only]
    info = machine_info(device)
    settings = {
        "in_features": args.in_features,
        "hidden": args.hidden,
        "classes": 20,
        "density": args.density,
        "repeats": args.repeats,
        "budget_s": args.budget,
        "dtype": "float32",
        "neuron": {
            "lif": "LIFNode(tau=20, detach_reset=True)",
            "paper": "ExponentialSynapse(5) + LIFNode(tau=20, decay_input=False, ATan)",
        }[args.cell],
    }
    rows = []
    for t in args.T:
        for batch in args.batch:
            x = spikes((t, batch, args.in_features), args.density, device, False)
            plain = None
            for max_delay in args.max_delay:
                steps, notes = {}, {}
                for method in methods:
                    if method == "plain" and plain is not None:
                        continue  # independent of max_delay: timed once
                    try:
                        steps[method] = model_step(x, args.hidden, max_delay, method, args.cell)
                    except Skip as exc:
                        notes[method] = str(exc)
                results = measure(steps, device, args.repeats, args.budget)
                if "time_ms" in results.get("plain", {}):
                    plain = results["plain"]
                for method in methods:
                    res = plain if method == "plain" and plain else results.get(method)
                    res = res or {"skipped": notes.get(method, "not run")}
                    row = {"T": t, "batch": batch, "max_delay": max_delay, "method": method}
                    row.update(res)
                    if plain and "time_ms" in res:
                        row["x_plain"] = res["time_ms"] / plain["time_ms"]
                    rows.append(row)
                    shown = f"{res['time_ms']:.1f} ms" if "time_ms" in res else res["skipped"]
                    print(
                        f"T={t} batch={batch} max_delay={max_delay} {method}: {shown}", flush=True
                    )
    title = f"Recurrent model (700 -> 128 {args.cell} -> 20): training step"
    name = "recurrent" if args.cell == "lif" else f"recurrent_{args.cell}"
    write(args.out, name, info, settings, rows, title, "plain")
    plot(rows, args.out / f"{name}_time_vs_max_delay.png", title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
