"""Running CUDA kernels from CuPy on torch's tensors and streams (backend='cupy').

The kernel modules (:mod:`.cuda`, :mod:`.cuda_lif`) describe each launch as a
:class:`Launch` record (their source, kernel name, grid, block, shared memory, arguments
and the ``-D`` options of the source's compile-time constants) computed by plain functions
of shapes; a runner executes it. The sources are ``.cu`` files of the package
(``backends/kernels/``, read by :func:`kernel_source`). The GPU runner here compiles each
source once per device; the tests run the same records on a CPU emulator of the kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from importlib import resources
from typing import NamedTuple, Protocol

import numpy as np
import torch

#: Dynamic shared memory per block available without opting in, in bytes.
DEFAULT_SMEM = 48 * 1024


class Launch(NamedTuple):
    """One kernel launch: the CUDA ``source`` defining kernel ``name``, grid, block,
    dynamic shared bytes, arguments, and the ``-DNAME=value`` options ``defines`` that
    ``source`` is compiled with.

    ``args`` holds contiguous tensors (passed as device pointers) and numpy scalars.
    """

    source: str
    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    args: tuple
    defines: tuple[str, ...] = ()


class KernelRunner(Protocol):
    """Runs :class:`Launch` records. The launch geometry reads ``sms`` (multiprocessors),
    ``smem_limit`` (opt-in shared bytes per block) and ``warps`` (None: chosen per launch)."""

    sms: int
    smem_limit: int
    warps: int | None

    def __call__(self, launch: Launch) -> None: ...


def kernel_source(filename: str) -> str:
    """Text of the CUDA source ``filename`` in the package folder ``backends/kernels``."""
    return (resources.files(__package__) / "kernels" / filename).read_text(encoding="utf-8")


def define_options(macros: Mapping[str, int]) -> tuple[str, ...]:
    """``{NAME: value}`` as compiler options ``-DNAME=value`` (NVRTC, nvcc and g++ alike)."""
    return tuple(f"-D{name}={value}" for name, value in macros.items())


def i32(value: int) -> np.int32:
    """``value`` as a kernel int argument; ValueError when it does not fit."""
    if not 0 <= value < 2**31:
        raise ValueError(f"a size of {value} does not fit the kernels' int32 indices")
    return np.int32(value)


def scalar(dtype: torch.dtype, value: float) -> np.floating:
    """``value`` as a kernel argument of the arithmetic type of ``dtype``."""
    return np.float64(value) if dtype == torch.float64 else np.float32(value)


def type_tag(dtype: torch.dtype) -> str:
    """Suffix of the kernel instantiated for ``dtype``: ``'f64'`` or ``'f32'``."""
    return "f64" if dtype == torch.float64 else "f32"


@contextlib.contextmanager
def device_guard(index: int):
    """Make ``index`` the current device of torch and CuPy, and torch's current stream
    CuPy's, so that kernels run in order with the surrounding torch work."""
    import cupy

    stream_ptr = torch.cuda.current_stream(index).cuda_stream
    with torch.cuda.device(index), cupy.cuda.Device(index):
        try:
            stream = cupy.cuda.ExternalStream(stream_ptr, index)
        except TypeError:  # CuPy versions whose ExternalStream takes no device id
            stream = cupy.cuda.ExternalStream(stream_ptr)
        with stream:
            yield


# CuPy RawModule per source and defines; CuPy compiles it per device.
_MODULES: dict[tuple[str, tuple[str, ...]], object] = {}
_FUNCTIONS: dict[tuple[int, str, tuple[str, ...], str], object] = {}


def _function(index: int, source: str, defines: tuple[str, ...], name: str):
    """Kernel ``name`` of ``source`` compiled with ``defines`` on device ``index``, compiled
    once (inside the guard)."""
    import cupy

    key = (index, source, defines, name)
    fn = _FUNCTIONS.get(key)
    if fn is None:
        module = _MODULES.get((source, defines))
        if module is None:
            options = ("--std=c++17", *defines)
            module = _MODULES[source, defines] = cupy.RawModule(code=source, options=options)
        fn = _FUNCTIONS[key] = module.get_function(name)
    return fn


def _pointer(tensor: torch.Tensor, index: int) -> int:
    if tensor.device.type != "cuda" or tensor.device.index != index:
        raise ValueError(f"kernel argument on {tensor.device}, expected cuda:{index}")
    if not tensor.is_contiguous():
        raise ValueError("kernel arguments must be contiguous tensors")
    return tensor.data_ptr()


class CupyRunner:
    """The :class:`KernelRunner` of one CUDA device."""

    warps = None

    def __init__(self, index: int):
        import cupy

        self.index = index
        self.sms = torch.cuda.get_device_properties(index).multi_processor_count
        attrs = cupy.cuda.Device(index).attributes
        self.smem_limit = int(attrs.get("MaxSharedMemoryPerBlockOptin", DEFAULT_SMEM))
        self._smem_set: dict[str, int] = {}

    def __call__(self, launch: Launch) -> None:
        args = tuple(
            _pointer(a, self.index) if isinstance(a, torch.Tensor) else a for a in launch.args
        )
        with device_guard(self.index):
            fn = _function(self.index, launch.source, launch.defines, launch.name)
            if launch.shared_mem > max(DEFAULT_SMEM, self._smem_set.get(launch.name, 0)):
                fn.max_dynamic_shared_size_bytes = launch.shared_mem
                self._smem_set[launch.name] = launch.shared_mem
            fn(launch.grid, launch.block, args, shared_mem=launch.shared_mem)


_RUNNERS: dict[int, CupyRunner] = {}


def runner(device: torch.device) -> CupyRunner:
    """The runner of CUDA ``device`` (created once per device)."""
    if device.type != "cuda":
        raise ValueError(f"backend='cupy' needs CUDA tensors, got tensors on {device}")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index not in _RUNNERS:
        _RUNNERS[index] = CupyRunner(index)
    return _RUNNERS[index]
