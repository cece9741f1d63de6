"""Free per-synapse delays: the N·N baseline that position learning is measured against.

``FreeDelayLinear`` and ``FreeDelayRecurrentContainer`` are the spatial layers with one
learnable delay per synapse instead of delays derived from neuron positions: same
formula, interpolation, memories, step modes and backends, but ``out * in`` delay
parameters instead of ``(out + in) * dim`` coordinates. ``param_groups`` puts their
``delay`` parameters in the positions' group, so both kinds of timing parameter train
at the same learning rate.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_finite, check_float
from .layers import (
    DEFAULT_MAX_DELAY,
    DelayOptions,
    _DelayedLinear,
    _DelayedRecurrentContainer,
)


class _FreeDelays:
    """The part both free-delay layers share: the ``delay`` parameter instead of positions."""

    def _init_delays(self, out_features: int, in_features: int, init_max: float | None):
        init_max = float(self.max_delay) if init_max is None else init_max
        init_max = check_float("init_max", init_max)
        self.delay = nn.Parameter(torch.rand(out_features, in_features) * init_max)

    def timing_parameters(self) -> list[nn.Parameter]:
        """The parameters that set the delays (for :func:`sj_spatial.param_groups`)."""
        return [self.delay]

    def delays(self) -> torch.Tensor:
        """Delays ``[out, in]`` in time steps, clamped to ``[0, max_delay]``."""
        delay = check_finite(self.delay, "delay", f"the free delays of {type(self).__name__}")
        return torch.clamp(delay, 0.0, float(self.max_delay))

    def extra_repr(self) -> str:
        return super().extra_repr() + ", free delays"


class FreeDelayLinear(_FreeDelays, _DelayedLinear):
    """A :class:`sj_spatial.SpatialDelayLinear` whose delays are free parameters
    ``delay [out, in]`` instead of distances between neuron positions.

    Delays are in time steps, initialised uniform in ``[0, init_max]`` (default
    ``max_delay``) and clamped to ``[0, max_delay]`` when used (no gradient where the
    clamp is active). It has no positions.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        step_mode: str = "s",
        *,
        max_delay: int = DEFAULT_MAX_DELAY,
        init_max: float | None = None,
        delay_mode: str = "interpolate",
        backend: str = "torch",
    ):
        options = DelayOptions(backend, max_delay, None, None, delay_mode)
        self._init_sizes(in_features, out_features, step_mode, options)
        self._init_weights(bias)
        self._init_delays(out_features, in_features, init_max)


class FreeDelayRecurrentContainer(_FreeDelays, _DelayedRecurrentContainer):
    """A :class:`sj_spatial.SpatialRecurrentContainer` whose recurrent delays are free
    parameters ``delay [n, n]`` instead of distances between neuron positions.

    Same recurrence (every synapse at least one step), delays in time steps initialised
    uniform in ``[0, init_max]`` (default ``max_delay``), clamped to ``[0, max_delay]``.
    """

    def __init__(
        self,
        sub_module: nn.Module,
        num_features: int,
        bias: bool = True,
        step_mode: str = "s",
        *,
        max_delay: int = DEFAULT_MAX_DELAY,
        init_max: float | None = None,
        delay_mode: str = "interpolate",
        backend: str = "torch",
    ):
        options = DelayOptions(backend, max_delay, None, None, delay_mode)
        self._init_sizes(sub_module, num_features, step_mode, options)
        self._init_weights(bias)
        self._init_delays(num_features, num_features, init_max)
