"""sj_spatial: spiking networks whose synaptic delays are learned as neuron positions."""

from .convert import spatialize
from .cost import WiringCost, prune_by_distance, prune_by_magnitude
from .layers import SpatialDelayLinear, SpatialRecurrentContainer
from .positions import NeuronPositions, param_groups

__all__ = [
    "NeuronPositions",
    "SpatialDelayLinear",
    "SpatialRecurrentContainer",
    "WiringCost",
    "param_groups",
    "prune_by_distance",
    "prune_by_magnitude",
    "spatialize",
]
__version__ = "0.1.0"
