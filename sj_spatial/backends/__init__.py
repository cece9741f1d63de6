"""Interchangeable implementations of the delayed matmul, chosen in one place.

Every backend module follows :mod:`.contract`: ``delayed_matmul(x, weight, taps, frac,
window, t_out)`` with the semantics of the dense reference :mod:`.dense`.

- ``backend="cupy"``: :mod:`.cuda` (CUDA tensors), plus the fused recurrent LIF loop of
  :mod:`.cuda_lif`.
- ``backend="torch"``: on CPU tensors the layer's ``cpu_kernel``: ``"numba"``
  (:mod:`.cpu`, plus the fused recurrent LIF loop of :mod:`.cpu_lif`) or ``"dense"``
  (:mod:`.dense`); on any other device :mod:`.dense`.

A layer's ``cpu_kernel`` defaults to :func:`default_cpu_kernel`: ``"numba"``, or
``"dense"`` where the environment variable ``SJ_SPATIAL_CPU_KERNEL`` is ``0`` or
``dense`` (or numba is missing).
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

from . import dense

BACKENDS = ("torch", "cupy")
CPU_KERNELS = ("numba", "dense")
#: The numba kernel's paths: its own rule, or one kind of kernel for every call.
CPU_PATHS = ("auto", "gather", "events")

#: Values of SJ_SPATIAL_CPU_KERNEL and the kernel each selects.
_ENVIRONMENT = {"1": "numba", "numba": "numba", "0": "dense", "dense": "dense"}


def numba_missing() -> str | None:
    """Why the numba CPU kernel cannot run here, or None when it can."""
    from . import cpu

    return None if cpu.available() else "numba is not importable; pip install numba"


def default_cpu_kernel() -> str:
    """The CPU kernel of a new layer: from ``SJ_SPATIAL_CPU_KERNEL`` (``numba``/``1``,
    ``dense``/``0``; unset means ``numba``), ``"dense"`` when numba is missing."""
    value = os.environ.get("SJ_SPATIAL_CPU_KERNEL", "numba").strip().lower()
    if value not in _ENVIRONMENT:
        raise ValueError(
            f"the environment variable SJ_SPATIAL_CPU_KERNEL must be one of "
            f"{sorted(_ENVIRONMENT)}, got {value!r}"
        )
    kernel = _ENVIRONMENT[value]
    return "dense" if kernel == "numba" and numba_missing() else kernel


def check_cpu_kernel(cpu_kernel: str) -> str:
    """Return ``cpu_kernel`` if it is one of :data:`CPU_KERNELS` and can run here."""
    if not isinstance(cpu_kernel, str) or cpu_kernel not in CPU_KERNELS:
        raise ValueError(f"cpu_kernel must be one of {list(CPU_KERNELS)}, got {cpu_kernel!r}")
    if cpu_kernel == "numba" and (reason := numba_missing()) is not None:
        raise ValueError(f"cpu_kernel='numba' is unavailable: {reason}")
    return cpu_kernel


def check_cpu_path(path: str, name: str = "cpu_path") -> str:
    """Return ``path`` if it is one of :data:`CPU_PATHS`, else raise a ValueError naming
    the argument ``name``."""
    if not isinstance(path, str) or path not in CPU_PATHS:
        raise ValueError(f"{name} must be one of {list(CPU_PATHS)}, got {path!r}")
    return path


def takes_cpu_path(module: ModuleType) -> bool:
    """Whether a kernel module from :func:`select` takes the ``path`` argument (numba)."""
    return module.__name__ == f"{__name__}.cpu"


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


def implementation(backend: str, device: torch.device, cpu_kernel: str | None = None) -> str:
    """Which kernel ``backend`` runs on ``device``: ``"cupy"``, ``"numba"`` or ``"dense"``.

    ``cpu_kernel`` None means :func:`default_cpu_kernel`.
    """
    if backend == "cupy":
        return "cupy"
    if device.type != "cpu":
        return "dense"
    return default_cpu_kernel() if cpu_kernel is None else cpu_kernel


def _modules(name: str) -> tuple[ModuleType, ModuleType | None]:
    """The modules of kernel ``name``: the delayed matmul's and the fused LIF recurrence's
    (None for the dense reference); imported on first use, CuPy's only where it runs."""
    if name == "cupy":
        from . import cuda, cuda_lif

        return cuda, cuda_lif
    if name == "numba":
        from . import cpu, cpu_lif

        return cpu, cpu_lif
    return dense, None


def select(backend: str, device: torch.device, cpu_kernel: str | None = None) -> ModuleType:
    """The module implementing ``delayed_matmul`` for ``backend`` on ``device``."""
    if backend == "cupy" and device.type != "cuda":
        raise ValueError(f"backend='cupy' needs CUDA tensors, got tensors on {device}")
    return _modules(implementation(backend, device, cpu_kernel))[0]


def fused_lif(backend: str, device: torch.device, cpu_kernel: str | None = None):
    """The module whose ``lif_recurrence`` runs a recurrent LIF population's whole
    sequence on ``backend``/``device`` (:class:`~.contract.FusedLIF`), or None."""
    return _modules(implementation(backend, device, cpu_kernel))[1]
