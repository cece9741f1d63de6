"""Long sequences in time chunks: truncated or checkpointed backpropagation through time.

A model is run over ``[T, *batch, *features]`` in consecutive chunks of ``chunk`` time
steps, so that the autograd graph held at any time, and the memory it takes, is bounded
by ``chunk`` instead of ``T``. :func:`truncated_bptt` cuts the graph between chunks with
``spikingjelly.activation_based.functional.detach_net(model)`` (gradients stop at chunk
boundaries); :func:`checkpointed_bptt` keeps the memories (neuron states, the delay
memories of the spatial layers) at every boundary and recomputes each chunk in the
backward pass, which gives the exact gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from spikingjelly.activation_based import base, functional
from torch import nn

from ._checks import STEP_MODES, check_choice, check_int
from ._rng import rng_state, set_rng_state


def _check_sequence(x_seq) -> None:
    if not isinstance(x_seq, torch.Tensor):
        raise TypeError(f"x_seq must be a torch.Tensor, got {type(x_seq).__name__}")
    if x_seq.ndim < 1 or x_seq.shape[0] < 1:
        raise ValueError(
            f"x_seq must be time-major [T, *batch, *features] with T >= 1, "
            f"got shape {tuple(x_seq.shape)}"
        )


def chunk_bounds(num_steps: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of consecutive chunks of ``chunk`` steps covering
    ``0 .. num_steps`` (the last one may be shorter).
    """
    check_int("num_steps", num_steps, minimum=1)
    check_int("chunk", chunk, minimum=1)
    return [(start, min(start + chunk, num_steps)) for start in range(0, num_steps, chunk)]


def _run(model: nn.Module, x: torch.Tensor, step_mode: str) -> torch.Tensor:
    """One call over ``x [t, ...]`` (``'m'``) or ``t`` calls stacked (``'s'``)."""
    out = model(x) if step_mode == "m" else torch.stack([model(x_t) for x_t in x])
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model must return a torch.Tensor, got {type(out).__name__}")
    return out


def chunked_forward(
    model: nn.Module, x_seq: torch.Tensor, chunk: int, *, step_mode: str = "m"
) -> torch.Tensor:
    """Run ``model`` over ``x_seq [T, *batch, *features]`` chunk by chunk, calling
    ``functional.detach_net(model)`` after each chunk; returns the outputs ``[T, ...]``.

    The values equal one pass over the whole sequence; gradients through the result
    stop at the chunk boundaries. The model continues from its current memories (call
    ``functional.reset_net`` first for a new sequence). ``step_mode='m'`` calls the model
    once per chunk, ``'s'`` once per time step.
    """
    _check_sequence(x_seq)
    check_choice("step_mode", step_mode, STEP_MODES)
    outputs = []
    for start, stop in chunk_bounds(x_seq.shape[0], chunk):
        outputs.append(_run(model, x_seq[start:stop], step_mode))
        functional.detach_net(model)
    return torch.cat(outputs)


def _check_training(x_seq, loss_fn, chunk: int, step_mode: str) -> list[tuple[int, int]]:
    """Check the arguments of the chunked training helpers; returns the chunk bounds."""
    _check_sequence(x_seq)
    check_choice("step_mode", step_mode, STEP_MODES)
    bounds = chunk_bounds(x_seq.shape[0], chunk)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    return bounds


def _scalar_loss(loss_fn, outputs: torch.Tensor) -> torch.Tensor:
    loss = loss_fn(outputs)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
    return loss.reshape(())


def _cuda_devices(x: torch.Tensor) -> list[torch.device]:
    return [x.device] if x.device.type == "cuda" else []


def truncated_bptt(
    model: nn.Module,
    x_seq: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    chunk: int,
    *,
    step_mode: str = "m",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagate ``loss_fn(model(x_seq))`` with gradients truncated every ``chunk`` steps.

    ``x_seq``: ``[T, *batch, *features]``, one whole sequence (the model is reset with
    ``functional.reset_net`` first); ``loss_fn`` maps all outputs ``[T, *batch, *out]``
    to a scalar, for example ``lambda out: F.cross_entropy(out.mean(0), y)``. Gradients
    are accumulated into ``.grad`` like ``loss.backward()``: they are
    ``sum_t dL/dout[t] * d out[t]/d theta``, where ``d out[t]/d theta`` follows the graph
    of ``out[t]``'s own chunk only (the memories entering a chunk are constants). With
    ``chunk >= T`` this is exact BPTT in one pass; otherwise a first pass without
    gradients computes the outputs and ``dL/dout``, and a second pass, chunk by chunk,
    backpropagates each chunk's share (the RNG state is replayed, so dropout masks agree).
    The graph held at any time covers one chunk. Returns ``(loss, outputs)``, detached;
    the model's memories hold the state after ``x_seq``.
    """
    bounds = _check_training(x_seq, loss_fn, chunk, step_mode)
    functional.reset_net(model)
    with torch.enable_grad():
        if len(bounds) == 1:
            outputs = _run(model, x_seq, step_mode)
            loss = _scalar_loss(loss_fn, outputs)
            loss.backward()
            functional.detach_net(model)
            return loss.detach(), outputs.detach()
        with torch.random.fork_rng(devices=_cuda_devices(x_seq)), torch.no_grad():
            outputs = chunked_forward(model, x_seq, chunk, step_mode=step_mode)
        outputs.requires_grad_(True)
        loss = _scalar_loss(loss_fn, outputs)
        (grad_outputs,) = torch.autograd.grad(loss, outputs)
        functional.reset_net(model)
        for start, stop in bounds:
            _run(model, x_seq[start:stop], step_mode).backward(grad_outputs[start:stop])
            functional.detach_net(model)
    return loss.detach(), outputs.detach()


def _memory_modules(model: nn.Module) -> list[base.MemoryModule]:
    return [m for m in model.modules() if isinstance(m, base.MemoryModule)]


def _snapshot(modules: list[base.MemoryModule]) -> list[dict]:
    """Every module's memories, tensors as detached copies."""
    # Copies: a memory can be a view into a whole chunk's tensor, which must not stay alive.
    return [
        {
            k: v.detach().clone() if isinstance(v, torch.Tensor) else v
            for k, v in m._memories.items()
        }
        for m in modules
    ]


def _restore(modules, snapshot, leaves: bool) -> dict[tuple[int, str], torch.Tensor]:
    """Set the memories to ``snapshot``; with ``leaves``, floating tensors become fresh
    leaves that require grad, returned by ``(module index, memory name)``."""
    made = {}
    for i, (module, memories) in enumerate(zip(modules, snapshot, strict=True)):
        for key, value in memories.items():
            if leaves and isinstance(value, torch.Tensor) and value.is_floating_point():
                value = made[i, key] = value.detach().requires_grad_(True)
            setattr(module, key, value)
    return made


def checkpointed_bptt(
    model: nn.Module,
    x_seq: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    chunk: int,
    *,
    step_mode: str = "m",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagate ``loss_fn(model(x_seq))`` exactly, holding the graph of one chunk at a time.

    Arguments and result as :func:`truncated_bptt`, but the gradient is full BPTT's: a first
    pass without gradients stores every SpikingJelly memory of the model (and the RNG
    state) at each chunk boundary; the backward pass then goes through the chunks from last
    to first, recomputing each from its stored memories with gradients and passing the
    gradient of the memories at its start on to the previous chunk. Memory: one chunk's
    graph plus the stored memories, ``ceil(T / chunk)`` copies of the model's state;
    compute: one forward pass more than plain BPTT. The model's memories end as after
    ``x_seq``, detached; the RNG ends as after one forward pass.
    """
    bounds = _check_training(x_seq, loss_fn, chunk, step_mode)
    if len(bounds) == 1:
        return truncated_bptt(model, x_seq, loss_fn, chunk, step_mode=step_mode)
    device = x_seq.device
    functional.reset_net(model)
    modules = _memory_modules(model)
    starts, rng, outputs = [], [], []
    with torch.no_grad():
        for start, stop in bounds:
            starts.append(_snapshot(modules))
            rng.append(rng_state(device))
            outputs.append(_run(model, x_seq[start:stop], step_mode))
    end, end_rng = _snapshot(modules), rng_state(device)
    with torch.enable_grad():
        outputs = torch.cat(outputs).requires_grad_(True)
        loss = _scalar_loss(loss_fn, outputs)
        (grad_outputs,) = torch.autograd.grad(loss, outputs)
        carried: dict[tuple[int, str], torch.Tensor] = {}  # dL/d(memory at the chunk's end)
        for k in reversed(range(len(bounds))):
            start, stop = bounds[k]
            leaves = _restore(modules, starts[k], leaves=k > 0)
            set_rng_state(rng[k], device)
            tensors = [_run(model, x_seq[start:stop], step_mode)]
            grads = [grad_outputs[start:stop]]
            for (i, key), grad in carried.items():
                value = modules[i]._memories[key]
                if isinstance(value, torch.Tensor) and value.requires_grad:
                    tensors.append(value)
                    grads.append(grad)
            torch.autograd.backward(tensors, grads)
            carried = {key: leaf.grad for key, leaf in leaves.items() if leaf.grad is not None}
    _restore(modules, end, leaves=False)
    set_rng_state(end_rng, device)
    return loss.detach(), outputs.detach()
