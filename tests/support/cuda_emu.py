"""A CPU emulator of CUDA kernels, for testing kernel source on machines without a GPU.

The kernel source is compiled with g++ (C++20) behind a shim header (``cuda_emu_shim.h``)
that turns CUDA's built-ins into plain C++: ``threadIdx``/``blockIdx``/``blockDim``/``gridDim``
are thread-local, every CUDA thread of a block is a ``std::thread``, ``__syncthreads()`` is a
``std::barrier`` over the block, warp shuffles exchange values through per-warp slots
between two warp barriers, ``atomicAdd`` is ``std::atomic_ref``, and dynamic shared
memory is one buffer per launch. Blocks run one after another.

Faults that a GPU would show as wrong numbers are made visible: shared memory is filled
with NaN bytes before every block, and every array argument is copied into a buffer with
NaN guard regions whose corruption raises. Usage::

    emu = compile_kernels(source, ["my_kernel"], defines=["-DTILE=8"])
    emu.launch("my_kernel", grid=(4, 1, 1), block=(32, 2, 1), args=(a, b, np.int32(n)))

Pointer arguments are numpy arrays or CPU torch tensors (contiguous); scalars are numpy
scalars (passed with their own type) or Python ints/floats (int64/float64, as CuPy does).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_HERE = Path(__file__).parent
#: C++ that stands in for CUDA's built-ins, put before the kernel source.
SHIM = (_HERE / "cuda_emu_shim.h").read_text()
#: The ``emu_launch`` entry point, put after the kernel source (``ENTRIES``: the kernels).
DRIVER = (_HERE / "cuda_emu_driver.inc").read_text()

_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([A-Za-z_][\w\s]*?)\s+(\w+)\s*\[\s*\]\s*;"
)
_GUARD = 64  # guard elements on each side of every array argument
_CTYPES = {
    np.dtype(np.int8): ctypes.c_int8,
    np.dtype(np.int16): ctypes.c_int16,
    np.dtype(np.int32): ctypes.c_int32,
    np.dtype(np.int64): ctypes.c_int64,
    np.dtype(np.uint32): ctypes.c_uint32,
    np.dtype(np.uint64): ctypes.c_uint64,
    np.dtype(np.float32): ctypes.c_float,
    np.dtype(np.float64): ctypes.c_double,
    np.dtype(np.bool_): ctypes.c_bool,
}


def to_host_source(source: str) -> str:
    """CUDA source with ``extern __shared__ T name[];`` bound to the emulator's buffer."""
    return _EXTERN_SHARED.sub(
        lambda m: f"{m.group(1)}* {m.group(2)} = reinterpret_cast<{m.group(1)}*>(emu::dyn_smem);",
        source,
    )


def compiler() -> str | None:
    """The C++ compiler the emulator uses (``$CXX`` or g++), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


class Emulator:
    """Kernels of one source compiled for the CPU; :meth:`launch` runs one grid."""

    def __init__(
        self,
        library: ctypes.CDLL,
        names: Sequence[str],
        jitter_us: int = 0,
        defines: Sequence[str] = (),
    ):
        self._lib = library
        self._lib.emu_launch.restype = ctypes.c_int
        self._lib.emu_launch.argtypes = (
            [ctypes.c_char_p]
            + [ctypes.c_uint] * 6
            + [
                ctypes.c_ulonglong,
                ctypes.POINTER(ctypes.c_void_p),
                ctypes.c_uint,
            ]
        )
        self.names = tuple(names)
        #: The ``-DNAME=value`` options the source was compiled with.
        self.defines = tuple(defines)
        #: Upper bound of the random sleeps after barriers (0: none), in microseconds.
        self.jitter_us = jitter_us

    def launch(self, name: str, grid, block, args, shared_mem: int = 0) -> None:
        """Run ``name<<<grid, block, shared_mem>>>(*args)``; arrays are updated in place."""
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        holders, guarded = [], []
        pointers = (ctypes.c_void_p * max(1, len(args)))()
        for i, arg in enumerate(args):
            if hasattr(arg, "data_ptr") or isinstance(arg, np.ndarray):
                array = _as_array(arg)
                buf = np.empty(array.size + 2 * _GUARD, dtype=array.dtype)
                buf.view(np.uint8)[:] = 0xFF
                buf[_GUARD : _GUARD + array.size] = array.reshape(-1)
                guarded.append((array, buf))
                holder = ctypes.c_void_p(buf.ctypes.data + _GUARD * array.itemsize)
            elif isinstance(arg, (np.generic,)):
                holder = _CTYPES[np.dtype(type(arg))](arg.item())
            elif isinstance(arg, bool):
                holder = ctypes.c_bool(arg)
            elif isinstance(arg, int):
                holder = ctypes.c_int64(arg)
            elif isinstance(arg, float):
                holder = ctypes.c_double(arg)
            else:
                raise TypeError(f"argument {i}: unsupported type {type(arg).__name__}")
            holders.append(holder)
            pointers[i] = ctypes.cast(ctypes.pointer(holder), ctypes.c_void_p)
        rc = self._lib.emu_launch(
            name.encode(),
            *map(int, grid),
            *map(int, block),
            int(shared_mem),
            pointers,
            int(self.jitter_us),
        )
        if rc == -1:
            raise KeyError(f"no kernel named {name!r}; compiled: {self.names}")
        if rc == -2:
            raise ValueError(f"bad block {block}")
        if rc == -3:
            raise RuntimeError(f"{name} wrote past its {shared_mem} bytes of shared memory")
        for i, (array, buf) in enumerate(guarded):
            raw = buf.view(np.uint8)
            edge = _GUARD * array.itemsize
            if (raw[:edge] != 0xFF).any() or (raw[raw.size - edge :] != 0xFF).any():
                raise RuntimeError(f"{name} wrote outside array argument #{i}")
            array.reshape(-1)[:] = buf[_GUARD : _GUARD + array.size]


def _as_array(arg) -> np.ndarray:
    if hasattr(arg, "data_ptr"):  # a torch tensor: share its memory
        if arg.device.type != "cpu" or not arg.is_contiguous():
            raise ValueError("tensor arguments must be contiguous CPU tensors")
        return arg.detach().numpy()
    if not arg.flags.c_contiguous:
        raise ValueError("array arguments must be C-contiguous")
    return arg


def compile_kernels(
    source: str,
    names: Sequence[str],
    cache_dir: str | None = None,
    *,
    defines: Sequence[str] = (),
) -> Emulator:
    """Compile the ``extern "C"`` kernels ``names`` of a CUDA ``source`` for the CPU, with
    the ``-DNAME=value`` options ``defines`` (given to g++ as to NVRTC and nvcc).

    The shared library is cached by content hash under ``cache_dir`` (a temp folder).
    """
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    not_defines = [d for d in defines if not d.startswith("-D")]
    if not_defines:
        raise ValueError(f"defines must be -DNAME=value options, got {not_defines}")
    entries = ",\n".join(f'    {{"{n}", [](void** a) {{ emu::call(&{n}, a); }}}}' for n in names)
    text = SHIM + to_host_source(source) + DRIVER.replace("ENTRIES", entries)
    flags = ["-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-w", *defines]
    key = hashlib.sha256((text + " ".join(flags) + cxx).encode()).hexdigest()[:20]
    folder = Path(cache_dir or Path(tempfile.gettempdir()) / "cuda_emu")
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / f"emu_{key}.so"
    if not library.exists():
        cpp = folder / f"emu_{key}.cpp"
        cpp.write_text(text)
        tmp = folder / f"emu_{key}.{os.getpid()}.so"
        result = subprocess.run(
            [cxx, *flags, str(cpp), "-o", str(tmp)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"emulator build failed:\n{result.stderr[-4000:]}")
        os.replace(tmp, library)
    return Emulator(ctypes.CDLL(str(library)), names, defines=defines)


class EmuRunner:
    """Runs ``sj_spatial.backends.cuda.Launch`` records on the emulator, as ``CupyRunner``
    does on a GPU, if the emulator was compiled with each launch's ``defines``; ``sms``,
    ``smem_limit`` and ``warps`` steer the launch geometry."""

    def __init__(self, emu, sms=4, smem_limit=227 * 1024, warps=None):
        self.emu, self.sms, self.smem_limit, self.warps = emu, sms, smem_limit, warps
        self.names = []

    def __call__(self, launch) -> None:
        missing = [d for d in launch.defines if d not in self.emu.defines]
        if missing:
            raise ValueError(
                f"{launch.name} needs its source compiled with {missing}; the emulator was "
                f"compiled with {list(self.emu.defines)}"
            )
        self.names.append(launch.name)
        self.emu.launch(launch.name, launch.grid, launch.block, launch.args, launch.shared_mem)
