"""Fused CUDA time loop for a spatially delayed recurrent LIF population (backend='cupy').

``SpatialRecurrentContainer(neuron.LIFNode(...), n, backend='cupy')`` in multi-step mode
runs all T steps in one forward and one backward kernel launch: one thread block per
sample, one thread per neuron, the spike history in global memory (L2-resident). The
weight and delay gradients are the feedforward reduction of :mod:`.cuda` applied to the
spike sequence shifted by one step, since ``r[t]`` is a delayed matmul of ``s[.. t-1]``.

Supported: ``neuron.LIFNode`` (exact class) in single-step mode with a Sigmoid or ATan
surrogate (``spiking=True``), hard or soft reset, ``decay_input`` either way,
``detach_reset`` either way, alone or behind an exponential synapse
(``nn.Sequential(ExponentialSynapse(tau), LIFNode(...))``, the paper's cell in
:func:`sj_spatial.models.recurrent_shd_model`), ``n <= 1024``, float32 or float64,
starting a fresh sequence (empty delay memory, neuron and synapse just reset). Anything
else runs the generic loop.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
from torch.autograd.function import once_differentiable

MAX_NEURONS = 1024
SURROGATES = {"Sigmoid": 0, "ATan": 1}

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

// One block per sample b, one thread per neuron j. s_hist: [L + T, N, n], rows 0..L-1
// are zeros (the time before the sequence) and row L + t receives s[t]; h_seq: [T, N, n]
// membrane potential before reset. w0t/w1t/taps_t are [in, out] (coalesced over j).
template <typename T>
__device__ void sjs_lif_forward(
    const T* __restrict__ x, const T* __restrict__ w0t, const T* __restrict__ w1t,
    const int* __restrict__ taps_t, const T* __restrict__ bias, const T* __restrict__ v0,
    T* __restrict__ s_hist, T* __restrict__ h_seq, T* __restrict__ v_last, T* __restrict__ c_last,
    int steps, int N, int n, int L, T tau, T v_threshold, T v_reset, int hard_reset,
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
            const long long now = (long long)(L + t) * row + (long long)b * n;
            for (int i = 0; i < n; ++i) {
                const int k = taps_t[i * n + j];
                const long long at = now - (long long)(k + 1) * row + i;  // s[t - 1 - k, i]
                r += w0t[i * n + j] * s_hist[at] + w1t[i * n + j] * s_hist[at - row];
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

// Reverse time loop, one block per sample, one thread per neuron i. grad_in: [T + L, N, n]
// with rows T.. zero, so reads of later steps need no bounds checks; row t receives
// dL/d(input current)[t], which is dL/dx[t] and dL/dr[t]. w0/w1/taps are [out, in].
template <typename T>
__device__ void sjs_lif_backward(
    const T* __restrict__ grad_s, const T* __restrict__ grad_v_last,
    const T* __restrict__ grad_c_last, const T* __restrict__ w0,
    const T* __restrict__ w1, const int* __restrict__ taps, const T* __restrict__ s_hist,
    const T* __restrict__ h_seq, T* __restrict__ grad_in, T* __restrict__ grad_v0,
    int steps, int N, int n, int L, T tau, T v_threshold, T v_reset, int hard_reset,
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
            // s[t, i] reaches r[t + 1 + k, j] with weight w0 and r[t + 2 + k, j] with w1.
            T gs = grad_s[here + i];
            for (int j = 0; j < n; ++j) {
                const int k = taps[j * n + i];
                const long long at = here + (long long)(k + 1) * row + j;
                gs += w0[j * n + i] * grad_in[at] + w1[j * n + i] * grad_in[at + row];
            }
            const T h = h_seq[here + i];
            const T spike = s_hist[(long long)L * row + here + i];
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
        const T* x, const T* w0t, const T* w1t, const int* taps_t, const T* bias,           \
        const T* v0, T* s_hist, T* h_seq, T* v_last, T* c_last, int steps, int N, int n,    \
        int L, T tau, T v_threshold, T v_reset, int hard_reset, int decay_input,            \
        T syn_decay)                                                                        \
    {                                                                                       \
        sjs_lif_forward<T>(x, w0t, w1t, taps_t, bias, v0, s_hist, h_seq, v_last, c_last,    \
                           steps, N, n, L, tau, v_threshold, v_reset, hard_reset,           \
                           decay_input, syn_decay);                                         \
    }                                                                                       \
    extern "C" __global__ void sjs_lif_backward_##TAG(                                      \
        const T* grad_s, const T* grad_v_last, const T* grad_c_last, const T* w0,           \
        const T* w1, const int* taps, const T* s_hist, const T* h_seq, T* grad_in,          \
        T* grad_v0, int steps, int N, int n, int L, T tau, T v_threshold, T v_reset,        \
        int hard_reset, int decay_input, int detach_reset, int surrogate, T alpha,          \
        T syn_decay)                                                                        \
    {                                                                                       \
        sjs_lif_backward<T>(grad_s, grad_v_last, grad_c_last, w0, w1, taps, s_hist, h_seq,  \
                            grad_in, grad_v0, steps, N, n, L, tau, v_threshold, v_reset,    \
                            hard_reset, decay_input, detach_reset, surrogate, alpha,        \
                            syn_decay);                                                     \
    }

SJS_LIF(f32, float)
SJS_LIF(f64, double)
"""

#: Names of the ``extern "C"`` kernels in :data:`SOURCE`.
KERNELS = tuple(f"sjs_lif_{d}_{t}" for d in ("forward", "backward") for t in ("f32", "f64"))


def _cell(step) -> tuple[torch.nn.Module | None, torch.nn.Module]:
    """``(synapse, neuron)`` of a cell ``Sequential(ExponentialSynapse, neuron)``, else
    ``(None, step)``."""
    from ..models import ExponentialSynapse

    if (
        isinstance(step, torch.nn.Sequential)
        and len(step) == 2
        and type(step[0]) is ExponentialSynapse
        and step[0].step_mode == "s"
    ):
        return step[0], step[1]
    return None, step


def lif_params(step) -> dict | None:
    """The constants of the cell ``step`` (a LIF neuron, alone or behind an exponential
    synapse) when the fused kernel reproduces it exactly, else None."""
    try:
        from spikingjelly.activation_based import neuron
    except ImportError:  # pragma: no cover - spikingjelly is a dependency
        return None
    synapse, step = _cell(step)
    if synapse is not None and isinstance(synapse.state, torch.Tensor):
        return None  # a synapse in the middle of a sequence: the generic loop handles it
    if type(step) is not neuron.LIFNode or getattr(step, "step_mode", "s") != "s":
        return None
    sg = step.surrogate_function
    kind = SURROGATES.get(type(sg).__name__)
    if (
        kind is None
        or not getattr(sg, "spiking", True)
        or type(sg).__module__ != ("spikingjelly.activation_based.surrogate")
    ):
        return None
    if isinstance(step.v, torch.Tensor):  # continuing a sequence: the generic loop handles it
        return None
    hard = step.v_reset is not None
    return dict(
        tau=float(step.tau),
        v_threshold=float(step.v_threshold),
        v_reset=float(step.v_reset) if hard else 0.0,
        v0=float(step.v),
        hard_reset=int(hard),
        decay_input=int(bool(step.decay_input)),
        detach_reset=int(bool(step.detach_reset)),
        surrogate=kind,
        alpha=float(sg.alpha),
        syn_decay=0.0 if synapse is None else float(synapse.decay),
    )


def set_final_state(step, v_last: torch.Tensor, c_last: torch.Tensor) -> None:
    """Leave the cell as the generic loop would: the neuron's ``v`` (and the synapse's
    ``state``) at the last step, so that later calls continue the sequence."""
    synapse, lif = _cell(step)
    lif.v = v_last
    if synapse is not None:
        synapse.state = c_last


def block_size(n: int) -> int:
    """Threads per block: one per neuron, rounded up to whole warps."""
    return 32 * math.ceil(n / 32)


def _scalar(dtype: torch.dtype, value: float):
    return np.float64(value) if dtype == torch.float64 else np.float32(value)


def _tag(dtype: torch.dtype) -> str:
    return "f64" if dtype == torch.float64 else "f32"


def forward_launch(
    x, w0t, w1t, taps_t, bias, v0, s_hist, h_seq, v_last, c_last, p: dict, num_taps: int
):
    """The :class:`~.cuda.Launch` of the forward time loop (tensors stay tensors)."""
    from .cuda import Launch

    steps, N, n = x.shape
    c = partial(_scalar, x.dtype)
    args = (
        x,
        w0t,
        w1t,
        taps_t,
        bias,
        v0,
        s_hist,
        h_seq,
        v_last,
        c_last,
        np.int32(steps),
        np.int32(N),
        np.int32(n),
        np.int32(num_taps),
        c(p["tau"]),
        c(p["v_threshold"]),
        c(p["v_reset"]),
        np.int32(p["hard_reset"]),
        np.int32(p["decay_input"]),
        c(p["syn_decay"]),
    )
    return Launch(f"sjs_lif_forward_{_tag(x.dtype)}", (N, 1, 1), (block_size(n), 1, 1), 0, args)


def backward_launch(
    grad_s,
    grad_v_last,
    grad_c_last,
    w0,
    w1,
    taps,
    s_hist,
    h_seq,
    grad_in,
    grad_v0,
    p: dict,
    num_taps: int,
):
    """The :class:`~.cuda.Launch` of the reverse time loop."""
    from .cuda import Launch

    steps, N, n = grad_s.shape
    c = partial(_scalar, grad_s.dtype)
    args = (
        grad_s,
        grad_v_last,
        grad_c_last,
        w0,
        w1,
        taps,
        s_hist,
        h_seq,
        grad_in,
        grad_v0,
        np.int32(steps),
        np.int32(N),
        np.int32(n),
        np.int32(num_taps),
        c(p["tau"]),
        c(p["v_threshold"]),
        c(p["v_reset"]),
        np.int32(p["hard_reset"]),
        np.int32(p["decay_input"]),
        np.int32(p["detach_reset"]),
        np.int32(p["surrogate"]),
        c(p["alpha"]),
        c(p["syn_decay"]),
    )
    name = f"sjs_lif_backward_{_tag(grad_s.dtype)}"
    return Launch(name, (N, 1, 1), (block_size(n), 1, 1), 0, args)


class LIFRecurrence(torch.autograd.Function):
    """``(x, weight, bias, frac, taps) -> (s, v_last, c_last)`` for a LIF population (behind
    an optional exponential synapse, current ``c``) starting fresh.

    Forward and backward are one kernel launch each; the weight and fraction gradients
    reuse the feedforward reduction, because ``r[t]`` is the delayed matmul of the spike
    sequence read one step earlier.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, frac, taps, params, num_taps, runner):
        steps, N, n = x.shape
        dtype, dev = x.dtype, x.device
        x = x.contiguous()
        w, f = weight.detach().to(dtype), frac.detach().to(dtype)
        w0, w1, taps32 = (w * (1 - f)).contiguous(), (w * f).contiguous(), taps.to(torch.int32)
        bias_ = torch.zeros(n, dtype=dtype, device=dev) if bias is None else bias.detach()
        v0 = torch.full((N, n), params["v0"], dtype=dtype, device=dev)
        s_hist = torch.zeros(num_taps + steps, N, n, dtype=dtype, device=dev)
        h_seq = torch.empty(steps, N, n, dtype=dtype, device=dev)
        v_last = torch.empty(N, n, dtype=dtype, device=dev)
        c_last = torch.empty(N, n, dtype=dtype, device=dev)
        runner(
            forward_launch(
                x,
                w0.t().contiguous(),
                w1.t().contiguous(),
                taps32.t().contiguous(),
                bias_.to(dtype).contiguous(),
                v0,
                s_hist,
                h_seq,
                v_last,
                c_last,
                params,
                num_taps,
            )
        )
        ctx.save_for_backward(weight, frac, taps, w0, w1, taps32.contiguous(), s_hist, h_seq)
        ctx.params, ctx.num_taps, ctx.runner = params, num_taps, runner
        return s_hist[num_taps:], v_last, c_last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s, grad_v_last, grad_c_last):
        from .cuda import weight_frac_grads

        weight, frac, taps, w0, w1, taps32, s_hist, h_seq = ctx.saved_tensors
        L = ctx.num_taps
        steps, N, n = h_seq.shape
        zeros = partial(torch.zeros, dtype=h_seq.dtype, device=h_seq.device)
        grad_s = zeros(steps, N, n) if grad_s is None else grad_s.to(h_seq.dtype).contiguous()
        grad_v_last, grad_c_last = (
            zeros(N, n) if g is None else g.to(h_seq.dtype).contiguous()
            for g in (grad_v_last, grad_c_last)
        )
        grad_in = zeros(steps + L, N, n)
        grad_v0 = zeros(N, n)
        ctx.runner(
            backward_launch(
                grad_s,
                grad_v_last,
                grad_c_last,
                w0,
                w1,
                taps32,
                s_hist,
                h_seq,
                grad_in,
                grad_v0,
                ctx.params,
                L,
            )
        )
        grad_x = grad_in[:steps]
        grad_w = grad_f = grad_b = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            # r[t] reads s[.. t-1]: the reduction over the history without its last row.
            grad_w, grad_f = weight_frac_grads(
                s_hist[:-1], grad_x, weight, taps, frac, L, steps, runner=ctx.runner
            )
        if ctx.needs_input_grad[2]:
            grad_b = grad_x.sum((0, 1))
        return grad_x, grad_w, grad_b, grad_f, None, None, None, None


def lif_recurrence(x, weight, bias, taps, frac, params: dict, num_taps: int, runner=None):
    """Fused ``s[t] = LIF(c[t])``, ``c[t] = syn_decay * c[t-1] + x[t] + r[t]`` over
    ``x: [T, N, n]`` (``syn_decay`` 0: no synapse); returns ``(s, v_last, c_last)``."""
    if runner is None:
        from .cuda import _runner

        runner = _runner(x.device)
    return LIFRecurrence.apply(x, weight, bias, frac, taps, params, num_taps, runner)
