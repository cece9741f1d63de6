"""Fused CUDA time loop for a spatially delayed recurrent LIF population (backend='cupy').

The :class:`~.contract.FusedLIF` contract: all T steps of a fresh population of
:class:`~.contract.LIFCell` neurons in one forward and one backward kernel launch, one
thread block per sample, one thread per neuron, the spike history in global memory
(L2-resident). The weight and delay gradients are the feedforward reduction of
:mod:`.cuda` applied to the spike sequence shifted by one step, since ``r[t]`` is a
delayed matmul of ``s[.. t-1]``.

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

SOURCE = r"""
template <typename T>
__device__ __forceinline__ T sjs_surrogate_grad(T x, int kind, T alpha)
{
    if (kind == 0) {  // Sigmoid: alpha * sg * (1 - sg), sg = sigmoid(alpha * x)
        const T sg = (T)1 / ((T)1 + exp(-alpha * x));
        return alpha * sg * ((T)1 - sg);
    }
    // ATan: alpha / 2 / (1 + (pi / 2 * alpha * x)^2)
    const T ax = (T)1.5707963267948966 * alpha * x;
    return alpha / (T)2 / ((T)1 + ax * ax);
}

// One block per sample b, one thread per neuron j. s_hist: [window + T, N, n], rows 0..window-1
// are zeros (the time before the sequence) and row window + t receives s[t]; h_seq: [T, N, n]
// membrane potential before reset. w_near_t/w_far_t/taps_t are [in, out] (coalesced over j).
template <typename T>
__device__ void sjs_lif_forward(
    const T* __restrict__ x, const T* __restrict__ w_near_t, const T* __restrict__ w_far_t,
    const int* __restrict__ taps_t, const T* __restrict__ bias, const T* __restrict__ v0,
    T* __restrict__ s_hist, T* __restrict__ h_seq, T* __restrict__ v_last, T* __restrict__ c_last,
    int steps, int N, int n, int window, T tau, T v_threshold, T v_reset, int hard_reset,
    int decay_input, T syn_decay)
{
    const int b = blockIdx.x;
    const int j = threadIdx.x;
    const bool active = j < n;
    const long long row = (long long)N * n;
    const T v_rest = hard_reset ? v_reset : (T)0;
    T v = active ? v0[b * n + j] : (T)0;
    T c = (T)0;  // synaptic current (syn_decay 0: no synapse, c is the input itself)
    for (int t = 0; t < steps; ++t) {
        if (active) {
            T r = bias[j];
            const long long now = (long long)(window + t) * row + (long long)b * n;
            for (int i = 0; i < n; ++i) {
                const int k = taps_t[i * n + j];
                const long long at = now - (long long)(k + 1) * row + i;  // s[t - 1 - k, i]
                r += w_near_t[i * n + j] * s_hist[at] + w_far_t[i * n + j] * s_hist[at - row];
            }
            c = syn_decay * c + (x[(long long)t * row + (long long)b * n + j] + r);
            const T in = c;
            const T h = decay_input ? v + (in - (v - v_rest)) / tau : v - (v - v_rest) / tau + in;
            const T spike = (h - v_threshold) >= (T)0 ? (T)1 : (T)0;
            h_seq[(long long)t * row + (long long)b * n + j] = h;
            s_hist[now + j] = spike;
            v = hard_reset ? (spike != (T)0 ? v_reset : h) : h - spike * v_threshold;
        }
        __syncthreads();  // s[t] is complete before any thread reads it
    }
    if (active) {
        v_last[b * n + j] = v;
        c_last[b * n + j] = c;
    }
}

// Reverse time loop, one block per sample, one thread per neuron i. grad_in: [T + window, N, n]
// with rows T.. zero, so reads of later steps need no bounds checks; row t receives
// dL/d(input current)[t], which is dL/dx[t] and dL/dr[t]. w_near/w_far/taps are [out, in].
template <typename T>
__device__ void sjs_lif_backward(
    const T* __restrict__ grad_s, const T* __restrict__ grad_v_last,
    const T* __restrict__ grad_c_last, const T* __restrict__ w_near,
    const T* __restrict__ w_far, const int* __restrict__ taps, const T* __restrict__ s_hist,
    const T* __restrict__ h_seq, T* __restrict__ grad_in, T* __restrict__ grad_v0,
    int steps, int N, int n, int window, T tau, T v_threshold, T v_reset, int hard_reset,
    int decay_input, int detach_reset, int surrogate, T alpha, T syn_decay)
{
    const int b = blockIdx.x;
    const int i = threadIdx.x;
    const bool active = i < n;
    const long long row = (long long)N * n;
    T gv = active ? grad_v_last[b * n + i] : (T)0;  // dL/dv[t]
    T gc = active ? grad_c_last[b * n + i] : (T)0;  // dL/dc[t] from later steps
    for (int t = steps - 1; t >= 0; --t) {
        if (active) {
            const long long here = (long long)t * row + (long long)b * n;
            // s[t, i] reaches r[t + 1 + k, j] with weight w_near and r[t + 2 + k, j] with w_far.
            T gs = grad_s[here + i];
            for (int j = 0; j < n; ++j) {
                const int k = taps[j * n + i];
                const long long at = here + (long long)(k + 1) * row + j;
                gs += w_near[j * n + i] * grad_in[at] + w_far[j * n + i] * grad_in[at + row];
            }
            const T h = h_seq[here + i];
            const T spike = s_hist[(long long)window * row + here + i];
            const T dv_dh = hard_reset ? (T)1 - spike : (T)1;
            const T dv_ds = detach_reset ? (T)0 : (hard_reset ? v_reset - h : -v_threshold);
            const T gh = gv * dv_dh
                + (gs + gv * dv_ds) * sjs_surrogate_grad(h - v_threshold, surrogate, alpha);
            gc += decay_input ? gh / tau : gh;  // c[t] = syn_decay * c[t-1] + x[t] + r[t]
            grad_in[here + i] = gc;
            gc *= syn_decay;
            gv = gh * ((T)1 - (T)1 / tau);
        }
        __syncthreads();  // grad_in[t] is complete before step t - 1 reads it
    }
    if (active) grad_v0[b * n + i] = gv;
}

#define SJS_LIF(TAG, T)                                                                     \
    extern "C" __global__ void sjs_lif_forward_##TAG(                                       \
        const T* x, const T* w_near_t, const T* w_far_t, const int* taps_t, const T* bias,  \
        const T* v0, T* s_hist, T* h_seq, T* v_last, T* c_last, int steps, int N, int n,    \
        int window, T tau, T v_threshold, T v_reset, int hard_reset, int decay_input,       \
        T syn_decay)                                                                        \
    {                                                                                       \
        sjs_lif_forward<T>(x, w_near_t, w_far_t, taps_t, bias, v0, s_hist, h_seq, v_last,   \
                           c_last, steps, N, n, window, tau, v_threshold, v_reset,          \
                           hard_reset, decay_input, syn_decay);                             \
    }                                                                                       \
    extern "C" __global__ void sjs_lif_backward_##TAG(                                      \
        const T* grad_s, const T* grad_v_last, const T* grad_c_last, const T* w_near,       \
        const T* w_far, const int* taps, const T* s_hist, const T* h_seq, T* grad_in,       \
        T* grad_v0, int steps, int N, int n, int window, T tau, T v_threshold, T v_reset,   \
        int hard_reset, int decay_input, int detach_reset, int surrogate, T alpha,          \
        T syn_decay)                                                                        \
    {                                                                                       \
        sjs_lif_backward<T>(grad_s, grad_v_last, grad_c_last, w_near, w_far, taps, s_hist,  \
                            h_seq, grad_in, grad_v0, steps, N, n, window, tau,              \
                            v_threshold, v_reset, hard_reset, decay_input, detach_reset,    \
                            surrogate, alpha, syn_decay);                                   \
    }

SJS_LIF(f32, float)
SJS_LIF(f64, double)
"""

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
    return Launch(SOURCE, name, (N, 1, 1), (block_size(n), 1, 1), 0, args)


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
    return Launch(SOURCE, name, (N, 1, 1), (block_size(n), 1, 1), 0, args)


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
