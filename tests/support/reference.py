"""Slow, independent implementations of the SPEC formulas (float64 loops) for tests."""

from __future__ import annotations

import math

import torch


def spec_delays(post, pre, delay_scale, max_delay, eps=1e-4):
    out = torch.empty(post.shape[0], pre.shape[0], dtype=torch.float64)
    for j in range(post.shape[0]):
        for i in range(pre.shape[0]):
            d = math.sqrt(float(((post[j] - pre[i]) ** 2).sum()) + eps**2)
            out[j, i] = min(delay_scale * d, max_delay)
    return out


def _split(delay, delay_mode):
    if delay_mode == "round":
        return int(round(delay)), 0.0
    k = math.floor(delay)
    return k, delay - k


def spec_linear(x, weight, bias, delays, delay_mode="interpolate"):
    """y[t, n, j] = bias[j] + sum_i w[j,i] ((1-f) x[t-k, n, i] + f x[t-k-1, n, i])."""
    T, N, _ = x.shape
    out = weight.shape[0]
    y = torch.zeros(T, N, out, dtype=torch.float64)

    def at(t, i):
        return x[t, :, i].double() if t >= 0 else torch.zeros(N, dtype=torch.float64)

    for j in range(out):
        for i in range(weight.shape[1]):
            k, f = _split(float(delays[j, i]), delay_mode)
            for t in range(T):
                y[t, :, j] += float(weight[j, i]) * ((1 - f) * at(t - k, i) + f * at(t - k - 1, i))
        if bias is not None:
            y[:, :, j] += float(bias[j])
    return y


def spec_recurrence(x, step, weight, bias, delays, delay_mode="interpolate"):
    """s[t] = step(x[t] + r[t]), r[t, j] = bias + sum_i w ((1-f) s[t-1-k, i] + f s[t-2-k, i])."""
    T, N, n = x.shape
    s = []

    def at(t, i):
        return s[t][:, i] if t >= 0 else torch.zeros(N, dtype=x.dtype)

    for t in range(T):
        r = torch.zeros(N, n, dtype=x.dtype) if bias is None else bias.expand(N, n).clone()
        cols = []
        for j in range(n):
            acc = r[:, j]
            for i in range(n):
                k, f = _split(float(delays[j, i]), delay_mode)
                acc = acc + weight[j, i] * ((1 - f) * at(t - 1 - k, i) + f * at(t - 2 - k, i))
            cols.append(acc)
        s.append(step(x[t] + torch.stack(cols, -1)))
    return torch.stack(s)
