"""Interchangeable implementations of the delayed matmul, chosen in one place.

Every backend implements ``delayed_matmul(x, weight, taps, frac, num_taps, t_out)``
with the semantics of :func:`sj_spatial.backends.dense.delayed_matmul`.

``backend="torch"`` on CPU tensors runs the numba kernel of :mod:`.cpu` when numba is
installed and the kernel is enabled (the default; switch it with :func:`set_cpu_kernel`,
:func:`cpu_kernel` or the environment variable ``SJ_SPATIAL_CPU_KERNEL=0``), otherwise
the dense reference of :mod:`.dense`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

import torch

from . import dense

BACKENDS = ("torch", "cupy")

_cpu_kernel_enabled = os.environ.get("SJ_SPATIAL_CPU_KERNEL", "1").strip() != "0"
_cpu_module: ModuleType | None | bool = False  # False: not looked up yet


def set_cpu_kernel(enabled: bool) -> None:
    """Use the numba CPU kernel for ``backend='torch'`` on CPU (True) or the dense one."""
    global _cpu_kernel_enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__} {enabled!r}")
    _cpu_kernel_enabled = enabled


def cpu_kernel_enabled() -> bool:
    """Whether ``backend='torch'`` on CPU tensors runs the numba kernel now."""
    return _cpu_kernel_enabled and _fast_cpu() is not None


@contextlib.contextmanager
def cpu_kernel(enabled: bool) -> Iterator[None]:
    """Context manager: :func:`set_cpu_kernel` inside the block, the previous choice after."""
    previous = _cpu_kernel_enabled
    set_cpu_kernel(enabled)
    try:
        yield
    finally:
        set_cpu_kernel(previous)


def _fast_cpu() -> ModuleType | None:
    """The :mod:`.cpu` module when numba is importable, else None (looked up once)."""
    global _cpu_module
    if _cpu_module is False:
        from . import cpu

        _cpu_module = cpu if cpu.available() else None
    return _cpu_module


def cupy_missing() -> str | None:
    """Why the CuPy backend cannot run here, or None when it can."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # noqa: BLE001  (ImportError, or a broken CUDA install)
        return (
            f"CuPy is not importable ({type(exc).__name__}: {exc}); pip install 'sj-spatial[cupy]'"
        )
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return None


def require(backend: str) -> None:
    """Raise a clear error when ``backend`` cannot run on this machine."""
    if backend == "cupy":
        reason = cupy_missing()
        if reason is not None:
            raise ValueError(f"backend='cupy' is unavailable: {reason}")


def select(backend: str, device: torch.device) -> ModuleType:
    """The module implementing ``delayed_matmul`` for ``backend`` on ``device``."""
    if backend == "cupy":
        if device.type != "cuda":
            raise ValueError(f"backend='cupy' needs CUDA tensors, got tensors on {device}")
        from . import cuda

        return cuda
    if device.type == "cpu" and _cpu_kernel_enabled:
        fast = _fast_cpu()
        if fast is not None:
            return fast
    return dense
