"""SpikingJelly layers whose synaptic delays come from neuron positions.

The modules hold parameters and memories only; the computation lives in
:mod:`sj_spatial.functional`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from spikingjelly.activation_based import base, layer
from torch import nn

from . import backends
from ._checks import DELAY_MODES, STEP_MODES, check_choice, check_float, check_input, check_int
from ._masks import hold_mask
from .backends.contract import lag_window
from .cells import detach_memories, lif_cell, set_cell_state
from .delays import delays_from_positions
from .functional import delayed_linear, delayed_recurrence
from .positions import NeuronPositions

#: Default longest delay, in time steps. The reference backend's cost grows with it.
DEFAULT_MAX_DELAY = 25


def _population(name: str, given, num_neurons: int, dim: int) -> NeuronPositions:
    if given is None:
        return NeuronPositions(num_neurons, dim)
    if not isinstance(given, NeuronPositions):
        raise TypeError(f"{name} must be a NeuronPositions or None, got {type(given).__name__}")
    if given.num_neurons != num_neurons:
        raise ValueError(
            f"{name} must hold {num_neurons} neurons, got NeuronPositions with {given.num_neurons}"
        )
    if given.dim != dim:
        raise ValueError(f"{name} must have dim={dim} like the layer, got dim={given.dim}")
    return given


def _check_batch(name: str, history: torch.Tensor | None, x: torch.Tensor, batch_start: int):
    if history is not None and history.shape[1:-1] != x.shape[batch_start:-1]:
        raise ValueError(
            f"{name} has batch shape {tuple(x.shape[batch_start:-1])} but the delay memory holds "
            f"{tuple(history.shape[1:-1])}; call spikingjelly's functional.reset_net(model) "
            "between sequences"
        )


@dataclass(frozen=True)
class DelayOptions:
    """The delay options of a layer, checked when the record is made: the ``backend``,
    the longest delay ``max_delay`` (time steps), the position space's ``dim``, the
    ``delay_scale`` (time steps per distance unit) and the ``delay_mode``. Layers without
    positions (the free delays of :mod:`sj_spatial.baselines`) have no ``dim`` and
    ``delay_scale`` (None). ``str`` is how the layers' ``repr`` shows them."""

    backend: str = "torch"
    max_delay: int = DEFAULT_MAX_DELAY
    dim: int | None = 2
    delay_scale: float | None = 1.0
    delay_mode: str = "interpolate"

    def __post_init__(self) -> None:
        check_choice("backend", self.backend, backends.BACKENDS)
        backends.require(self.backend)
        checked = {
            "max_delay": check_int("max_delay", self.max_delay, minimum=0),
            "delay_mode": check_choice("delay_mode", self.delay_mode, DELAY_MODES),
        }
        if self.dim is not None:
            checked["dim"] = check_int("dim", self.dim, minimum=1)
        if self.delay_scale is not None:
            checked["delay_scale"] = check_float("delay_scale", self.delay_scale)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def __str__(self) -> str:
        shown = ((f.name, getattr(self, f.name)) for f in fields(self))
        return ", ".join(f"{name}={value}" for name, value in shown if value is not None)


def _option(name: str, doc: str) -> property:
    """A layer property that reads option ``name`` of the layer's :class:`DelayOptions`
    and, when assigned, replaces the record by a checked copy with the new value."""

    def get(self):
        return getattr(self._options, name)

    def set(self, value) -> None:
        if getattr(self._options, name) is None:
            raise AttributeError(f"{type(self).__name__} has no {name}")
        self._options = replace(self._options, **{name: value})

    return property(get, set, doc=doc)


class _SpatialModule(base.MemoryModule):
    """Step mode, backend and delay options shared by the spatial layers.

    The delay options live in one frozen :class:`DelayOptions` record (``options``);
    ``max_delay``, ``delay_scale``, ``delay_mode``, ``backend`` and ``cpu_kernel`` are
    checked when they are assigned, after construction too; ``dim`` is fixed by the
    positions (read-only).
    """

    def _init_options(self, step_mode: str, options: DelayOptions) -> None:
        self.step_mode = check_choice("step_mode", step_mode, STEP_MODES)
        if not isinstance(options, DelayOptions):
            raise TypeError(f"options must be a DelayOptions, got {type(options).__name__}")
        self._options = options
        self.cpu_kernel = backends.default_cpu_kernel()
        self.cpu_path = "auto"

    @property
    def options(self) -> DelayOptions:
        """The layer's delay options (a frozen record; assign an option to change it)."""
        return self._options

    @property
    def dim(self) -> int:
        """Dimension of the position space (fixed at construction)."""
        return self._options.dim

    backend = _option("backend", "``'torch'`` (any device) or ``'cupy'`` (CUDA GPUs).")
    max_delay = _option(
        "max_delay", "Longest delay in time steps (an int >= 0); longer delays are clamped."
    )
    delay_scale = _option("delay_scale", "Time steps per unit of distance (finite, >= 0).")
    delay_mode = _option(
        "delay_mode", "``'interpolate'`` (real-valued delays) or ``'round'`` (integer delays)."
    )

    def __setstate__(self, state: dict) -> None:
        # Modules pickled before the options record kept each option as an attribute,
        # plain (sj-spatial 0.1) or private behind a checked property.
        legacy = {}
        if "_options" not in state:  # (spikingjelly 0.0.0.0.14 keeps a _backend of its own)
            legacy = {
                name: state.pop(key)
                for name in ("backend", "dim", "max_delay", "delay_scale", "delay_mode")
                for key in (name, "_" + name)
                if key in state
            }
        if legacy:
            if "delay" in state.get("_parameters", {}):  # free delays: no positions
                legacy.update(dim=None, delay_scale=None)
            state["_options"] = DelayOptions(**legacy)
        # ... and before the CPU kernel became a per-layer choice, they had none.
        state.setdefault("_cpu_kernel", backends.default_cpu_kernel())
        state.setdefault("_cpu_path", "auto")
        if "in_features" in state:  # linear layers had no time_dim either
            state.setdefault("_time_dim", 0)
        super().__setstate__(state)
        hold_mask(self)  # a copy of a pruned layer keeps its pruned weights at zero too

    @property
    def supported_backends(self) -> tuple[str, ...]:
        return backends.BACKENDS

    @property
    def cpu_kernel(self) -> str:
        """The kernel of ``backend='torch'`` on CPU tensors: ``'numba'`` or ``'dense'`` (the
        reference). Defaults to :func:`sj_spatial.backends.default_cpu_kernel`."""
        return self._cpu_kernel

    @cpu_kernel.setter
    def cpu_kernel(self, value: str) -> None:
        self._cpu_kernel = backends.check_cpu_kernel(value)

    @property
    def cpu_path(self) -> str:
        """How the numba CPU kernel computes: ``'auto'`` (the event kernels for sparse
        inputs when they do less work, else the gather), ``'gather'`` or ``'events'`` (the
        same numbers within rounding; for measurements and tests)."""
        return self._cpu_path

    @cpu_path.setter
    def cpu_path(self, value: str) -> None:
        self._cpu_path = backends.check_cpu_path(value)

    @property
    def kernel(self) -> str:
        """The kernel the next forward runs, for the device of the weight: ``'numba'``,
        ``'dense'`` or ``'cupy'`` (read-only; set ``backend`` or ``cpu_kernel``)."""
        return backends.implementation(self.backend, self.weight.device, self.cpu_kernel)

    def _init_synapses(self, out_features: int, in_features: int, bias: bool) -> None:
        """``weight [out, in]``, optional ``bias [out]`` and the (absent) pruning mask."""
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.register_buffer("weight_mask", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weight and bias as ``nn.Linear`` initialises them (positions are left alone)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def effective_weight(self) -> torch.Tensor:
        """The weight the synapses use: ``weight * weight_mask``, or ``weight`` when unpruned.

        ``weight_mask`` (bool, shape of ``weight``) is a buffer that pruning creates
        (:func:`sj_spatial.prune_by_distance`, :func:`sj_spatial.prune_by_magnitude`).
        Its False entries of ``weight`` itself are zero too, and stay zero after every
        ``torch.optim`` step (momentum and Adam's moments would move them otherwise).
        """
        mask = self.weight_mask
        if mask is None:
            return self.weight
        hold_mask(self)  # a mask assigned by hand is held from here on
        return self.weight * mask

    def detach(self) -> None:
        """Cut the autograd graph through the delay memory (``functional.detach_net`` calls
        it between chunks of a sequence); the memory's values are unchanged.
        """
        detach_memories(self)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        # What is saved is the network that runs: pruned synapses are zero in the saved
        # weight even if the raw weight was written to by hand (keep_vars asks for the
        # parameter itself, which the optimiser hook keeps zero there).
        if self.weight_mask is not None and not keep_vars:
            destination[prefix + "weight"] = (self.weight * self.weight_mask).detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A pruned layer's state_dict holds a mask that a fresh layer does not have yet.
        if self.weight_mask is None and prefix + "weight_mask" in state_dict:
            self.weight_mask = torch.ones_like(self.weight, dtype=torch.bool)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.weight_mask is not None:
            with torch.no_grad():
                self.weight.mul_(self.weight_mask)
            hold_mask(self)

    def _options_repr(self) -> str:
        path = "" if self.cpu_path == "auto" else f", cpu_path={self.cpu_path}"
        return f"step_mode={self.step_mode}, {self._options}, kernel={self.kernel}{path}"


class _DelayedLinear(_SpatialModule):
    """A linear layer whose synapse j<-i reads its input ``delays()[j, i]`` time steps late.

    The forward, input memory and ``repr`` that :class:`SpatialDelayLinear` (delays from
    positions) and :class:`sj_spatial.baselines.FreeDelayLinear` (free delays) share. A
    subclass sets ``in_features``, ``out_features``, the options, the synapses and the
    ``input_history`` memory, and defines ``delays()``.
    """

    def _init_sizes(
        self, in_features: int, out_features: int, step_mode: str, options: DelayOptions
    ) -> None:
        """A constructor's first part: sizes, step mode and delay options. The subclass
        then adds what sets its delays, then calls :meth:`_init_weights` (in this order,
        so that a seed gives the same positions and weights)."""
        base.MemoryModule.__init__(self)
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        self._init_options(step_mode, options)
        self.time_dim = 0

    @property
    def time_dim(self) -> int:
        """The axis of time in multi-step inputs and outputs: 0 (``[T, *batch, features]``,
        SpikingJelly's convention, the default) or another batch axis, such as 1 for
        batch-first ``[batch, T, features]``. Single-step inputs have no time axis."""
        return self._time_dim

    @time_dim.setter
    def time_dim(self, value: int) -> None:
        self._time_dim = check_int("time_dim", value, minimum=0)

    def _init_weights(self, bias: bool) -> None:
        """A constructor's last part: weight, bias and the input memory."""
        self._init_synapses(self.out_features, self.in_features, bias)
        self.register_memory("input_history", None)

    def delays(self) -> torch.Tensor:
        """Real-valued delays ``[out, in]`` in time steps (every forward calls it)."""
        raise NotImplementedError

    def _forward(self, x: torch.Tensor, t_out: int) -> torch.Tensor:
        delays = self.delays()
        if self.input_history is not None:
            x = torch.cat((self.input_history, x))
        y = delayed_linear(
            x,
            self.effective_weight(),
            self.bias,
            delays,
            self.max_delay,
            delay_mode=self.delay_mode,
            backend=self.backend,
            cpu_kernel=self.cpu_kernel,
            t_out=t_out,
            cpu_path=self.cpu_path,
        )
        self.input_history = x[-lag_window(self.max_delay) :]  # once the input was accepted
        return y

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("x", x, self.in_features, 1, "s")
        _check_batch("x", self.input_history, x, 0)
        return self._forward(x[None], 1)[0]

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_input("x_seq", x_seq, self.in_features, self.time_dim + 2, "m", self.time_dim)
        x_seq = x_seq.movedim(self.time_dim, 0)
        _check_batch("x_seq", self.input_history, x_seq, 1)
        return self._forward(x_seq, x_seq.shape[0]).movedim(0, self.time_dim)

    def extra_repr(self) -> str:
        time_dim = f", time_dim={self.time_dim}" if self.time_dim else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, {self._options_repr()}{time_dim}"
        )


class SpatialDelayLinear(_DelayedLinear):
    """Drop-in replacement for ``layer.Linear`` whose synapse j<-i has a delay
    ``min(delay_scale * ||post_j - pre_i||, max_delay)`` time steps.

    Input ``[*batch, in]`` (``step_mode='s'``) or ``[T, *batch, in]`` (``'m'``; time on
    axis ``time_dim``, for example ``[batch, T, in]`` with ``time_dim=1``); output the
    same with ``out_features``. Positions live in ``pre_positions`` ([in, dim]) and
    ``post_positions`` ([out, dim]), :class:`NeuronPositions` that layers may share.
    The last ``max_delay + 2`` inputs are kept as memory in both step modes (cleared by
    ``functional.reset_net``), so consecutive calls continue one sequence.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        step_mode: str = "s",
        *,
        dim: int = 2,
        max_delay: int = DEFAULT_MAX_DELAY,
        delay_scale: float = 1.0,
        pre_positions: NeuronPositions | None = None,
        post_positions: NeuronPositions | None = None,
        delay_mode: str = "interpolate",
        backend: str = "torch",
        time_dim: int = 0,
    ):
        options = DelayOptions(backend, max_delay, dim, delay_scale, delay_mode)
        self._init_sizes(in_features, out_features, step_mode, options)
        self.time_dim = time_dim
        self.pre_positions = _population("pre_positions", pre_positions, in_features, dim)
        self.post_positions = _population("post_positions", post_positions, out_features, dim)
        self._init_weights(bias)

    def delays(self) -> torch.Tensor:
        """Real-valued delays ``[out, in]`` in time steps (ValueError for non-finite
        positions; every forward calls it)."""
        return delays_from_positions(
            self.post_positions.check_finite("post_positions"),
            self.pre_positions.check_finite("pre_positions"),
            self.delay_scale,
            self.max_delay,
        )


def _check_single_step(sub_module: nn.Module) -> None:
    """Raise ValueError unless every module inside ``sub_module`` is in single-step mode."""
    for name, module in sub_module.named_modules():
        mode = getattr(module, "step_mode", "s")
        if mode != "s":
            where = f"sub_module.{name}" if name else "sub_module"
            raise ValueError(
                f"{where} ({type(module).__name__}) must be in single-step mode "
                f"(step_mode='s'), got step_mode={mode!r}: the container runs the time loop "
                "and calls its sub_module once per step (functional.set_step_mode leaves it "
                f"alone; set it back with {where}.step_mode = 's')"
            )


# Deriving from ElementWiseRecurrentContainer is how SpikingJelly's functional.set_step_mode
# (0.0.0.0.14 and 2.x alike) knows a recurrent container: it sets the container's step
# mode and leaves the sub-module, which the container drives one step at a time, alone.
# Nothing else of that class is used.
class _DelayedRecurrentContainer(_SpatialModule, layer.ElementWiseRecurrentContainer):
    """A population whose own spikes return to it through synapses delayed by ``delays()``.

    The recurrence, memories and ``repr`` that :class:`SpatialRecurrentContainer` (delays
    from positions) and :class:`sj_spatial.baselines.FreeDelayRecurrentContainer` (free
    delays) share. A subclass sets ``sub_module``, ``num_features``, the options, the
    synapses and the ``output_history`` memory, and defines ``delays()``.
    """

    def detach(self) -> None:
        """Cut the autograd graph through the spike memory and the memories of
        ``sub_module`` (``functional.detach_net`` calls it before the sub-module's own).
        """
        detach_memories(self)
        for module in self.sub_module.modules():
            if isinstance(module, base.MemoryModule):
                detach_memories(module)

    def _init_sizes(
        self, sub_module: nn.Module, num_features: int, step_mode: str, options: DelayOptions
    ) -> None:
        """A constructor's first part: the checked sub-module, size, step mode and delay
        options; then the subclass's delays, then :meth:`_init_weights`."""
        base.MemoryModule.__init__(self)  # not ElementWiseRecurrentContainer's
        if not isinstance(sub_module, nn.Module):
            raise TypeError(f"sub_module must be an nn.Module, got {type(sub_module).__name__}")
        _check_single_step(sub_module)
        self.num_features = check_int("num_features", num_features, minimum=1)
        self._init_options(step_mode, options)
        self.sub_module = sub_module

    def _init_weights(self, bias: bool) -> None:
        """A constructor's last part: weight, bias and the spike memory."""
        self._init_synapses(self.num_features, self.num_features, bias)
        self.register_memory("output_history", None)

    def delays(self) -> torch.Tensor:
        """Real-valued delays ``[n, n]`` in time steps, without the recurrent extra step."""
        raise NotImplementedError

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_single_step(self.sub_module)
        # A fresh sequence of a LIF cell runs in one fused kernel where there is one; not
        # inside a compiled graph (the numba and CuPy loops are opaque calls to dynamo).
        fresh = (
            self.output_history is None
            and not torch.compiler.is_compiling()
            and backends.fused_lif(self.backend, self.weight.device, self.cpu_kernel) is not None
        )
        s, self.output_history, cell_state = delayed_recurrence(
            x,
            self.sub_module,
            self.effective_weight(),
            self.bias,
            self.delays(),
            self.max_delay,
            delay_mode=self.delay_mode,
            backend=self.backend,
            cpu_kernel=self.cpu_kernel,
            history=self.output_history,
            cell=lif_cell(self.sub_module) if fresh else None,
            cpu_path=self.cpu_path,
        )
        if cell_state is not None:  # the fused kernel ran the cell: it continues from there
            set_cell_state(self.sub_module, cell_state)
        return s

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("x", x, self.num_features, 1, "s")
        _check_batch("x", self.output_history, x, 0)
        return self._forward(x[None])[0]

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_input("x_seq", x_seq, self.num_features, 2, "m")
        _check_batch("x_seq", self.output_history, x_seq, 1)
        return self._forward(x_seq)

    def materialize_states(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no functional (stateless) forward")

    def single_step_functional_forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no functional (stateless) forward")

    def extra_repr(self) -> str:
        return (
            f"num_features={self.num_features}, bias={self.bias is not None}, "
            f"{self._options_repr()}"
        )


class SpatialRecurrentContainer(_DelayedRecurrentContainer):
    """A population whose own spikes return to it through position-delayed synapses.

    ``s[t] = sub_module(x[t] + r[t])`` with
    ``r[t] = bias + sum_i w[j,i] ((1-f) s[t-1-k, i] + f s[t-2-k, i])``: every recurrent
    synapse has at least one step of delay. ``sub_module`` (usually a spiking neuron) must
    be in single-step mode and is called once per time step in both of this container's
    step modes; like SpikingJelly's own recurrent containers, ``functional.set_step_mode``
    changes the container's step mode and leaves the sub-module's alone. Input and output
    have ``num_features`` features.
    """

    def __init__(
        self,
        sub_module: nn.Module,
        num_features: int,
        bias: bool = True,
        step_mode: str = "s",
        *,
        positions: NeuronPositions | None = None,
        dim: int = 2,
        max_delay: int = DEFAULT_MAX_DELAY,
        delay_scale: float = 1.0,
        delay_mode: str = "interpolate",
        backend: str = "torch",
    ):
        options = DelayOptions(backend, max_delay, dim, delay_scale, delay_mode)
        self._init_sizes(sub_module, num_features, step_mode, options)
        self.positions = _population("positions", positions, num_features, dim)
        self._init_weights(bias)

    def delays(self) -> torch.Tensor:
        """Real-valued delays ``[n, n]`` in time steps (without the recurrent extra step;
        ValueError for non-finite positions; every forward calls it)."""
        p = self.positions.check_finite("positions")
        return delays_from_positions(p, p, self.delay_scale, self.max_delay)


def set_cpu_kernel(module: nn.Module, cpu_kernel: str) -> nn.Module:
    """Set ``cpu_kernel`` (``'numba'`` or ``'dense'``) on every spatial layer in ``module``
    (itself included); returns ``module``."""
    backends.check_cpu_kernel(cpu_kernel)
    for m in module.modules():
        if isinstance(m, _SpatialModule):
            m.cpu_kernel = cpu_kernel
    return module
