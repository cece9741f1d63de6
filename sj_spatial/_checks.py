"""Argument checks shared by the public API: clear errors that name the argument."""

from __future__ import annotations

import math

import torch
import torch.fx

STEP_MODES = ("s", "m")
DELAY_MODES = ("interpolate", "round")


def check_choice(name: str, value, choices):
    """Return ``value`` if it is one of ``choices`` (strings, and None for an option that
    can be off); ValueError listing them otherwise."""
    if not (value is None or isinstance(value, str)) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    """Return ``value`` if it is a bool; TypeError otherwise (1 and "yes" are not bools)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_int(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_count(name: str, value, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``; ValueError otherwise, for a wrong
    type too (unlike :func:`check_int`, one error and one message for every bad value)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_float(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = ">" if strict else ">="
        raise ValueError(f"{name} must be finite and {bound} {minimum}, got {value}")
    return value


def check_fraction(name: str, value) -> float:
    """Return ``value`` as a float in [0, 1]; TypeError for a non-number, ValueError for a
    number outside [0, 1] (NaN included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a float in [0, 1], got {value!r}")
    return float(value)


def check_positive(name: str, value) -> float:
    """Return ``value`` if it is a number > 0 (infinity included); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def check_input(
    name: str, x, features: int, min_ndim: int, step_mode: str, time_dim: int = 0
) -> None:
    """Check a layer input: a floating tensor of rank >= min_ndim whose last dim is features
    (``time_dim``: where time is in multi-step inputs, for the message)."""
    if isinstance(x, torch.fx.Proxy):
        raise TypeError(
            f"{name} must be a torch.Tensor, got a torch.fx Proxy: the spatial layers cannot be "
            "traced symbolically (spikingjelly's nir_exchange.export_to_nir traces every module "
            "it does not know); export a model with spatial layers with "
            "sj_spatial.nir_exchange.export_to_nir"
        )
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        axes = ["batch"] * time_dim + ["T"] if step_mode == "m" else []
        layout = "[" + ", ".join([*axes, "*batch", "features"]) + "]"
        raise ValueError(
            f"{name} must have at least {min_ndim} dims ({layout}) in step_mode={step_mode!r}, "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[-1] != features:
        raise ValueError(
            f"{name} must have {features} features in its last dim, got shape {tuple(x.shape)}"
        )


def _raise_unless_finite(tensor: torch.Tensor, name: str, owner: str) -> None:
    if tensor.is_meta:  # no values to check: shapes only, as for any layer on 'meta'
        return
    bad = ~torch.isfinite(tensor.detach())
    if bool(bad.any()):
        raise ValueError(
            f"{name} must be finite, got NaN/Inf in {int(bad.sum())} of {tensor.numel()} values "
            f"of {owner}; the last optimiser step probably diverged (lower its learning rate "
            "or clip the gradients)"
        )


@torch.library.custom_op("sj_spatial::finite", mutates_args=())
def _finite_op(tensor: torch.Tensor, name: str, owner: str) -> torch.Tensor:
    _raise_unless_finite(tensor, name, owner)
    return tensor.clone()


@_finite_op.register_fake
def _(tensor, name, owner):
    return torch.empty_like(tensor)


_finite_op.register_autograd(lambda ctx, grad: (grad, None, None))


def check_finite(tensor: torch.Tensor, name: str, owner: str) -> torch.Tensor:
    """Return ``tensor`` after checking that all its values are finite.

    Raises ValueError naming ``name`` (the argument or attribute) and ``owner`` (the
    module) otherwise. Under ``torch.compile`` the check is an opaque op that runs with
    the compiled graph (which cannot branch on values) and returns a checked copy.
    """
    if torch.compiler.is_compiling():
        return _finite_op(tensor, name, owner)
    _raise_unless_finite(tensor, name, owner)
    return tensor
