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

import torch

from . import backends
from .delays import autocast_dtype, delay_taps


def num_taps(max_delay: int) -> int:
    """Lags ``0 .. max_delay + 1`` that a synapse with delay <= max_delay can read."""
    return max_delay + 2


class _Synapses:
    """Taps, fractions and kernel of one delayed weight matrix, prepared once per call on
    the sequence ``x``."""

    def __init__(self, weight, bias, delays, max_delay, delay_mode, backend, x):
        self.weight, self.bias = weight, bias
        self.taps, self.frac = delay_taps(delays, delay_mode)
        self.num_taps = num_taps(max_delay)
        self.impl = backends.select(backend, x.device)
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
            self.num_taps,
            t_out,
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
    t_out: int | None = None,
) -> torch.Tensor:
    """Delayed linear map of a sequence.

    ``x``: ``[T, *batch, in]``, zero before its first step; ``delays``: ``[out, in]`` in
    time steps, already clamped to ``max_delay``. Returns the last ``t_out`` (default
    ``T``) steps of ``y[t] = bias + sum_i w[j,i] ((1-f) x[t-k, i] + f x[t-k-1, i])``,
    shape ``[t_out, *batch, out]``, in ``x``'s dtype (the autocast dtype under autocast).
    """
    check_dtypes(x, weight)
    synapses = _Synapses(weight, bias, delays, max_delay, delay_mode, backend, x)
    return synapses(x, x.shape[0] if t_out is None else t_out)


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
    history: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``s[t] = step(x[t] + r[t])`` with delayed recurrent input ``r`` over all of ``x``.

    ``r[t] = bias + sum_i w[j,i] ((1-f) s[t-1-k, i] + f s[t-2-k, i])``. ``history`` holds
    the outputs before ``x[0]`` (chronological, at most ``max_delay + 2`` steps of
    ``[*batch, n]``). Returns ``(s, history)``: ``s`` is ``[T, *batch, n]``. Under
    autocast ``r`` has the autocast dtype and ``s`` the dtype ``step`` gives ``x[t] + r[t]``
    (float32 for a float32 ``x``).
    """
    check_dtypes(x, weight)
    synapses = _Synapses(weight, bias, delays, max_delay, delay_mode, backend, x)
    keep = synapses.num_taps
    if x.shape[0] == 0:  # an empty sequence: nothing happens, the memory stays as it was
        return x.new_zeros(x.shape), history
    if backend == "cupy" and history is None and x.numel():
        fused = _fused_lif(x, step, synapses)
        if fused is not None:
            return fused, fused[-keep:]
    outputs = []
    for x_t in x:
        # The last history entry is s[t-1]: reading it at lag k gives s[t-1-k]; without a
        # history r[0] is the bias alone.
        r = synapses.out_bias if history is None else synapses(history, 1)[0]
        s = step(x_t if r is None else x_t + r)
        outputs.append(s)
        history = s[None] if history is None else torch.cat((history[1 - keep :], s[None]))
    return torch.stack(outputs), history


@torch.compiler.disable  # CuPy launches: a graph break under torch.compile
def _fused_lif(x, step, synapses: _Synapses) -> torch.Tensor | None:
    """All T steps of a fresh LIF population (optionally behind an exponential synapse) in
    one CUDA kernel, or None when unsupported."""
    from .backends import cuda_lif

    params = cuda_lif.lif_params(step)
    n = x.shape[-1]
    if params is None or n > cuda_lif.MAX_NEURONS or x.dtype not in (torch.float32, torch.float64):
        return None
    t_in, batch = x.shape[0], x.shape[1:-1]
    s, v_last, c_last = cuda_lif.lif_recurrence(
        x.reshape(t_in, -1, n),
        synapses.weight,
        synapses.bias,
        synapses.taps,
        synapses.frac,
        params,
        synapses.num_taps,
    )
    # The cell continues from the last step, as after the generic loop.
    cuda_lif.set_final_state(step, v_last.reshape(*batch, n), c_last.reshape(*batch, n))
    return s.reshape(t_in, *batch, n)
