"""Train a small spatial network with a wiring cost and watch its topology in TensorBoard.

Two classes of random spike patterns (a fixed template per class, with jitter) go through
``SpatialDelayLinear(20 -> 64)`` into a recurrent LIF population
``SpatialRecurrentContainer(LIFNode, 64)`` and a linear readout of spike counts. The loss
is cross-entropy plus a ``WiringCost``; a ``TopologyLogger`` writes the topology of both
spatial layers every ``--every`` steps. Then:

    tensorboard --logdir runs/topology
"""

from __future__ import annotations

import argparse

import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

from sj_spatial import NeuronPositions, SpatialDelayLinear, SpatialRecurrentContainer, WiringCost
from sj_spatial.callbacks import TopologyLogger

T, CHANNELS, HIDDEN, CLASSES = 30, 20, 64, 2


def make_model() -> nn.Module:
    hidden = NeuronPositions(HIDDEN, dim=2)
    lif = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True)
    return nn.Sequential(
        SpatialDelayLinear(CHANNELS, HIDDEN, step_mode="m", post_positions=hidden, max_delay=10),
        SpatialRecurrentContainer(lif, HIDDEN, step_mode="m", positions=hidden, max_delay=10),
    )


def batch(templates: torch.Tensor, size: int, generator: torch.Generator):
    """Spike trains ``[T, size, CHANNELS]`` of random classes: template with flipped bits."""
    labels = torch.randint(0, CLASSES, (size,), generator=generator)
    x = templates[labels].transpose(0, 1)
    flips = torch.rand(x.shape, generator=generator) < 0.05
    return torch.where(flips, 1 - x, x), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/topology")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--wiring", type=float, default=1e-3, help="WiringCost strength")
    args = parser.parse_args()

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    templates = (torch.rand(CLASSES, T, CHANNELS, generator=generator) < 0.1).float()
    net, readout = make_model(), nn.Linear(HIDDEN, CLASSES)
    positions = [p for n, p in net.named_parameters() if n.endswith("positions")]
    others = [p for n, p in net.named_parameters() if not n.endswith("positions")]
    optimizer = torch.optim.Adam(
        [{"params": others + list(readout.parameters()), "lr": 1e-2},
         {"params": positions, "lr": 0.05}]
    )  # fmt: skip
    cost = WiringCost(net, strength=args.wiring)
    with TopologyLogger(args.logdir, net, every=args.every, nulls=5) as logger:
        for step in range(args.steps + 1):
            x, labels = batch(templates, 32, generator)
            functional.reset_net(net)
            logits = readout(net(x).mean(0))
            task = nn.functional.cross_entropy(logits, labels)
            wiring = cost()
            optimizer.zero_grad()
            (task + wiring).backward()
            optimizer.step()
            accuracy = (logits.argmax(1) == labels).float().mean().item()
            logger.writer.add_scalar("train/loss", task.item(), step)
            logger.writer.add_scalar("train/wiring_cost", wiring.item(), step)
            logger.writer.add_scalar("train/accuracy", accuracy, step)
            logger.log(step)
            if step % args.every == 0:
                print(f"step {step:4d}  loss {task.item():.3f}  accuracy {accuracy:.2f}")


if __name__ == "__main__":
    main()
