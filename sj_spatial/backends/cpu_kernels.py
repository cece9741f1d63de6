"""The numba kernels of the CPU delayed matmul (:mod:`.cpu`): bodies and their twins.

Every kernel exists twice with the same body: ``*_parallel`` runs one block of rows per
task of numba's thread pool, ``*_serial`` runs the blocks in order on the calling thread
(small calls). A block's arithmetic does not depend on the task that runs it, so both
give the same bits. Which twin runs, and with which block size, is
:mod:`.cpu_schedule`'s decision; the rows' layout is described in :mod:`.cpu`.
"""

from __future__ import annotations

from ._numba import dot_helper as _dot_helper
from ._numba import helper as _helper
from ._numba import jit as _jit
from ._numba import parallel as _parallel
from ._numba import prange as _prange


@_helper
def _axpy(y, a, x):
    for q in range(y.shape[0]):
        y[q] += a * x[q]


@_helper
def _axpy2(y, a, x0, b, x1):
    for q in range(y.shape[0]):
        y[q] += a * x0[q] + b * x1[q]


@_dot_helper
def _dot(g, x):
    s = g.dtype.type(0)
    for q in range(g.shape[0]):
        s += g[q] * x[q]
    return s


@_dot_helper
def _dot2(g, x0, x1):
    s0 = g.dtype.type(0)
    s1 = g.dtype.type(0)
    for q in range(g.shape[0]):
        s0 += g[q] * x0[q]
        s1 += g[q] * x1[q]
    return s0, s1


# A synapse with tap k reads row[o + q] (weight a = near) and row[o - n + q] (b = far) for
# output position q in [0, m), with o = o0 - k n. Row positions below 0 are the zeros
# before the input's first step: the a-term starts at q = qa, the b-term at q = qb, and
# a synapse with o + m <= 0 reads nothing but zeros.


@_helper
def _forward_block(xp, near, far, k, n, o0, y, lo, hi):
    """Outputs ``lo .. hi-1`` of the forward: ``y[j] += a x[t-k] + b x[t-k-1]``."""
    n_in = near.shape[1]
    m = y.shape[1]
    for i in range(n_in):
        row = xp[i]
        for j in range(lo, hi):
            o = o0 - k[j, i] * n
            if o + m <= 0:  # reads only steps before the first
                continue
            a = near[j, i]
            b = far[j, i]
            qa = max(0, -o)
            qb = min(max(0, n - o), m)
            if b != 0:
                if qa < qb:  # near the first step only the a-term reads data
                    _axpy(y[j, qa:qb], a, row[o + qa : o + qb])
                _axpy2(y[j, qb:], a, row[o + qb : o + m], b, row[o - n + qb : o - n + m])
            elif a != 0:  # an integer delay; skips pruned synapses
                _axpy(y[j, qa:], a, row[o + qa : o + m])


@_helper
def _grad_input_block(g, near, far, k, n, o0, gxp, lo, hi):
    """Inputs ``lo .. hi-1``: transposed gather ``gx[t-k] += a g[t]``, ``gx[t-k-1] += b g[t]``."""
    n_out = near.shape[0]
    m = g.shape[1]
    for j in range(n_out):
        gj = g[j]
        for i in range(lo, hi):
            o = o0 - k[j, i] * n
            if o + m <= 0:
                continue
            a = near[j, i]
            b = far[j, i]
            row = gxp[i]
            # Row position p takes a g[p - o] for p in [pa0, pa1) and b g[p - o + n] for
            # p in [pb0, pb1); pb0 <= pa0 and pb1 = pa1 - n: b alone, both, a alone.
            pa0 = o + max(0, -o)
            pa1 = o + m
            if b == 0:
                if a != 0:  # an integer delay; skips pruned synapses
                    _axpy(row[pa0:pa1], a, gj[pa0 - o :])
                continue
            pb0 = o - n + min(max(0, n - o), m)
            pb1 = pa1 - n
            split = min(pa0, pb1)
            if pb0 < split:
                _axpy(row[pb0:split], b, gj[pb0 - o + n : split - o + n])
            if pa0 < pb1:
                _axpy2(row[pa0:pb1], a, gj[pa0 - o : pb1 - o], b, gj[pa0 - o + n :])
            split = max(pa0, pb1)
            if split < pa1:
                _axpy(row[split:pa1], a, gj[split - o :])


@_helper
def _dots_block(g, xp, k, n, o0, dot_near, dot_far, lo, hi):
    """Outputs ``lo .. hi-1``: ``dot_near[j, i] = g[j] . x[t-k]``, ``dot_far = g[j] . x[t-k-1]``."""
    n_in = k.shape[1]
    m = g.shape[1]
    for i in range(n_in):
        row = xp[i]
        for j in range(lo, hi):
            o = o0 - k[j, i] * n
            if o + m <= 0:
                dot_near[j, i] = 0
                dot_far[j, i] = 0
                continue
            qa = max(0, -o)
            qb = min(max(0, n - o), m)
            gj = g[j]
            head = gj.dtype.type(0)
            if qa < qb:
                head = _dot(gj[qa:qb], row[o + qa : o + qb])
            a, b = _dot2(gj[qb:], row[o + qb : o + m], row[o - n + qb : o - n + m])
            dot_near[j, i] = head + a
            dot_far[j, i] = b


@_parallel
def forward_parallel(xp, near, far, k, n, o0, y, block):
    n_out = near.shape[0]
    for b in _prange((n_out + block - 1) // block):
        _forward_block(xp, near, far, k, n, o0, y, b * block, min(b * block + block, n_out))


@_jit
def forward_serial(xp, near, far, k, n, o0, y, block):
    n_out = near.shape[0]
    for lo in range(0, n_out, block):
        _forward_block(xp, near, far, k, n, o0, y, lo, min(lo + block, n_out))


@_parallel
def grad_input_parallel(g, near, far, k, n, o0, gxp, block):
    n_in = near.shape[1]
    for b in _prange((n_in + block - 1) // block):
        _grad_input_block(g, near, far, k, n, o0, gxp, b * block, min(b * block + block, n_in))


@_jit
def grad_input_serial(g, near, far, k, n, o0, gxp, block):
    n_in = near.shape[1]
    for lo in range(0, n_in, block):
        _grad_input_block(g, near, far, k, n, o0, gxp, lo, min(lo + block, n_in))


@_parallel
def dots_parallel(g, xp, k, n, o0, dot_near, dot_far, block):
    n_out = k.shape[0]
    for b in _prange((n_out + block - 1) // block):
        _dots_block(g, xp, k, n, o0, dot_near, dot_far, b * block, min(b * block + block, n_out))


@_jit
def dots_serial(g, xp, k, n, o0, dot_near, dot_far, block):
    n_out = k.shape[0]
    for lo in range(0, n_out, block):
        _dots_block(g, xp, k, n, o0, dot_near, dot_far, lo, min(lo + block, n_out))


@_helper
def _transpose_rows(a, out, lo, hi):
    """``out[:, lo:hi] = a[lo:hi].T`` in 32 x 32 tiles, so both sides stay in cache."""
    for c0 in range(0, a.shape[1], 32):
        for c in range(c0, min(c0 + 32, a.shape[1])):
            row = out[c]
            for r in range(lo, hi):
                row[r] = a[r, c]


@_parallel
def transpose_parallel(a, out):
    n = a.shape[0]
    for b in _prange((n + 31) // 32):
        _transpose_rows(a, out, b * 32, min(b * 32 + 32, n))


@_jit
def transpose_serial(a, out):
    for lo in range(0, a.shape[0], 32):
        _transpose_rows(a, out, lo, min(lo + 32, a.shape[0]))
