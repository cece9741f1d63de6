"""The training recipe of ``sj-spatial train``: data, model, optimiser, learning-rate
schedule, training step and one pass over the data.

The model is the paper's: 700 inputs -> recurrent LIF with spatial delays -> 20 leaky
readouts, trained with Adam (its own learning rate for positions) on the cross-entropy of
the time-averaged readout, with cosine learning-rate decay over the epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from ..cost import WiringCost
from ..data import AugmentedSHD, SHDFormatError, builtin_shd_root, collate, shd_splits
from ..distributed import ShardedBatchSampler, World, all_reduce_sums, barrier, shard_range
from ..models import recurrent_shd_model
from ..positions import param_groups
from ..training import checkpointed_bptt, truncated_bptt
from .config import TrainConfig
from .errors import JobError

#: A batch of one rank: spikes ``[T, N, 700]``, labels ``[N]``, and the rank's share of
#: the global batch (``N * world size / global N``), which weighs its loss; a batch
#: ``(x, y)`` without a share weighs 1.
Batch = tuple[torch.Tensor, torch.Tensor, float] | tuple[torch.Tensor, torch.Tensor]
#: ``loss_fn(output [T, N, classes], labels [N]) -> loss``, a scalar tensor.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``predict(output [T, N, classes]) -> logits [N, classes]``, whose argmax is the class.
Predict = Callable[[torch.Tensor], torch.Tensor]


def time_mean(output: torch.Tensor) -> torch.Tensor:
    """The recipe's logits: the readout averaged over time."""
    return output.mean(0)


def readout_loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The recipe's loss: the cross-entropy of the readout averaged over time."""
    return F.cross_entropy(output.mean(0), y)


def datasets(
    config: TrainConfig, world: World, augmentation: Callable[..., Dataset] = AugmentedSHD
) -> tuple[tuple[Dataset, Dataset], str]:
    """``((train, test), source)``: the SHD splits (with ``config.augment``, the training
    split wrapped in ``augmentation(train, seed=..., max_stretch=...)``, an
    :class:`~sj_spatial.data.AugmentedSHD` by default) and words that say where they come
    from. Rank 0 builds any missing data files and caches before the others read them.
    Files that are missing, unreadable or not SHD raise JobError naming the file and the
    fault."""
    if not world.is_main:
        barrier()
    (train_set, test_set), source = _read_splits(config)
    if world.is_main:
        barrier()
    if config.augment:
        train_set = augmentation(train_set, seed=config.seed, max_stretch=config.stretch)
        stretch = f" + stretch ±{config.stretch:g}" if config.stretch else ""
        source += f", augmented (shift + blend{stretch})"
    return (train_set, test_set), source


def _read_splits(config: TrainConfig) -> tuple[tuple[Dataset, Dataset], str]:
    if config.data_root is None:
        source = f"built-in SHD-format data ({builtin_shd_root()})"
        option = "built-in data"
    else:
        source = f"SHD files in {config.data_root}"
        option = "--data-root"
    try:
        splits = shd_splits(
            config.data_root, config.dt, config.duration, config.limit, seed=config.seed
        )
    except (SHDFormatError, FileNotFoundError) as exc:
        raise JobError(f"{option}: {exc}") from None
    except PermissionError as exc:
        raise JobError(f"{option}: no permission to read or cache {exc.filename}") from None
    return splits, source


class EpochBatches:
    """This rank's batches of every global batch of one epoch (``len`` is their number).

    The global batches are those of ``DataLoader(shuffle=True)`` with a generator seeded
    by seed and epoch; each rank takes its contiguous part (``ShardedBatchSampler``). An
    augmented training set draws that epoch's shifts and blends first.
    """

    def __init__(self, train_set: Dataset, config: TrainConfig, world: World, epoch: int):
        if config.augment:
            train_set.set_epoch(epoch)  # fresh shifts and blends, the same on every rank
        shuffle = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        self.sampler = ShardedBatchSampler(
            RandomSampler(train_set, generator=shuffle), config.batch_size, world.rank, world.size
        )
        self.loader = DataLoader(
            train_set, batch_sampler=self.sampler, generator=shuffle, collate_fn=collate
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        shares = self.sampler.shares()
        return ((x, y, share) for (x, y), share in zip(self.loader, shares, strict=True))


def train_batches(
    train_set: Dataset, config: TrainConfig, world: World
) -> Callable[[int], EpochBatches]:
    """``epoch -> EpochBatches``, the training batches :func:`~.fit.fit` takes."""
    return lambda epoch: EpochBatches(train_set, config, world, epoch)


def evaluation_loader(test_set: Dataset, config: TrainConfig, world: World) -> DataLoader:
    """This rank's part of the test set in batches of ``(x, y)``; the sums of the ranks'
    losses and hits add up to those of the whole set."""
    part = Subset(test_set, shard_range(len(test_set), world.rank, world.size))
    return DataLoader(part, config.batch_size // world.size, collate_fn=collate)


def build_model(config: TrainConfig) -> nn.Module:
    """The recurrent SHD model of the config's hidden size, dimension, delays and backend."""
    return recurrent_shd_model(
        dt=config.dt,
        hidden=config.hidden,
        dim=config.dim,
        max_delay=config.max_delay,
        delay_scale=config.delay_scale,
        backend=config.backend,
    )


def build_optimizers(model: nn.Module, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """Adam over the weights (``config.lr``) and the positions (``config.position_lr``);
    each group's base learning rate is its ``initial_lr``, which the schedule scales."""
    groups = param_groups(model, config.lr, config.position_lr)
    for group in groups:
        group["initial_lr"] = group["lr"]
    return [torch.optim.Adam(groups)]


def build_wiring_cost(model: nn.Module, config: TrainConfig) -> WiringCost | None:
    """The L1 wiring cost of strength ``config.wiring_cost``, or None when it is 0."""
    # It reads the parameters of the bare model; under DDP its gradients join the model's
    # in the same backward pass.
    if config.wiring_cost > 0:
        return WiringCost(model, strength=config.wiring_cost)
    return None


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizers: list[torch.optim.Optimizer],
    cost: WiringCost | None = None,
    clip: float | None = None,
    share: float = 1.0,
    chunk: int | None = None,
    exact: bool = False,
    loss_fn: LossFn = readout_loss,
    predict: Predict = time_mean,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch: ``share * loss_fn(model(x), y) + cost``, backward
    (DDP averages the gradients over the ranks), clipping, step. Returns (logits, loss),
    the logits ``predict(output)``.

    ``chunk``: backpropagate through time in chunks of that many steps, truncated
    (:func:`~sj_spatial.truncated_bptt`) or, with ``exact``, recomputed
    (:func:`~sj_spatial.checkpointed_bptt`); memory then grows with the chunk, not T.
    """
    for opt in optimizers:
        opt.zero_grad()
    if chunk is None:
        out = model(x)
        loss = loss_fn(out, y)
        full = loss * share
        if cost is not None:
            full = full + cost()
        full.backward()
    else:
        in_chunks = checkpointed_bptt if exact else truncated_bptt
        _, out = in_chunks(model, x, lambda o: share * loss_fn(o, y), chunk)
        loss = loss_fn(out, y)
        if cost is not None:
            cost().backward()
    logits = predict(out)
    if clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    for opt in optimizers:
        opt.step()
    return logits.detach(), loss.detach()


def run_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    device: torch.device,
    optimizers: list[torch.optim.Optimizer] | None = None,
    cost: WiringCost | None = None,
    progress=None,
    clip: float | None = None,
    chunks: tuple[int, bool] | None = None,
    loss_fn: LossFn = readout_loss,
    predict: Predict = time_mean,
    on_step: Callable[[float], None] | None = None,
) -> tuple[float, int, int]:
    """One pass over ``(x, y, share)`` (or ``(x, y)``) batches; trains when
    ``optimizers`` are given (``chunks``: ``(steps, exact)`` of :func:`train_step`;
    ``on_step(loss)`` after every optimiser step, with that batch's loss), and updates a
    tqdm ``progress`` bar. Returns this rank's (summed loss, correct, count), a hit being
    an argmax of ``predict(output)`` equal to the label."""
    model.train(optimizers is not None)
    total_loss = correct = count = 0
    with torch.set_grad_enabled(optimizers is not None):
        for x, y, *weight in batches:
            share = weight[0] if weight else 1.0
            x, y = x.to(device), y.to(device)
            if optimizers is None:
                out = model(x)
                logits, loss = predict(out), loss_fn(out, y)
            else:
                chunk, exact = chunks or (None, False)
                logits, loss = train_step(
                    model, x, y, optimizers, cost, clip, share, chunk, exact, loss_fn, predict
                )
                if on_step is not None:
                    on_step(loss.item())
            functional.reset_net(model)
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{total_loss / count:.3f}", acc=f"{correct / count:.3f}")
    return total_loss, correct, count


def global_means(sums: Iterable[float], device: torch.device) -> tuple[float, float]:
    """(mean loss, accuracy) over all ranks from each rank's (loss sum, correct, count)."""
    total_loss, correct, count = all_reduce_sums(sums, device)
    return total_loss / max(count, 1), correct / max(count, 1)
