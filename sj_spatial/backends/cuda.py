"""CUDA backend (backend="cupy"): two taps per synapse, never a dense delay kernel.

The delayed matmul of :mod:`.contract` is three CuPy kernels compiled once per device
from :data:`SOURCE` (the package file ``backends/kernels/delayed_matmul.cu``, its tile
constants defined here and passed to the compiler as :data:`DEFINES`):

- ``sjs_gather``: ``dst[o, u, n] = sum_c coef0[o,c] src[c, u+s, n] + coef1[o,c] src[c, u+s+1, n]``.
  The forward pass is this gather over input rows ``[in, rows, N]`` (time-major rows,
  left-padded with zeros, so no bounds checks) with ``s = max_delay - k``, so that row
  ``u + s`` is ``x[t - k - 1]`` (``coef0 = far``) and row ``u + s + 1`` is ``x[t - k]``
  (``coef1 = near``); the input gradient is the same gather over the output gradient
  with the synapse matrix transposed and ``s = k`` (``coef0 = near``, ``coef1 = far``).
- ``sjs_wgrad``: the two dot products per synapse between an output-gradient row and the
  two shifted input rows, from which the weight and fraction gradients follow.

A block keeps, per input neuron, the rows one tile of 4R time steps x 8 batch entries
reads (the tile plus the ``halo = window - 1`` earlier steps, ``D`` in the source) in
shared memory and reuses them for every output neuron of the block; each thread
accumulates R consecutive steps in registers, so R+1 shared loads feed 2R multiply-adds.
Work and memory are independent of ``max_delay`` except for that halo. Computation is in
float32 (float64 for float64 inputs); float16/bfloat16 inputs are converted and the
results cast back.

The launch geometry (:class:`GatherGeometry`, :class:`WgradGeometry`) and the buffer
layouts are plain functions of shapes and tensors (:func:`forward_output`,
:func:`input_grad`, ...) that take a :class:`~.cupy_runtime.KernelRunner`; the GPU
runner launches on CuPy, and the tests reuse the same functions with a CPU emulator.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from . import cupy_runtime
from .contract import tap_coefficients
from .cupy_runtime import DEFAULT_SMEM, KernelRunner, Launch, i32, type_tag

#: Kernel source, CUDA C++ (compiled with NVRTC by CuPy, with :data:`DEFINES`).
SOURCE = cupy_runtime.kernel_source("delayed_matmul.cu")

#: Names of the ``extern "C"`` kernels in :data:`SOURCE`.
KERNELS = tuple(
    [f"sjs_gather_{t}_r{r}" for t in ("f32", "f64") for r in (8, 1)]
    + [f"sjs_wgrad_{t}_r{r}_cb{cb}" for t in ("f32", "f64") for r in (8, 1) for cb in (8, 1)]
)

# The compile-time constants of SOURCE are defined here only; it reads them as macros.
_GATHER_OUTPUTS_PER_WARP = 8  # outputs one warp of sjs_gather accumulates (OW)
_WGRAD_OUTPUTS_PER_WARP = 2  # outputs one warp of sjs_wgrad reduces (OG)
# Shared rows hold 8 batch entries plus one pad element: the four row groups of a warp
# (rows R apart, R = 8) then fall into four different groups of 8 banks.
_STRIDE = 9
_MAX_WARPS = 8  # warps per block at most: the kernels' __launch_bounds__

#: The macros :data:`SOURCE` is compiled with; its ``#error`` guards name a missing one.
MACROS = {
    "SJS_STRIDE": _STRIDE,
    "SJS_GATHER_OUTPUTS_PER_WARP": _GATHER_OUTPUTS_PER_WARP,
    "SJS_WGRAD_OUTPUTS_PER_WARP": _WGRAD_OUTPUTS_PER_WARP,
    "SJS_MAX_THREADS": 32 * _MAX_WARPS,
}
#: :data:`MACROS` as the compiler's ``-DNAME=value`` options.
DEFINES = cupy_runtime.define_options(MACROS)

_MAX_PARTIALS = 1 << 22  # elements of input-sliced partial outputs (16 MiB in float32)


class GatherGeometry(NamedTuple):
    """Launch configuration of ``sjs_gather`` (see :func:`gather_geometry`)."""

    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    channels_per_step: int  # inputs staged in shared memory at once (CC)
    c_slice: int  # inputs per grid-z slice
    src_rows: int  # rows per input channel the kernel reads


class WgradGeometry(NamedTuple):
    """Launch configuration of ``sjs_wgrad`` (see :func:`wgrad_geometry`)."""

    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    seg_tiles: int  # row tiles per (batch tile, time) segment of grid z
    src_rows: int  # rows per input channel the kernel reads


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round16(n: int) -> int:
    return _ceil_div(n, 16) * 16


def _runner_warps(runner: KernelRunner) -> int | None:
    """``runner.warps``, checked against the kernels' launch bound (None: chosen per launch)."""
    warps = runner.warps
    if warps is not None and not 1 <= warps <= _MAX_WARPS:
        raise ValueError(
            f"runner.warps must be None or in [1, {_MAX_WARPS}] (the kernels are compiled for "
            f"at most {32 * _MAX_WARPS} threads per block), got {warps}"
        )
    return warps


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any tensor is float64, else float32 (the kernels' two arithmetic types)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def rows_per_thread(rows: int) -> int:
    """R, the consecutive time steps one thread computes: 8, or 1 for very short outputs."""
    return 8 if rows > 8 else 1


def padded_rows(rows: int) -> int:
    """``rows`` rounded up to whole tiles of 4R time steps."""
    tile = 4 * rows_per_thread(rows)
    return _ceil_div(rows, tile) * tile


def gather_geometry(
    U: int,
    N: int,
    O: int,  # noqa: E741 (the kernel's name for the output count)
    C: int,
    halo: int,
    dtype: torch.dtype,
    runner: KernelRunner,
) -> GatherGeometry:
    """Grid, block and shared memory of ``sjs_gather`` for ``dst [O, U, N]`` over C inputs.

    ``halo`` (``D`` in the kernel) is one more than the largest shift. Warps per block
    shrink (8 -> 4) while the grid has fewer than four blocks per SM, and further while
    half of them still cover all O outputs; ``runner.warps`` overrides that choice. If the
    grid is still small, grid z splits the inputs into slices whose partial sums are
    added afterwards.
    """
    r = rows_per_thread(U)
    u_tiles, n_tiles = _ceil_div(U, 4 * r), _ceil_div(N, 8)
    target = 4 * runner.sms

    def blocks(w: int) -> int:
        return u_tiles * n_tiles * _ceil_div(O, _GATHER_OUTPUTS_PER_WARP * w)

    warps = _runner_warps(runner)
    if warps is None:
        warps = _MAX_WARPS
        while warps > 1 and (
            _GATHER_OUTPUTS_PER_WARP * (warps // 2) >= O or (warps > 4 and blocks(warps) < target)
        ):
            warps //= 2
    # At least 16 inputs per slice, and partial sums of at most _MAX_PARTIALS elements.
    slices = min(
        _ceil_div(target, blocks(warps)), max(1, C // 16), max(1, _MAX_PARTIALS // (O * U * N))
    )
    c_slice = _ceil_div(C, slices)
    slices = _ceil_div(C, c_slice)
    out_per_block = _GATHER_OUTPUTS_PER_WARP * warps
    item = torch.empty((), dtype=dtype).element_size()
    synapse_bytes = 16 if item == 4 else 32

    def smem(cc: int) -> int:
        return _round16(cc * (4 * r + halo) * _STRIDE * item) + out_per_block * cc * synapse_bytes

    if smem(1) > runner.smem_limit:
        raise ValueError(
            f"max_delay={halo - 1} needs {smem(1)} bytes of shared memory per block on the cupy "
            f"backend, this GPU allows {runner.smem_limit}; use a smaller max_delay or "
            "backend='torch'"
        )
    budget = DEFAULT_SMEM if smem(1) <= DEFAULT_SMEM else runner.smem_limit
    cc = 1
    while cc < min(16, c_slice) and smem(cc + 1) <= budget:
        cc += 1
    return GatherGeometry(
        name=f"sjs_gather_{type_tag(dtype)}_r{r}",
        grid=(_ceil_div(O, out_per_block) * u_tiles * n_tiles, 1, slices),
        block=(32, warps, 1),
        shared_mem=smem(cc),
        channels_per_step=cc,
        c_slice=c_slice,
        src_rows=u_tiles * 4 * r + halo,
    )


def wgrad_geometry(
    U: int,
    N: int,
    O: int,  # noqa: E741
    C: int,
    halo: int,
    dtype: torch.dtype,
    runner: KernelRunner,
) -> WgradGeometry:
    """Grid, block and shared memory of ``sjs_wgrad`` for O x C synapses over U x N steps.

    Grid z splits the (batch tile, time) stream into segments when the synapse tiles
    alone give fewer than four blocks per SM; each slice writes its own partial sums.
    """
    r = rows_per_thread(U)
    warps = _runner_warps(runner)
    warps = _MAX_WARPS if warps is None else warps
    out_per_block = _WGRAD_OUTPUTS_PER_WARP * warps
    item = torch.empty((), dtype=dtype).element_size()

    def smem(cb: int) -> int:
        ring = _round16(cb * (4 * r + halo + r) * _STRIDE * item)
        return ring + out_per_block * cb * 4

    cb = 8 if smem(8) <= runner.smem_limit else 1
    if smem(cb) > runner.smem_limit:
        raise ValueError(
            f"max_delay={halo - 1} needs {smem(cb)} bytes of shared memory per block on the "
            f"cupy backend, this GPU allows {runner.smem_limit}; use a smaller max_delay or "
            "backend='torch'"
        )
    u_tiles, n_tiles = _ceil_div(U, 4 * r), _ceil_div(N, 8)
    tiles = _ceil_div(C, cb) * _ceil_div(O, out_per_block)
    slices = min(n_tiles * u_tiles, max(1, _ceil_div(4 * runner.sms, tiles)))
    segs_per_n = _ceil_div(slices, n_tiles)
    seg_tiles = _ceil_div(u_tiles, segs_per_n)
    slices = min(slices, n_tiles * _ceil_div(u_tiles, seg_tiles))
    return WgradGeometry(
        name=f"sjs_wgrad_{type_tag(dtype)}_r{r}_cb{cb}",
        grid=(_ceil_div(O, out_per_block), _ceil_div(C, cb), slices),
        block=(32, warps, 1),
        shared_mem=smem(cb),
        seg_tiles=seg_tiles,
        src_rows=u_tiles * 4 * r + halo,
    )


def time_rows(seq: torch.Tensor, first: int, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """``[T, N, C]`` -> ``[C, rows, N]`` with row r = ``seq[first + r]`` (zero outside)."""
    t, n, c = seq.shape
    out = seq.new_zeros((c, rows, n), dtype=dtype)
    lo, hi = max(0, -first), min(rows, t - first)
    if hi > lo:
        out[:, lo:hi].copy_(seq[first + lo : first + hi].permute(2, 0, 1))
    return out


def forward_shifts(taps: torch.Tensor, window: int) -> torch.Tensor:
    """Row shift ``max_delay - k`` of each synapse in the input rows, int32 ``[out, in]``.

    Taps are clamped into ``[0, max_delay]`` so that no kernel reads outside its window.
    """
    max_delay = window - 2
    return (max_delay - taps.clamp(0, max_delay)).to(torch.int32).contiguous()


def gather_launch(
    src: torch.Tensor,
    coef0: torch.Tensor,
    coef1: torch.Tensor,
    shift: torch.Tensor,
    dst: torch.Tensor,
    geometry: GatherGeometry,
    halo: int,
) -> Launch:
    """The ``sjs_gather`` launch computing ``dst [slices, O, U, N]`` from ``src [C, rows, N]``:
    ``coef0`` weighs row ``u + shift``, ``coef1`` row ``u + shift + 1``.

    The output is ``dst.sum(0)``: slice z holds the sum over its ``c_slice`` inputs.
    """
    c, src_rows, n = src.shape
    slices, o, u, _ = dst.shape
    if src_rows < geometry.src_rows or slices != geometry.grid[2]:
        raise ValueError("gather buffers do not match the launch geometry")
    args = (src, coef0, coef1, shift, dst, i32(c), i32(o), i32(n), i32(u), i32(src_rows))
    args += (i32(halo), i32(geometry.channels_per_step), i32(geometry.c_slice))
    return Launch(
        SOURCE, geometry.name, geometry.grid, geometry.block, geometry.shared_mem, args, DEFINES
    )


def wgrad_launch(
    g: torch.Tensor,
    g_row0: int,
    U: int,
    src: torch.Tensor,
    shift: torch.Tensor,
    part: torch.Tensor,
    geometry: WgradGeometry,
    halo: int,
) -> Launch:
    """The ``sjs_wgrad`` launch over ``g [O, rows, N]`` (rows ``g_row0 ..``) and ``src``."""
    o, g_rows, n = g.shape
    c, src_rows, _ = src.shape
    if src_rows < geometry.src_rows or g_row0 + U > g_rows:
        raise ValueError("wgrad buffers are shorter than the rows the kernel reads")
    args = (g, i32(g_rows), i32(g_row0), src, i32(src_rows), shift, part, i32(c), i32(o))
    args += (i32(n), i32(U), i32(halo), i32(geometry.seg_tiles))
    return Launch(
        SOURCE, geometry.name, geometry.grid, geometry.block, geometry.shared_mem, args, DEFINES
    )


def _slice_sum(parts: torch.Tensor) -> torch.Tensor:
    return parts[0] if parts.shape[0] == 1 else parts.sum(0)


def forward_output(
    x, weight, taps, frac, window: int, t_out: int, runner: KernelRunner
) -> torch.Tensor:
    """``y [t_out, N, out]`` of :func:`delayed_matmul`, computed by ``runner``'s kernels."""
    t_in, n, c = x.shape
    o = weight.shape[0]
    dtype = compute_dtype(x, weight, frac)
    if t_out == 0 or n == 0:
        return x.new_zeros((t_out, n, o))
    halo = window - 1
    geo = gather_geometry(t_out, n, o, c, halo, dtype, runner)
    src = time_rows(x, t_in - t_out - halo, geo.src_rows, dtype)
    near, far = tap_coefficients(weight, frac, dtype)
    dst = torch.empty((geo.grid[2], o, t_out, n), dtype=dtype, device=x.device)
    runner(gather_launch(src, far, near, forward_shifts(taps, window), dst, geo, halo))
    return _slice_sum(dst).permute(1, 2, 0).to(x.dtype)


def _grad_rows(grad_y: torch.Tensor, window: int, rows: int, dtype) -> torch.Tensor:
    """Output gradient as rows ``[out, rows, N]``, row ``q`` = ``grad_y[q - window + 1]``."""
    return time_rows(grad_y, -(window - 1), rows, dtype)


def input_grad(
    grad_y, weight, taps, frac, window: int, t_in: int, runner: KernelRunner, grad_rows=None
) -> torch.Tensor:
    """Input gradient ``[t_in, N, in]``: the transposed gather of ``grad_y [t_out, N, out]``.

    ``grad_rows`` may hold the output gradient already laid out by :func:`_grad_rows`.
    """
    t_out, n, o = grad_y.shape
    c = weight.shape[1]
    halo = window - 1
    dtype = compute_dtype(grad_y, weight, frac)
    rows = t_out + halo  # input rows of the window, times t_in - t_out - halo .. t_in - 1
    geo = gather_geometry(rows, n, c, o, halo, dtype, runner)
    if grad_rows is None or grad_rows.shape[1] < geo.src_rows or grad_rows.dtype != dtype:
        grad_rows = _grad_rows(grad_y, window, geo.src_rows, dtype)
    near, far = tap_coefficients(weight, frac, dtype)
    # gx[p] = sum_j near g[p + k] + far g[p + k + 1] in rows shifted by halo.
    shift = taps.clamp(0, halo - 1).t().to(torch.int32).contiguous()
    dst = torch.empty((geo.grid[2], c, rows, n), dtype=dtype, device=grad_y.device)
    launch = gather_launch(
        grad_rows, near.t().contiguous(), far.t().contiguous(), shift, dst, geo, halo
    )
    runner(launch)
    grad_x = grad_y.new_zeros((t_in, n, c), dtype=dtype)
    first = t_in - rows
    grad_x[max(first, 0) :] = _slice_sum(dst)[:, max(-first, 0) :].permute(1, 2, 0)
    return grad_x


def _tap_sums(x, grad_y, taps, window, t_out, runner, dtype, grad_rows=None):
    """``(sum g x[t-k-1], sum g x[t-k])`` per synapse, ``[out, in]`` each."""
    t_in, n, c = x.shape
    o = grad_y.shape[2]
    halo = window - 1
    geo = wgrad_geometry(t_out, n, o, c, halo, dtype, runner)
    src = time_rows(x, t_in - t_out - halo, geo.src_rows, dtype)
    if grad_rows is None or grad_rows.dtype != dtype:
        g, g_row0 = time_rows(grad_y, 0, t_out, dtype), 0
    else:
        g, g_row0 = grad_rows, halo
    part = torch.empty((geo.grid[2], 2, o, c), dtype=dtype, device=x.device)
    runner(wgrad_launch(g, g_row0, t_out, src, forward_shifts(taps, window), part, geo, halo))
    sums = _slice_sum(part)
    return sums[0], sums[1]


def weight_frac_grads(
    x: torch.Tensor,
    grad_y: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    t_out: int,
    runner: KernelRunner | None = None,
    grad_rows=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dweight, dL/dfrac)`` ``[out, in]`` for :func:`delayed_matmul` given ``grad_y``.

    ``x`` ``[T_in, N, in]`` and ``grad_y`` ``[t_out, N, out]`` on one CUDA device (or any
    device with an explicit ``runner``).
    """
    runner = cupy_runtime.runner(x.device) if runner is None else runner
    dtype = compute_dtype(x, grad_y, weight, frac)
    if t_out == 0 or x.shape[1] == 0:
        return torch.zeros_like(weight), torch.zeros_like(frac)
    far_sum, near_sum = _tap_sums(x, grad_y, taps, window, t_out, runner, dtype, grad_rows)
    w, f = weight.detach().to(dtype), frac.detach().to(dtype)
    grad_w = f * far_sum + (1 - f) * near_sum
    grad_f = w * (far_sum - near_sum)
    return grad_w.to(weight.dtype), grad_f.to(frac.dtype)


class DelayedMatmul(torch.autograd.Function):
    """Autograd contract of :func:`delayed_matmul` with exact input, weight and frac grads:
    ``apply(x, weight, taps, frac, window, t_out, runner)``."""

    @staticmethod
    def forward(ctx, x, weight, taps, frac, window, t_out, runner):
        ctx.save_for_backward(x, weight, taps, frac)
        ctx.window, ctx.t_out, ctx.runner = window, t_out, runner
        return forward_output(x, weight, taps, frac, window, t_out, runner)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, taps, frac = ctx.saved_tensors
        need_x, need_w, _, need_f = ctx.needs_input_grad[:4]
        t_out, n = grad_y.shape[0], grad_y.shape[1]
        if t_out == 0 or n == 0:
            grad_x, grad_w, grad_f = map(torch.zeros_like, (x, weight, frac))
        else:
            grad_x = grad_w = grad_f = grad_rows = None
            if need_x:
                dtype = compute_dtype(grad_y, weight, frac)
                rows = padded_rows(t_out + ctx.window - 1) + ctx.window - 1
                grad_rows = _grad_rows(grad_y, ctx.window, rows, dtype)
                grad_x = input_grad(
                    grad_y, weight, taps, frac, ctx.window, x.shape[0], ctx.runner, grad_rows
                ).to(x.dtype)
            if need_w or need_f:
                grad_w, grad_f = weight_frac_grads(
                    x, grad_y, weight, taps, frac, ctx.window, t_out, ctx.runner, grad_rows
                )
        return (
            grad_x if need_x else None,
            grad_w if need_w else None,
            None,
            grad_f if need_f else None,
            None,
            None,
            None,
        )


# CuPy launches cannot be traced: under torch.compile each call is a graph break (the
# default mode runs it eagerly between compiled parts; fullgraph=True reports it).
@torch.compiler.disable
def delayed_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    t_out: int,
) -> torch.Tensor:
    """The :class:`~.contract.DelayedMatmul` contract on CUDA tensors.

    ``x``: ``[T_in, N, in]`` (zero before its first step) -> ``[t_out, N, out]``; ``taps``
    int64 ``[out, in]`` in ``[0, window - 2]``; same result and gradients as
    :func:`sj_spatial.backends.dense.delayed_matmul`.
    """
    if x.ndim != 3 or weight.ndim != 2 or x.shape[2] != weight.shape[1]:
        raise ValueError(
            f"x must be [T_in, N, in] and weight [out, in], got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if not 0 <= t_out <= x.shape[0]:
        raise ValueError(f"t_out must be in [0, {x.shape[0]}], got {t_out}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    return DelayedMatmul.apply(x, weight, taps, frac, window, t_out, cupy_runtime.runner(x.device))
