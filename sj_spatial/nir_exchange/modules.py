"""The modules that NIR nodes without a spikingjelly counterpart become on import.

Each has spikingjelly's NIR calling convention, ``out, state = m(x, state)`` (``state``
None: the start of a sequence), and a ``step_mode``: ``'s'`` takes ``x [*batch, n]``,
``'m'`` takes ``x [T, *batch, n]``. None of them keeps a memory of its own: the state
is what they return.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import base
from torch import nn

from .._checks import STEP_MODES, check_choice


class _Stateful(nn.Module, base.StepModule):
    """A module whose state is passed in and out explicitly, with a step mode."""

    def __init__(self, step_mode: str = "s"):
        nn.Module.__init__(self)
        self.step_mode = check_choice("step_mode", step_mode, STEP_MODES)

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}"


class DelayLine(_Stateful):
    """``y[t, ..., c] = x[t - steps[c], ..., c]`` (0 before the first step): ``nir.Delay``.

    ``steps``: int64 ``[n]``, whole time steps >= 0. The state is the last ``max(steps)``
    inputs ``[max(steps), *batch, n]``, oldest first.
    """

    def __init__(self, steps: torch.Tensor, step_mode: str = "s"):
        super().__init__(step_mode)
        self.register_buffer("steps", torch.as_tensor(steps, dtype=torch.int64).clone())

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        seq = x[None] if self.step_mode == "s" else x
        keep = int(self.steps.max()) if self.steps.numel() else 0
        past = seq.new_zeros(keep, *seq.shape[1:]) if state is None else state
        history = torch.cat((past, seq))
        t = seq.shape[0]
        # Row t of the output reads row keep + t - steps[c] of the history, per channel.
        rows = keep + torch.arange(t, device=seq.device)[:, None] - self.steps[None, :]
        rows = rows.reshape(t, *[1] * (seq.ndim - 2), -1).expand(seq.shape)
        y = history.gather(0, rows)
        return (y[0] if self.step_mode == "s" else y), history[history.shape[0] - keep :]

    def extra_repr(self) -> str:
        return f"steps={self.steps.tolist()}, {super().extra_repr()}"


class LeakyIntegrator(_Stateful):
    """``v[t] = decay * v[t-1] + gain * x[t] + leak``, per neuron: ``nir.LI`` integrated by
    forward Euler, as spikingjelly integrates ``nir.LIF``.

    ``decay = 1 - dt / tau``, ``gain = r dt / tau``, ``leak = v_leak dt / tau`` (tensors
    ``[n]``). The state is ``v`` ``[*batch, n]``; the output is ``v``.
    """

    def __init__(
        self, decay: torch.Tensor, gain: torch.Tensor, leak: torch.Tensor, step_mode: str = "s"
    ):
        super().__init__(step_mode)
        self.register_buffer("decay", torch.as_tensor(decay).clone())
        self.register_buffer("gain", torch.as_tensor(gain).clone())
        self.register_buffer("leak", torch.as_tensor(leak).clone())

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        v = torch.zeros_like(x[0] if self.step_mode == "m" else x) if state is None else state
        outputs = []
        for x_t in x if self.step_mode == "m" else x[None]:
            v = self.decay * v + self.gain * x_t + self.leak
            outputs.append(v)
        return (torch.stack(outputs) if self.step_mode == "m" else v), v


class Scale(nn.Module):
    """``y = x * scale`` (``scale`` ``[n]``), elementwise: ``nir.Scale``; no state."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
