"""Random-number alignment between the benchmarks' models.

A free-delay layer (``sj_spatial.baselines``) draws its weights where a spatial layer of
the same shape first draws the positions of its two populations. To give both the same
weights from one seed, a benchmark draws, and drops, those positions' numbers before it
builds the free-delay layer; the records of the Yin-Yang, structure and spoken-digit
benchmarks were made that way.
"""

from __future__ import annotations

import torch


def draw_like_positions(*num_neurons: int) -> None:
    """Draw, and drop, the random numbers that ``dim=1`` positions of these populations
    take (``NeuronPositions`` draws U(-1, 1) per coordinate)."""
    for n in num_neurons:
        torch.empty(n, 1).uniform_(-1.0, 1.0)
