"""LIF cells every fused recurrence (CUDA, emulated CUDA, numba) is tested against."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import neuron, surrogate
from torch import nn

from sj_spatial.models import ExponentialSynapse

#: One cell per combination of reset, decay_input, detach_reset and surrogate.
LIF_VARIANTS = {
    "hard-decay-sigmoid": dict(tau=2.0),
    "hard-nodecay-atan": dict(tau=20.0, decay_input=False, surrogate_function=surrogate.ATan()),
    "soft-sigmoid2": dict(tau=5.0, v_reset=None, surrogate_function=surrogate.Sigmoid(alpha=2.0)),
    "detach-reset": dict(tau=3.0, detach_reset=True, v_threshold=0.5),
    "soft-nodecay-detach": dict(tau=4.0, v_reset=None, decay_input=False, detach_reset=True),
}


def cell(variant: str, tau_syn: float | None) -> nn.Module:
    """The LIF of ``variant``, behind an exponential synapse of ``tau_syn`` steps if given."""
    lif = neuron.LIFNode(**LIF_VARIANTS[variant])
    return lif if tau_syn is None else nn.Sequential(ExponentialSynapse(tau_syn), lif)


def final_state(step) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(v, synapse state or None)`` of a cell made by :func:`cell`."""
    if isinstance(step, nn.Sequential):
        return step[1].v, step[0].state
    return step.v, None
