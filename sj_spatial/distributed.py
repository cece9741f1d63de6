"""Data-parallel training with ``torch.distributed``: the torchrun world, batch shards,
summed metrics.

``torchrun --nproc_per_node=N`` starts N processes and tells each its place in the
environment variables ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``. Each process trains a
copy of the model wrapped in ``DistributedDataParallel`` on its own part of every global
batch; see ``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_count

#: The variables torchrun sets for every process it starts.
TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place in a job: ``rank`` of ``size`` processes, ``local_rank`` on its
    machine (the CUDA device index it uses). ``World()`` is a single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that prints and writes files."""
        return self.rank == 0


def world_from_env(env: Mapping[str, str] | None = None) -> World | None:
    """The :class:`World` that torchrun describes in ``env`` (default ``os.environ``), or
    None when none of ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` is set."""
    env = os.environ if env is None else env
    present = [name for name in TORCHRUN_VARIABLES if name in env]
    if not present:
        return None
    missing = [name for name in TORCHRUN_VARIABLES if name not in env]
    if missing:
        raise ValueError(
            f"the environment must set all of {', '.join(TORCHRUN_VARIABLES)} (as torchrun "
            f"does) or none, got {', '.join(present)} without {', '.join(missing)}"
        )
    values = {}
    for name in TORCHRUN_VARIABLES:
        try:
            values[name] = int(env[name])
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {env[name]!r}") from None
    size, rank, local_rank = (values[name] for name in TORCHRUN_VARIABLES)
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise ValueError(
            f"need WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, got "
            f"WORLD_SIZE={size}, RANK={rank}, LOCAL_RANK={local_rank}"
        )
    return World(rank=rank, size=size, local_rank=local_rank)


def backend_for(device: torch.device) -> str:
    """The process-group backend for ``device``: ``"nccl"`` on CUDA, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(
    world: World | None, device: torch.device, timeout_s: float = 1800.0
) -> Iterator[None]:
    """Join the default process group (``env://``, as torchrun sets it up) for the block
    and destroy it when the block ends, also when it raises; ``timeout_s`` bounds each
    collective. A no-op when ``world`` is None (a process that torchrun did not start)."""
    dist = torch.distributed
    if world is None:
        yield
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend_for(device),
        rank=world.rank,
        world_size=world.size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def is_initialized() -> bool:
    """True when a default process group is set up."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if is_initialized():
        torch.distributed.barrier()


def all_reduce_sums(values: Sequence[float], device: torch.device) -> list[float]:
    """``values`` summed over all ranks (float64, on ``device`` for the transport)."""
    if not is_initialized():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _no_forward_buffer_sync() -> dict:
    """DDP's option that stops the buffer broadcast before each forward pass (renamed in
    newer torch, which still broadcasts buffers once when wrapping)."""
    options = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    name = "forward_sync_buffers" if "forward_sync_buffers" in options else "broadcast_buffers"
    return {name: False}


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when a process group is set up, else itself.

    Wrapping copies rank 0's parameters and buffers to all ranks. Buffers are not
    broadcast again before each forward pass: the only buffers of the spatial layers
    are pruning masks (``weight_mask``), equal on all ranks, and the per-sequence states
    (delay memories, membrane potentials) are spikingjelly memories, not buffers, that
    each rank keeps for its own samples. Every parameter takes part in every forward
    pass of two or more time steps (positions through the delays, also with
    ``delay_mode="round"``), so unused parameters need not be searched for.
    """
    if not is_initialized():
        return model
    device = torch.device(device)
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        **_no_forward_buffer_sync(),
    )


def shard_range(num_items: int, rank: int, size: int) -> range:
    """Rank ``rank``'s contiguous part of ``range(num_items)`` split over ``size`` ranks;
    part lengths differ by at most one, the first ``num_items % size`` ranks get more."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"need size >= 1 and 0 <= rank < size, got rank={rank}, size={size}")
    base, extra = divmod(num_items, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Global batches of ``batch_size`` indices drawn from ``sampler`` (as
    ``DataLoader(batch_size=...)`` forms them), of which this rank yields its contiguous
    part (:func:`shard_range`).

    With ``size=1`` it yields exactly the batches a ``BatchSampler`` would. A final
    global batch smaller than ``size`` is skipped, since every rank needs a sample.
    :meth:`shares` gives, per yielded batch, ``size * local / global`` samples: the factor
    on this rank's mean loss that makes DDP's average of the ranks' gradients the
    gradient of the global batch's mean loss.
    """

    def __init__(self, sampler: Iterable[int], batch_size: int, rank: int = 0, size: int = 1):
        check_count("batch_size", batch_size, 1)
        shard_range(0, rank, size)  # checks rank and size
        self.sampler, self.batch_size, self.rank, self.size = sampler, batch_size, rank, size

    def _global_sizes(self) -> list[int]:
        n = len(self.sampler)
        sizes = [min(self.batch_size, n - start) for start in range(0, n, self.batch_size)]
        return [m for m in sizes if m >= self.size]

    def __len__(self) -> int:
        return len(self._global_sizes())

    def shares(self) -> list[float]:
        """``size * local / global`` for each batch that iteration yields (1.0 on one rank)."""
        return [
            len(shard_range(m, self.rank, self.size)) * self.size / m for m in self._global_sizes()
        ]

    def __iter__(self) -> Iterator[list[int]]:
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield [batch[i] for i in shard_range(len(batch), self.rank, self.size)]
                batch = []
        if len(batch) >= self.size:
            yield [batch[i] for i in shard_range(len(batch), self.rank, self.size)]
