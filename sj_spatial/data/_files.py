"""Atomic file writes, cache keys and the default cache folder of the data loaders."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

#: Environment variable that overrides the default cache folder.
CACHE_ENV = "SJ_SPATIAL_CACHE"


def default_cache_dir() -> Path:
    """``$SJ_SPATIAL_CACHE``, else ``$XDG_CACHE_HOME/sj_spatial``, else ``~/.cache/sj_spatial``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sj_spatial"


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; move it onto ``target`` when the block ends.

    A block that raises (or a process that dies inside it) leaves ``target`` as it was:
    readers see either the old file or the complete new one, never a partial file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name in the same folder (so that os.replace is atomic), created with the
    # permissions the umask gives an ordinary file.
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    open(tmp, "xb").close()
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def file_identity(path: Path) -> dict:
    """What identifies one version of a file: resolved path, size in bytes, mtime in ns."""
    stat = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_key(record: dict) -> str:
    """A short, stable hex digest of a JSON-serialisable record."""
    text = json.dumps(record, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
