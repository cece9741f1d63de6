"""Train and test splits of SHD or of the built-in SHD-format data, in one call."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from ._files import default_cache_dir
from .shd import SHD
from .synthetic import ensure_synthetic_shd


def builtin_shd_root() -> os.PathLike:
    """The folder of the built-in SHD-format data, generated there on first use."""
    root = default_cache_dir() / "synthetic_shd"
    ensure_synthetic_shd(root)
    return root


def shd_splits(
    root: str | os.PathLike | None = None,
    dt: float = 1e-3,
    duration: float | None = None,
    samples: int | None = None,
    transform: Callable | None = None,
    *,
    seed: int = 0,
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """``(train, test)`` :class:`SHD` datasets binned at ``dt`` seconds over ``duration``.

    ``root``: a folder with the SHD files, or None for the built-in SHD-format data
    (:func:`builtin_shd_root`). ``samples``: keep a fixed random subset of that many items
    per split (the same for every call with the same ``seed``).
    """
    root = builtin_shd_root() if root is None else root
    splits = [
        SHD(root, train=train, dt=dt, duration=duration, transform=transform)
        for train in (True, False)
    ]
    if samples is not None:
        pick = torch.Generator().manual_seed(seed)
        splits = [
            torch.utils.data.Subset(s, torch.randperm(len(s), generator=pick)[:samples])
            for s in splits
        ]
    return splits[0], splits[1]
