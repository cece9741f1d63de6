"""Event-driven CPU kernels (numba) for sparse inputs: work per input spike, not per input.

A delayed matmul ``y[t, b, j] = sum_i near[j, i] x[t-k, b, i] + far[j, i] x[t-k-1, b, i]``
(``k = taps[j, i]``) reads every input; when most inputs are zero (spikes), scattering
each nonzero ``x[s, b, i]`` into its outputs does a fraction of that work: ``y[s+k, b, j]
+= near x`` and ``y[s+k+1, b, j] += far x`` for every output ``j``. The weight and
fraction gradients are the same walk over the events, gathering the output gradient
instead (``dot_near[j, i] += x g[s+k, b, j]``, ``dot_far`` one step later).

Layouts: the events of one ``(sample b, input i)`` pair lie together, in time order
(:class:`Events`, compressed rows over the pairs); outputs and output gradients are
padded rows ``[N, out, width]``, so that the events of one pair and one output touch one
row; the weights are transposed to ``[in, out]`` (:class:`Fanout`). Every kernel runs
over blocks of outputs, one task of numba's thread pool each, so no two tasks write the
same value, and each output sums its terms in one fixed order whatever the split. Each
synapse's parameters are loaded once per two events of a pair.

The dense gather (:mod:`.cpu`) stays the reference: :mod:`.cpu` calls these kernels when
an input is sparse enough for them to be faster (:data:`EVENT_COST`) and tests compare
the two.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ._numba import jit, parallel, prange

#: What one update (an event times one output, both taps) costs in multiply-adds of the
#: dense gather, forward and weight gradients together: scattered scalar updates against
#: the gather's contiguous vectors. Measured on 700 -> 256, T 100, batch 16: 3.6 to 27
#: over densities of 1-20 % and max_delay 25 / 250, and 10 picks the faster path in every
#: case measured but one tie (benchmarks/RESULTS.md, "Kernel design choices"). :mod:`.cpu`
#: uses the events when they cost less than the gather by this measure.
EVENT_COST = 10

#: Calls whose gather does fewer multiply-adds than this stay on the gather: counting the
#: events would cost more than it could save (the recurrent layers call once per step).
MIN_WORK = 1 << 20


class Events(NamedTuple):
    """The nonzero inputs of ``x [t, N, in]``, grouped by ``(sample b, input i)``.

    The events of pair ``p = b * in + i`` are ``ptr[p] .. ptr[p + 1] - 1``, in time order;
    ``steps`` holds each event's output step through tap 0 (its input step minus the
    offset passed to :func:`events`, possibly negative), ``values`` its value.
    """

    ptr: torch.Tensor  # [N * in + 1] int64
    steps: torch.Tensor  # [nnz] int64
    values: torch.Tensor  # [nnz], the compute dtype


# The scans that list the events run on the calling thread: they read the input once, and
# waking the thread pool for them cost more than it saved on small calls.


@jit
def _count(x, counts):
    """``counts[b, i]``: nonzero values of ``x[:, b, i]``."""
    t, n_batch, n_in = x.shape
    for s in range(t):
        for b in range(n_batch):
            xs = x[s, b]
            row = counts[b]
            for i in range(n_in):
                row[i] += xs[i] != 0


@jit
def _fill(x, ptr, offset, steps, values):
    t, n_batch, n_in = x.shape
    cursor = ptr[:-1].copy()
    for s in range(t):
        for b in range(n_batch):
            xs = x[s, b]
            pair = b * n_in
            for i in range(n_in):
                if xs[i] != 0:
                    e = cursor[pair + i]
                    steps[e] = s - offset
                    values[e] = xs[i]
                    cursor[pair + i] = e + 1


def count(x: torch.Tensor) -> torch.Tensor:
    """Nonzero values per ``(sample, input)`` of ``x [t, N, in]``: ``[N, in]`` int64."""
    counts = torch.zeros(x.shape[1], x.shape[2], dtype=torch.int64)
    _count(x.detach().contiguous().numpy(), counts.numpy())
    return counts


def events(x: torch.Tensor, counts: torch.Tensor, offset: int, dtype: torch.dtype) -> Events:
    """The :class:`Events` of ``x [t, N, in]`` (``counts`` from :func:`count`), each
    event's step minus ``offset``, values in ``dtype``."""
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.int64)
    torch.cumsum(counts.reshape(-1), 0, out=ptr[1:])
    nnz = int(ptr[-1])
    steps = torch.empty(nnz, dtype=torch.int64)
    values = torch.empty(nnz, dtype=dtype)
    x = x.detach().to(dtype).contiguous()
    _fill(x.numpy(), ptr.numpy(), offset, steps.numpy(), values.numpy())
    return Events(ptr, steps, values)


# Rows of outputs and output gradients are padded: ``[N, out, width]``, output step q in
# column q + 1, with ``width >= t_out + window`` (:func:`_width`). A tap before the first
# step is clamped into column 0 and one past the last lands in the columns after
# ``t_out`` (written and thrown away, or read as zero), instead of a branch per synapse.
# Events have steps below ``t_out``, and a tap reaches at most ``window - 1`` steps
# further. Indices are unsigned so that numba emits no negative-index wraparound.


@jit
def _scatter_block(ptr, steps, values, near_t, far_t, k_t, y, lo, hi):
    """Outputs ``lo .. hi-1``: ``y[b, j, s+k] += near v``, ``y[b, j, s+k+1] += far v``."""
    n_in = k_t.shape[0]
    n_batch, n_out, width = y.shape
    flat = y.reshape(-1)
    one = np.uint64(1)
    stride = np.uint64(width)
    for b in range(n_batch):
        for i in range(n_in):
            p = b * n_in + i
            # Slices from 0, so that the loop index is known non-negative (no wraparound).
            ki = k_t[i, lo:hi]
            ai = near_t[i, lo:hi]
            ci = far_t[i, lo:hi]
            row0 = (b * n_out + lo) * width
            e = ptr[p]
            end = ptr[p + 1]
            while e < end and steps[e] < 0:  # taps before the first step land in column 0
                s = steps[e]
                v = values[e]
                row = np.uint64(row0)
                for j in range(hi - lo):
                    q = s + ki[j]
                    flat[row + np.uint64(max(q + 1, 0))] += ai[j] * v
                    flat[row + np.uint64(max(q + 2, 0))] += ci[j] * v
                    row += stride
                e += 1
            while e + 1 < end:  # two events per pass: each synapse's values loaded once
                v = values[e]
                w = values[e + 1]
                at = np.uint64(row0 + steps[e] + 1)
                gap = np.uint64(steps[e + 1] - steps[e])
                for j in range(hi - lo):
                    col = at + np.uint64(ki[j])
                    a = ai[j]
                    c = ci[j]
                    flat[col] += a * v
                    flat[col + one] += c * v
                    flat[col + gap] += a * w
                    flat[col + gap + one] += c * w
                    at += stride
                e += 2
            if e < end:
                v = values[e]
                at = np.uint64(row0 + steps[e] + 1)
                for j in range(hi - lo):
                    col = at + np.uint64(ki[j])
                    flat[col] += ai[j] * v
                    flat[col + one] += ci[j] * v
                    at += stride


@jit
def _dots_block(ptr, steps, values, k_t, g, dot_near_t, dot_far_t, lo, hi):
    """Outputs ``lo .. hi-1``: ``dot_near[i, j] += v g[b, j, s+k]``, ``dot_far`` at ``s+k+1``."""
    n_in = k_t.shape[0]
    n_batch, n_out, width = g.shape
    flat = g.reshape(-1)
    one = np.uint64(1)
    stride = np.uint64(width)
    for b in range(n_batch):
        for i in range(n_in):
            p = b * n_in + i
            ki = k_t[i, lo:hi]
            dn = dot_near_t[i, lo:hi]
            df = dot_far_t[i, lo:hi]
            row0 = (b * n_out + lo) * width
            e = ptr[p]
            end = ptr[p + 1]
            while e < end and steps[e] < 0:  # taps before the first step read column 0 (zero)
                s = steps[e]
                v = values[e]
                row = np.uint64(row0)
                for j in range(hi - lo):
                    q = s + ki[j]
                    dn[j] += v * flat[row + np.uint64(max(q + 1, 0))]
                    df[j] += v * flat[row + np.uint64(max(q + 2, 0))]
                    row += stride
                e += 1
            while e + 1 < end:  # two events per pass: each sum loaded and stored once
                v = values[e]
                w = values[e + 1]
                at = np.uint64(row0 + steps[e] + 1)
                gap = np.uint64(steps[e + 1] - steps[e])
                for j in range(hi - lo):
                    col = at + np.uint64(ki[j])
                    dn[j] += v * flat[col] + w * flat[col + gap]
                    df[j] += v * flat[col + one] + w * flat[col + gap + one]
                    at += stride
                e += 2
            if e < end:
                v = values[e]
                at = np.uint64(row0 + steps[e] + 1)
                for j in range(hi - lo):
                    col = at + np.uint64(ki[j])
                    dn[j] += v * flat[col]
                    df[j] += v * flat[col + one]
                    at += stride


@parallel
def _scatter_parallel(ptr, steps, values, near_t, far_t, k_t, y, block):
    n_out = y.shape[1]
    for blk in prange((n_out + block - 1) // block):
        lo = blk * block
        hi = min(lo + block, n_out)
        _scatter_block(ptr, steps, values, near_t, far_t, k_t, y, lo, hi)


@jit
def _scatter_serial(ptr, steps, values, near_t, far_t, k_t, y, block):
    _scatter_block(ptr, steps, values, near_t, far_t, k_t, y, 0, y.shape[1])


@parallel
def _dots_parallel(ptr, steps, values, k_t, g, dot_near_t, dot_far_t, block):
    n_out = g.shape[1]
    for blk in prange((n_out + block - 1) // block):
        lo = blk * block
        hi = min(lo + block, n_out)
        _dots_block(ptr, steps, values, k_t, g, dot_near_t, dot_far_t, lo, hi)


@jit
def _dots_serial(ptr, steps, values, k_t, g, dot_near_t, dot_far_t, block):
    _dots_block(ptr, steps, values, k_t, g, dot_near_t, dot_far_t, 0, g.shape[1])


class Fanout(NamedTuple):
    """A layer's synapses by input neuron: row ``i`` holds input ``i``'s synapses to every
    output, so that one input's events read contiguous rows."""

    near: torch.Tensor  # [in, out]: w (1 - f), the compute dtype
    far: torch.Tensor  # [in, out]: w f
    taps: torch.Tensor  # [in, out] int32


def fanout(weight: torch.Tensor, taps: torch.Tensor, frac: torch.Tensor, dtype) -> Fanout:
    """The :class:`Fanout` of ``[out, in]`` weights, taps and fractions, in ``dtype``."""
    w = weight.detach().to(dtype).t()
    f = frac.detach().to(dtype).t()
    n_in, n_out = w.shape
    far = torch.mul(w, f, out=w.new_empty(n_in, n_out))  # out= gives the [in, out] layout
    near = torch.sub(w, far, out=w.new_empty(n_in, n_out))
    taps_t = torch.empty(n_in, n_out, dtype=torch.int32).copy_(taps.detach().t())
    return Fanout(near, far, taps_t)


def _width(t_out: int, window: int) -> int:
    """Row width of padded outputs: at least ``t_out + window`` values, rounded up to an
    odd number of 64-byte lines so that rows at the same step fall in different cache
    sets (a stride near 4 KiB makes every 8th row collide)."""
    lines = -(-(t_out + window) // 16)
    return 16 * (lines + 1 - lines % 2)


def _out_block(n_out: int, tasks: int) -> int:
    """Outputs per task: ``n_out`` split into about ``tasks`` blocks, a multiple of 16."""
    return max(16, -(-n_out // (16 * max(tasks, 1))) * 16)


def forward(ev: Events, fan: Fanout, window: int, n_batch: int, t_out: int, tasks: int):
    """``y [t_out, N, out]`` in the fan-out's dtype, on ``tasks`` tasks (1: the calling
    thread)."""
    n_out = fan.near.shape[1]
    y = fan.near.new_zeros(n_batch, n_out, _width(t_out, window))
    (_scatter_parallel if tasks > 1 else _scatter_serial)(
        *(a.numpy() for a in ev), *(a.numpy() for a in fan), y.numpy(), _out_block(n_out, tasks)
    )
    return y[:, :, 1 : t_out + 1].permute(2, 0, 1).contiguous()


def dots(
    ev: Events, taps_t: torch.Tensor, grad_y: torch.Tensor, window: int, tasks: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dot_near, dot_far)`` as ``[in, out]`` from the events, the fan-out's taps and
    ``grad_y [t_out, N, out]`` (in the events' dtype): the sums over samples and steps of
    an input times the output gradient its near (far) tap reaches."""
    t_out, n_batch, n_out = grad_y.shape
    g = grad_y.new_zeros(n_batch, n_out, _width(t_out, window))
    g[:, :, 1 : t_out + 1] = grad_y.permute(1, 2, 0)
    dot_near_t = grad_y.new_zeros(taps_t.shape)
    dot_far_t = grad_y.new_zeros(taps_t.shape)
    (_dots_parallel if tasks > 1 else _dots_serial)(
        *(a.numpy() for a in ev),
        taps_t.numpy(),
        g.numpy(),
        dot_near_t.numpy(),
        dot_far_t.numpy(),
        _out_block(n_out, tasks),
    )
    return dot_near_t, dot_far_t
