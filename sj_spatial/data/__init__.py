"""Datasets: Spiking Heidelberg Digits from its real files, and an SHD-format generator."""

from ._files import default_cache_dir
from .augment import AugmentedSHD, blend_events, random_shift, shift_units, stretch_times
from .shd import SHD, SHDFormatError, collate, find_shd_file, read_shd, write_shd
from .splits import builtin_shd_root, shd_splits
from .synthetic import ensure_synthetic_shd, make_synthetic_shd
from .yinyang import YinYang, make_yinyang, ttfs_encode, yinyang_class, yinyang_split

__all__ = [
    "SHD",
    "AugmentedSHD",
    "SHDFormatError",
    "YinYang",
    "blend_events",
    "builtin_shd_root",
    "collate",
    "default_cache_dir",
    "ensure_synthetic_shd",
    "find_shd_file",
    "make_synthetic_shd",
    "make_yinyang",
    "random_shift",
    "read_shd",
    "shd_splits",
    "shift_units",
    "stretch_times",
    "ttfs_encode",
    "write_shd",
    "yinyang_class",
    "yinyang_split",
]
