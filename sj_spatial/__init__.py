"""sj_spatial: spiking networks whose synaptic delays are learned as neuron positions."""

from . import _sj  # noqa: F401  (first: spikingjelly imported without its import-time warning)
from .convert import SpatializeReport, spatialize
from .cost import WiringCost, prune_by_distance, prune_by_magnitude
from .layers import SpatialDelayLinear, SpatialRecurrentContainer
from .positions import NeuronPositions, param_groups
from .training import checkpointed_bptt, chunked_forward, truncated_bptt

__all__ = [
    "NeuronPositions",
    "SpatialDelayLinear",
    "SpatialRecurrentContainer",
    "SpatializeReport",
    "WiringCost",
    "checkpointed_bptt",
    "chunked_forward",
    "param_groups",
    "prune_by_distance",
    "prune_by_magnitude",
    "spatialize",
    "truncated_bptt",
]
__version__ = "0.1.0"
