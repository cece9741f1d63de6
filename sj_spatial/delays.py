"""Positions -> distances -> delays -> interpolation taps.

Every quantity here is in units of time steps (delays) or distance units (positions,
distances); ``delay = min(delay_scale * distance, max_delay)``.
"""

from __future__ import annotations

import torch

#: Smoothing term of the distance, so that coincident neurons have finite gradients.
EPS = 1e-4


def distances(post: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """Smoothed Euclidean distances ``[out, in]`` between post ``[out, D]`` and pre ``[in, D]``.

    ``dist[j, i] = sqrt(||post[j] - pre[i]||^2 + EPS^2)``, computed in float32 or wider.
    """
    dtype = torch.promote_types(post.dtype, torch.float32)
    diff = post.to(dtype)[:, None, :] - pre.to(dtype)[None, :, :]
    return torch.sqrt(diff.square().sum(-1) + EPS**2)


def delays_from_positions(
    post: torch.Tensor, pre: torch.Tensor, delay_scale: float, max_delay: int
) -> torch.Tensor:
    """Real-valued delays ``[out, in]`` in time steps, clamped at ``max_delay``.

    Where the clamp is active the delay has no gradient.
    """
    return torch.clamp(delay_scale * distances(post, pre), max=float(max_delay))


def delay_taps(delays: torch.Tensor, delay_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Split delays into an integer tap ``k`` (int64) and a fraction ``f`` in [0, 1).

    A synapse reads ``(1 - f) * x[t - k] + f * x[t - k - 1]``.

    ``"interpolate"``: ``k = floor(d)``, ``f = d - k`` (exact gradient d f / d d = 1).
    ``"round"``: ``k = round(d)``, ``f = 0`` in value but with a straight-through gradient
    of 1, so the delay receives the gradient of the interpolated synapse at that point.
    """
    if delay_mode == "interpolate":
        k = torch.floor(delays.detach())
        return k.long(), delays - k
    k = torch.round(delays.detach())
    return k.long(), delays - delays.detach()
