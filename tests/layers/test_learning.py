"""A model that needs delays learns them through the positions.

Interval discrimination: two input channels each carry one bump of activity, 6 steps
apart; the class is which channel comes first. A readout that takes the maximum over
time of a linear map cannot tell the two orders apart unless its synapses delay one
channel so that the bumps coincide. With frozen (nearly coincident) positions all delays
are ~0 and the classes are indistinguishable; learned positions spread and solve it.
"""

import pytest
import torch
import torch.nn.functional as F

from sj_spatial import SpatialDelayLinear


def interval_batch(n, gen, T=40, gap=6, sigma=1.5):
    y = torch.randint(0, 2, (n,), generator=gen)
    onset = torch.randint(4, T - gap - 12, (n,), generator=gen).float()
    t = torch.arange(T).float()[:, None]
    t0 = onset + torch.where(y == 1, 0.0, gap)  # class 1: channel 0 first
    t1 = onset + torch.where(y == 0, 0.0, gap)  # class 0: channel 1 first
    amp = 0.5 + torch.rand(n, 2, generator=gen)  # amplitudes carry no class information
    bump0 = amp[:, 0] * torch.exp(-((t - t0) ** 2) / (2 * sigma**2))
    bump1 = amp[:, 1] * torch.exp(-((t - t1) ** 2) / (2 * sigma**2))
    return torch.stack([bump0, bump1], -1), y


def train_interval_task(learn_positions: bool, seed: int, steps: int = 150) -> float:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    fc = SpatialDelayLinear(2, 2, step_mode="m", max_delay=12)
    positions = [fc.pre_positions.positions, fc.post_positions.positions]
    with torch.no_grad():
        for p in positions:
            p.mul_(0.1)
    for p in positions:
        p.requires_grad_(learn_positions)
    opt = torch.optim.Adam(
        [{"params": [fc.weight, fc.bias], "lr": 0.05}, {"params": positions, "lr": 0.2}]
    )
    for _ in range(steps):
        x, y = interval_batch(64, gen)
        fc.reset()
        loss = F.cross_entropy(4 * fc(x).amax(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = interval_batch(1000, gen)
    fc.reset()
    with torch.no_grad():
        return (fc(x).amax(0).argmax(-1) == y).float().mean().item()


@pytest.mark.parametrize("seed", [0, 1])
def test_learned_positions_solve_interval_task_that_frozen_positions_cannot(seed):
    frozen = train_interval_task(learn_positions=False, seed=seed)
    learned = train_interval_task(learn_positions=True, seed=seed)
    assert frozen < 0.6, frozen
    assert learned > 0.95, learned
