"""Design choices of the numba CPU kernels (sj_spatial/backends/cpu.py, cpu_events.py),
measured.

- ``transpose``: the kernel lays its inputs and outputs out as one row per neuron, a 2-D
  transpose per call. ``cpu._transpose`` (32 x 32 tiles, numba) against torch's
  ``a.t().contiguous()``, on the shapes a 700 -> 256 layer (T = 100, batch 16) and the
  recurrent layer of the paper's model (128 neurons, 27-step window, batch 32) meet.
- ``custom-op``: eager calls go through an ``autograd.Function``, compiled graphs through
  ``torch.library`` custom ops. One forward + backward of the recurrent layer's per-step
  delayed matmul (the recurrent container calls it once per time step) through each.
- ``events``: the event kernels against the gather on a 700 -> 256 layer (T = 100, batch
  16), forward + backward with the input not requiring grad, over input densities and
  max_delay; the cost of one event update in gather multiply-adds that each run implies
  (``cpu_events.EVENT_COST`` is set from it), and the path the backend picks.
- ``breakdown``: where a step of that layer goes at 5 % spikes and max_delay 25: the
  whole ``SpatialDelayLinear`` (positions -> delays -> delayed matmul, loss and backward),
  the delayed matmul alone on fixed delays, the two event kernels alone, and
  ``nn.Linear`` on the same input.

Timings are interleaved (one call of each variant per round) and the minimum and median
over rounds are reported, so that the ratio comes from one run under the same load.

    python benchmarks/kernel_choices.py [--rounds 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_layers import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from sj_spatial.backends import cpu, cpu_events, cpu_schedule  # noqa: E402

TRANSPOSE_SHAPES = {
    "layer input rows (1600 x 700)": (1600, 700),
    "layer output rows (256 x 1600)": (256, 1600),
    "recurrent rows (864 x 128)": (27 * 32, 128),
}


def interleaved(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of every variant, one call of each per round after a warm-up."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def report(title: str, times: dict[str, list[float]], base: str) -> list[str]:
    lines = [f"### {title}", "", "| variant | min (us) | median (us) | median / " + base + " |"]
    lines.append("|---|---|---|---|")
    base_median = statistics.median(times[base])
    for name, t in times.items():
        median = statistics.median(t)
        ratio = median / base_median
        lines.append(f"| {name} | {min(t) * 1e6:.1f} | {median * 1e6:.1f} | {ratio:.2f} |")
    return [*lines, ""]


def transpose_rows(rounds: int) -> list[str]:
    lines = []
    for title, shape in TRANSPOSE_SHAPES.items():
        a = torch.rand(shape)
        times = interleaved(
            {
                "torch a.t().contiguous()": lambda a=a: a.t().contiguous(),
                "cpu._transpose": lambda a=a: cpu._transpose(a),
            },
            rounds,
        )
        lines += report(f"transpose, {title}", times, "torch a.t().contiguous()")
    return lines


def custom_op(rounds: int) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    n, batch, window = 128, 32, 27
    x = (torch.rand(window, batch, n, generator=gen) < 0.05).float()
    weight = torch.randn(n, n, generator=gen).requires_grad_()
    frac = torch.rand(n, n, generator=gen).requires_grad_()
    taps = torch.randint(0, window - 1, (n, n), generator=gen)

    def function() -> None:
        y = cpu._DelayedMatmul.apply(x, weight, taps, frac, window, 1, "auto", None)
        y.sum().backward()

    def op() -> None:
        y = cpu._forward_op(x, weight, taps, frac, window, 1)[0]
        y.sum().backward()

    times = interleaved({"autograd.Function": function, "custom op": op}, rounds)
    return report("per-step delayed matmul, forward + backward", times, "autograd.Function")


EVENT_DENSITIES = (0.01, 0.02, 0.05, 0.1, 0.2)
EVENT_MAX_DELAYS = (25, 250)


def events(rounds: int) -> list[str]:
    """Event kernels vs gather, and the event cost in gather multiply-adds each implies."""
    gen = torch.Generator().manual_seed(0)
    steps, batch, n_in, n_out = 100, 16, 700, 256
    lines = [
        "### event kernels vs gather, 700 -> 256, T 100, batch 16, forward + backward",
        "",
        "| max_delay | density | gather median (ms) | events median (ms) | events / gather "
        "| implied event cost | backend picks |",
        "|---|---|---|---|---|---|---|",
    ]
    for max_delay in EVENT_MAX_DELAYS:
        window = max_delay + 2
        weight = (torch.randn(n_out, n_in, generator=gen) * 0.1).requires_grad_()
        # Delays as bench_layers.py draws them: distances of U(-1, 1)^2 positions times
        # max_delay / 2, clamped at max_delay.
        pre, post = (
            torch.rand(n_in, 2, generator=gen) * 2 - 1,
            torch.rand(n_out, 2, generator=gen) * 2 - 1,
        )
        delays = (torch.cdist(post, pre) * max_delay / 2).clamp(max=max_delay)
        taps = delays.floor().long()
        frac = (delays - taps).requires_grad_()
        reached = int(torch.clamp(steps - taps, 0, steps).sum()) * batch  # gather's work
        for density in EVENT_DENSITIES:
            x = (torch.rand(steps, batch, n_in, generator=gen) < density).float()

            def forced(path: str, args=(x, weight, taps, frac, window, steps)):
                def run() -> None:
                    cpu.delayed_matmul(*args, path=path).sum().backward()

                return run

            times = interleaved({"gather": forced("gather"), "events": forced("events")}, rounds)
            gather, event = (statistics.median(times[k]) for k in ("gather", "events"))
            updates = int((x != 0).sum()) * n_out
            implied = (event / updates) / (gather / reached)
            dtype = cpu.compute_dtype(x, weight)
            picked = cpu_schedule.events_to_run(x, weight, taps, window, steps, dtype) is not None
            lines.append(
                f"| {max_delay} | {density:.0%} | {gather * 1e3:.1f} | {event * 1e3:.1f} "
                f"| {event / gather:.2f} | {implied:.1f} | {'events' if picked else 'gather'} |"
            )
    return [*lines, ""]


def breakdown(rounds: int) -> list[str]:
    """A step of SpatialDelayLinear(700, 256) at T 100, batch 16, 5 % spikes, max_delay 25,
    taken apart: layer, delayed matmul alone, event kernels alone, and nn.Linear."""
    from sj_spatial import SpatialDelayLinear

    torch.manual_seed(0)
    steps, batch, n_in, n_out, max_delay = 100, 16, 700, 256, 25
    x = (torch.rand(steps, batch, n_in) < 0.05).float()
    layer = SpatialDelayLinear(
        n_in, n_out, step_mode="m", max_delay=max_delay, delay_scale=max_delay / 2
    )
    linear = torch.nn.Linear(n_in, n_out)
    window = max_delay + 2
    with torch.no_grad():
        delays = layer.delays().clamp(max=max_delay)
    taps = delays.floor().long()
    frac = (delays - taps).requires_grad_()
    weight = layer.weight.detach().clone().requires_grad_()
    first, o0 = cpu_schedule.rows_read(steps, steps, window)
    ev = cpu_events.events(x, cpu_events.count(x), o0, torch.float32)
    fan = cpu_events.fanout(weight, taps, frac, torch.float32)
    grad_y = torch.randn(steps, batch, n_out)
    tasks = 2 * torch.get_num_threads()

    def whole_layer() -> None:
        layer.zero_grad()
        layer.reset()
        layer(x).sum().backward()

    def matmul() -> None:
        cpu.delayed_matmul(x, weight, taps, frac, window, steps).sum().backward()

    def kernels() -> None:
        cpu_events.forward(ev, fan, window, batch, steps, tasks)
        cpu_events.dots(ev, fan.taps, grad_y, window, tasks)

    def nn_linear() -> None:
        linear.zero_grad()
        linear(x.reshape(-1, n_in)).sum().backward()

    variants = {
        "nn.Linear": nn_linear,
        "SpatialDelayLinear": whole_layer,
        "delayed matmul alone": matmul,
        "event kernels alone": kernels,
    }
    times = interleaved(variants, rounds)
    return report(
        f"breakdown of a layer step, 5 % spikes, max_delay {max_delay} ({len(ev.values)} "
        "input spikes)",
        times,
        "nn.Linear",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    if not cpu.available():
        sys.exit("kernel_choices.py: numba is not installed")
    torch.set_num_threads(args.threads)
    print(
        f"CPU: {cpu_model()}, torch {torch.__version__}, "
        f"{args.threads} threads, {args.rounds} rounds\n"
    )
    print("\n".join(transpose_rows(args.rounds) + custom_op(args.rounds)))
    print("\n".join(events(max(3, args.rounds // 20))))
    print("\n".join(breakdown(max(5, args.rounds // 10))))


if __name__ == "__main__":
    main()
