"""Reading a model's spatial layers: which modules they are, their neuron positions, and
whether their synapses are recurrent. The wiring cost, the pruning, the topology analysis
and the TensorBoard logger all read layers through these functions.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .layers import (
    SpatialDelayLinear,
    SpatialRecurrentContainer,
    _DelayedLinear,
    _DelayedRecurrentContainer,
)

#: Every layer with delayed synapses: learned positions or (``sj_spatial.baselines``) free delays.
SPATIAL_LAYERS = (_DelayedLinear, _DelayedRecurrentContainer)


def named_spatial_layers(modules: nn.Module | Iterable[nn.Module]) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every spatial layer in a model (by module path) or in a list.

    A model is searched with ``named_modules()`` (the model itself counts when it is a
    spatial layer); a list must hold spatial layers only, named by their index.
    """
    if isinstance(modules, nn.Module):
        return [(name, m) for name, m in modules.named_modules() if isinstance(m, SPATIAL_LAYERS)]
    if isinstance(modules, (str, bytes)) or not isinstance(modules, Iterable):
        raise TypeError(
            "modules must be an nn.Module or a list of spatial layers, got "
            f"{type(modules).__name__}"
        )
    return [(str(i), check_spatial_layer(m, f"modules[{i}]")) for i, m in enumerate(modules)]


def check_spatial_layer(layer: nn.Module, name: str = "layer") -> nn.Module:
    """Return ``layer`` if it is a spatial layer (positions or free delays); TypeError
    naming it as ``name`` otherwise."""
    if not isinstance(layer, SPATIAL_LAYERS):
        raise TypeError(
            f"{name} must be a SpatialDelayLinear or SpatialRecurrentContainer, "
            f"got {type(layer).__name__}"
        )
    return layer


def positions_of(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(post, pre)`` position tensors ``[out, D]``, ``[in, D]`` of a layer with neuron
    positions (one tensor twice for a recurrent layer); None for any other module."""
    if isinstance(layer, SpatialRecurrentContainer):
        p = layer.positions.positions
        return p, p
    if isinstance(layer, SpatialDelayLinear):
        return layer.post_positions.positions, layer.pre_positions.positions
    return None


def layer_positions(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(post, pre)`` of :func:`positions_of`; TypeError for a module without positions."""
    positions = positions_of(check_spatial_layer(layer))
    if positions is None:
        raise TypeError(
            f"layer must have neuron positions, got {type(layer).__name__} (free per-synapse "
            "delays have no distances)"
        )
    return positions


def is_recurrent(layer: nn.Module) -> bool:
    """Whether ``layer``'s synapses connect one population to itself (weight ``[n, n]``)."""
    return isinstance(layer, _DelayedRecurrentContainer)
