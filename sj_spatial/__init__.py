"""sj_spatial: spiking networks whose synaptic delays are learned as neuron positions."""

from .layers import SpatialDelayLinear, SpatialRecurrentContainer
from .positions import NeuronPositions

__all__ = ["NeuronPositions", "SpatialDelayLinear", "SpatialRecurrentContainer"]
__version__ = "0.1.0"
