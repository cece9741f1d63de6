"""The delayed synapse as pure functions: one autograd contract, backend chosen here.

Dtypes: outside ``torch.autocast`` the input and the weight must share a dtype (as in
``nn.Linear``). Under autocast the delayed matmul is a lower-precision op like
``nn.Linear``: its output, bias included, has the autocast dtype; the dense reference
convolves in that dtype, the numba and CuPy kernels accumulate in float32 and round the
output once. Delays and fractions stay in float32 (see :mod:`sj_spatial.delays`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from . import backends
from .backends.contract import CellState, LIFCell, lag_window
from .delays import autocast_dtype, delay_taps


class _Synapses:
    """Taps, fractions and kernel of one delayed weight matrix, prepared once per call on
    the sequence ``x``."""

    def __init__(
        self, weight, bias, delays, max_delay, delay_mode, backend, cpu_kernel, x, cpu_path="auto"
    ):
        self.weight, self.bias = weight, bias
        self.taps, self.frac = delay_taps(delays, delay_mode)
        self.window = lag_window(max_delay)
        self.impl = backends.select(backend, x.device, cpu_kernel)
        # The numba kernel's choice of event kernels or gather, where it runs.
        self.options = {"path": cpu_path} if backends.takes_cpu_path(self.impl) else {}
        # As nn.Linear under autocast: the output, bias included, has the autocast dtype.
        self.amp = matmul_dtype(x, weight)
        self.out_bias = bias if bias is None or self.amp is None else bias.to(self.amp)

    def __call__(self, x: torch.Tensor, t_out: int) -> torch.Tensor:
        t_in, batch = x.shape[0], x.shape[1:-1]
        y = self.impl.delayed_matmul(
            x.reshape(t_in, math.prod(batch), x.shape[-1]),  # explicit: batch may be empty
            self.weight,
            self.taps,
            self.frac,
            self.window,
            t_out,
            **self.options,
        )
        if self.amp is not None:
            y = y.to(self.amp)
        if self.out_bias is not None:
            y = y + self.out_bias
        return y.reshape(t_out, *batch, self.weight.shape[0])


def matmul_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype ``torch.autocast`` gives the delayed matmul of ``x`` and ``weight``, or None.

    None outside autocast on ``x``'s device and, as autocast leaves float64 alone, when
    ``x`` or ``weight`` is float64.
    """
    if torch.float64 in (x.dtype, weight.dtype):
        return None
    return autocast_dtype(x.device.type)


def check_dtypes(x: torch.Tensor, weight: torch.Tensor, name: str = "x") -> None:
    """Outside ``torch.autocast``, raise TypeError unless ``x`` and ``weight`` share a dtype."""
    if x.dtype != weight.dtype and matmul_dtype(x, weight) is None:
        raise TypeError(
            f"input {name} has dtype {x.dtype} but the synapse weight has dtype {weight.dtype}; "
            f"outside torch.autocast they must match: convert the input ({name}.to("
            f"{weight.dtype})) or the layer (layer.to({x.dtype})), or run under torch.autocast"
        )


def delayed_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    delays: torch.Tensor,
    max_delay: int,
    *,
    delay_mode: str = "interpolate",
    backend: str = "torch",
    cpu_kernel: str | None = None,
    t_out: int | None = None,
    cpu_path: str = "auto",
) -> torch.Tensor:
    """Delayed linear map of a sequence.

    ``x``: ``[T, *batch, in]``, zero before its first step; ``delays``: ``[out, in]`` in
    time steps, already clamped to ``max_delay``. Returns the last ``t_out`` (default
    ``T``) steps of ``y[t] = bias + sum_i w[j,i] ((1-f) x[t-k, i] + f x[t-k-1, i])``,
    shape ``[t_out, *batch, out]``, in ``x``'s dtype (the autocast dtype under autocast).
    ``backend`` and ``cpu_kernel`` (None: the default) choose the kernel
    (:func:`sj_spatial.backends.select`); ``cpu_path`` (``'auto'``, ``'gather'``,
    ``'events'``) the numba kernel's path (:mod:`sj_spatial.backends.cpu_schedule`).
    """
    check_dtypes(x, weight)
    synapses = _Synapses(
        weight, bias, delays, max_delay, delay_mode, backend, cpu_kernel, x, cpu_path
    )
    return synapses(x, x.shape[0] if t_out is None else t_out)


class Recurrence(NamedTuple):
    """What :func:`delayed_recurrence` returns.

    ``outputs`` ``[T, *batch, n]``; ``history``: the last outputs, chronological, for the
    next call; ``cell_state``: the cell's state after the last step when the fused kernel
    ran the cell (the cell module itself was not called: the caller puts this state into
    it, :func:`sj_spatial.cells.set_cell_state`), else None.
    """

    outputs: torch.Tensor
    history: torch.Tensor | None
    cell_state: CellState | None


def delayed_recurrence(
    x: torch.Tensor,
    step: Callable[[torch.Tensor], torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    delays: torch.Tensor,
    max_delay: int,
    *,
    delay_mode: str = "interpolate",
    backend: str = "torch",
    cpu_kernel: str | None = None,
    history: torch.Tensor | None = None,
    cell: LIFCell | None = None,
    cpu_path: str = "auto",
) -> Recurrence:
    """Run ``s[t] = step(x[t] + r[t])`` with delayed recurrent input ``r`` over all of ``x``.

    ``r[t] = bias + sum_i w[j,i] ((1-f) s[t-1-k, i] + f s[t-2-k, i])``. ``history`` holds
    the outputs before ``x[0]`` (chronological, at most ``max_delay + 2`` steps of
    ``[*batch, n]``). ``cell``: the constants of ``step`` when it is a LIF cell
    (:func:`sj_spatial.cells.lif_cell`); without a history such a cell runs all steps in
    one fused kernel instead of calling ``step``, where the kernel has one
    (:func:`sj_spatial.backends.fused_lif`: CuPy, and numba on CPU; T >= 2). Under
    autocast the step-by-step ``r`` has the autocast dtype (the fused kernels keep it in
    float32) and ``s`` the dtype ``step`` gives ``x[t] + r[t]`` (float32 for a float32
    ``x``).
    """
    check_dtypes(x, weight)
    synapses = _Synapses(
        weight, bias, delays, max_delay, delay_mode, backend, cpu_kernel, x, cpu_path
    )
    keep = synapses.window
    if x.shape[0] == 0:  # an empty sequence: nothing happens, the memory stays as it was
        return Recurrence(x.new_zeros(x.shape), history, None)
    fused = None if cell is None else backends.fused_lif(backend, x.device, cpu_kernel)
    # One step reads no earlier spikes: the loop leaves the weight out of the graph.
    if fused is not None and history is None and x.shape[0] > 1 and x.numel() and fused.fits(x):
        s, state = _fused_lif(fused, x, cell, synapses)
        return Recurrence(s, s[-keep:], state)
    outputs = []
    for x_t in x:
        # The last history entry is s[t-1]: reading it at lag k gives s[t-1-k]; without a
        # history r[0] is the bias alone.
        r = synapses.out_bias if history is None else synapses(history, 1)[0]
        s = step(x_t if r is None else x_t + r)
        outputs.append(s)
        history = s[None] if history is None else torch.cat((history[1 - keep :], s[None]))
    return Recurrence(torch.stack(outputs), history, None)


def _fused_lif(fused, x, cell: LIFCell, synapses: _Synapses) -> tuple[torch.Tensor, CellState]:
    """All T steps of a fresh LIF population in one call of ``fused.lif_recurrence``;
    ``x [T, *batch, n]``."""
    t_in, batch, n = x.shape[0], x.shape[1:-1], x.shape[-1]
    s, state = fused.lif_recurrence(
        x.reshape(t_in, -1, n),
        synapses.weight,
        synapses.taps,
        synapses.frac,
        synapses.window,
        synapses.bias,
        cell,
    )
    final = CellState(state.v.reshape(*batch, n), state.current.reshape(*batch, n))
    return s.reshape(t_in, *batch, n), final
