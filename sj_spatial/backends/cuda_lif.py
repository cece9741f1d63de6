"""Fused CUDA time loop for a spatially delayed recurrent LIF population (backend='cupy').

The :class:`~.contract.FusedLIF` contract: all T steps of a fresh population of
:class:`~.contract.LIFCell` neurons in one forward and one backward kernel launch, one
thread block per sample, one thread per neuron, the spike history in global memory
(L2-resident); the source is the package file ``backends/kernels/lif_recurrence.cu``.
The weight and delay gradients are the feedforward reduction of :mod:`.cuda` applied to
the spike sequence shifted by one step, since ``r[t]`` is a delayed matmul of ``s[.. t-1]``.

Limits (:func:`fits`): ``n <= 1024`` neurons, float32 or float64. Which cells are
:class:`~.contract.LIFCell` ones is decided by the cell classes
(:func:`sj_spatial.cells.lif_cell`), not here.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import cupy_runtime
from .contract import SURROGATES, CellState, LIFCell, tap_coefficients
from .cuda import weight_frac_grads
from .cupy_runtime import KernelRunner, Launch, scalar, type_tag

MAX_NEURONS = 1024

#: Kernel source, CUDA C++ (compiled with NVRTC by CuPy, with :data:`DEFINES`).
SOURCE = cupy_runtime.kernel_source("lif_recurrence.cu")
#: The macros :data:`SOURCE` is compiled with: none (the kernels have no tile constants).
MACROS: dict[str, int] = {}
#: :data:`MACROS` as the compiler's ``-DNAME=value`` options.
DEFINES = cupy_runtime.define_options(MACROS)

#: Names of the ``extern "C"`` kernels in :data:`SOURCE`.
KERNELS = tuple(f"sjs_lif_{d}_{t}" for d in ("forward", "backward") for t in ("f32", "f64"))


def fits(x: torch.Tensor) -> bool:
    """Whether the fused kernels can run ``x [T, *batch, n]``: n <= 1024, float32/float64."""
    return x.shape[-1] <= MAX_NEURONS and x.dtype in (torch.float32, torch.float64)


def block_size(n: int) -> int:
    """Threads per block: one per neuron, rounded up to whole warps."""
    return 32 * math.ceil(n / 32)


def _cell_scalars(cell: LIFCell, dtype: torch.dtype, backward: bool) -> tuple:
    """The kernels' cell arguments in their order: ``tau, v_threshold, v_reset,
    hard_reset, decay_input``, then (backward) ``detach_reset, surrogate, alpha``, then
    ``syn_decay``."""
    c = partial(scalar, dtype)
    hard = cell.v_reset is not None
    args = (c(cell.tau), c(cell.v_threshold), c(cell.v_reset if hard else 0.0))
    args += (np.int32(hard), np.int32(cell.decay_input))
    if backward:
        surrogate = np.int32(SURROGATES.index(cell.surrogate))
        args += (np.int32(cell.detach_reset), surrogate, c(cell.alpha))
    return (*args, c(cell.synapse_decay))


def forward_launch(
    x, w_near_t, w_far_t, taps_t, bias, v0, s_hist, h_seq, v_last, c_last, cell, window
) -> Launch:
    """The :class:`~.cupy_runtime.Launch` of the forward time loop (tensors stay tensors)."""
    steps, N, n = x.shape
    args = (x, w_near_t, w_far_t, taps_t, bias, v0, s_hist, h_seq, v_last, c_last)
    args += (np.int32(steps), np.int32(N), np.int32(n), np.int32(window))
    args += _cell_scalars(cell, x.dtype, backward=False)
    name = f"sjs_lif_forward_{type_tag(x.dtype)}"
    return Launch(SOURCE, name, (N, 1, 1), (block_size(n), 1, 1), 0, args, DEFINES)


def backward_launch(
    grad_s, grad_v_last, grad_c_last, w_near, w_far, taps, s_hist, h_seq, grad_in, grad_v0,
    cell, window,
) -> Launch:  # fmt: skip
    """The :class:`~.cupy_runtime.Launch` of the reverse time loop."""
    steps, N, n = grad_s.shape
    args = (grad_s, grad_v_last, grad_c_last, w_near, w_far, taps, s_hist, h_seq, grad_in)
    args += (grad_v0, np.int32(steps), np.int32(N), np.int32(n), np.int32(window))
    args += _cell_scalars(cell, grad_s.dtype, backward=True)
    name = f"sjs_lif_backward_{type_tag(grad_s.dtype)}"
    return Launch(SOURCE, name, (N, 1, 1), (block_size(n), 1, 1), 0, args, DEFINES)


class LIFRecurrence(torch.autograd.Function):
    """``apply(x, weight, taps, frac, window, bias, cell, runner) -> (s, v_last, c_last)``
    for a fresh LIF population (behind an optional exponential synapse, current ``c``).

    Forward and backward are one kernel launch each; the weight and fraction gradients
    reuse the feedforward reduction, because ``r[t]`` is the delayed matmul of the spike
    sequence read one step earlier.
    """

    @staticmethod
    def forward(ctx, x, weight, taps, frac, window, bias, cell, runner):
        steps, N, n = x.shape
        dtype, dev = x.dtype, x.device
        x = x.contiguous()
        w_near, w_far = tap_coefficients(weight, frac, dtype)
        taps32 = taps.to(torch.int32).contiguous()
        bias_ = torch.zeros(n, dtype=dtype, device=dev) if bias is None else bias.detach()
        v0 = torch.full((N, n), cell.v_init, dtype=dtype, device=dev)
        s_hist = torch.zeros(window + steps, N, n, dtype=dtype, device=dev)
        h_seq = torch.empty(steps, N, n, dtype=dtype, device=dev)
        v_last = torch.empty(N, n, dtype=dtype, device=dev)
        c_last = torch.empty(N, n, dtype=dtype, device=dev)
        runner(
            forward_launch(
                x,
                w_near.t().contiguous(),
                w_far.t().contiguous(),
                taps32.t().contiguous(),
                bias_.to(dtype).contiguous(),
                v0,
                s_hist,
                h_seq,
                v_last,
                c_last,
                cell,
                window,
            )
        )
        ctx.save_for_backward(weight, taps, frac, w_near, w_far, taps32, s_hist, h_seq)
        ctx.cell, ctx.window, ctx.runner = cell, window, runner
        return s_hist[window:], v_last, c_last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s, grad_v_last, grad_c_last):
        weight, taps, frac, w_near, w_far, taps32, s_hist, h_seq = ctx.saved_tensors
        window = ctx.window
        steps, N, n = h_seq.shape
        zeros = partial(torch.zeros, dtype=h_seq.dtype, device=h_seq.device)
        grad_s = zeros(steps, N, n) if grad_s is None else grad_s.to(h_seq.dtype).contiguous()
        grad_v_last, grad_c_last = (
            zeros(N, n) if g is None else g.to(h_seq.dtype).contiguous()
            for g in (grad_v_last, grad_c_last)
        )
        grad_in = zeros(steps + window, N, n)
        grad_v0 = zeros(N, n)
        ctx.runner(
            backward_launch(
                grad_s,
                grad_v_last,
                grad_c_last,
                w_near,
                w_far,
                taps32,
                s_hist,
                h_seq,
                grad_in,
                grad_v0,
                ctx.cell,
                window,
            )
        )
        grad_x = grad_in[:steps]
        need_x, need_w, _, need_f, _, need_b = ctx.needs_input_grad[:6]
        grad_w = grad_f = grad_b = None
        if need_w or need_f:
            # r[t] reads s[.. t-1]: the reduction over the history without its last row.
            grad_w, grad_f = weight_frac_grads(
                s_hist[:-1], grad_x, weight, taps, frac, window, steps, runner=ctx.runner
            )
        if need_b:
            grad_b = grad_x.sum((0, 1))
        return grad_x, grad_w, None, grad_f, None, grad_b, None, None


@torch.compiler.disable  # CuPy launches: a graph break under torch.compile
def lif_recurrence(
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    bias: torch.Tensor | None,
    cell: LIFCell,
    runner: KernelRunner | None = None,
) -> tuple[torch.Tensor, CellState]:
    """The :class:`~.contract.FusedLIF` contract: ``s[t] = LIF(c[t])``,
    ``c[t] = synapse_decay * c[t-1] + x[t] + r[t]`` over ``x: [T, N, n]`` on a fresh cell;
    returns ``(s, CellState(v_last, c_last))``."""
    runner = cupy_runtime.runner(x.device) if runner is None else runner
    s, v_last, c_last = LIFRecurrence.apply(x, weight, taps, frac, window, bias, cell, runner)
    return s, CellState(v_last, c_last)
