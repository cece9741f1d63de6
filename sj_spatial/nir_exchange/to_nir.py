"""Spatial layers as NIR subgraphs, on spikingjelly's exporter: its module mapper extended.

Needs spikingjelly >= 2.0.0 (``activation_based.nir_exchange``), ``nir`` and ``nirtorch``;
:mod:`sj_spatial.nir_exchange` imports this module only after checking that they are
installed. The convention of the subgraphs is in ``docs/deploy.md``:

- ``SpatialDelayLinear`` (and ``FreeDelayLinear``): ``input -> delay_L -> weight_L ->
  sum -> output`` for every lag ``L`` (time steps) that occurs (no ``delay_0``); the
  bias is in the first weight (``nir.Affine``), the others are ``nir.Linear``; ``sum`` is
  a unit ``nir.Scale`` where the lags add up.
- ``SpatialRecurrentContainer`` (and ``FreeDelayRecurrentContainer``): ``input [-> bias]
  -> cell -> output`` and the loops ``cell -> delay_L -> weight_L -> cell``: the cycle
  itself is the recurrent synapse's extra step, the ``Delay`` nodes hold the delays of
  ``delays()``. The cell is ``nir.LIF`` (a ``LIFNode``) or ``nir.CubaLIF`` (an
  ``ExponentialSynapse`` before a ``LIFNode``); ``bias`` is ``nir.Affine(I, b)``.
- ``ExponentialSynapse`` and ``LeakyIntegrator`` outside a container: ``nir.LI``.
"""

from __future__ import annotations

import nir
import numpy as np
import torch
from spikingjelly.activation_based import neuron
from spikingjelly.activation_based.nir_exchange.to_nir import _ModuleMapper
from torch import nn

from ..baselines import FreeDelayLinear, FreeDelayRecurrentContainer
from ..cells import ExponentialSynapse, LeakyIntegrator, _synapse_and_neuron
from ..layers import SpatialDelayLinear, SpatialRecurrentContainer
from .lags import DelayBudget, LagBins, bin_by_lag, budget_delays, layer_synapses

#: The value of every subgraph's ``metadata["convention"]``.
CONVENTION = "sj_spatial lag bins v1"


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _types(n: int) -> dict:
    return {"input": np.array([n])}


class SpatialModuleMapper(_ModuleMapper):
    """spikingjelly's ``_ModuleMapper`` with the spatial layers and cells of sj_spatial.

    ``budget``: the :class:`~sj_spatial.nir_exchange.lags.DelayBudget` whose clamp the
    delays get (checked beforehand by :func:`~sj_spatial.nir_exchange.lags.apply_budget`).
    """

    def __init__(self, net: nn.Module, example_input: torch.Tensor, dt: float, budget: DelayBudget):
        self.budget = budget
        super().__init__(net, example_input, dt=dt)

    @property
    def map_dict(self) -> dict:
        return {
            **super().map_dict,
            SpatialDelayLinear: self.map_delayed_linear,
            FreeDelayLinear: self.map_delayed_linear,
            SpatialRecurrentContainer: self.map_delayed_recurrence,
            FreeDelayRecurrentContainer: self.map_delayed_recurrence,
            ExponentialSynapse: self.map_exponential_synapse,
            LeakyIntegrator: self.map_leaky_integrator,
        }

    def _bins(self, layer: nn.Module) -> LagBins:
        weight, delays = layer_synapses(layer)
        return bin_by_lag(weight, budget_delays(delays, self.budget), layer.delay_mode)

    def _delay(self, lag: int, n: int) -> nir.Delay:
        return nir.Delay(delay=np.full(n, lag * self.dt), metadata={"steps": lag})

    def _metadata(self, layer: nn.Module, bins: LagBins) -> dict:
        """What the graph does not carry in its nodes: options, positions, clamping."""
        meta = {
            "convention": CONVENTION,
            "layer": type(layer).__name__,
            "dt": float(self.dt),
            "delay_mode": layer.delay_mode,
            "max_delay": int(layer.max_delay),
            "lags": np.array(bins.lags, dtype=np.int64),
            "clamped_to": -1 if not self.budget.clamp else int(self.budget.max_steps),
        }
        if isinstance(layer, SpatialRecurrentContainer):
            meta["positions"] = _array(layer.positions.positions)
        elif isinstance(layer, SpatialDelayLinear):
            meta["pre_positions"] = _array(layer.pre_positions.positions)
            meta["post_positions"] = _array(layer.post_positions.positions)
        if isinstance(layer, (SpatialRecurrentContainer, SpatialDelayLinear)):
            meta["delay_scale"] = float(layer.delay_scale)
        return meta

    def map_delayed_linear(self, layer: nn.Module) -> nir.NIRGraph:
        """``input -> delay_L -> weight_L -> sum -> output``, one path per lag."""
        bins = self._bins(layer)
        n_in, n_out = layer.in_features, layer.out_features
        nodes = {"input": nir.Input(input_type=_types(n_in))}
        edges = []
        for i, (lag, weight) in enumerate(zip(bins.lags, bins.weights, strict=True)):
            source = "input"
            if lag:
                nodes[f"delay_{lag}"] = self._delay(lag, n_in)
                edges.append(("input", f"delay_{lag}"))
                source = f"delay_{lag}"
            nodes[f"weight_{lag}"] = self._weight(weight, layer.bias if i == 0 else None, lag)
            edges += [(source, f"weight_{lag}"), (f"weight_{lag}", "sum")]
        nodes["sum"] = nir.Scale(scale=np.ones(n_out, dtype=np.float32))
        nodes["output"] = nir.Output(output_type={"output": np.array([n_out])})
        edges.append(("sum", "output"))
        return nir.NIRGraph(nodes, edges, metadata=self._metadata(layer, bins))

    def map_delayed_recurrence(self, layer: nn.Module) -> nir.NIRGraph:
        """``input [-> bias] -> cell -> output`` and ``cell -> delay_L -> weight_L -> cell``."""
        bins = self._bins(layer)
        n = layer.num_features
        nodes = {"input": nir.Input(input_type=_types(n)), "cell": self._cell(layer)}
        edges = [("cell", "output")]
        if layer.bias is None:
            edges.append(("input", "cell"))
        else:  # not on a loop: a discrete simulator's loop carries zeros at the first step
            eye = torch.eye(n, dtype=layer.bias.dtype)
            nodes["bias"] = nir.Affine(weight=_array(eye), bias=_array(layer.bias))
            edges += [("input", "bias"), ("bias", "cell")]
        for lag, weight in zip(bins.lags, bins.weights, strict=True):
            if not bool(weight.any()):
                continue  # no recurrent synapse at all
            source = "cell"
            if lag:
                nodes[f"delay_{lag}"] = self._delay(lag, n)
                edges.append(("cell", f"delay_{lag}"))
                source = f"delay_{lag}"
            nodes[f"weight_{lag}"] = self._weight(weight, None, lag)
            edges += [(source, f"weight_{lag}"), (f"weight_{lag}", "cell")]
        nodes["output"] = nir.Output(output_type={"output": np.array([n])})
        meta = {**self._metadata(layer, bins), "loop_steps": 1}
        return nir.NIRGraph(nodes, edges, metadata=meta)

    @staticmethod
    def _weight(weight: torch.Tensor, bias: torch.Tensor | None, lag: int) -> nir.NIRNode:
        meta = {"lag_steps": lag}
        if bias is None:
            return nir.Linear(weight=_array(weight), metadata=meta)
        return nir.Affine(weight=_array(weight), bias=_array(bias), metadata=meta)

    def _cell(self, layer: nn.Module) -> nir.NIRNode:
        """The recurrent population's neurons: ``nir.LIF`` or ``nir.CubaLIF``."""
        synapse, lif = _synapse_and_neuron(layer.sub_module)
        if type(lif) is not neuron.LIFNode:
            raise TypeError(
                f"sub_module of {type(layer).__name__} must be a LIFNode or "
                "Sequential(ExponentialSynapse, LIFNode) to export to NIR, got "
                f"{type(layer.sub_module).__name__}"
            )
        self.module_io_shape[lif] = torch.Size([1, layer.num_features])  # one 's' step
        if synapse is None:
            return self.map_lif(lif)
        if lif.decay_input or lif.v_reset != 0.0:
            raise ValueError(
                "a cell Sequential(ExponentialSynapse, LIFNode) exports as nir.CubaLIF, which "
                "needs LIFNode(decay_input=False, v_reset=0.0), got "
                f"decay_input={lif.decay_input}, v_reset={lif.v_reset}"
            )
        cuba = neuron.CUBALIFNode(
            c_decay=synapse.decay,
            v_decay=1.0 - 1.0 / lif.tau,
            v_threshold=lif.v_threshold,
            v_reset=lif.v_reset,
        )
        self.module_io_shape[cuba] = self.module_io_shape[lif]
        return self.map_cuba_lif(cuba)

    def _leaky(self, module: nn.Module, r: float) -> nir.LI:
        """``nir.LI`` whose forward-Euler step is ``decay * v + (1 - decay) * r * x``."""
        shape = self._neuron_shape(module)
        return nir.LI(
            tau=np.full(shape, self.dt / (1.0 - module.decay)),
            r=np.full(shape, r),
            v_leak=np.zeros(shape),
        )

    def map_exponential_synapse(self, module: ExponentialSynapse) -> nir.LI:
        """``I[t] = decay I[t-1] + x[t]``: ``nir.LI`` with ``r = 1 / (1 - decay)``."""
        return self._leaky(module, 1.0 / (1.0 - module.decay))

    def map_leaky_integrator(self, module: LeakyIntegrator) -> nir.LI:
        """``v[t] = decay v[t-1] + (1 - decay) x[t]``: ``nir.LI`` with ``r = 1``."""
        return self._leaky(module, 1.0)
