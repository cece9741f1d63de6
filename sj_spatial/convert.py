"""Turn a SpikingJelly model's linear and recurrent layers into spatial ones."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from functools import partial

import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

from .layers import DEFAULT_MAX_DELAY, SpatialDelayLinear, SpatialRecurrentContainer
from .positions import NeuronPositions

_TIME_FLATTENING = tuple(
    getattr(layer, name)
    for name in ("SeqToANNContainer", "TLastSeqToANNContainer")
    if hasattr(layer, name)
)


def spatialize(
    model: nn.Module,
    dim: int = 2,
    max_delay: int = DEFAULT_MAX_DELAY,
    delay_scale: float = 1.0,
    share_positions: bool = True,
    *,
    skip: Iterable[str] | Callable[[str, nn.Module], bool] = (),
    skip_last: bool = False,
    step_mode: str = "m",
    delay_mode: str = "interpolate",
    backend: str = "torch",
    position_scale: float = 1.0,
    inplace: bool = True,
) -> nn.Module:
    """Replace linear layers with :class:`SpatialDelayLinear` and recurrent ones with
    :class:`SpatialRecurrentContainer`, keeping their weights.

    - ``nn.Linear`` / ``layer.Linear`` become ``SpatialDelayLinear`` with the same weight
      and bias (``layer.Linear`` keeps its step mode; ``nn.Linear``, which has none, gets
      ``step_mode``).
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

    With every delay 0 (``delay_scale=0``) the converted model computes what the original
    did. Returns the model (a converted copy when ``inplace=False``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    skip_fn = skip if callable(skip) else _name_set(skip)
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, layer.LinearRecurrentContainer))
        and not _inside_recurrent(model, name)
    ]
    if skip_last:
        last = [name for name, m in targets if isinstance(m, nn.Linear)]
        last = last[-1] if last else None
    options = dict(
        dim=dim,
        max_delay=max_delay,
        delay_scale=delay_scale,
        delay_mode=delay_mode,
        backend=backend,
    )
    population: NeuronPositions | None = None  # positions of the last converted outputs
    for name, module in targets:
        if skip_fn(name, module) or (skip_last and name == last):
            population = None
            continue
        _check_time_axis(model, name)
        weight = module.weight if isinstance(module, nn.Linear) else module.rc.weight
        reuse = population if share_positions else None
        shared = partial(_positions_for, reuse, dim=dim, scale=position_scale, like=weight)
        if isinstance(module, nn.Linear):
            new = SpatialDelayLinear(
                module.in_features,
                module.out_features,
                module.bias is not None,
                getattr(module, "step_mode", step_mode),
                pre_positions=shared(module.in_features),
                post_positions=NeuronPositions(module.out_features, dim, scale=position_scale),
                **options,
            ).to(weight)
            with torch.no_grad():
                new.weight.copy_(module.weight)
                if module.bias is not None:
                    new.bias.copy_(module.bias)
            population = new.post_positions
        else:
            new = _convert_recurrent(name, module, shared, options)
            population = new[1].positions
        _set_module(model, name, new)
    if hasattr(functional, "invalidate_reset_cache"):  # spikingjelly >= 2.0 caches reset_net
        functional.invalidate_reset_cache(model)
    return model


def _convert_recurrent(name, module, shared, options) -> nn.Sequential:
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


def _positions_for(
    population: NeuronPositions | None, size: int, *, dim: int, scale: float, like: torch.Tensor
) -> NeuronPositions:
    """``population`` when it has ``size`` neurons, else new positions (on ``like``'s device)."""
    if population is not None and population.num_neurons == size:
        return population
    return NeuronPositions(size, dim, scale=scale).to(like)


def _name_set(names: Iterable[str]) -> Callable[[str, nn.Module], bool]:
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


def _check_time_axis(model: nn.Module, name: str) -> None:
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = model.get_submodule(".".join(parts[:i]))
        if _TIME_FLATTENING and isinstance(parent, _TIME_FLATTENING):
            raise ValueError(
                f"{name} sits inside a {type(parent).__name__}, which folds time into the "
                "batch, so it cannot be given delays; use layer.Linear(step_mode='m') there "
                "or pass skip=[...]"
            )


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
