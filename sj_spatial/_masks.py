"""Pruned synapses stay exactly zero in ``layer.weight``, whatever optimiser trains it.

The forward multiplies the weight by the layer's ``weight_mask``, so the gradient of a
pruned synapse is zero; but a stateful optimiser (Adam's moments, SGD's momentum, AdamW's
decoupled step) keeps moving the raw weight there. Anyone who reads ``layer.weight``, a
``state_dict`` or an export would then see the pruned network come back. A global
optimiser step post-hook (``torch.optim.optimizer.register_optimizer_step_post_hook``,
which every ``torch.optim.Optimizer`` subclass runs) zeroes the pruned entries of every
masked weight the optimiser just stepped. It is installed when the first layer gets a
mask and costs nothing for optimisers of unpruned models.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

#: The layers that hold a pruning mask (weakly: a deleted model leaves the set).
_MASKED: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_hook = None


def hold_mask(layer: nn.Module) -> None:
    """Zero the pruned entries of ``layer.weight`` after every optimiser step from now on
    (``layer.weight_mask``: bool, False where pruned; nothing while it is None)."""
    global _hook
    if layer.weight_mask is None:
        return
    _MASKED.add(layer)
    if _hook is None:
        _hook = register_optimizer_step_post_hook(_zero_pruned)


def _zero_pruned(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """The post-hook: re-zero the pruned weights among ``optimizer``'s parameters."""
    if not _MASKED:
        return
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    with torch.no_grad():
        for layer in list(_MASKED):
            mask = layer.weight_mask
            if mask is not None and id(layer.weight) in stepped:
                layer.weight.mul_(mask)
