"""Delayed synapses as integer lags: the convention of the NIR graphs, and the hardware
delay budget.

A synapse j <- i with weight ``w`` and delay ``d`` (time steps) reads its input at the
integer tap ``k`` with coefficient ``near = w (1 - f)`` and at ``k + 1`` with ``far = w f``
(:func:`sj_spatial.delays.delay_taps`; ``f = 0`` with ``delay_mode='round'``). Binned by
lag, a layer is ``y[t] = bias + sum_L W_L x[t - L]``: one matrix per lag that occurs, in
which each synapse appears with its ``near`` at ``k`` and its ``far`` at ``k + 1``. The
binning copies coefficients, it adds none, so it is exact. Nothing here imports ``nir``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_bool, check_int
from .._introspect import named_spatial_layers
from ..backends.contract import tap_coefficients
from ..delays import delay_taps


class DelayBudget(NamedTuple):
    """The longest delay a target takes, in time steps (None: no limit), and whether
    longer delays are clamped to it (True) or refused (False)."""

    max_steps: int | None = None
    clamp: bool = False


class LagBins(NamedTuple):
    """A delayed weight matrix binned by lag: ``weights[b]`` ``[out, in]`` is the matrix
    at ``lags[b]`` time steps (ascending; only lags with a nonzero coefficient, or lag 0
    with zeros when there are none)."""

    lags: tuple[int, ...]
    weights: torch.Tensor


def check_budget_options(max_delay_steps, clamp) -> DelayBudget:
    """The :class:`DelayBudget` of the arguments, checked: ``max_delay_steps`` None or an
    int >= 0, ``clamp`` a bool that needs ``max_delay_steps``."""
    if max_delay_steps is not None:
        check_int("max_delay_steps", max_delay_steps, minimum=0)
    if check_bool("clamp", clamp) and max_delay_steps is None:
        raise ValueError("clamp=True needs max_delay_steps (the bound to clamp to), got None")
    return DelayBudget(max_delay_steps, clamp)


def layer_synapses(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, delays)`` of a spatial layer, detached: the effective (pruned) weight
    ``[out, in]`` and the real-valued delays ``[out, in]`` in time steps."""
    with torch.no_grad():
        return layer.effective_weight().detach(), layer.delays().detach()


def deployed_lags(weight: torch.Tensor, delays: torch.Tensor, delay_mode: str) -> torch.Tensor:
    """The longest lag (int64 ``[out, in]``, time steps) at which each synapse has a nonzero
    coefficient: ``ceil(d)`` when interpolating (``floor(d)`` when ``d`` is whole),
    ``round(d)`` when rounding; -1 for a synapse of weight zero (pruned)."""
    taps, frac = delay_taps(delays, delay_mode)
    near, far = tap_coefficients(weight, frac, weight.dtype)
    none = torch.full_like(taps, -1)
    return torch.where(far != 0, taps + 1, torch.where(near != 0, taps, none))


def bin_by_lag(weight: torch.Tensor, delays: torch.Tensor, delay_mode: str) -> LagBins:
    """The :class:`LagBins` of synapses with ``weight`` and ``delays`` ``[out, in]`` (time
    steps) in ``delay_mode``; the matrices have the weight's dtype."""
    taps, frac = delay_taps(delays, delay_mode)
    near, far = tap_coefficients(weight, frac, weight.dtype)
    window = int(taps.max()) + 2 if taps.numel() else 1
    binned = near.new_zeros(window, *near.shape)
    # Each synapse puts its near and far at two different lags: every entry of the bins
    # is one coefficient plus zeros, so no rounding happens here.
    binned.scatter_add_(0, taps[None], near[None])
    binned.scatter_add_(0, taps[None] + 1, far[None])
    used = [lag for lag in range(window) if bool(binned[lag].any())] or [0]
    return LagBins(tuple(used), binned[used])


class DelayBudgetError(ValueError):
    """Synapses need longer delays than ``max_delay_steps``: ``count`` of ``total``, up to
    ``largest`` time steps, by layer name in ``layers`` (``{name: count}``)."""

    def __init__(self, max_steps: int, count: int, total: int, largest: float, layers: dict):
        self.max_steps, self.count, self.total = max_steps, count, total
        self.largest, self.layers = largest, layers
        where = ", ".join(f"{name!r} ({n})" for name, n in layers.items())
        super().__init__(
            f"max_delay_steps={max_steps}: {count} of {total} synapses need longer delays "
            f"(largest {largest:.2f} steps; layers {where}); pass clamp=True to clamp them to "
            f"{max_steps} steps, or train with max_delay={max_steps}"
        )


def apply_budget(net: nn.Module, budget: DelayBudget) -> dict[str, int]:
    """Check every spatial layer of ``net`` against ``budget``; returns the number of
    synapses that must be clamped, by layer name (empty when all fit or there is no bound).

    Raises :class:`DelayBudgetError` (a ValueError naming ``max_delay_steps``, how many
    synapses need more and the largest delay) unless ``budget.clamp``.
    """
    if budget.max_steps is None:
        return {}
    over, total, longest = {}, 0, 0.0
    for name, layer in named_spatial_layers(net):
        weight, delays = layer_synapses(layer)
        exceeding = deployed_lags(weight, delays, layer.delay_mode) > budget.max_steps
        total += weight.numel()
        if bool(exceeding.any()):
            over[name or type(layer).__name__] = int(exceeding.sum())
            longest = max(longest, float(delays[exceeding].max()))
    if over and not budget.clamp:
        raise DelayBudgetError(budget.max_steps, sum(over.values()), total, longest, over)
    return over


def budget_delays(delays: torch.Tensor, budget: DelayBudget) -> torch.Tensor:
    """``delays`` clamped to ``budget.max_steps`` when the budget clamps, else unchanged."""
    if budget.clamp and budget.max_steps is not None:
        return delays.clamp(max=float(budget.max_steps))
    return delays
