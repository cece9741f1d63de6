"""Reference backend (backend="torch", any device): a dense delay kernel and a convolution.

The kernel ``K[out, in, window]`` holds each synapse's two taps, ``near = w (1 - f)`` at
lag ``k`` and ``far = w f`` at lag ``k + 1`` (:mod:`.contract`), so the delayed matmul is
one ``conv1d`` and autograd gives exact gradients for input, weight and fraction. Its
cost grows with ``window = max_delay + 2``; the fast backends do the same work in two
taps per synapse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_kernel(
    weight: torch.Tensor, taps: torch.Tensor, frac: torch.Tensor, window: int
) -> torch.Tensor:
    """Delay kernel ``[out, in, window]``: ``K[j, i, m]`` multiplies ``x[t - m, i]``."""
    lags = torch.arange(window, device=weight.device)
    at_k = (lags == taps[..., None]).to(weight.dtype)
    at_k1 = (lags == taps[..., None] + 1).to(weight.dtype)
    frac = frac.to(weight.dtype)[..., None]
    return weight[..., None] * ((1 - frac) * at_k + frac * at_k1)


def delayed_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    taps: torch.Tensor,
    frac: torch.Tensor,
    window: int,
    t_out: int,
) -> torch.Tensor:
    """The :class:`~.contract.DelayedMatmul` contract:
    ``y[t] = sum_i near x[t-k, i] + far x[t-k-1, i]`` for the last ``t_out`` steps.

    ``x``: ``[T_in, N, in]`` (zero before its first step) -> ``[t_out, N, out]``.
    """
    t_in = x.shape[0]
    kernel = dense_kernel(weight, taps, frac, window).flip(-1)
    xs = x.permute(1, 2, 0)  # [N, in, T_in]
    # Output step t reads x[t - window + 1 .. t]; the first one needed is t = t_in - t_out.
    # For t_out = 0 one step is computed and dropped, so that the empty output still
    # belongs to the graph (as nn.Linear's does on an empty input).
    extra = int(t_out == 0)
    left = window - 1 - (t_in - t_out) + extra
    xs = F.pad(xs, (left, 0)) if left > 0 else xs[..., -left:]
    return F.conv1d(xs, kernel)[..., extra:].permute(2, 0, 1)
