"""Where and how a CPU delayed matmul (:mod:`.cpu`) runs: the event kernels or the gather,
the thread pool or the calling thread, and the block size.

Every choice is an explicit argument with ``'auto'`` (or None) as its default: the callers
(the layers' ``cpu_path``, tests, benchmarks) pass ``path='gather'``/``'events'`` or
``parallel=True``/``False`` to force one, and nothing patches this module.
"""

from __future__ import annotations

import torch

from . import CPU_PATHS, check_cpu_path, cpu_events
from .threads import thread_count, use_threads

#: Most output (forward, weight gradient) or input (input gradient) neurons per block:
#: the rows of one block stay in cache while the other side's rows stream past them.
BLOCK = 16
#: Below this many multiply-adds a call runs on the calling thread: waking the thread
#: pool would cost more than it saves (the recurrent layers call once per time step).
PARALLEL_MIN_WORK = 1 << 20
#: The values of ``path``: the backend's rule, or one kind of kernel for every call.
PATHS = CPU_PATHS


def check_path(path: str) -> str:
    """Return ``path`` if it is one of :data:`PATHS`, else raise a ValueError naming it."""
    return check_cpu_path(path, "path")


def schedule(work: int, rows: int, parallel: bool | None = None) -> tuple[bool, int]:
    """Whether a call of ``work`` multiply-adds over ``rows`` rows runs on the thread pool,
    and its block size: at most ``BLOCK`` rows, and at least four blocks per thread when
    there are enough. ``parallel`` None decides: the pool when more than one thread runs
    (:func:`.threads.thread_count`) and the work reaches :data:`PARALLEL_MIN_WORK`;
    True or False forces it (True still runs on the calling thread with one thread)."""
    threads = thread_count()
    wanted = work >= PARALLEL_MIN_WORK if parallel is None else parallel
    if threads < 2 or not wanted:
        return False, BLOCK
    use_threads(threads)
    return True, max(1, min(BLOCK, rows // (4 * threads)))


def rows_read(t_in: int, t_out: int, window: int) -> tuple[int, int]:
    """First input step the outputs read (>= 0) and the row offset ``o0`` of tap 0."""
    first = max(0, t_in - t_out - (window - 1))
    # Output q = 0 is step t_in - t_out; tap 0 reads that step, at row step t_in - t_out - first.
    return first, t_in - t_out - first


def events_to_run(
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    window: int,
    t_out: int,
    dtype: torch.dtype,
    path: str = "auto",
) -> cpu_events.Events | None:
    """The events of the input steps the outputs read when the call runs the event kernels,
    else None (the gather). ``path='events'`` always, ``'gather'`` never; ``'auto'`` when
    they do less work than the gather: the gather's work is the output values each synapse
    reaches with data (taps past the last output reach none), the events' one update per
    nonzero input and output, :data:`~.cpu_events.EVENT_COST` times dearer; calls below
    :data:`~.cpu_events.MIN_WORK` stay on the gather. ``dtype``: the compute dtype."""
    if check_path(path) == "gather":
        return None
    t_in, n, _ = x.shape
    first, o0 = rows_read(t_in, t_out, window)
    if path == "auto":
        if n * weight.numel() * t_out < cpu_events.MIN_WORK:
            return None
        gather = n * int(torch.clamp(t_out + o0 - taps.detach(), 0, t_out).sum())
        if gather < cpu_events.MIN_WORK:
            return None
    rows = x.detach()[first:].to(dtype)  # float16/bfloat16 inputs: numpy has no bfloat16
    counts = cpu_events.count(rows)
    if path == "auto" and cpu_events.EVENT_COST * int(counts.sum()) * weight.shape[0] >= gather:
        return None
    return cpu_events.events(rows, counts, o0, dtype)


def event_tasks(ev: cpu_events.Events, n_out: int, parallel: bool | None = None) -> int:
    """Tasks for an event kernel: two per thread of the pool, or 1 (the calling thread) for
    a small call. An event and an output cost about 4 multiply-adds of the gather."""
    on_pool, _ = schedule(len(ev.values) * n_out * 4, n_out, parallel)
    return 2 * thread_count() if on_pool else 1
