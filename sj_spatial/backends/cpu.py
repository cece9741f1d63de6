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

import functools

import torch

from . import cpu_events, dense
from . import cpu_kernels as kernels
from ._numba import numba
from .cpu_schedule import check_path, event_tasks, events_to_run, rows_read, schedule

DTYPES = (torch.float32, torch.float64)


def available() -> bool:
    """Whether numba is importable, so this backend can run."""
    return numba is not None


def _transpose(a: torch.Tensor, parallel: bool | None = None) -> torch.Tensor:
    """Contiguous transpose of a 2-D tensor, in cache-sized tiles (faster than torch's
    strided copy for the shapes met here: benchmarks/RESULTS.md, "Kernel design choices")."""
    a = a.contiguous()
    out = a.new_empty(a.shape[1], a.shape[0])
    parallel, _ = schedule(a.numel() * 16, 1, parallel)  # a copy costs ~16 multiply-adds
    (kernels.transpose_parallel if parallel else kernels.transpose_serial)(a.numpy(), out.numpy())
    return out


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
    first, _ = rows_read(t_in, t_out, window)
    return n_in, (t_in - first) * n


def _forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    t_out: int,
    parallel: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y [t_out, N, out] in x's dtype, input rows [in, rows * N] in the compute dtype)``;
    ``parallel``: :func:`~.cpu_schedule.schedule`'s."""
    _check_taps(taps, window)
    t_in, n, n_in = x.shape
    dtype = compute_dtype(x, weight)
    first, o0 = rows_read(t_in, t_out, window)
    # Rows per input neuron: [in, (t_in - first) * N], time-major blocks of N.
    xp = _transpose(x.detach()[first:].reshape(-1, n_in).to(dtype), parallel)
    w = weight.detach().to(dtype)
    f = frac.detach().to(dtype)
    k = taps.detach().contiguous()
    far = w * f  # weight of the tap one step further back
    near = w - far
    y = x.new_zeros(weight.shape[0], t_out * n, dtype=dtype)
    on_pool, block = schedule(w.numel() * y.shape[1], w.shape[0], parallel)
    kernel = kernels.forward_parallel if on_pool else kernels.forward_serial
    kernel(xp.numpy(), near.numpy(), far.numpy(), k.numpy(), n, o0 * n, y.numpy(), block)
    return _transpose(y, parallel).view(t_out, n, -1).to(x.dtype), xp


def _grad_input(
    g: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    t_in: int,
    first: int,
    o0: int,
    n: int,
    parallel: bool | None = None,
) -> torch.Tensor:
    """``grad_x [t_in, N, in]`` from the output gradient rows ``g [out, t_out * N]``."""
    n_in = weight.shape[1]
    w, f = weight.detach().to(g.dtype), frac.detach().to(g.dtype)
    on_pool, block = schedule(w.numel() * g.shape[1], n_in, parallel)
    far = w * f
    near = w - far
    gxp = g.new_zeros(n_in, (t_in - first) * n)
    kernel = kernels.grad_input_parallel if on_pool else kernels.grad_input_serial
    k = taps.detach().contiguous()
    kernel(g.numpy(), near.numpy(), far.numpy(), k.numpy(), n, o0 * n, gxp.numpy(), block)
    grad_x = _transpose(gxp, parallel).view(-1, n, n_in)
    if first > 0:  # steps before the window get no gradient
        grad_x = torch.cat((grad_x.new_zeros(first, n, n_in), grad_x))
    return grad_x


def _grad_rows(
    grad_y: torch.Tensor, dtype: torch.dtype, parallel: bool | None = None
) -> torch.Tensor:
    """The output gradient ``[t_out, N, out]`` as rows ``[out, t_out * N]`` in ``dtype``."""
    t_out, n, n_out = grad_y.shape
    return _transpose(grad_y.detach().to(dtype).reshape(t_out * n, n_out), parallel)


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
    parallel: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_x [t_in, N, in], grad_weight, grad_frac)``; the ones not needed are empty."""
    n = grad_y.shape[1]
    g = _grad_rows(grad_y, xp.dtype, parallel)
    grad_x = grad_y.new_empty(0)
    grad_w, grad_f = weight.new_empty(0), frac.new_empty(0)
    if need_x:
        grad_x = _grad_input(g, weight, taps, frac, t_in, first, o0, n, parallel)
        grad_x = grad_x.to(grad_y.dtype)
    if need_wf:
        grad_w, grad_f = weight_frac_grads_from_rows(g, xp, weight, taps, frac, n, o0, parallel)
    return grad_x, grad_w, grad_f


def weight_frac_grads_from_rows(
    g: torch.Tensor,
    xp: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    n: int,
    o0: int,
    parallel: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dweight, dL/dfrac)`` from the output gradient rows ``g [out, t_out * n]`` and
    the input rows ``xp [in, rows * n]`` (time-major blocks of ``n`` samples) whose step
    ``o0`` is the first output step's lag 0."""
    w = weight.detach().to(xp.dtype)
    on_pool, block = schedule(w.numel() * g.shape[1], w.shape[0], parallel)
    dot_near, dot_far = torch.empty_like(w), torch.empty_like(w)
    kernel = kernels.dots_parallel if on_pool else kernels.dots_serial
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


def _forward_events(
    ev: cpu_events.Events,
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    t_out: int,
    parallel: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y [t_out, N, out] in x's dtype, the fan-out's taps)``, scattered from the events."""
    _check_taps(taps, window)
    fan = cpu_events.fanout(weight, taps, frac, ev.values.dtype)
    tasks = event_tasks(ev, weight.shape[0], parallel)
    y = cpu_events.forward(ev, fan, window, x.shape[1], t_out, tasks)
    return y.to(x.dtype), fan.taps


def _backward_events(ctx, grad_y: torch.Tensor) -> tuple:
    ptr, steps, values, taps_t, weight, taps, frac = ctx.saved_tensors
    ev = cpu_events.Events(ptr, steps, values)
    need_x, need_w, _, need_f = ctx.needs_input_grad[:4]
    t_in, first, o0 = ctx.span
    parallel = ctx.parallel
    grad_x = grad_w = grad_f = None
    if need_x:
        g = _grad_rows(grad_y, values.dtype, parallel)
        n = grad_y.shape[1]
        grad_x = _grad_input(g, weight, taps, frac, t_in, first, o0, n, parallel)
        grad_x = grad_x.to(grad_y.dtype)
    if need_w or need_f:
        tasks = event_tasks(ev, weight.shape[0], parallel)
        g = grad_y.detach().to(values.dtype)
        dot_near_t, dot_far_t = cpu_events.dots(ev, taps_t, g, ctx.window, tasks)
        grad_w, grad_f = _weight_frac_grads(
            _transpose(dot_near_t, parallel), _transpose(dot_far_t, parallel), weight, frac
        )
    return grad_x, grad_w if need_w else None, None, grad_f if need_f else None, *_NONE_ARGS


def _save(ctx, x, weight, taps, frac, window, t_out, xp) -> None:
    ctx.save_for_backward(xp, weight, taps, frac)
    ctx.span = (x.shape[0], *rows_read(x.shape[0], t_out, window))


#: The gradients of the non-tensor arguments after ``frac``: window, t_out (and, for the
#: eager Function, path and parallel); the custom op has only the first two.
_NONE_ARGS = (None, None)


def _grads(ctx, grad_y, backward, extra: int = 0) -> tuple:
    """The autograd backward of both wrappers, through ``backward`` (:func:`_backward` or
    its custom op); ``extra`` more non-tensor arguments get None."""
    xp, weight, taps, frac = ctx.saved_tensors
    need_x, need_w, _, need_f = ctx.needs_input_grad[:4]
    grad_x, grad_w, grad_f = backward(
        grad_y.contiguous(), xp, weight, taps, frac, *ctx.span, need_x, need_w or need_f
    )
    grads = grad_x if need_x else None, grad_w if need_w else None, None
    return *grads, grad_f if need_f else None, *_NONE_ARGS, *(None,) * extra


class _DelayedMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, taps, frac, window, t_out, path, parallel):
        ctx.parallel = parallel
        ev = events_to_run(x, weight, taps, window, t_out, compute_dtype(x, weight), path)
        ctx.events = ev is not None
        if ev is None:
            y, xp = _forward(x, weight, taps, frac, window, t_out, parallel)
            _save(ctx, x, weight, taps, frac, window, t_out, xp)
            return y
        y, taps_t = _forward_events(ev, x, weight, taps, frac, window, t_out, parallel)
        ctx.save_for_backward(*ev, taps_t, weight, taps, frac)
        ctx.span = (x.shape[0], *rows_read(x.shape[0], t_out, window))
        ctx.window = window
        return y

    @staticmethod
    def backward(ctx, grad_y):
        if ctx.events:
            return *_backward_events(ctx, grad_y), None, None
        backward = functools.partial(_backward, parallel=ctx.parallel)
        return _grads(ctx, grad_y, backward, extra=2)


# The custom ops decide the pool themselves: ``parallel`` is not in their schema.
def _forward_auto(
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    t_out: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_forward` with the automatic thread pool (the forward custom op)."""
    return _forward(x, weight, taps, frac, window, t_out)


def _backward_auto(
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
    """:func:`_backward` with the automatic thread pool (the backward custom op)."""
    return _backward(grad_y, xp, weight, taps, frac, t_in, first, o0, need_x, need_wf)


_forward_op = torch.library.custom_op("sj_spatial::cpu_delayed_matmul", mutates_args=())(
    _forward_auto
)
_backward_op = torch.library.custom_op("sj_spatial::cpu_delayed_matmul_backward", mutates_args=())(
    _backward_auto
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
    *,
    path: str = "auto",
    parallel: bool | None = None,
) -> torch.Tensor:
    """The :class:`~.contract.DelayedMatmul` contract on numba kernels.

    ``x``: ``[T_in, N, in]`` -> ``[t_out, N, out]`` in ``x``'s dtype. Falls back to the
    dense kernel when neither ``x`` nor ``weight`` is float32/float64, for non-CPU tensors
    and for empty shapes. ``path``: ``'auto'`` (the event kernels for sparse inputs, when
    they do less work), ``'gather'`` or ``'events'``; ``parallel``: None (the thread pool
    for large calls), True or False (:mod:`.cpu_schedule`). A compiled graph runs the
    gather with the automatic pool.
    """
    check_path(path)
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
    return _DelayedMatmul.apply(x, weight, taps, frac, window, t_out, path, parallel)
