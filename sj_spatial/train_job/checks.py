"""What ``sj-spatial train`` checks before it writes any file: the options against the
world of ranks, the device, the backend, the logdir and the data folder.

Each check raises :class:`~.errors.JobError` with a one-line message that names the option.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..backends import cupy_missing
from ..data import find_shd_file
from ..data.shd import SEARCH_DIRS
from ..distributed import World
from .errors import JobError


def check_batch_split(batch_size: int, world: World) -> None:
    """Raise JobError unless the global ``batch_size`` splits evenly over the ranks."""
    if batch_size % world.size:
        raise JobError(
            f"--batch-size is the global batch, split evenly over the world size "
            f"{world.size} (WORLD_SIZE, torchrun --nproc_per_node); it must be divisible by "
            f"{world.size}, got {batch_size}"
        )


def check_stretch(stretch: float, augment: bool) -> None:
    """Raise JobError when ``--stretch`` is asked for without the augmentation it is
    part of."""
    if stretch and not augment:
        raise JobError(f"--stretch {stretch:g} stretches augmented samples; add --augment")


def resolve_device(name: str, world: World | None) -> torch.device:
    """The device of this process for ``--device name``: under torchrun, CUDA means
    ``cuda:LOCAL_RANK``. Raises JobError when the device is not on this machine."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    _check_available(device, name)
    if world is None or device.type != "cuda":
        return device
    if device.index is not None and device.index != world.local_rank:
        raise JobError(
            f"--device: under torchrun rank {world.rank} uses cuda:{world.local_rank} "
            f"(LOCAL_RANK); pass --device cuda or auto, got {name}"
        )
    return torch.device("cuda", world.local_rank)


def _check_available(device: torch.device, name: str) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise JobError(
                f"--device {name}: no CUDA GPU is visible to torch (torch.cuda.is_available() "
                "is False); use --device cpu or auto"
            )
        if device.index is not None and device.index >= count:
            raise JobError(
                f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise JobError(f"--device {name}: no MPS device (Apple GPU) is available")


def check_backend(backend: str, device: torch.device) -> None:
    """Raise JobError when ``--backend`` cannot run on ``device`` here."""
    if backend != "cupy":
        return
    reason = cupy_missing()
    if reason is not None:
        raise JobError(f"--backend cupy is unavailable: {reason}")
    if device.type != "cuda":
        raise JobError(f"--backend cupy runs on CUDA GPUs; use --device cuda, got {device}")


def check_logdir(logdir: Path) -> None:
    """Raise JobError unless ``logdir`` is, or can be made, a folder this user may write
    in (nothing is created here)."""
    # os.path.exists, unlike Path.exists, says False for a path it may not look at.
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise JobError(f"--logdir {logdir} is a file, not a folder")
    existing = next(p for p in (logdir, *logdir.absolute().parents) if os.path.exists(p))
    if not os.path.isdir(existing):
        raise JobError(f"--logdir {logdir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise JobError(f"--logdir {logdir}: no permission to write in {existing}")


#: The files whose presence says that a logdir holds a run that finished an epoch.
RUN_FILES = ("checkpoint.pt", "summary.json")


def check_no_run(logdir: Path) -> None:
    """Raise JobError when ``logdir`` holds a run (a checkpoint or a summary), so that a
    new run never overwrites one; ``--resume`` continues it instead."""
    found = [name for name in RUN_FILES if os.path.exists(logdir / name)]
    if found:
        raise JobError(
            f"--logdir {logdir} holds a run ({' and '.join(found)}), which a new run would "
            "overwrite; continue it with --resume (raise --epochs to train longer), or pass "
            "another --logdir"
        )


def make_logdir(logdir: Path) -> None:
    """Create ``logdir`` and its parents; raises JobError when that fails."""
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(
            f"--logdir {logdir}: cannot create it ({exc.strerror or type(exc).__name__})"
        ) from None


def check_data_root(root: Path | None) -> None:
    """Raise JobError unless ``root`` (None: the built-in data) is a folder where both
    SHD files are found (their contents are checked when they are read)."""
    if root is None:
        return
    folder = root.expanduser()
    if not os.path.exists(folder):
        raise JobError(f"--data-root {root}: no such folder")
    if not os.path.isdir(folder):
        raise JobError(
            f"--data-root {root} is a file, not a folder; give the folder that holds "
            "shd_train.h5 and shd_test.h5"
        )
    missing = []
    for train, stem in ((True, "shd_train"), (False, "shd_test")):
        try:
            find_shd_file(folder, train)
        except FileNotFoundError:
            missing.append(f"{stem}.h5")
        except PermissionError as exc:
            raise JobError(f"--data-root {root}: no permission to read {exc.filename}") from None
    if missing:
        subs = ", ".join(f"{sub}/" for sub in SEARCH_DIRS if sub)
        raise JobError(
            f"--data-root {root} holds no {' and no '.join(missing)} (nor .h5.gz / .h5.zip), "
            f"directly or in {subs}"
        )
