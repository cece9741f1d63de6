"""The random states of torch (the CPU and one CUDA device), numpy and Python's ``random``,
saved and restored together as tensors and plain data (``torch.load(weights_only=True)``
reads them back)."""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state(device: torch.device) -> dict:
    """``{"torch", "numpy", "python"}`` states, plus ``"cuda"`` when ``device`` is a GPU."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        # numpy's keys as a tensor: weights_only loading refuses numpy arrays.
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict | torch.Tensor, device: torch.device) -> None:
    """Restore a :func:`rng_state` (CUDA's only when ``device`` is a GPU and it was saved);
    a bare tensor is torch's CPU state alone."""
    if isinstance(state, torch.Tensor):  # checkpoints of sj-spatial 0.1 hold torch's only
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
