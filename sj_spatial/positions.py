"""Learnable neuron positions in a D-dimensional Euclidean space."""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_choice, check_finite, check_float, check_int

INITS = ("uniform",)


class NeuronPositions(nn.Module):
    """Positions of a population of neurons, one learnable point per neuron.

    Args:
        num_neurons: number of neurons N.
        dim: dimension D of the space.
        init: ``"uniform"`` draws each coordinate from U(-scale, scale).
        scale: half-width of the initial cube, in distance units.

    The parameter ``positions`` has shape ``[N, D]``. Share one instance between the
    layers that touch the same population so that each neuron has a single position.
    """

    def __init__(self, num_neurons: int, dim: int = 2, init: str = "uniform", scale: float = 1.0):
        super().__init__()
        self.num_neurons = check_int("num_neurons", num_neurons, minimum=1)
        self.dim = check_int("dim", dim, minimum=1)
        self.init = check_choice("init", init, INITS)
        self.scale = check_float("scale", scale)
        self.positions = nn.Parameter(torch.empty(num_neurons, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.positions.uniform_(-self.scale, self.scale)

    def forward(self) -> torch.Tensor:
        """Return the ``[N, D]`` position tensor."""
        return self.positions

    def check_finite(self, name: str = "positions") -> torch.Tensor:
        """Return ``positions`` after checking that every coordinate is finite.

        Raises ValueError naming ``name`` (how the caller knows these positions, e.g.
        ``"pre_positions"``) otherwise. The spatial layers call it on every forward.
        """
        owner = f"NeuronPositions(num_neurons={self.num_neurons}, dim={self.dim})"
        return check_finite(self.positions, name, owner)

    def extra_repr(self) -> str:
        return (
            f"num_neurons={self.num_neurons}, dim={self.dim}, init={self.init!r}, "
            f"scale={self.scale}"
        )


def param_groups(model: nn.Module, lr: float, position_lr: float) -> list[dict]:
    """Optimizer parameter groups: neuron positions at ``position_lr``, the rest at ``lr``.

    Positions are the parameters of the model's :class:`NeuronPositions` modules (each
    once, also when shared by several layers); the paper trains them with their own,
    larger learning rate. ``torch.optim.Adam(param_groups(model, 1e-3, 0.05))``. The
    free per-synapse delays of :mod:`sj_spatial.baselines` join the positions' group.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    positions = {id(p) for m in model.modules() for p in _timing_parameters(m)}
    params = list(model.parameters())
    groups = [{"params": [p for p in params if id(p) not in positions], "lr": lr}]
    if positions:
        groups.append({"params": [p for p in params if id(p) in positions], "lr": position_lr})
    return groups


def _timing_parameters(module: nn.Module) -> list[nn.Parameter]:
    if isinstance(module, NeuronPositions):
        return list(module.parameters())
    timing = getattr(module, "timing_parameters", None)
    return list(timing()) if callable(timing) else []
