"""Train a small spiking network whose delays are learned as neuron positions.

The task needs delays: two input groups each fire a short burst of spikes, a fixed
interval apart, and the class is which group fires first. A LIF layer can only tell the
orders apart if its synapses delay one group so that both bursts arrive together. The
script trains the same network twice, with frozen and with learned positions, and prints
both test accuracies.

    python examples/interval_task.py [--steps 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

from sj_spatial import NeuronPositions, SpatialDelayLinear


def interval_spikes(n: int, gen: torch.Generator, T: int = 50, channels: int = 8, gap: int = 8):
    """Spike trains ``[T, n, 2 * channels]`` and labels ``[n]``: which group fires first."""
    y = torch.randint(0, 2, (n,), generator=gen)
    onset = torch.randint(2, T - gap - 16, (n,), generator=gen)
    first = torch.where(y == 1, onset, onset + gap)  # group 0 fires first in class 1
    second = torch.where(y == 1, onset + gap, onset)
    t = torch.arange(T)[:, None, None]
    burst0 = (t >= first[None, :, None]) & (t < first[None, :, None] + 3)
    burst1 = (t >= second[None, :, None]) & (t < second[None, :, None] + 3)
    p = torch.rand(T, n, 2 * channels, generator=gen)
    spikes = torch.cat([burst0.expand(-1, -1, channels), burst1.expand(-1, -1, channels)], -1)
    spikes = (spikes & (p < 0.7)) | (p < 0.01)  # unreliable bursts and background noise
    return spikes.float(), y


class IntervalNet(nn.Module):
    def __init__(self, channels: int = 8, hidden: int = 16, max_delay: int = 16):
        super().__init__()
        hidden_positions = NeuronPositions(hidden, scale=0.1)
        self.fc1 = SpatialDelayLinear(
            2 * channels,
            hidden,
            step_mode="m",
            max_delay=max_delay,
            pre_positions=NeuronPositions(2 * channels, scale=0.1),
            post_positions=hidden_positions,
        )
        self.lif = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m")
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.lif(self.fc1(x)).mean(0))


def train(learn_positions: bool, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = IntervalNet()
    positions = [p for name, p in net.named_parameters() if name.endswith("positions")]
    for p in positions:
        p.requires_grad_(learn_positions)
    others = [p for name, p in net.named_parameters() if not name.endswith("positions")]
    opt = torch.optim.Adam([{"params": others, "lr": 0.01}, {"params": positions, "lr": 0.2}])
    for _ in range(steps):
        x, y = interval_spikes(64, gen)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        functional.reset_net(net)
    x, y = interval_spikes(1000, gen)
    with torch.no_grad():
        accuracy = (net(x).argmax(-1) == y).float().mean().item()
    functional.reset_net(net)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for learn in (False, True):
        start = time.perf_counter()
        accuracy = train(learn, args.steps, args.seed)
        label = "learned" if learn else "frozen "
        print(
            f"{label} positions: test accuracy {accuracy:.3f} ({time.perf_counter() - start:.1f} s)"
        )


if __name__ == "__main__":
    main()
