"""sj_spatial: spiking networks whose synaptic delays are learned as neuron positions."""

from . import _sj  # noqa: F401  (first: spikingjelly imported without its import-time warning)
from .backends.threads import set_num_threads
from .convert import SpatializeReport, spatialize
from .cost import WiringCost, prune_by_distance, prune_by_magnitude
from .layers import DelayOptions, SpatialDelayLinear, SpatialRecurrentContainer, set_cpu_kernel
from .positions import NeuronPositions, param_groups
from .training import checkpointed_bptt, chunked_forward, truncated_bptt

__all__ = [
    "DelayOptions",
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
    "set_cpu_kernel",
    "set_num_threads",
    "spatialize",
    "truncated_bptt",
]
__version__ = "0.1.0"
