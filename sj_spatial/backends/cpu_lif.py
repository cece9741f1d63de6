"""Fused CPU time loop for a spatially delayed recurrent LIF population (numba).

The :class:`~.contract.FusedLIF` contract on CPU tensors: all T steps of a fresh
population of :class:`~.contract.LIFCell` neurons in one forward and one backward call,
instead of one delayed matmul per time step from Python. The recurrence in time runs in
the compiled loop; at each step the neurons are split over numba's thread pool (sized
like torch's, at most the usable CPUs), and every synapse is two AXPYs over the whole
batch (the samples are the vector lanes); a call too small for the pool runs on the
calling thread. Synapses that read only before the first step (forward), only rows where
no sample spiked (forward), or only past the last step (backward) are skipped. The
weight and fraction gradients are the numba backend's reduction (:mod:`.cpu`) over the
spike sequence shifted by one step, since ``r[t]`` is a delayed matmul of ``s[.. t-1]``.

Arithmetic is in ``x``'s dtype (float32 or float64), in the order of the generic loop of
:func:`sj_spatial.functional.delayed_recurrence` on the numba backend (the recurrent
input accumulated over presynaptic neurons in order, then the bias), so that both agree
to rounding. Limits (:func:`fits`): float32 or float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import cpu
from ._numba import helper as _helper
from ._numba import jit as _jit
from ._numba import parallel as _parallel
from ._numba import prange as _prange
from .contract import SURROGATES, CellState, LIFCell, tap_coefficients
from .cpu_schedule import schedule

_HALF_PI = math.pi / 2


def fits(x: torch.Tensor) -> bool:
    """Whether the fused loop can run ``x [T, *batch, n]``: numba, float32/float64 on CPU."""
    return cpu.numba is not None and x.device.type == "cpu" and x.dtype in cpu.DTYPES


@_helper
def _surrogate_grad(x, kind, alpha, one):
    if kind == 0:  # Sigmoid: alpha * sg * (1 - sg), sg = sigmoid(alpha * x)
        sg = one / (one + np.exp(-alpha * x))
        return alpha * sg * (one - sg)
    ax = (one * _HALF_PI) * alpha * x  # ATan: alpha / 2 / (1 + (pi / 2 * alpha * x)^2)
    return alpha / (one + one) / (one + ax * ax)


# Each step's neurons are split over the thread pool (neuron j reads only history rows
# before ``now`` and writes only its own), all samples of the batch as the vector lanes
# of every synapse. That is one parallel region per time step, which on an idle machine
# is the fastest split measured (benchmarks/RESULTS.md, "Kernel design choices"); on a
# busy one the main job runs a single thread (threads.load_aware_threads). Each kernel
# exists twice, over the pool and on the calling thread, with the same per-neuron
# arithmetic: the bits do not depend on the thread count.


@_helper
def _forward_neuron(
    j, t, x, near, far, taps, bias, window, const, flags, s_hist, flat, h_seq, v, c, r, fired
):
    """Step ``t`` of neuron ``j``: its recurrent input from the spike history (``flat``:
    ``s_hist`` flattened, ``s_hist[row, i, q]`` at ``(row n + i) N + q``), its cell."""
    steps, n, batch = x.shape
    tau, v_threshold, v_reset, syn_decay, zero, one = const  # v_reset is 0 for a soft reset
    hard, decay_input = flags
    now = window + t
    plane = np.uint64(n * batch)
    width = np.uint64(batch)  # unsigned with the indices: no wraparound code
    rj = r[j]
    rj[:] = zero
    for i in range(n):
        row = now - 1 - taps[j, i]
        # A synapse whose two rows hold no spike in any sample adds nothing (also rows
        # before step 0).
        if not (fired[row, i] or fired[row - 1, i]):
            continue
        a = near[j, i]
        b = far[j, i]
        at = np.uint64((row * n + i) * batch)
        for q in range(width):
            rj[q] += a * flat[at + q] + b * flat[at - plane + q]
    fired_j = False
    for q in range(batch):
        cq = syn_decay * c[j, q] + (x[t, j, q] + (rj[q] + bias[j]))
        c[j, q] = cq
        vq = v[j, q]
        if decay_input:
            h = vq + (cq - (vq - v_reset)) / tau
        else:
            h = vq - (vq - v_reset) / tau + cq
        spike = one if h - v_threshold >= zero else zero
        h_seq[t, j, q] = h
        s_hist[now, j, q] = spike
        fired_j = fired_j or spike != zero
        if hard:
            v[j, q] = v_reset if spike != zero else h
        else:
            v[j, q] = h - spike * v_threshold
    fired[now, j] = fired_j


@_parallel
def _forward_parallel(
    x, near, far, taps, bias, v0, window, const, flags, s_hist, h_seq, v_last, c_last
):
    """``x [T, n, N]``; ``s_hist [window + T, n, N]`` (rows before ``window`` zero) receives
    the spikes, ``h_seq [T, n, N]`` the potentials before reset. ``const`` holds values of
    ``x``'s dtype, so that the arithmetic stays in it. Each step's neurons on the pool."""
    steps, n, _ = x.shape
    v, c, r = v0.copy(), np.zeros_like(v0), np.zeros_like(v0)
    fired = np.zeros((window + steps, n), dtype=np.bool_)  # any sample spiked, per row
    flat = s_hist.reshape(-1)
    for t in range(steps):
        for j in _prange(n):
            _forward_neuron(
                j, t, x, near, far, taps, bias, window, const, flags, s_hist, flat, h_seq, v,
                c, r, fired,
            )  # fmt: skip
    v_last[:] = v
    c_last[:] = c


@_jit
def _forward_serial(
    x, near, far, taps, bias, v0, window, const, flags, s_hist, h_seq, v_last, c_last
):
    """:func:`_forward_parallel` on the calling thread."""
    steps, n, _ = x.shape
    v, c, r = v0.copy(), np.zeros_like(v0), np.zeros_like(v0)
    fired = np.zeros((window + steps, n), dtype=np.bool_)
    flat = s_hist.reshape(-1)
    for t in range(steps):
        for j in range(n):
            _forward_neuron(
                j, t, x, near, far, taps, bias, window, const, flags, s_hist, flat, h_seq, v,
                c, r, fired,
            )  # fmt: skip
    v_last[:] = v
    c_last[:] = c


@_helper
def _backward_neuron(
    i, t, grad_s, near_t, far_t, taps_t, s_hist, h_seq, window, const, flags, grad_in, flat,
    gv, gc, gs,
):  # fmt: skip
    """Step ``t`` of neuron ``i`` in reverse: dL/d(input current) from later steps
    (``flat``: ``grad_in`` flattened, ``grad_in[row, j, q]`` at ``(row n + j) N + q``)."""
    steps, n, batch = grad_s.shape
    tau, v_threshold, v_reset, syn_decay, zero, one, alpha = const
    hard, decay_input, detach, kind = flags
    leak = one - one / tau
    plane = np.uint64(n * batch)
    width = np.uint64(batch)  # unsigned with the indices: no wraparound code
    # s[t, i] reaches r[t + 1 + k, j] with weight near and r[t + 2 + k, j] with far.
    gsi = gs[i]
    gsi[:] = grad_s[t, i]
    for j in range(n):
        row = t + 1 + taps_t[i, j]
        if row >= steps:  # both taps reach past the last step: no gradient
            continue
        a = near_t[i, j]
        b = far_t[i, j]
        at = np.uint64((row * n + j) * batch)
        for q in range(width):
            gsi[q] += a * flat[at + q] + b * flat[at + plane + q]
    for q in range(batch):
        h = h_seq[t, i, q]
        spike = s_hist[window + t, i, q]
        dv_dh = one - spike if hard else one
        if detach:
            dv_ds = zero
        else:
            dv_ds = v_reset - h if hard else -v_threshold
        sg = _surrogate_grad(h - v_threshold, kind, alpha, one)
        gh = gv[i, q] * dv_dh + (gsi[q] + gv[i, q] * dv_ds) * sg
        g = gc[i, q] + (gh / tau if decay_input else gh)
        grad_in[t, i, q] = g
        gc[i, q] = g * syn_decay
        gv[i, q] = gh * leak


@_parallel
def _backward_parallel(
    grad_s, grad_v_last, grad_c_last, near_t, far_t, taps_t, s_hist, h_seq, window, const,
    flags, grad_in,
):  # fmt: skip
    """Reverse time loop; ``grad_in [T + window, n, N]`` (rows from ``T`` zero) receives
    dL/d(input current)[t], which is dL/dx[t] and dL/dr[t]. ``*_t``: ``[in, out]``. Each
    step's neurons on the pool (neuron i reads only rows after ``t``)."""
    steps, n, _ = grad_s.shape
    gv, gc = grad_v_last.copy(), grad_c_last.copy()  # dL/dv[t], dL/dc[t] from later steps
    gs = np.zeros_like(gv)
    flat = grad_in.reshape(-1)
    for t in range(steps - 1, -1, -1):
        for i in _prange(n):
            _backward_neuron(
                i, t, grad_s, near_t, far_t, taps_t, s_hist, h_seq, window, const, flags,
                grad_in, flat, gv, gc, gs,
            )  # fmt: skip


@_jit
def _backward_serial(
    grad_s, grad_v_last, grad_c_last, near_t, far_t, taps_t, s_hist, h_seq, window, const,
    flags, grad_in,
):  # fmt: skip
    """:func:`_backward_parallel` on the calling thread."""
    steps, n, _ = grad_s.shape
    gv, gc = grad_v_last.copy(), grad_c_last.copy()
    gs = np.zeros_like(gv)
    flat = grad_in.reshape(-1)
    for t in range(steps - 1, -1, -1):
        for i in range(n):
            _backward_neuron(
                i, t, grad_s, near_t, far_t, taps_t, s_hist, h_seq, window, const, flags,
                grad_in, flat, gv, gc, gs,
            )  # fmt: skip


def _kernels(work: int, backward: bool):
    """The forward or backward kernel: over the pool when the call's ``work``
    (multiply-adds) is worth waking it and more than one thread runs, else on the
    calling thread."""
    parallel, _ = schedule(work, 1)
    if backward:
        return _backward_parallel if parallel else _backward_serial
    return _forward_parallel if parallel else _forward_serial


def _constants(cell: LIFCell, dtype: torch.dtype, backward: bool) -> tuple[tuple, tuple]:
    """The kernels' ``(const, flags)``: numbers in ``dtype``'s numpy type, and switches."""
    real = np.float64 if dtype == torch.float64 else np.float32
    hard = cell.v_reset is not None
    const = (cell.tau, cell.v_threshold, cell.v_reset if hard else 0.0, cell.synapse_decay)
    const += (0.0, 1.0) + ((cell.alpha,) if backward else ())
    flags = (hard, cell.decay_input)
    if backward:
        flags += (cell.detach_reset, SURROGATES.index(cell.surrogate))
    return tuple(real(c) for c in const), flags


def _batch_minor(seq: torch.Tensor) -> torch.Tensor:
    """``[T, N, n]`` -> contiguous ``[T, n, N]`` (the kernels' layout), and back."""
    return seq.transpose(1, 2).contiguous()


class LIFRecurrence(torch.autograd.Function):
    """``apply(x, weight, taps, frac, window, bias, cell) -> (s, v_last, c_last)``, ``x``
    ``[T, N, n]``, for a fresh LIF population (behind an optional exponential synapse)."""

    @staticmethod
    def forward(ctx, x, weight, taps, frac, window, bias, cell):
        steps, batch, n = x.shape
        dtype = x.dtype
        near, far = tap_coefficients(weight, frac, dtype)
        k = taps.detach().contiguous()
        b = x.new_zeros(n) if bias is None else bias.detach().to(dtype).contiguous()
        v0 = x.new_full((n, batch), cell.v_init)
        s_hist = x.new_zeros(window + steps, n, batch)
        h_seq = x.new_empty(steps, n, batch)
        v_last, c_last = x.new_empty(n, batch), x.new_empty(n, batch)
        xs = _batch_minor(x.detach())
        forward = _kernels(steps * n * n * batch, backward=False)
        forward(
            *(t.numpy() for t in (xs, near, far, k, b, v0)),
            window,
            *_constants(cell, dtype, backward=False),
            *(t.numpy() for t in (s_hist, h_seq, v_last, c_last)),
        )
        ctx.save_for_backward(weight, taps, frac, near, far, s_hist, h_seq)
        ctx.cell, ctx.window = cell, window
        ctx.bias_dtype = None if bias is None else bias.dtype
        s = _batch_minor(s_hist[window:])
        return s, v_last.t().contiguous(), c_last.t().contiguous()

    @staticmethod
    def backward(ctx, grad_s, grad_v_last, grad_c_last):
        weight, taps, frac, near, far, s_hist, h_seq = ctx.saved_tensors
        window = ctx.window
        steps, n, batch = h_seq.shape
        dtype = h_seq.dtype

        def batch_minor(g, shape):
            return h_seq.new_zeros(shape) if g is None else g.to(dtype).transpose(-1, -2)

        gs = batch_minor(grad_s, (steps, batch, n)).contiguous()
        gv = batch_minor(grad_v_last, (batch, n)).contiguous()
        gc = batch_minor(grad_c_last, (batch, n)).contiguous()
        grad_in = h_seq.new_zeros(steps + window, n, batch)
        tt = (near.t().contiguous(), far.t().contiguous(), taps.detach().t().contiguous())
        backward = _kernels(steps * n * n * batch, backward=True)
        backward(
            *(t.numpy() for t in (gs, gv, gc, *tt, s_hist, h_seq)),
            window,
            *_constants(ctx.cell, dtype, backward=True),
            grad_in.numpy(),
        )
        g = grad_in[:steps]  # [T, n, N]
        need_x, need_w, _, need_f, _, need_b, _ = ctx.needs_input_grad
        grad_w = grad_f = grad_b = None
        if need_w or need_f:
            # r[t] reads s[.. t-1]: the numba reduction over the history without its last
            # row, whose rows per neuron are s_hist[:-1, i, :] (time-major blocks of N).
            rows = s_hist[:-1].transpose(0, 1).reshape(n, -1)
            grads = g.transpose(0, 1).reshape(n, -1)
            grad_w, grad_f = cpu.weight_frac_grads_from_rows(
                grads, rows, weight, taps, frac, batch, window - 1
            )
        if need_b:
            grad_b = g.sum((0, 2)).to(ctx.bias_dtype)
        grad_x = _batch_minor(g) if need_x else None
        return grad_x, grad_w, None, grad_f, None, grad_b, None


@torch.compiler.disable  # a numba call: a graph break under torch.compile
def lif_recurrence(
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    bias: torch.Tensor | None,
    cell: LIFCell,
) -> tuple[torch.Tensor, CellState]:
    """The :class:`~.contract.FusedLIF` contract on CPU: ``s[t] = LIF(c[t])``,
    ``c[t] = synapse_decay * c[t-1] + x[t] + r[t]`` over ``x: [T, N, n]`` on a fresh cell;
    returns ``(s, CellState(v_last, c_last))``."""
    s, v_last, c_last = LIFRecurrence.apply(x, weight, taps, frac, window, bias, cell)
    return s, CellState(v_last, c_last)
