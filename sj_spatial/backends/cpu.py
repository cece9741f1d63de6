"""Fast CPU backend: ``backend="torch"`` on CPU tensors when numba is installed.

The :class:`~.contract.DelayedMatmul` contract of :mod:`.dense`, but a synapse costs two
AXPYs whatever ``max_delay`` is. Layout: every input neuron ``i`` is one contiguous row
of the input steps the outputs read (time-major blocks of ``N`` values), every output
neuron ``j`` one row of ``t_out * N`` values. Synapse ``j <- i`` with tap ``k`` adds
``near`` times the input row shifted by ``k`` steps and ``far`` times it shifted by
``k + 1``; steps before the input's first are zeros, neither stored nor read. The
backward has the same structure: the input gradient is the transposed gather (one row
per input neuron), and the weight and fraction gradients are two dot products per
synapse over the same rows. Arithmetic is in float32 or float64: ``x``'s dtype, or the
weight's when ``x`` is float16/bfloat16 (the output is then rounded back to ``x``'s
dtype, as under autocast); when neither is float32/float64 the call falls back to
:mod:`.dense`, as it does for empty shapes.

Skipped work: pruned synapses (weight exactly 0), the far tap of integer delays
(``f == 0``, the forward and input gradient) and every read of steps before the input's
first. The gather does not skip zero inputs: rows are read whole, in vectorised loops.
For sparse inputs an eager call runs the event kernels of :mod:`.cpu_events` instead
(forward, weight and fraction gradients) when they do less work
(:func:`_sparse_events`); the gather stays the reference and runs under
``torch.compile``.
"""

from __future__ import annotations

import threading

import torch

from . import cpu_events, dense
from ._numba import dot_helper as _dot_helper
from ._numba import helper as _helper
from ._numba import jit as _jit
from ._numba import numba
from ._numba import parallel as _parallel
from ._numba import prange as _prange

#: Most output (forward, weight gradient) or input (input gradient) neurons per block:
#: the rows of one block stay in cache while the other side's rows stream past them.
BLOCK = 16

DTYPES = (torch.float32, torch.float64)


def available() -> bool:
    """Whether numba is importable, so this backend can run."""
    return numba is not None


#: Below this many multiply-adds a call runs on the calling thread: waking the thread
#: pool would cost more than it saves (the recurrent layers call once per time step).
PARALLEL_MIN_WORK = 1 << 20


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


# Each kernel twice: over the thread pool (one block of rows per task), and on the
# calling thread for small calls.
@_parallel
def _forward_parallel(xp, near, far, k, n, o0, y, block):
    n_out = near.shape[0]
    for b in _prange((n_out + block - 1) // block):
        _forward_block(xp, near, far, k, n, o0, y, b * block, min(b * block + block, n_out))


@_jit
def _forward_serial(xp, near, far, k, n, o0, y, block):
    n_out = near.shape[0]
    for lo in range(0, n_out, block):
        _forward_block(xp, near, far, k, n, o0, y, lo, min(lo + block, n_out))


@_parallel
def _grad_input_parallel(g, near, far, k, n, o0, gxp, block):
    n_in = near.shape[1]
    for b in _prange((n_in + block - 1) // block):
        _grad_input_block(g, near, far, k, n, o0, gxp, b * block, min(b * block + block, n_in))


@_jit
def _grad_input_serial(g, near, far, k, n, o0, gxp, block):
    n_in = near.shape[1]
    for lo in range(0, n_in, block):
        _grad_input_block(g, near, far, k, n, o0, gxp, lo, min(lo + block, n_in))


@_parallel
def _dots_parallel(g, xp, k, n, o0, dot_near, dot_far, block):
    n_out = k.shape[0]
    for b in _prange((n_out + block - 1) // block):
        _dots_block(g, xp, k, n, o0, dot_near, dot_far, b * block, min(b * block + block, n_out))


@_jit
def _dots_serial(g, xp, k, n, o0, dot_near, dot_far, block):
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
def _transpose_parallel(a, out):
    n = a.shape[0]
    for b in _prange((n + 31) // 32):
        _transpose_rows(a, out, b * 32, min(b * 32 + 32, n))


@_jit
def _transpose_serial(a, out):
    for lo in range(0, a.shape[0], 32):
        _transpose_rows(a, out, lo, min(lo + 32, a.shape[0]))


def _transpose(a: torch.Tensor) -> torch.Tensor:
    """Contiguous transpose of a 2-D tensor, in cache-sized tiles (faster than torch's
    strided copy for the shapes met here: benchmarks/RESULTS.md, "Kernel design choices")."""
    a = a.contiguous()
    out = a.new_empty(a.shape[1], a.shape[0])
    parallel, _ = _schedule(a.numel() * 16, 1)  # a copy costs about 16 multiply-adds
    (_transpose_parallel if parallel else _transpose_serial)(a.numpy(), out.numpy())
    return out


#: numba's thread count as last set, per calling thread (numba keeps one per thread).
_threads_set: dict[int, int] = {}


def _use_threads(threads: int) -> None:
    """Size numba's pool like torch's, calling numba only when that changed (asking numba
    costs more than a dict lookup, and the recurrent layers call once per time step)."""
    caller = threading.get_ident()
    if _threads_set.get(caller) != threads:
        numba.set_num_threads(threads)
        _threads_set[caller] = threads


def match_torch_threads() -> int:
    """Size numba's thread pool like torch's intra-op pool (at most numba's maximum);
    returns the thread count."""
    threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    _use_threads(threads)
    return threads


def _schedule(work: int, rows: int) -> tuple[bool, int]:
    """Whether to use the thread pool (sized like torch's intra-op pool) and the block size:
    at most ``BLOCK`` rows, and at least four blocks per thread when there are enough."""
    threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    if threads < 2 or work < PARALLEL_MIN_WORK:
        return False, BLOCK
    _use_threads(threads)
    return True, max(1, min(BLOCK, rows // (4 * threads)))


def _rows_read(t_in: int, t_out: int, window: int) -> tuple[int, int]:
    """First input step the outputs read (>= 0) and the row offset ``o0`` of tap 0."""
    first = max(0, t_in - t_out - (window - 1))
    # Output q = 0 is step t_in - t_out; tap 0 reads that step, at row step t_in - t_out - first.
    return first, t_in - t_out - first


# Eagerly the kernels run in an autograd.Function; under torch.compile the same two
# functions run as torch.library custom ops (opaque calls with known output shapes, so
# dynamo does not trace into numba). The Function is kept for eager calls because a
# custom op costs more per call (benchmarks/RESULTS.md, "Kernel design choices").


def _check_taps(taps: torch.Tensor, window: int) -> None:
    if taps.numel():
        lo, hi = torch.aminmax(taps)
        if int(lo) < 0 or int(hi) > window - 2:
            raise ValueError(
                f"taps must lie in [0, window - 2] = [0, {window - 2}], "
                f"got values in [{int(lo)}, {int(hi)}]"
            )


def _rows_shape(x: torch.Tensor, window: int, t_out: int) -> tuple[int, int]:
    """Shape ``[in, rows * N]`` of the input rows the forward keeps for the backward."""
    t_in, n, n_in = x.shape
    first, _ = _rows_read(t_in, t_out, window)
    return n_in, (t_in - first) * n


def _forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    t_out: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y [t_out, N, out] in x's dtype, input rows [in, rows * N] in the compute dtype)``."""
    _check_taps(taps, window)
    t_in, n, n_in = x.shape
    dtype = compute_dtype(x, weight)
    first, o0 = _rows_read(t_in, t_out, window)
    # Rows per input neuron: [in, (t_in - first) * N], time-major blocks of N.
    xp = _transpose(x.detach()[first:].reshape(-1, n_in).to(dtype))
    w = weight.detach().to(dtype)
    f = frac.detach().to(dtype)
    k = taps.detach().contiguous()
    far = w * f  # weight of the tap one step further back
    near = w - far
    y = x.new_zeros(weight.shape[0], t_out * n, dtype=dtype)
    parallel, block = _schedule(w.numel() * y.shape[1], w.shape[0])
    kernel = _forward_parallel if parallel else _forward_serial
    kernel(xp.numpy(), near.numpy(), far.numpy(), k.numpy(), n, o0 * n, y.numpy(), block)
    return _transpose(y).view(t_out, n, -1).to(x.dtype), xp


def _grad_input(
    g: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    t_in: int,
    first: int,
    o0: int,
    n: int,
) -> torch.Tensor:
    """``grad_x [t_in, N, in]`` from the output gradient rows ``g [out, t_out * N]``."""
    n_in = weight.shape[1]
    w, f = weight.detach().to(g.dtype), frac.detach().to(g.dtype)
    parallel, block = _schedule(w.numel() * g.shape[1], n_in)
    far = w * f
    near = w - far
    gxp = g.new_zeros(n_in, (t_in - first) * n)
    kernel = _grad_input_parallel if parallel else _grad_input_serial
    k = taps.detach().contiguous()
    kernel(g.numpy(), near.numpy(), far.numpy(), k.numpy(), n, o0 * n, gxp.numpy(), block)
    grad_x = _transpose(gxp).view(-1, n, n_in)
    if first > 0:  # steps before the window get no gradient
        grad_x = torch.cat((grad_x.new_zeros(first, n, n_in), grad_x))
    return grad_x


def _grad_rows(grad_y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The output gradient ``[t_out, N, out]`` as rows ``[out, t_out * N]`` in ``dtype``."""
    t_out, n, n_out = grad_y.shape
    return _transpose(grad_y.detach().to(dtype).reshape(t_out * n, n_out))


def _backward(
    grad_y: torch.Tensor,
    xp: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    t_in: int,
    first: int,
    o0: int,
    need_x: bool,
    need_wf: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_x [t_in, N, in], grad_weight, grad_frac)``; the ones not needed are empty."""
    n = grad_y.shape[1]
    g = _grad_rows(grad_y, xp.dtype)
    grad_x = grad_y.new_empty(0)
    grad_w, grad_f = weight.new_empty(0), frac.new_empty(0)
    if need_x:
        grad_x = _grad_input(g, weight, taps, frac, t_in, first, o0, n).to(grad_y.dtype)
    if need_wf:
        grad_w, grad_f = weight_frac_grads_from_rows(g, xp, weight, taps, frac, n, o0)
    return grad_x, grad_w, grad_f


def weight_frac_grads_from_rows(
    g: torch.Tensor,
    xp: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    n: int,
    o0: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dweight, dL/dfrac)`` from the output gradient rows ``g [out, t_out * n]`` and
    the input rows ``xp [in, rows * n]`` (time-major blocks of ``n`` samples) whose step
    ``o0`` is the first output step's lag 0."""
    w = weight.detach().to(xp.dtype)
    parallel, block = _schedule(w.numel() * g.shape[1], w.shape[0])
    dot_near, dot_far = torch.empty_like(w), torch.empty_like(w)
    kernel = _dots_parallel if parallel else _dots_serial
    k = taps.detach().contiguous()
    kernel(g.numpy(), xp.numpy(), k.numpy(), n, o0 * n, dot_near.numpy(), dot_far.numpy(), block)
    return _weight_frac_grads(dot_near, dot_far, weight, frac)


def _weight_frac_grads(
    dot_near: torch.Tensor, dot_far: torch.Tensor, weight: torch.Tensor, frac: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dweight, dL/dfrac)`` from the sums ``dot_near`` (``dot_far``) of input times
    output gradient through each synapse's near (far) tap: ``y = w (1 - f) x_near + w f
    x_far`` gives ``dL/dw = dot_near + f (dot_far - dot_near)``, ``dL/df = w (dot_far -
    dot_near)``."""
    w, f = weight.detach().to(dot_near.dtype), frac.detach().to(dot_near.dtype)
    diff = dot_far - dot_near
    grad_w = torch.addcmul(dot_near, f, diff).to(weight.dtype)
    return grad_w.contiguous(), (w * diff).to(frac.dtype).contiguous()


# The event-driven path (sparse inputs, eager calls): the forward scatters each nonzero
# input instead of gathering every input, and keeps the events for the weight and
# fraction gradients instead of the input rows.


def _sparse_events(
    x: torch.Tensor, weight: torch.Tensor, taps: torch.Tensor, window: int, t_out: int
) -> cpu_events.Events | None:
    """The events of the input steps the outputs read when the event kernels do less work
    than the gather, else None. The gather's work is the output values each synapse
    reaches with data (taps past the last output reach none); the events' is one update
    per nonzero input and output, :data:`~.cpu_events.EVENT_COST` times dearer. Calls
    below :data:`~.cpu_events.MIN_WORK` stay on the gather."""
    t_in, n, n_in = x.shape
    if n * weight.numel() * t_out < cpu_events.MIN_WORK:
        return None
    first, o0 = _rows_read(t_in, t_out, window)
    gather = n * int(torch.clamp(t_out + o0 - taps.detach(), 0, t_out).sum())
    if gather < cpu_events.MIN_WORK:
        return None
    dtype = compute_dtype(x, weight)
    rows = x.detach()[first:].to(dtype)  # float16/bfloat16 inputs: numpy has no bfloat16
    counts = cpu_events.count(rows)
    if cpu_events.EVENT_COST * int(counts.sum()) * weight.shape[0] >= gather:
        return None
    return cpu_events.events(rows, counts, o0, dtype)


def _event_tasks(ev: cpu_events.Events, n_out: int) -> int:
    """Tasks for an event kernel: two per thread of torch's pool, or 1 (the calling thread)
    for a small call. An event and an output cost about 4 multiply-adds of the gather."""
    parallel, _ = _schedule(len(ev.values) * n_out * 4, n_out)
    return 2 * torch.get_num_threads() if parallel else 1


def _forward_events(
    ev: cpu_events.Events,
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    t_out: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y [t_out, N, out] in x's dtype, the fan-out's taps)``, scattered from the events."""
    _check_taps(taps, window)
    fan = cpu_events.fanout(weight, taps, frac, ev.values.dtype)
    tasks = _event_tasks(ev, weight.shape[0])
    y = cpu_events.forward(ev, fan, window, x.shape[1], t_out, tasks)
    return y.to(x.dtype), fan.taps


def _backward_events(ctx, grad_y: torch.Tensor) -> tuple:
    ptr, steps, values, taps_t, weight, taps, frac = ctx.saved_tensors
    ev = cpu_events.Events(ptr, steps, values)
    need_x, need_w, _, need_f, _, _ = ctx.needs_input_grad
    t_in, first, o0 = ctx.span
    grad_x = grad_w = grad_f = None
    if need_x:
        g = _grad_rows(grad_y, values.dtype)
        grad_x = _grad_input(g, weight, taps, frac, t_in, first, o0, grad_y.shape[1])
        grad_x = grad_x.to(grad_y.dtype)
    if need_w or need_f:
        tasks = _event_tasks(ev, weight.shape[0])
        g = grad_y.detach().to(values.dtype)
        dot_near_t, dot_far_t = cpu_events.dots(ev, taps_t, g, ctx.window, tasks)
        grad_w, grad_f = _weight_frac_grads(
            _transpose(dot_near_t), _transpose(dot_far_t), weight, frac
        )
    return (
        grad_x,
        grad_w if need_w else None,
        None,
        grad_f if need_f else None,
        None,
        None,
    )


def _save(ctx, x, weight, taps, frac, window, t_out, xp) -> None:
    ctx.save_for_backward(xp, weight, taps, frac)
    ctx.span = (x.shape[0], *_rows_read(x.shape[0], t_out, window))


def _grads(ctx, grad_y, backward) -> tuple:
    """The autograd backward of both wrappers, through ``backward`` (:func:`_backward` or
    its custom op)."""
    xp, weight, taps, frac = ctx.saved_tensors
    need_x, need_w, _, need_f, _, _ = ctx.needs_input_grad
    grad_x, grad_w, grad_f = backward(
        grad_y.contiguous(), xp, weight, taps, frac, *ctx.span, need_x, need_w or need_f
    )
    return (
        grad_x if need_x else None,
        grad_w if need_w else None,
        None,
        grad_f if need_f else None,
        None,
        None,
    )


class _DelayedMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, taps, frac, window, t_out):
        ev = _sparse_events(x, weight, taps, window, t_out)
        ctx.events = ev is not None
        if ev is None:
            y, xp = _forward(x, weight, taps, frac, window, t_out)
            _save(ctx, x, weight, taps, frac, window, t_out, xp)
            return y
        y, taps_t = _forward_events(ev, x, weight, taps, frac, window, t_out)
        ctx.save_for_backward(*ev, taps_t, weight, taps, frac)
        ctx.span = (x.shape[0], *_rows_read(x.shape[0], t_out, window))
        ctx.window = window
        return y

    @staticmethod
    def backward(ctx, grad_y):
        if ctx.events:
            return _backward_events(ctx, grad_y)
        return _grads(ctx, grad_y, _backward)


_forward_op = torch.library.custom_op("sj_spatial::cpu_delayed_matmul", mutates_args=())(_forward)
_backward_op = torch.library.custom_op("sj_spatial::cpu_delayed_matmul_backward", mutates_args=())(
    _backward
)


@_forward_op.register_fake
def _(x, weight, taps, frac, window, t_out):
    y = x.new_empty(t_out, x.shape[1], weight.shape[0])
    return y, x.new_empty(_rows_shape(x, window, t_out), dtype=compute_dtype(x, weight))


@_backward_op.register_fake
def _(grad_y, xp, weight, taps, frac, t_in, first, o0, need_x, need_wf):
    grad_x = grad_y.new_empty((t_in, grad_y.shape[1], weight.shape[1]) if need_x else (0,))
    grad_w = weight.new_empty(weight.shape if need_wf else (0,))
    grad_f = frac.new_empty(frac.shape if need_wf else (0,))
    return grad_x, grad_w, grad_f


def _setup_context(ctx, inputs, output) -> None:
    ctx.mark_non_differentiable(output[1])
    _save(ctx, *inputs, output[1])


_forward_op.register_autograd(
    lambda ctx, grad_y, _grad_xp: _grads(ctx, grad_y, _backward_op),
    setup_context=_setup_context,
)


def compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """``x``'s dtype when float32/float64, else the weight's (float16/bfloat16 inputs)."""
    return x.dtype if x.dtype in DTYPES or not x.is_floating_point() else weight.dtype


def delayed_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    t_out: int,
) -> torch.Tensor:
    """The :class:`~.contract.DelayedMatmul` contract on numba kernels.

    ``x``: ``[T_in, N, in]`` -> ``[t_out, N, out]`` in ``x``'s dtype. Falls back to the
    dense kernel when neither ``x`` nor ``weight`` is float32/float64, for non-CPU tensors
    and for empty shapes.
    """
    if (
        numba is None
        or x.device.type != "cpu"
        or compute_dtype(x, weight) not in DTYPES
        or x.numel() == 0
        or weight.numel() == 0
        or t_out <= 0
    ):
        return dense.delayed_matmul(x, weight, taps, frac, window, t_out)
    if torch.compiler.is_compiling():
        return _forward_op(x, weight, taps, frac, window, t_out)[0]
    return _DelayedMatmul.apply(x, weight, taps, frac, window, t_out)
