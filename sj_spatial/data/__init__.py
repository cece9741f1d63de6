"""Datasets: Spiking Heidelberg Digits from its real files, and an SHD-format generator."""

from ._files import default_cache_dir
from .augment import AugmentedSHD, blend_events, random_shift, shift_units
from .shd import SHD, SHDFormatError, collate, find_shd_file, read_shd
from .splits import builtin_shd_root, shd_splits
from .synthetic import ensure_synthetic_shd, make_synthetic_shd

__all__ = [
    "SHD",
    "AugmentedSHD",
    "SHDFormatError",
    "blend_events",
    "builtin_shd_root",
    "collate",
    "default_cache_dir",
    "ensure_synthetic_shd",
    "find_shd_file",
    "make_synthetic_shd",
    "random_shift",
    "read_shd",
    "shd_splits",
    "shift_units",
]
