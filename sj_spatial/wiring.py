"""Wiring cost of a weight matrix on its synapses' lengths: ``sum_ji |w_ji| * d_ji ** power``.

Pure functions of tensors, differentiable: :class:`sj_spatial.WiringCost` adds them to a
loss, :mod:`sj_spatial.topology` reports them for float64 copies of trained weights.
"""

from __future__ import annotations

import torch


def communicability(weight: torch.Tensor) -> torch.Tensor:
    """Weighted communicability ``expm(S^-1/2 |W| S^-1/2)`` of a square ``[n, n]`` matrix.

    ``S`` is the diagonal of node strengths; with ``W[post, pre]`` the strength of node i
    is its summed outgoing ``|w|`` (column sum), as in Crofts & Higham (2009) and
    Achterberg et al. (2023). Nodes of strength 0 get a 0 row and column in the exponent.
    Differentiable with respect to ``weight``.
    """
    if weight.ndim != 2 or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"weight must be a square [n, n] matrix, got shape {tuple(weight.shape)}")
    a = weight.abs()
    strength = a.sum(0)
    alive = strength > 0
    inv_sqrt = torch.where(alive, strength.clamp_min(torch.finfo(a.dtype).tiny).rsqrt(), 0.0)
    return torch.linalg.matrix_exp(inv_sqrt[:, None] * a * inv_sqrt[None, :])


def wiring_cost(
    weight: torch.Tensor,
    distance: torch.Tensor,
    power: float = 1.0,
    communicability_weighted: bool = False,
) -> torch.Tensor:
    """``sum_ji |w_ji| * distance_ji ** power`` for ``weight`` and ``distance`` ``[out, in]``.

    With ``communicability_weighted`` (square matrices only) each term is also multiplied
    by the weighted communicability of ``|W|`` (its diagonal set to 0, as in seRNNs).
    """
    if weight.shape != distance.shape:
        raise ValueError(
            f"distance must have the shape of weight {tuple(weight.shape)}, "
            f"got {tuple(distance.shape)}"
        )
    terms = weight.abs() * distance**power
    if communicability_weighted:
        comm = communicability(weight)
        eye = torch.eye(comm.shape[0], dtype=torch.bool, device=comm.device)
        terms = terms * comm.masked_fill(eye, 0.0)
    return terms.sum()
