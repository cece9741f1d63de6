"""Datasets: Spiking Heidelberg Digits from its real files, and an SHD-format generator."""

from ._files import default_cache_dir
from .shd import SHD, collate, find_shd_file, read_shd
from .splits import builtin_shd_root, shd_splits
from .synthetic import ensure_synthetic_shd, make_synthetic_shd

__all__ = [
    "SHD",
    "builtin_shd_root",
    "collate",
    "default_cache_dir",
    "ensure_synthetic_shd",
    "find_shd_file",
    "make_synthetic_shd",
    "read_shd",
    "shd_splits",
]
