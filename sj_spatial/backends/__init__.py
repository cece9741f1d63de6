"""Interchangeable implementations of the delayed matmul, chosen in one place.

Every backend implements ``delayed_matmul(x, weight, taps, frac, num_taps, t_out)``
with the semantics of :func:`sj_spatial.backends.dense.delayed_matmul`.
"""

from __future__ import annotations

from types import ModuleType

import torch

from . import dense

BACKENDS = ("torch", "cupy")


def cupy_missing() -> str | None:
    """Why the CuPy backend cannot run here, or None when it can."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a broken CUDA install
        return f"CuPy is not importable ({type(exc).__name__}: {exc}); pip install 'sj-spatial[cupy]'"
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
    return dense
