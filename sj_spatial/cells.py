"""Cells a recurrent population is made of, and what the fused kernels need to know of them.

:class:`ExponentialSynapse` and :class:`LeakyIntegrator` are small spikingjelly memory
modules; :func:`lif_cell` reads the constants of a LIF cell (spikingjelly's ``LIFNode``,
alone or behind an :class:`ExponentialSynapse`) into the record the fused CUDA loop takes,
and :func:`set_cell_state` puts the state that loop returns back into the modules.
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import base, neuron, surrogate
from torch import nn

from ._checks import STEP_MODES, check_choice, check_float
from .backends.contract import CellState, LIFCell

#: The surrogate functions of the fused kernel, by the names its record uses.
_SURROGATES = {surrogate.Sigmoid: "Sigmoid", surrogate.ATan: "ATan"}


def detach_memories(module: base.MemoryModule) -> None:
    """Replace ``module``'s tensor memories by detached copies that share their storage."""
    # Out of place: a memory can be a view of a tensor the caller holds (an input, an
    # output), which ``MemoryModule.detach``'s in-place ``detach_()`` rejects or alters.
    for key, value in list(module._memories.items()):
        if isinstance(value, torch.Tensor):
            setattr(module, key, value.detach())


class _Leaky(base.MemoryModule):
    """``state[t] = decay * state[t-1] + gain * x[t]``, kept across calls until reset."""

    def __init__(self, tau: float, gain_is_leak: bool, step_mode: str):
        super().__init__()
        self.tau = check_float("tau", tau, minimum=0.0, strict=True)
        self.step_mode = check_choice("step_mode", step_mode, STEP_MODES)
        self.decay = math.exp(-1.0 / self.tau)
        self.gain = 1.0 - self.decay if gain_is_leak else 1.0
        self.register_memory("state", 0.0)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state = self.decay * self.state + self.gain * x
        return self.state

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.single_step_forward(x_t) for x_t in x_seq])

    def detach(self) -> None:
        # Out of place: in single-step mode the state is the output the caller holds.
        detach_memories(self)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, step_mode={self.step_mode}"


class ExponentialSynapse(_Leaky):
    """Exponentially decaying synaptic current: ``I[t] = exp(-1/tau) I[t-1] + x[t]``.

    ``tau`` is in time steps. Input and output ``[*batch, n]`` ('s') or ``[T, *batch, n]``.
    """

    def __init__(self, tau: float, step_mode: str = "s"):
        super().__init__(tau, gain_is_leak=False, step_mode=step_mode)


class LeakyIntegrator(_Leaky):
    """Non-spiking leaky readout: ``v[t] = d v[t-1] + (1 - d) x[t]`` with ``d = exp(-1/tau)``.

    ``tau`` is in time steps.
    """

    def __init__(self, tau: float, step_mode: str = "m"):
        super().__init__(tau, gain_is_leak=True, step_mode=step_mode)


def _synapse_and_neuron(cell: nn.Module) -> tuple[ExponentialSynapse | None, nn.Module]:
    """``(synapse, neuron)`` of ``Sequential(ExponentialSynapse, neuron)``, else
    ``(None, cell)``."""
    if (
        isinstance(cell, nn.Sequential)
        and len(cell) == 2
        and type(cell[0]) is ExponentialSynapse
        and cell[0].step_mode == "s"
    ):
        return cell[0], cell[1]
    return None, cell


def lif_cell(cell: nn.Module) -> LIFCell | None:
    """The :class:`~sj_spatial.backends.contract.LIFCell` of ``cell`` when the fused kernel
    reproduces it exactly, else None.

    Supported: spikingjelly's ``neuron.LIFNode`` (exact class) in single-step mode with a
    spiking ``Sigmoid`` or ``ATan`` surrogate, any reset, ``decay_input`` and
    ``detach_reset``, alone or behind a single-step :class:`ExponentialSynapse`, and fresh
    (neuron and synapse just reset: a cell in the middle of a sequence gives None).
    """
    synapse, lif = _synapse_and_neuron(cell)
    if synapse is not None and isinstance(synapse.state, torch.Tensor):
        return None
    if type(lif) is not neuron.LIFNode or getattr(lif, "step_mode", "s") != "s":
        return None
    if isinstance(lif.v, torch.Tensor):
        return None
    sg = lif.surrogate_function
    name = _SURROGATES.get(type(sg))
    if name is None or not getattr(sg, "spiking", True):
        return None
    return LIFCell(
        tau=float(lif.tau),
        v_threshold=float(lif.v_threshold),
        v_reset=None if lif.v_reset is None else float(lif.v_reset),
        v_init=float(lif.v),
        decay_input=bool(lif.decay_input),
        detach_reset=bool(lif.detach_reset),
        surrogate=name,
        alpha=float(sg.alpha),
        synapse_decay=0.0 if synapse is None else float(synapse.decay),
    )


def set_cell_state(cell: nn.Module, state: CellState) -> None:
    """Leave ``cell`` as running it step by step would: the neuron's ``v`` (and the
    synapse's ``state``) at the last step, so that later calls continue the sequence."""
    synapse, lif = _synapse_and_neuron(cell)
    lif.v = state.v
    if synapse is not None:
        synapse.state = state.current
