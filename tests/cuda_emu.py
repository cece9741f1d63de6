"""A CPU emulator of CUDA kernels, for testing kernel source on machines without a GPU.

The kernel source is compiled with g++ (C++20) behind a shim header that turns CUDA's
built-ins into plain C++: ``threadIdx``/``blockIdx``/``blockDim``/``gridDim`` are
thread-local, every CUDA thread of a block is a ``std::thread``, ``__syncthreads()`` is a
``std::barrier`` over the block, warp shuffles exchange values through per-warp slots
between two warp barriers, ``atomicAdd`` is ``std::atomic_ref``, and dynamic shared
memory is one buffer per launch. Blocks run one after another.

Faults that a GPU would show as wrong numbers are made visible: shared memory is filled
with NaN bytes before every block, and every array argument is copied into a buffer with
NaN guard regions whose corruption raises. Usage::

    emu = compile_kernels(source, ["my_kernel"])
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

SHIM = r"""
#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace emu {
struct Dim { unsigned x = 1, y = 1, z = 1; };
inline thread_local Dim thread_idx, block_idx, block_dim, grid_dim;
inline thread_local unsigned linear_tid = 0;

struct Block {
    unsigned nthreads = 0;
    std::unique_ptr<std::barrier<>> sync;
    std::vector<std::unique_ptr<std::barrier<>>> warp_sync;
    std::vector<unsigned long long> slots;
};
inline Block* block = nullptr;
inline unsigned char* dyn_smem = nullptr;
inline unsigned jitter_us = 0;
inline thread_local unsigned long long rng = 0;

// After a barrier some threads sleep a little, so that a missing barrier shows up as a
// data race in the results rather than staying hidden by lock-step scheduling.
inline void jitter() {
    if (jitter_us == 0) return;
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    if ((rng & 3) == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng % jitter_us));
}

inline unsigned warp_width() {
    unsigned warp = linear_tid / 32;
    return std::min(32u, block->nthreads - warp * 32);
}

inline void check_mask(unsigned mask) {
    unsigned width = warp_width();
    unsigned full = width == 32 ? 0xffffffffu : ((1u << width) - 1u);
    if ((mask & full) != full) {
        std::fprintf(stderr, "emu: partial warp masks are not emulated\n");
        std::abort();
    }
}

inline void syncwarp() { block->warp_sync[linear_tid / 32]->arrive_and_wait(); }

// Every lane publishes its value, then reads the source lane's; returns own value when
// the source lies outside the lane's segment of `width` lanes (CUDA's rule).
template <class T>
T shuffle(unsigned mask, T v, int src_lane, int width) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffle of a wide type");
    check_mask(mask);
    unsigned lane = linear_tid % 32, base = linear_tid - lane;
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    block->slots[linear_tid] = bits;
    syncwarp();
    T out = v;
    int seg = (int)(lane / width * width);
    if (src_lane >= seg && src_lane < seg + width && (unsigned)src_lane < warp_width())
        std::memcpy(&out, &block->slots[base + src_lane], sizeof(T));
    syncwarp();
    return out;
}
}  // namespace emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
#define warpSize 32

inline void __syncthreads() { emu::block->sync->arrive_and_wait(); emu::jitter(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::check_mask(mask); emu::syncwarp(); }
template <class T> T __shfl_sync(unsigned m, T v, int src, int w = 32) {
    return emu::shuffle(m, v, src % w + (int)(emu::linear_tid % 32) / w * w, w);
}
template <class T> T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) {
    return emu::shuffle(m, v, (int)(emu::linear_tid % 32 + d), w);
}
template <class T> T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) {
    return emu::shuffle(m, v, (int)(emu::linear_tid % 32) - (int)d, w);
}
template <class T> T __shfl_xor_sync(unsigned m, T v, int x, int w = 32) {
    return emu::shuffle(m, v, (int)(emu::linear_tid % 32) ^ x, w);
}
template <class T> T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> T __ldg(const T* p) { return *p; }
using std::max;
using std::min;
"""

DRIVER = r"""
namespace emu {
template <class... A, std::size_t... I>
void call_impl(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <class... A>
void call(void (*f)(A...), void** args) { call_impl(f, args, std::index_sequence_for<A...>{}); }
struct Entry { const char* name; void (*run)(void**); };
}  // namespace emu

static const emu::Entry emu_entries[] = {
ENTRIES
};

// 0: done; -1: unknown kernel; -2: bad block size; -3: shared memory overflow.
extern "C" int emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                          unsigned by, unsigned bz, unsigned long long smem_bytes, void** args,
                          unsigned jitter_us) {
    void (*run)(void**) = nullptr;
    for (const auto& e : emu_entries)
        if (std::strcmp(e.name, name) == 0) run = e.run;
    if (run == nullptr) return -1;
    const unsigned nthreads = bx * by * bz;
    if (nthreads == 0 || nthreads > 1024) return -2;
    const std::size_t canary = 4096;
    std::vector<unsigned char> smem(smem_bytes + canary, 0xff);
    emu::Block blk;
    blk.nthreads = nthreads;
    blk.slots.assign(nthreads, 0);
    blk.warp_sync.resize((nthreads + 31) / 32);
    emu::block = &blk;
    emu::dyn_smem = smem.data();
    emu::jitter_us = jitter_us;
    std::barrier<> start(nthreads), end(nthreads);
    auto worker = [&](unsigned t) {
        emu::linear_tid = t;
        emu::rng = 0x9E3779B97F4A7C15ull * (t + 1);
        emu::thread_idx = {t % bx, (t / bx) % by, t / (bx * by)};
        emu::block_dim = {bx, by, bz};
        emu::grid_dim = {gx, gy, gz};
        for (unsigned z = 0; z < gz; ++z)
            for (unsigned y = 0; y < gy; ++y)
                for (unsigned x = 0; x < gx; ++x) {
                    if (t == 0) {
                        blk.sync = std::make_unique<std::barrier<>>(nthreads);
                        for (unsigned w = 0; w < blk.warp_sync.size(); ++w)
                            blk.warp_sync[w] = std::make_unique<std::barrier<>>(
                                std::min(32u, nthreads - 32 * w));
                        std::memset(smem.data(), 0xff, smem_bytes);
                    }
                    start.arrive_and_wait();
                    emu::block_idx = {x, y, z};
                    emu::jitter();
                    run(args);
                    // An exited thread no longer holds up the barriers of the others.
                    blk.sync->arrive_and_drop();
                    blk.warp_sync[t / 32]->arrive_and_drop();
                    end.arrive_and_wait();
                }
    };
    std::vector<std::thread> threads;
    threads.reserve(nthreads);
    for (unsigned t = 0; t < nthreads; ++t) threads.emplace_back(worker, t);
    for (auto& th : threads) th.join();
    emu::block = nullptr;
    for (std::size_t i = smem_bytes; i < smem.size(); ++i)
        if (smem[i] != 0xff) return -3;
    return 0;
}
"""

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

    def __init__(self, library: ctypes.CDLL, names: Sequence[str], jitter_us: int = 0):
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


def compile_kernels(source: str, names: Sequence[str], cache_dir: str | None = None) -> Emulator:
    """Compile the ``extern "C"`` kernels ``names`` of a CUDA ``source`` for the CPU.

    The shared library is cached by content hash under ``cache_dir`` (a temp folder).
    """
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    entries = ",\n".join(f'    {{"{n}", [](void** a) {{ emu::call(&{n}, a); }}}}' for n in names)
    text = SHIM + to_host_source(source) + DRIVER.replace("ENTRIES", entries)
    flags = ["-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-w"]
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
    return Emulator(ctypes.CDLL(str(library)), names)


class EmuRunner:
    """Runs ``sj_spatial.backends.cuda.Launch`` records on the emulator, as ``CupyRunner``
    does on a GPU; ``sms``, ``smem_limit`` and ``warps`` steer the launch geometry."""

    def __init__(self, emu, sms=4, smem_limit=227 * 1024, warps=None):
        self.emu, self.sms, self.smem_limit, self.warps = emu, sms, smem_limit, warps
        self.names = []

    def __call__(self, launch) -> None:
        self.names.append(launch.name)
        self.emu.launch(launch.name, launch.grid, launch.block, launch.args, launch.shared_mem)
