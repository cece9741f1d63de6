"""The epoch loop of every training in the project: :func:`fit`.

``sj-spatial train`` is one caller (its checkpoints, TensorBoard and topology are
callbacks); the benchmarks that train other models, on other data or with other
optimisers call it too, with their own factories and callbacks, instead of copying it.

One epoch: each callback's ``on_epoch_start(epoch)``; a training pass over
``train_batches(epoch)`` (:func:`~.recipe.run_epoch`: ``loss_fn``, plus the wiring cost,
backward, gradient clipping, every optimiser's step); an evaluation pass over
``test_batches``; the losses and accuracies summed over the ranks of a distributed run;
then each callback's ``on_epoch_end(record)`` with an :class:`EpochRecord`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..backends.threads import load_aware_threads, set_num_threads
from ..cost import WiringCost
from .recipe import Batch, LossFn, Predict, global_means, readout_loss, run_epoch, time_mean


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch gave: ``epoch`` counted from 1, mean losses and accuracies over the
    whole training and test sets (all ranks), and the training pass's wall time (s)."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float


class Callback:
    """Hooks that :func:`fit` calls; a subclass overrides those it needs."""

    def on_epoch_start(self, epoch: int) -> None:
        """Before the training pass of ``epoch`` (counted from 0)."""

    def on_step_end(self, loss: float) -> None:
        """After every optimiser step, with that batch's ``loss_fn`` value (a per-step
        schedule, per-step logging)."""

    def on_epoch_end(self, record: EpochRecord) -> None:
        """After the evaluation of ``record.epoch`` (counted from 1)."""


class CosineDecay(Callback):
    """Cosine learning-rate decay over ``epochs``: every group's ``lr`` becomes its
    ``initial_lr`` times ``(1 + cos(pi * epoch / epochs)) / 2`` at the start of each
    epoch (a function of the epoch alone, so a resumed run continues it). A group
    without ``initial_lr`` gets its current ``lr`` as one (torch's schedulers' key)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], epochs: int):
        self.optimizers = list(optimizers)
        self.epochs = epochs
        for opt in self.optimizers:
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])

    def on_epoch_start(self, epoch: int) -> None:
        factor = 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor


class LoadAwareThreads(Callback):
    """Follow the machine's load: at every epoch's start, and every ``interval_s`` seconds
    of steps, size torch's and the kernels' thread pools to
    :func:`~sj_spatial.backends.threads.load_aware_threads` (the usable CPUs less those
    other processes keep busy, at least 1, at most ``limit``), so that a busy machine
    never makes more threads slower than one. ``changes`` lists ``(epoch, threads)``."""

    def __init__(self, limit: int, interval_s: float = 2.0):
        self.limit, self.interval_s = limit, interval_s
        self.epoch, self.changes = 0, []
        self._checked = -math.inf

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        self._check()

    def on_step_end(self, loss: float) -> None:
        if time.monotonic() - self._checked >= self.interval_s:
            self._check()

    def _check(self) -> None:
        self._checked = time.monotonic()
        threads = load_aware_threads(self.limit)
        if threads != torch.get_num_threads():
            set_num_threads(threads)
            self.changes.append((self.epoch, threads))


def fit(
    model: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    train_batches: Callable[[int], Iterable[Batch]],
    test_batches: Iterable | Callable[[], Iterable],
    *,
    epochs: int,
    loss_fn: LossFn = readout_loss,
    predict: Predict = time_mean,
    callbacks: Sequence[Callback] = (),
    start_epoch: int = 0,
    device: torch.device | str = "cpu",
    cost: WiringCost | None = None,
    clip: float | None = None,
    chunks: tuple[int, bool] | None = None,
    trained: nn.Module | None = None,
    progress: Callable[[int, int | None], object] | None = None,
) -> list[EpochRecord]:
    """Train ``model`` from epoch ``start_epoch`` to ``epochs`` (counted from 0); returns
    the records of the epochs it ran.

    - ``train_batches(epoch)``: that epoch's batches, ``(x [T, N, in], y [N])`` or
      ``(x, y, share)`` (a rank's share of the global batch, which weighs its loss).
    - ``test_batches``: an iterable of ``(x, y)`` that can be iterated every epoch (a
      ``DataLoader``), or a function returning one.
    - ``loss_fn(output, y)``: the loss of the model's output ``[T, N, classes]``; by
      default the cross-entropy of the time-averaged readout. ``predict(output)``: the
      logits whose argmax accuracy counts (default: ``output.mean(0)``).
    - ``cost``: a wiring cost added to the loss; ``clip``: gradient-norm clipping;
      ``chunks``: ``(steps, exact)`` of backpropagation through time in chunks.
    - ``trained``: the module the training pass calls (a ``DistributedDataParallel``
      wrapper of ``model``); evaluation calls ``model``.
    - ``progress(epoch, steps)``: a context manager with ``update(n)`` and
      ``set_postfix(...)`` (a tqdm bar) for the training pass, or None.
    """
    device = torch.device(device)
    step_hooks = [
        c for c in callbacks if getattr(type(c), "on_step_end", None) is not Callback.on_step_end
    ]
    on_step = (lambda loss: [c.on_step_end(loss) for c in step_hooks]) if step_hooks else None
    records = []
    for epoch in range(start_epoch, epochs):
        for callback in callbacks:
            callback.on_epoch_start(epoch)
        batches = train_batches(epoch)
        steps = len(batches) if hasattr(batches, "__len__") else None
        start = time.perf_counter()
        with progress(epoch, steps) if progress else _NoBar() as bar:
            sums = run_epoch(
                trained or model,
                batches,
                device,
                optimizers,
                cost,
                bar,
                clip,
                chunks,
                loss_fn,
                predict,
                on_step,
            )
        seconds = time.perf_counter() - start
        train_loss, train_acc = global_means(sums, device)
        tests = test_batches() if callable(test_batches) else test_batches
        test_sums = run_epoch(model, _weighted(tests), device, loss_fn=loss_fn, predict=predict)
        test_loss, test_acc = global_means(test_sums, device)
        record = EpochRecord(epoch + 1, train_loss, train_acc, test_loss, test_acc, seconds)
        records.append(record)
        for callback in callbacks:
            callback.on_epoch_end(record)
    return records


def _weighted(batches: Iterable) -> Iterable[Batch]:
    """``(x, y, 1.0)`` for every ``(x, y)`` batch (evaluation weighs every sample alike)."""
    return ((x, y, 1.0) for x, y, *_ in batches)


class _NoBar:
    """A progress bar that shows nothing."""

    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None
