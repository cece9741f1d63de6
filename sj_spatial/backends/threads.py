"""How many threads the CPU kernels use: the CPUs this process may run on, and how many
of them other processes leave free.

A process pinned to some cores (``taskset``, a batch scheduler's affinity mask) or given a
CPU quota by its cgroup (a container, a shared cluster node) may run fewer threads at once
than the machine has cores; on a machine where other processes are busy, fewer still.
More threads than that wait on each other at every synchronisation point (a parallel
region per time step in the fused recurrence, and in torch's own operators), so that
two threads beside one busy process ran the main job at 2.4x its idle time. The kernels
size numba's pool as ``min(torch's intra-op threads, usable CPUs)``;
:func:`sj_spatial.set_num_threads` sizes torch's pool too, and the main job follows the
load with :func:`load_aware_threads` (``--threads auto``).
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import threading
import time
from pathlib import Path

import torch

from ._numba import numba

#: Where cgroup v2 and v1 keep the CPU quota of the process's cgroup.
CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota
    (rounded down, at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


@functools.cache
def cgroup_cpu_quota() -> float | None:
    """The CPU quota (CPUs' worth of time per period) of the cgroups this process is in,
    the smallest along the hierarchy, or None when there is none (or no cgroup fs)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: one unified hierarchy
            quotas += _quotas(CGROUP_ROOT, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            quotas += _quotas(CGROUP_ROOT / controllers, path, _v1_quota)
    return min(quotas, default=None)


def _quotas(mount: Path, path: str, read) -> list[float]:
    """The quotas ``read`` finds in the cgroup at ``path`` under ``mount`` and its parents."""
    found = []
    folder = mount / path.lstrip("/")
    for level in (folder, *folder.parents):
        if level == mount.parent:
            break
        quota = read(level)
        if quota is not None:
            found.append(quota)
    return found


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def thread_count() -> int:
    """Threads a parallel CPU kernel runs on: torch's intra-op count, at most the usable
    CPUs and numba's maximum."""
    limit = numba.config.NUMBA_NUM_THREADS if numba is not None else 1
    return max(1, min(torch.get_num_threads(), usable_cpus(), limit))


#: numba's thread count as last set, per calling thread (numba keeps one per thread).
_threads_set: dict[int, int] = {}


def use_threads(threads: int) -> None:
    """Size numba's pool for the calling thread, calling numba only when that changed
    (asking numba costs more than a dict lookup)."""
    caller = threading.get_ident()
    if _threads_set.get(caller) != threads:
        numba.set_num_threads(threads)
        _threads_set[caller] = threads


def other_runnable(samples: int = 5, gap_s: float = 0.002) -> int:
    """How many threads of other processes are ready to run now: Linux's count of
    runnable threads (``/proc/stat``'s ``procs_running``) less this process's own running
    ones, the median of ``samples`` readings ``gap_s`` apart; 0 where ``/proc`` is not."""
    readings = []
    for k in range(samples):
        if k:
            time.sleep(gap_s)
        try:
            running = _procs_running() - _own_running()
        except (OSError, ValueError):
            return 0
        readings.append(max(0, running))
    return int(statistics.median_low(readings))


def _procs_running() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("procs_running "):
            return int(line.split()[1])
    raise ValueError("no procs_running in /proc/stat")


def _own_running() -> int:
    """Threads of this process in state R (running or ready)."""
    count = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # a thread that ended meanwhile
            continue
        count += text[text.rindex(")") + 2] == "R"
    return count


def load_aware_threads(limit: int | None = None) -> int:
    """Threads worth running now: the CPUs this process may use less those that other
    processes keep busy, at least 1 and at most ``limit``. Threads beyond that would wait
    on each other at every synchronisation point while the others hold their CPUs, so
    that more threads would be slower than one (benchmarks/RESULTS.md, "A busy
    machine")."""
    threads = max(1, usable_cpus() - other_runnable())
    return threads if limit is None else max(1, min(threads, limit))


def set_num_threads(threads: int | None = None) -> int:
    """Size torch's intra-op pool and the CPU kernels' numba pool: ``threads``, or by
    default the CPUs this process may use (:func:`usable_cpus`); returns the count."""
    if threads is None:
        threads = usable_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be an int or None, got {type(threads).__name__}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if numba is not None:  # first: launching numba's pool can reset OpenMP's thread count
        use_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    return threads
