"""Positions -> distances -> delays -> interpolation taps.

Every quantity here is in units of time steps (delays) or distance units (positions,
distances); ``delay = min(delay_scale * distance, max_delay)``. Distances, delays and
fractions are computed in float32, or in the positions' dtype when that is wider, also
under ``torch.autocast``: in bfloat16 a delay of 16 to 32 steps is a multiple of 1/8 step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: Smoothing term of the distance, so that coincident neurons have finite gradients.
EPS = 1e-4


def delay_dtype(*positions: torch.Tensor) -> torch.dtype:
    """The dtype distances and delays are computed in: float32, or the positions' if wider."""
    dtype = torch.float32
    for p in positions:
        dtype = torch.promote_types(dtype, p.dtype)
    return dtype


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype ``torch.autocast`` casts to on ``device_type`` ('cpu', 'cuda'); None if off."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except (TypeError, RuntimeError):  # torch < 2.4: a flag and a getter per device type
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        return None


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Switch ``torch.autocast`` off on ``device`` inside the block (no-op when it is off)."""
    if autocast_dtype(device.type) is None:
        yield
        return
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def distances(post: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """Smoothed Euclidean distances ``[out, in]`` between post ``[out, D]`` and pre ``[in, D]``.

    ``dist[j, i] = sqrt(||post[j] - pre[i]||^2 + EPS^2)``, in :func:`delay_dtype`, with
    autocast off (a difference of coordinates, never a matmul, so no cancellation).
    """
    dtype = delay_dtype(post, pre)
    with full_precision(post.device):
        diff = post.to(dtype)[:, None, :] - pre.to(dtype)[None, :, :]
        return torch.sqrt(diff.square().sum(-1) + EPS**2)


def delays_from_positions(
    post: torch.Tensor, pre: torch.Tensor, delay_scale: float, max_delay: int
) -> torch.Tensor:
    """Real-valued delays ``[out, in]`` in time steps, clamped at ``max_delay``.

    Where the clamp is active the delay has no gradient. Dtype: :func:`delay_dtype`.
    """
    with full_precision(post.device):
        return torch.clamp(delay_scale * distances(post, pre), max=float(max_delay))


def delay_taps(delays: torch.Tensor, delay_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Split delays into an integer tap ``k`` (int64) and a fraction ``f`` in [0, 1).

    A synapse reads ``(1 - f) * x[t - k] + f * x[t - k - 1]``.

    ``"interpolate"``: ``k = floor(d)``, ``f = d - k`` (exact gradient d f / d d = 1).
    ``"round"``: ``k = round(d)``, ``f = 0`` in value but with a straight-through gradient
    of 1, so the delay receives the gradient of the interpolated synapse at that point.
    ``f`` is in :func:`delay_dtype` (float32 at least), with autocast off.
    """
    delays = delays.to(delay_dtype(delays))
    with full_precision(delays.device):
        if delay_mode == "interpolate":
            k = torch.floor(delays.detach())
            return k.long(), delays - k
        k = torch.round(delays.detach())
        return k.long(), delays - delays.detach()
