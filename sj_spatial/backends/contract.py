"""What every backend implements, in one vocabulary.

A synapse ``j <- i`` with weight ``w`` and delay ``d`` (time steps) reads its input at two
neighbouring lags: the integer tap ``k`` and ``k + 1``, with the fraction ``f`` of the
delay past ``k`` (:func:`sj_spatial.delays.delay_taps`)::

    y[t, j] = sum_i near[j, i] x[t - k, i] + far[j, i] x[t - k - 1, i]
    near = w (1 - f)        far = w f

With delays clamped to ``max_delay`` a synapse reads lags ``0 .. max_delay + 1``: the
lag ``window`` (:func:`lag_window`) that every kernel keeps of its input's past.

Names used in every backend:

- ``x`` ``[T_in, N, in]``: the input sequence, zero before its first step;
- ``weight`` ``[out, in]``, ``taps`` (int64, in ``[0, window - 2]``), ``frac`` ``[out, in]``;
- ``near``, ``far``: the coefficients above (never ``a``/``b`` or ``w0``/``w1``);
- ``window``: ``max_delay + 2`` lags; ``t_out``: output steps, the last ``t_out`` of ``x``.

Argument order: ``(x, weight, taps, frac, window, t_out)`` everywhere, autograd
Functions included. A backend is a module with a :class:`DelayedMatmul`-shaped
``delayed_matmul``; the CUDA backend also has a :class:`FusedLIF`-shaped
``lif_recurrence`` for the recurrent container. Empty shapes (``t_out``, ``N``, ``in``
or ``out`` zero) give zeros ``[t_out, N, out]`` that belong to the autograd graph and
zero gradients. Nothing here imports anything above :mod:`sj_spatial.backends`.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch

#: Surrogate gradients the fused LIF kernel implements (spikingjelly's class names).
SURROGATES = ("Sigmoid", "ATan")


def lag_window(max_delay: int) -> int:
    """Lags ``0 .. max_delay + 1`` that a synapse with delay <= ``max_delay`` can read."""
    return max_delay + 2


def tap_coefficients(
    weight: torch.Tensor, frac: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(near, far) = (w (1 - f), w f)`` in ``dtype``, detached and contiguous."""
    w, f = weight.detach().to(dtype), frac.detach().to(dtype)
    far = w * f
    return (w - far).contiguous(), far.contiguous()


class DelayedMatmul(Protocol):
    """``y[t] = sum_i near x[t - k, i] + far x[t - k - 1, i]`` for the last ``t_out`` steps.

    ``x [T_in, N, in] -> y [t_out, N, out]`` in ``x``'s dtype, differentiable in ``x``,
    ``weight`` and ``frac`` with the gradients of :func:`sj_spatial.backends.dense.delayed_matmul`.
    """

    def __call__(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        taps: torch.Tensor,
        frac: torch.Tensor,
        window: int,
        t_out: int,
    ) -> torch.Tensor: ...


class LIFCell(NamedTuple):
    """Constants of a leaky integrate-and-fire cell, optionally behind an exponential synapse.

    ``c[t] = synapse_decay * c[t-1] + input[t]`` (``synapse_decay = 0``: no synapse, ``c``
    is the input); the neuron is spikingjelly's ``LIFNode`` with these settings
    (``v_reset=None``: soft reset). ``v_init`` is the potential of a fresh neuron.
    """

    tau: float
    v_threshold: float
    v_reset: float | None
    v_init: float
    decay_input: bool
    detach_reset: bool
    surrogate: str  # one of SURROGATES
    alpha: float
    synapse_decay: float


class CellState(NamedTuple):
    """A cell's state after its last step: membrane potential ``v`` and synaptic current
    ``current`` (``[*batch, n]`` each; ``current`` is what the synapse holds, or the last
    input when there is none)."""

    v: torch.Tensor
    current: torch.Tensor


class FusedLIF(Protocol):
    """All ``T`` steps of a fresh recurrent :class:`LIFCell` population in one call.

    ``s[t] = LIF(c[t])``, ``c[t] = synapse_decay c[t-1] + x[t] + r[t]``,
    ``r[t] = bias + sum_i near s[t-1-k, i] + far s[t-2-k, i]``; ``x [T, N, n]`` ->
    ``(s [T, N, n], CellState)``, differentiable in ``x``, ``weight``, ``frac``, ``bias``.
    """

    def __call__(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        taps: torch.Tensor,
        frac: torch.Tensor,
        window: int,
        bias: torch.Tensor | None,
        cell: LIFCell,
    ) -> tuple[torch.Tensor, CellState]: ...
