"""The thread count: the CPUs this process may use (affinity, cgroup quota) and those that
other processes leave free, for torch's pool and the kernels' alike."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest
import torch

from sj_spatial import set_num_threads
from sj_spatial.backends import threads
from sj_spatial.train_job import LoadAwareThreads

linux = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc")


@pytest.fixture
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@contextlib.contextmanager
def spinners(count: int):
    """``count`` processes that keep a CPU busy each, while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)  # started and spinning
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks here")
def test_the_affinity_mask_caps_the_count():
    cpu = min(os.sched_getaffinity(0))
    code = (
        f"import os; os.sched_setaffinity(0, {{{cpu}}}); "
        "from sj_spatial import set_num_threads; import torch; "
        "print(set_num_threads(), torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_cgroup_quotas_are_read_from_the_process_cgroup_and_its_parents(tmp_path):
    v2 = tmp_path / "unified"
    (v2 / "job" / "step").mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "job" / "cpu.max").write_text("150000 100000\n")
    (v2 / "job" / "step" / "cpu.max").write_text("max 100000\n")
    assert threads._quotas(v2, "/job/step", threads._v2_quota) == [1.5]
    v1 = tmp_path / "cpu,cpuacct"
    (v1 / "docker").mkdir(parents=True)
    (v1 / "docker" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "docker" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads._quotas(v1, "/docker", threads._v1_quota) == [0.5]


def test_a_quota_below_the_cpus_caps_the_count_rounded_down(monkeypatch):
    affinity = threads.usable_cpus()
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 1.5)
    assert threads.usable_cpus() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 0.2)
    assert threads.usable_cpus() == 1  # at least one
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 1000.0)
    assert threads.usable_cpus() == affinity


@linux
def test_busy_processes_leave_fewer_threads_but_never_none(restore_threads):
    usable = threads.usable_cpus()
    with spinners(usable):
        assert threads.other_runnable() >= usable
        assert threads.load_aware_threads() == 1
        assert threads.load_aware_threads(limit=8) == 1
        follow = LoadAwareThreads(limit=usable)
        torch.set_num_threads(usable)
        follow.on_epoch_start(3)
        assert torch.get_num_threads() == 1
        assert follow.changes == ([(3, 1)] if usable > 1 else [])
    assert 1 <= threads.load_aware_threads(limit=1) == 1


def test_set_num_threads_sizes_torch_and_checks_its_argument(restore_threads):
    assert set_num_threads(1) == 1 and torch.get_num_threads() == 1
    assert set_num_threads() == threads.usable_cpus() == torch.get_num_threads()
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        set_num_threads(0)
    with pytest.raises(TypeError, match="threads must be an int or None, got float"):
        set_num_threads(2.0)
    with pytest.raises(TypeError, match="threads must be an int or None, got bool"):
        set_num_threads(True)


def test_threads_1_holds_when_numba_launches_its_pool_after_torch_ran(tmp_path):
    """The first call that sizes numba's pool launches it, and launching sets the shared
    OpenMP thread count to numba's: in a fresh process, a run of the job on auto threads
    (which leaves numba alone while the count stays), then one with ``--threads 1``, must
    leave torch at one thread."""
    pytest.importorskip("numba")
    code = (
        "import sys, torch\n"
        "from sj_spatial import cli\n"
        "from sj_spatial.data import make_synthetic_shd\n"
        "root = sys.argv[1]\n"
        "make_synthetic_shd(root + '/shd', num_train=48, num_test=24, seed=1)\n"
        "args = ['train', '--data-root', root + '/shd', '--epochs', '1', '--no-augment',\n"
        "        '--hidden', '12', '--duration', '0.3', '--batch-size', '16', '--quiet']\n"
        "cli.main(args + ['--logdir', root + '/auto'])\n"
        "cli.main(args + ['--threads', '1', '--logdir', root + '/one'])\n"
        "print('threads', torch.get_num_threads())\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2"}
    env["SJ_SPATIAL_CACHE"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "threads 1"
