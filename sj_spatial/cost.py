"""Wiring cost and pruning of spatial layers.

The wiring cost of a layer is ``sum_ji |w_ji| * dist_ji ** power`` (distance units), the
regulariser of Mészáros et al. (2025) and of spatially embedded RNNs (Achterberg et al.
2023). Pruning zeroes synapses through a persistent boolean ``weight_mask`` buffer that
the layers multiply into their weight (``layer.effective_weight()``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ._checks import check_bool, check_choice, check_float, check_fraction
from ._introspect import check_spatial_layer, is_recurrent, layer_positions, named_spatial_layers
from ._masks import hold_mask
from .delays import distances
from .wiring import communicability as communicability
from .wiring import wiring_cost

NORMALIZE = (None, "mean")


def layer_distances(layer: nn.Module) -> torch.Tensor:
    """Distances ``[out, in]`` (distance units, not clamped, not scaled) of a spatial layer."""
    return distances(*layer_positions(layer))


class WiringCost:
    """Distance-dependent wiring cost of spatial layers, a scalar tensor to add to a loss.

    ``cost()`` returns ``strength * sum_layers sum_ji |w_ji| * d_ji ** power`` where ``w``
    is the effective (pruning-masked) weight and ``d`` the distance between the synapse's
    neurons (distance units, not the clamped delay). ``normalize="mean"`` divides each
    layer's distances by their mean; ``communicability=True`` multiplies the terms of
    square (recurrent) layers by the weighted communicability of ``|W|``. Distances are
    constants unless ``position_grad=True``, which lets the cost pull connected neurons
    together as well. ``modules``: a model (every spatial layer inside) or a list of
    spatial layers.
    """

    def __init__(
        self,
        modules: nn.Module | Iterable[nn.Module],
        strength: float = 1.0,
        power: float = 1.0,
        normalize: str | None = None,
        communicability: bool = False,
        position_grad: bool = False,
    ):
        self.layers = [layer for _, layer in named_spatial_layers(modules)]
        if not self.layers:
            raise ValueError(
                "modules must contain at least one SpatialDelayLinear or "
                "SpatialRecurrentContainer, got none"
            )
        self.strength = check_float("strength", strength)
        self.power = check_float("power", power)
        self.normalize = check_choice("normalize", normalize, NORMALIZE)
        self.communicability = check_bool("communicability", communicability)
        self.position_grad = check_bool("position_grad", position_grad)

    def layer_cost(self, layer: nn.Module) -> torch.Tensor:
        """Unscaled cost of one layer (without ``strength``)."""
        d = layer_distances(layer)
        if not self.position_grad:
            d = d.detach()
        if self.normalize == "mean":
            d = d / d.mean()
        weight = layer.effective_weight()
        recurrent = is_recurrent(layer)
        return wiring_cost(
            weight, d.to(weight.dtype), self.power, self.communicability and recurrent
        )

    def __call__(self) -> torch.Tensor:
        return self.strength * sum(self.layer_cost(layer) for layer in self.layers)

    def __repr__(self) -> str:
        return (
            f"WiringCost(layers={len(self.layers)}, strength={self.strength}, power={self.power}, "
            f"normalize={self.normalize!r}, communicability={self.communicability}, "
            f"position_grad={self.position_grad})"
        )


def _prune(layer: nn.Module, fraction, score: torch.Tensor, largest: bool) -> nn.Module:
    """Mask ``fraction * alive`` (rounded half up) alive synapses of largest / smallest score."""
    fraction = check_fraction("fraction", fraction)
    weight = layer.weight
    mask = layer.weight_mask
    if mask is None:
        mask = torch.ones_like(weight, dtype=torch.bool)
    alive = mask.flatten()
    count = math.floor(fraction * int(alive.sum()) + 0.5)
    # Dead synapses sort last, so only alive ones are chosen; stable order breaks ties.
    fill = -math.inf if largest else math.inf
    score = torch.where(alive, score.detach().flatten().to(torch.float64), fill)
    chosen = torch.argsort(score, descending=largest, stable=True)[:count]
    mask = alive.clone()
    mask[chosen] = False
    mask = mask.reshape(weight.shape)
    layer.weight_mask = mask
    with torch.no_grad():
        weight.mul_(mask)
    hold_mask(layer)
    return layer


def prune_by_distance(layer: nn.Module, fraction: float) -> nn.Module:
    """Zero the longest ``fraction`` (in [0, 1]) of a layer's alive synapses, in place.

    ``fraction * alive`` is rounded half up; length is the distance between the synapse's
    neurons. The synapses stay zero under further training (the layer's ``weight_mask``
    buffer, saved in its ``state_dict``); applying it again prunes that fraction of the
    synapses still alive. Returns the layer.
    """
    return _prune(layer, fraction, layer_distances(layer), largest=True)


def prune_by_magnitude(layer: nn.Module, fraction: float) -> nn.Module:
    """Zero the weakest (smallest ``|w|``) ``fraction`` of a layer's alive synapses, in place.

    Same mask, persistence and composition as :func:`prune_by_distance`; it needs no
    positions, so the free-delay layers of :mod:`sj_spatial.baselines` can be pruned too.
    Returns the layer.
    """
    check_spatial_layer(layer)
    return _prune(layer, fraction, layer.effective_weight().abs(), largest=False)
