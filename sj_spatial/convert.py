"""Turn a SpikingJelly model's linear and recurrent layers into spatial ones."""

from __future__ import annotations

import copy
import logging
import types
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Literal, overload

import torch
from spikingjelly.activation_based import base, functional, layer
from torch import nn

from ._checks import STEP_MODES, check_choice, check_int
from .layers import DEFAULT_MAX_DELAY, SpatialDelayLinear, SpatialRecurrentContainer
from .positions import NeuronPositions

log = logging.getLogger("sj_spatial")


def _containers(*names: str) -> tuple[type, ...]:
    """The spikingjelly container classes of these names that the installed release has."""
    return tuple(getattr(layer, name) for name in names if hasattr(layer, name))


#: Containers that fold time into the batch: a layer inside sees no sequence.
_TIME_FLATTENING = _containers("SeqToANNContainer", "TLastSeqToANNContainer")
#: Containers that call what they hold once per time step: a layer inside is single-step.
_PER_STEP = _containers("MultiStepContainer", "TLastMultiStepContainer")
#: Containers whose input and output are time-major sequences ``[T, batch, ...]``.
_TIME_MAJOR = _containers("MultiStepContainer", "SeqToANNContainer")
#: Modules that map each position of a tensor alone (or only its last axis), so that their
#: output has their input's layout: the search for a neighbour's step mode looks past them.
_LAYOUT_KEEPING = (
    nn.Identity,
    nn.Dropout,
    nn.Linear,
    nn.LayerNorm,
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Softplus,
)
_TARGETS = (nn.Linear, layer.LinearRecurrentContainer)
#: ``nn.Module``'s own bookkeeping attributes (parameters, buffers, sub-modules, hooks),
#: which the search for plain-container references leaves alone.
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
#: How deeply nested plain containers are searched (lists of lists of ...).
_MAX_NESTING = 16
#: How many attribute paths a warning lists.
_MAX_SHOWN = 8


@dataclass(frozen=True)
class SpatializeReport:
    """What :func:`spatialize` did (``spatialize(..., return_report=True)``).

    - ``converted``: ``(module name, original class, new class)`` per converted layer, the
      name as in ``named_modules`` (``""`` for a model that is itself a linear layer).
    - ``skipped``: ``(module name, reason)`` per layer left alone, the reason ``"skip"`` or
      ``"skip_last"``.
    - ``rebound``: attribute paths (``"model.blocks[0][0]"``) of references to replaced
      layers, or to their weights and biases, in plain lists and dicts that now point to
      the converted ones.
    """

    converted: tuple[tuple[str, str, str], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    rebound: tuple[str, ...] = ()

    def __str__(self) -> str:
        head = (
            f"spatialize: {len(self.converted)} converted, {len(self.skipped)} skipped, "
            f"{len(self.rebound)} rebound"
        )
        rows = [("converted", _shown(n), f"{old} -> {new}") for n, old, new in self.converted]
        rows += [("skipped", _shown(name), f"by {reason}") for name, reason in self.skipped]
        rows += [("rebound", path, "") for path in self.rebound]
        if not rows:
            return head
        width = max(len(name) for _, name, _ in rows)
        lines = [f"  {kind:<9}  {name:<{width}}  {what}".rstrip() for kind, name, what in rows]
        return "\n".join([head, *lines])


def _shown(name: str) -> str:
    """A module name for display: the root module has the empty name."""
    return name or "(model)"


_Skip = Iterable[str] | Callable[[str, nn.Module], bool]


@overload
def spatialize(
    model: nn.Module,
    dim: int = ...,
    max_delay: int = ...,
    delay_scale: float = ...,
    share_positions: bool = ...,
    *,
    skip: _Skip = ...,
    skip_last: bool = ...,
    step_mode: str | None = ...,
    time_dim: int = ...,
    delay_mode: str = ...,
    backend: str = ...,
    position_scale: float = ...,
    inplace: bool = ...,
    return_report: Literal[False] = ...,
) -> nn.Module: ...


@overload
def spatialize(
    model: nn.Module,
    dim: int = ...,
    max_delay: int = ...,
    delay_scale: float = ...,
    share_positions: bool = ...,
    *,
    skip: _Skip = ...,
    skip_last: bool = ...,
    step_mode: str | None = ...,
    time_dim: int = ...,
    delay_mode: str = ...,
    backend: str = ...,
    position_scale: float = ...,
    inplace: bool = ...,
    return_report: Literal[True],
) -> tuple[nn.Module, SpatializeReport]: ...


def spatialize(
    model: nn.Module,
    dim: int = 2,
    max_delay: int = DEFAULT_MAX_DELAY,
    delay_scale: float = 1.0,
    share_positions: bool = True,
    *,
    skip: _Skip = (),
    skip_last: bool = False,
    step_mode: str | None = None,
    time_dim: int = 0,
    delay_mode: str = "interpolate",
    backend: str = "torch",
    position_scale: float = 1.0,
    inplace: bool = True,
    return_report: bool = False,
) -> nn.Module | tuple[nn.Module, SpatializeReport]:
    """Replace linear layers with :class:`SpatialDelayLinear` and recurrent ones with
    :class:`SpatialRecurrentContainer`, keeping their weights.

    - ``nn.Linear`` / ``layer.Linear`` become ``SpatialDelayLinear`` with the same weight
      and bias. A delay memory makes the step mode matter (it says which axis is time), so
      it is never guessed: ``layer.Linear`` keeps its own; a plain ``nn.Linear``, which has
      none, takes ``step_mode`` when it is given, else the step mode of the data around it
      (see below). A layer with no such evidence, or whose step mode contradicts it, is a
      ``ValueError`` that names the layer and what to pass; nothing is converted then.
    - The data around a layer: inside a ``MultiStepContainer`` (which calls it once per
      step) it is single-step; otherwise, in an ``nn.Sequential``, the nearest modules
      before and after it that have a step mode (spikingjelly neurons and layers, a
      ``SeqToANNContainer``: time-major), looking past modules that keep the layout
      (activations, dropout, ``nn.Linear``, ``nn.LayerNorm``) and into nested
      ``nn.Sequential``. A layer that a custom ``forward`` calls has no neighbours.
    - ``time_dim``: the axis of time in the multi-step inputs of the converted linear
      layers (0: time-major, spikingjelly's convention; 1 for batch-first ``[batch, T,
      features]``, as the ``fc`` of spikingjelly's ``speech_commands`` example).
    - ``layer.LinearRecurrentContainer(sub_module, n, n)`` becomes
      ``Sequential(layer.Linear(n, n), SpatialRecurrentContainer(sub_module, n))``: the
      linear part mixes the input as the container's ``[W_x | W_y]`` did, the recurrent
      weight is ``W_y``.
    - With ``share_positions``, a layer whose inputs are the previous converted layer's
      outputs (same feature count, in module order) shares that population's
      :class:`NeuronPositions`.
    - ``skip``: module names (as in ``named_modules``) or a predicate ``(name, module)``
      for layers to leave alone; ``skip_last`` leaves the last linear layer (the usual
      readout) alone.

    A layer registered under several names is replaced under all of them by one converted
    layer. A forward that calls layers through plain Python containers (``self.blocks =
    [[fc, lif], ...]`` next to a registered ``nn.ModuleList``) would keep running the
    original layers, so list items and dict values (nested ones too) in any sub-module's
    attributes that refer to a replaced layer, or to its weight or bias, are re-pointed to
    the converted one. A ``UserWarning`` names the references that cannot be re-pointed
    (tuple items, set members, bound methods, attributes of other objects), and another
    one says why when nothing was converted (no linear or recurrent layer, or all of them
    skipped). Each conversion is logged at INFO level on the ``"sj_spatial"`` logger.

    With every delay 0 (``delay_scale=0``) the converted model computes what the original
    did. Returns the model (a converted copy when ``inplace=False``; the converted layer
    when ``model`` is itself a linear layer), or ``(model, SpatializeReport)`` with
    ``return_report=True``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if step_mode is not None:
        check_choice("step_mode", step_mode, STEP_MODES)
    check_int("time_dim", time_dim, minimum=0)
    if not inplace:
        model = copy.deepcopy(model)
    skip_fn = skip if callable(skip) else _name_set(skip)
    targets = _find_targets(model)
    aliases = _registered_names(model)
    last = _last_linear(targets) if skip_last else None
    options = dict(
        dim=dim,
        max_delay=max_delay,
        delay_scale=delay_scale,
        delay_mode=delay_mode,
        backend=backend,
    )
    # Every layer's step mode is settled before any is replaced, so that a refusal leaves
    # the model as it was.
    plan: list[tuple[str, nn.Module, str | None, str | None]] = []  # name, module, skip, mode
    for name, module in targets:
        reason = "skip" if skip_fn(name, module) else "skip_last" if name == last else None
        mode = None if reason else _step_mode_of(model, aliases[id(module)], module, step_mode)
        plan.append((name, module, reason, mode))
    converted: list[tuple[str, str, str]] = []
    skipped: list[tuple[str, str]] = []
    replaced: dict[int, tuple[object, object | None]] = {}
    population: NeuronPositions | None = None  # positions of the last converted outputs
    for name, module, reason, mode in plan:
        if reason is not None:
            skipped.append((name, reason))
            population = None
            continue
        names = aliases[id(module)]
        reuse = population if share_positions else None
        new, population = _convert_layer(
            name, module, reuse, mode, time_dim, position_scale, options
        )
        for alias in names:
            model = _set_module(model, alias, new)
        for old, stand_in in _counterparts(module, new):
            replaced[id(old)] = (old, stand_in)
        converted.append((name, type(module).__name__, _class_label(new)))
        log.info("spatialize: %s: %s -> %s", _shown(name), *converted[-1][1:])
    rebinder = _Rebinder(replaced)
    rebinder.search(model)
    if rebinder.stuck:
        warnings.warn(_stuck_message(rebinder.stuck), UserWarning, stacklevel=2)
    if not converted:
        warnings.warn(_nothing_converted_message(model, skipped), UserWarning, stacklevel=2)
    if hasattr(functional, "invalidate_reset_cache"):  # spikingjelly >= 2.0 caches reset_net
        functional.invalidate_reset_cache(model)
    if not return_report:
        return model
    return model, SpatializeReport(tuple(converted), tuple(skipped), tuple(rebinder.rebound))


def _find_targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The linear and recurrent layers to convert, in module order, each under its first
    name; linear layers inside a ``LinearRecurrentContainer`` belong to it."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, _TARGETS) and not _inside_recurrent(model, name)
    ]


def _last_linear(targets: list[tuple[str, nn.Module]]) -> str | None:
    """Name of the last linear layer among ``targets`` (what ``skip_last`` leaves alone)."""
    names = [name for name, module in targets if isinstance(module, nn.Linear)]
    return names[-1] if names else None


def _registered_names(model: nn.Module) -> dict[int, list[str]]:
    """Every name under which each module is registered, by ``id`` (shared modules have
    several)."""
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return names


def _convert_layer(
    name: str,
    module: nn.Module,
    reuse: NeuronPositions | None,
    step_mode: str,
    time_dim: int,
    position_scale: float,
    options: dict,
) -> tuple[nn.Module, NeuronPositions]:
    """The spatial replacement of ``module`` and the positions of its outputs; its inputs
    get ``reuse`` when that population has the right size."""
    weight = module.weight if isinstance(module, nn.Linear) else module.rc.weight
    dim = options["dim"]
    shared = partial(_positions_for, reuse, dim=dim, scale=position_scale, like=weight)
    if isinstance(module, nn.Linear):
        new = _convert_linear(module, shared, step_mode, time_dim, position_scale, options)
        return new, new.post_positions
    new = _convert_recurrent(name, module, shared, options)
    return new, new[1].positions


def _convert_linear(
    module, shared, step_mode, time_dim, position_scale, options
) -> SpatialDelayLinear:
    """A ``SpatialDelayLinear`` with ``module``'s weight and bias, in ``step_mode``."""
    new = SpatialDelayLinear(
        module.in_features,
        module.out_features,
        module.bias is not None,
        step_mode,
        pre_positions=shared(module.in_features),
        post_positions=NeuronPositions(module.out_features, options["dim"], scale=position_scale),
        time_dim=time_dim,
        **options,
    ).to(module.weight)
    with torch.no_grad():
        new.weight.copy_(module.weight)
        if module.bias is not None:
            new.bias.copy_(module.bias)
    return new


def _convert_recurrent(name, module, shared, options) -> nn.Sequential:
    """``Sequential(layer.Linear, SpatialRecurrentContainer)`` computing what the
    ``LinearRecurrentContainer`` ``module`` did."""
    n = module.sub_module_out_features
    w = module.rc.weight
    n_in = w.shape[1] - n
    if n_in != n:
        raise ValueError(
            f"{name}: LinearRecurrentContainer with in_features={n_in} != out_features={n} "
            "has no spatial equivalent (the recurrent input must live on the same population)"
        )
    step_mode = module.step_mode
    mix = layer.Linear(n, n, bias=module.rc.bias is not None, step_mode=step_mode).to(w)
    recurrent = SpatialRecurrentContainer(
        module.sub_module, n, bias=False, step_mode=step_mode, positions=shared(n), **options
    ).to(w)
    with torch.no_grad():
        mix.weight.copy_(w[:, :n])
        if module.rc.bias is not None:
            mix.bias.copy_(module.rc.bias)
        recurrent.weight.copy_(w[:, n:])
    return nn.Sequential(mix, recurrent)


def _counterparts(old: nn.Module, new: nn.Module) -> list[tuple[object, object | None]]:
    """The objects of a replaced layer that plain containers may hold (the layer, its
    weight and bias), each with what stands in for it now (None: nothing single does)."""
    if isinstance(old, nn.Linear):
        pairs = [(old, new), (old.weight, new.weight)]
        if old.bias is not None:
            pairs.append((old.bias, new.bias))
        return pairs
    # LinearRecurrentContainer -> Sequential(mix, recurrent): rc's weight was split in two.
    pairs = [(old, new), (old.rc, None), (old.rc.weight, None)]
    if old.rc.bias is not None:
        pairs.append((old.rc.bias, new[0].bias))
    return pairs


def _class_label(module: nn.Module) -> str:
    """The class name of a converted layer, with the parts of a ``Sequential``."""
    name = type(module).__name__
    if isinstance(module, nn.Sequential):
        return f"{name}({', '.join(type(m).__name__ for m in module)})"
    return name


class _Rebinder:
    """Finds references to replaced layers (or to their parameters) in plain Python
    containers that are attributes of the model's modules.

    List items and dict values, at any nesting of lists, dicts, tuples and sets, are
    re-pointed to what replaced them; their paths are ``rebound``. References that cannot
    be re-pointed (tuple items, set members, bound methods, anything reached through
    another object's attributes, a parameter with no single counterpart) are ``stuck``.
    """

    def __init__(self, replaced: dict[int, tuple[object, object | None]]):
        self.replaced = replaced
        self.rebound: list[str] = []
        self.stuck: list[str] = []
        self._seen: set[int] = set()

    def search(self, model: nn.Module) -> None:
        """Search the attributes of ``model`` and of all its sub-modules."""
        if not self.replaced:
            return
        for name, module in model.named_modules():
            prefix = f"model.{name}" if name else "model"
            for attr, value in list(vars(module).items()):
                if attr not in _MODULE_INTERNALS:
                    self._item(value, f"{prefix}.{attr}", 0, in_object=False, slot=None)

    def _old(self, value: object) -> tuple[object, object | None] | None:
        """``(old, stand-in)`` when ``value`` is a replaced object, else None."""
        hit = self.replaced.get(id(value))
        return hit if hit is not None and hit[0] is value else None

    def _item(self, value, path: str, depth: int, in_object: bool, slot) -> None:
        """Re-point ``value`` through ``slot`` (``(container, key)``, None when read-only)
        or record it when it is a replaced object, else search inside it."""
        hit = self._old(value)
        if hit is not None:
            if slot is not None and hit[1] is not None:
                container, key = slot
                container[key] = hit[1]
                self.rebound.append(path)
            else:
                self.stuck.append(path)
        elif isinstance(value, types.MethodType) and self._old(value.__self__) is not None:
            self.stuck.append(path)
        else:
            self._inside(value, path, depth, in_object)

    def _inside(self, value: object, path: str, depth: int, in_object: bool) -> None:
        """Search the items of a plain container, or the attributes of a plain object (not
        of objects inside those: an optimizer's state is searched, a logger's is not)."""
        if depth >= _MAX_NESTING or id(value) in self._seen:
            return
        entries = _entries(value, path, objects=not in_object)
        if entries is None:
            return
        self._seen.add(id(value))
        writable = isinstance(value, (list, dict)) and not in_object
        in_object = in_object or not isinstance(value, _PLAIN_CONTAINERS)
        for key, item, where in entries:
            slot = (value, key) if writable else None
            self._item(item, where, depth + 1, in_object, slot)


_PLAIN_CONTAINERS = (list, dict, tuple, set, frozenset)
_NOT_PLAIN = (nn.Module, torch.Tensor, type, types.ModuleType, types.FunctionType)


def _entries(value: object, path: str, objects: bool) -> list[tuple[object, object, str]] | None:
    """``(key, item, path)`` for the items of a list, tuple or set, the values of a dict, or
    (with ``objects``) the attributes of a plain object; None for anything else."""
    if isinstance(value, dict):
        return [(k, v, f"{path}[{k!r}]") for k, v in list(value.items())]
    if isinstance(value, (list, tuple)):
        return [(i, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return [(None, v, f"{path}{{{type(v).__name__}}}") for v in value]
    if objects and _is_plain_object(value):
        return [(k, v, f"{path}.{k}") for k, v in list(vars(value).items())]
    return None


def _is_plain_object(value: object) -> bool:
    """An instance of a Python class with a ``__dict__`` that is no module, tensor, class
    or function (a config object, a namespace, an optimizer)."""
    return (
        hasattr(value, "__dict__")
        and not isinstance(value, _NOT_PLAIN)
        and type(value).__module__ != "builtins"
    )


def _stuck_message(paths: list[str]) -> str:
    """The warning for references to replaced layers that could not be re-pointed."""
    shown = ", ".join(paths[:_MAX_SHOWN])
    if len(paths) > _MAX_SHOWN:
        shown += f" and {len(paths) - _MAX_SHOWN} more"
    return (
        f"spatialize could not re-point {shown} (tuple items, set members, bound methods or "
        "other objects' attributes) to the converted layers, so a forward that calls layers "
        "through them may still run the original ones (and an optimizer holding their "
        "parameters trains those); store layers in nn.ModuleList or nn.ModuleDict"
    )


def _nothing_converted_message(model: nn.Module, skipped: list[tuple[str, str]]) -> str:
    """The warning for a call that converted nothing, saying why."""
    kind = type(model).__name__
    if not skipped:
        return (
            f"spatialize converted nothing: {kind} contains no nn.Linear, layer.Linear or "
            "layer.LinearRecurrentContainer (other layers, such as convolutions, are kept)"
        )
    which = ", ".join(f"{_shown(name)} by {reason}" for name, reason in skipped)
    return f"spatialize converted nothing in {kind}: every linear layer was skipped ({which})"


def _positions_for(
    population: NeuronPositions | None, size: int, *, dim: int, scale: float, like: torch.Tensor
) -> NeuronPositions:
    """``population`` when it has ``size`` neurons, else new positions (on ``like``'s device)."""
    if population is not None and population.num_neurons == size:
        return population
    return NeuronPositions(size, dim, scale=scale).to(like)


def _name_set(names: Iterable[str]) -> Callable[[str, nn.Module], bool]:
    """A ``skip`` predicate from a collection of module names."""
    if isinstance(names, str):
        raise TypeError(f"skip must be a collection of module names or a predicate, got {names!r}")
    names = set(names)
    return lambda name, module: name in names


def _inside_recurrent(model: nn.Module, name: str) -> bool:
    """True for a linear layer that belongs to a LinearRecurrentContainer (its ``rc``)."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), layer.LinearRecurrentContainer):
            return True
    return False


def _step_mode_of(model: nn.Module, names: list[str], module: nn.Module, given: str | None) -> str:
    """The step mode of the spatial layer that replaces ``module`` (registered under
    ``names``): its own (a spikingjelly layer) or ``given`` (a plain ``nn.Linear``), else
    that of the data around it; ValueError when there is none or they disagree."""
    own = module.step_mode if isinstance(module, base.StepModule) else None
    mode, source = (own, "its own step_mode") if own else (given, "the argument step_mode")
    for name in names:
        around, evidence = _data_around(model, name)
        if mode is None:
            mode, source = around, evidence
        elif around is not None and around != mode:
            raise ValueError(
                f"{_shown(name)} ({type(module).__name__}) would be converted with "
                f"step_mode={mode!r} ({source}), but {evidence} gives it "
                f"step_mode={around!r}; a spatial layer keeps a delay memory across calls, "
                "so both must agree: call functional.set_step_mode(model, ...) before "
                f"spatialize, or pass skip=[{name!r}]"
            )
    if mode is None:
        name = names[0]
        skip = f", or skip=[{name!r}]" if name else ""
        raise ValueError(
            f"{_shown(name)} is a plain nn.Linear, which has no step mode, and nothing around "
            "it says how it is called; pass step_mode='s' (it is called once per time step "
            "with [batch, features]) or step_mode='m' (it is called with whole sequences "
            f"[T, batch, features]; add time_dim=1 for batch-first [batch, T, features]){skip}"
        )
    return mode


def _data_around(model: nn.Module, name: str) -> tuple[str | None, str]:
    """``(step mode, the evidence in words)`` of the data a layer registered as ``name``
    sees, from the containers above it and its neighbours in an ``nn.Sequential``;
    ``(None, "")`` without evidence. Refuses a layer inside a container that folds time
    into the batch."""
    parts = name.split(".")
    parents = [model.get_submodule(".".join(parts[:i])) for i in range(len(parts))]
    for i, parent in enumerate(parents[1:], 1):
        where = ".".join(parts[:i])
        if _folds_time(parent):
            raise ValueError(
                f"{name} sits inside a {type(parent).__name__}, which folds time into the "
                "batch, so it cannot be given delays; use layer.Linear(step_mode='m') there "
                "or pass skip=[...]"
            )
        if _per_step(parent):
            return "s", f"{where} ({type(parent).__name__}), which calls it once per step,"
    if not name or not isinstance(parents[-1], nn.Sequential):
        return None, ""
    prefix = ".".join(parts[:-1] + [""])
    # Not named_children(), which names a module registered twice only once.
    siblings = [
        (prefix + key, child) for key, child in parents[-1]._modules.items() if child is not None
    ]
    index = [key for key, _ in siblings].index(name)
    found = [
        (mode, f"{key} ({type(module).__name__}) {side} it")
        for mode, key, module, side in (
            (*_first_with_mode(reversed(siblings[:index]), from_end=True), "before"),
            (*_first_with_mode(siblings[index + 1 :], from_end=False), "after"),
        )
        if mode is not None
    ]
    if len(found) == 2 and found[0][0] != found[1][0]:
        raise ValueError(
            f"{name} sits between modules of different step modes: {found[0][1]} has "
            f"step_mode={found[0][0]!r}, {found[1][1]} has step_mode={found[1][0]!r}; call "
            "functional.set_step_mode(model, ...) before spatialize, or pass "
            f"skip=[{name!r}]"
        )
    if not found:
        return None, ""
    return found[0][0], " and ".join(words for _, words in found)


def _first_with_mode(siblings, from_end: bool) -> tuple[str | None, str, nn.Module | None]:
    """``(step mode, name, module)`` of the first of ``(name, module)`` ``siblings`` that
    does not keep the layout; the step mode is None when that module says nothing (a
    convolution, a custom module) or there is none."""
    for key, module in siblings:
        mode = _mode_at_edge(module, from_end)
        if mode != "keeps":
            return mode, key, module
    return None, "", None


def _mode_at_edge(module: nn.Module, from_end: bool) -> str | None:
    """The step mode of the data at one end of ``module``: ``'s'``/``'m'``, ``'keeps'``
    for a module that keeps its input's layout, None when unknown."""
    if isinstance(module, base.StepModule) and isinstance(getattr(module, "step_mode", None), str):
        return module.step_mode
    if isinstance(module, _TIME_MAJOR):
        return "m"
    if isinstance(module, _LAYOUT_KEEPING):
        return "keeps"
    if type(module) is nn.Sequential:
        children = list(module.children())
        for child in reversed(children) if from_end else children:
            mode = _mode_at_edge(child, from_end)
            if mode != "keeps":
                return mode
        return "keeps"
    return None


def _folds_time(container: nn.Module) -> bool:
    if _TIME_FLATTENING and isinstance(container, _TIME_FLATTENING):
        return True
    # StepModeContainer(stateful=False) runs multi-step input through seq_to_ann_forward.
    return type(container).__name__ == "StepModeContainer" and not container.stateful


def _per_step(container: nn.Module) -> bool:
    if _PER_STEP and isinstance(container, _PER_STEP):
        return True
    return type(container).__name__ == "StepModeContainer" and container.stateful


def _set_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Register ``new`` under ``name``; returns the model (``new`` itself for the root)."""
    if not name:
        return new
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    return model
