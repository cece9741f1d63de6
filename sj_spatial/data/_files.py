"""Atomic file writes, cache keys and the default cache folder of the data loaders."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import uuid
from collections.abc import Iterator
from pathlib import Path

#: Environment variable that overrides the default cache folder.
CACHE_ENV = "SJ_SPATIAL_CACHE"
TEMP_SUFFIX = ".tmp"


def default_cache_dir() -> Path:
    """``$SJ_SPATIAL_CACHE``, else ``$XDG_CACHE_HOME/sj_spatial``, else ``~/.cache/sj_spatial``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sj_spatial"


def _temp_prefix(target: Path) -> str:
    # The host is part of the name: a folder shared between machines must not let one
    # machine take another's live process for a dead one.
    host = platform.node().replace(os.sep, "_") or "host"
    return f".{target.name}.{host}."


def temp_path(target: Path) -> Path:
    """A fresh temporary name next to ``target``, unique to this process and call:
    ``.<name>.<host>.<pid>.<random>.tmp``."""
    return (
        target.parent / f"{_temp_prefix(target)}{os.getpid()}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}"
    )


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill would end the process there, not ask about it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's process) or cannot be asked: keep its file
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete the temporary files of ``target`` left by dead processes of this host (an
    interrupted write) and return them; those of live processes are left alone."""
    prefix = _temp_prefix(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.iterdir():
        name = path.name
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        pid = name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; move it onto ``target`` when the block ends.

    A block that raises (or a process that dies inside it) leaves ``target`` as it was:
    readers see either the old file or the complete new one, never a partial file. The
    data are flushed to disk before the rename, so that a crash right after it cannot
    leave an empty file under the real name. Each call writes its own temporary file
    (host, process id and a random part in the name), so processes that build the same
    file at once do not write into each other's; the last rename wins.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = temp_path(target)
    # Created here with the permissions the umask gives an ordinary file.
    open(tmp, "xb").close()
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
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
