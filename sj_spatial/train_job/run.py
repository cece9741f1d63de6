"""``sj-spatial train`` in order: the checks, the checkpoint to resume, the data, the
epochs (TensorBoard events and a checkpoint after each), the report.

Under ``torchrun`` every rank runs this; rank 0 prints and writes the files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..backends.threads import set_num_threads, usable_cpus
from ..callbacks import TopologyLogger
from ..distributed import World, barrier, process_group, world_from_env, wrap
from .checkpoints import (
    CHECKPOINT,
    check_compatible,
    checkpoint,
    load_checkpoint,
    resume,
    save_checkpoint,
)
from .checks import (
    check_backend,
    check_batch_split,
    check_data_root,
    check_logdir,
    check_no_run,
    check_stretch,
    make_logdir,
    resolve_device,
)
from .config import TrainConfig
from .errors import JobError
from .loop import Callback, CosineDecay, EpochRecord, LoadAwareThreads, fit
from .recipe import (
    LossFn,
    build_model,
    build_optimizers,
    build_wiring_cost,
    datasets,
    evaluation_loader,
    readout_loss,
    train_batches,
)
from .report import epoch_line, write_report


@dataclass(frozen=True)
class Factories:
    """What builds a run's parts from its config: ``data(config, world) -> ((train, test),
    source)``, ``model(config) -> nn.Module`` (on the CPU; the job moves it) and
    ``optimizers(model, config) -> [optimizer, ...]`` (each group's base learning rate in
    its ``initial_lr``, which the cosine schedule scales)."""

    data: Callable = datasets
    model: Callable = build_model
    optimizers: Callable = build_optimizers


def train(
    config: TrainConfig,
    *,
    model_factory: Callable[[TrainConfig], nn.Module] = build_model,
    optimizer_factory: Callable[[nn.Module, TrainConfig], list] = build_optimizers,
    data_factory: Callable = datasets,
    loss_fn: LossFn = readout_loss,
    callbacks: Sequence[Callback] = (),
) -> dict | None:
    """Run the main job; returns the summary dict (None on the ranks other than 0 of a
    torchrun job, and when ``config.resume`` finds the run finished).

    ``sj-spatial train`` calls it with the recipe's parts; an experiment passes its own
    (:class:`Factories` says what each returns), a ``loss_fn(output, y)`` and callbacks
    that :func:`~.fit.fit` calls after the job's own at every epoch's end.

    A user's mistake raises JobError with a message before any file is written: the
    options, device, backend, logdir and ``--resume`` checkpoint are checked first, the
    data is read next, and the logdir is created only then."""
    try:
        world = world_from_env()
    except ValueError as exc:
        raise JobError(str(exc)) from None
    check_batch_split(config.batch_size, world or World())
    check_stretch(config.stretch, config.augment)
    device = resolve_device(config.device, world)
    check_backend(config.backend, device)
    check_logdir(config.logdir)
    if not config.resume:
        check_no_run(config.logdir)
    check_data_root(config.data_root)
    saved = _saved_run(config) if config.resume else None
    if saved is not None and saved["epoch"] + 1 >= config.epochs:
        if (world or World()).is_main:
            done = saved["epoch"] + 1
            print(
                f"--resume: the run in {config.logdir} already trained {done} "
                f"epoch{'s' if done != 1 else ''} of --epochs {config.epochs}; nothing to do "
                "(raise --epochs to train longer)"
            )
        return None
    factories = Factories(data_factory, model_factory, optimizer_factory)
    with process_group(world, device):
        return _train(config, world or World(), device, saved, factories, loss_fn, callbacks)


def _saved_run(config: TrainConfig) -> dict:
    """The checkpoint that ``--resume`` continues, checked against this run's options,
    with this resumption's changed options added to its ``"resumes"``; raises JobError
    naming the file when there is none or it does not fit."""
    path = config.logdir / CHECKPOINT
    try:
        state = load_checkpoint(path)
        changed = check_compatible(state, path, config)
    except (FileNotFoundError, ValueError) as exc:
        raise JobError(f"--resume: {exc}") from None
    resumes = list(state.get("resumes", []))
    if changed:
        resumes.append({"after_epoch": state["epoch"] + 1, "changed": changed})
    state["resumes"] = resumes
    return state


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during ``sj-spatial train``: ``epoch`` (counted from 1) is the epoch
    it stopped, ``checkpoint`` the file of the last finished epoch (None when none
    finished); the command line reports it in one line."""

    def __init__(self, epoch: int, epochs: int, checkpoint: Path | None):
        super().__init__(epoch, epochs, checkpoint)
        self.epoch, self.epochs, self.checkpoint = epoch, epochs, checkpoint


def _train(
    config: TrainConfig,
    world: World,
    device: torch.device,
    saved: dict | None,
    factories: Factories,
    loss_fn: LossFn,
    callbacks: Sequence[Callback],
) -> dict | None:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    main = world.is_main
    say = print if main else _silent
    torch.manual_seed(config.seed)
    (train_set, test_set), source = factories.data(config, world)
    model = factories.model(config).to(device)
    optimizers = factories.optimizers(model, config)
    cost = build_wiring_cost(model, config)
    history = {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
    start_epoch = 0
    resumes = [] if saved is None else saved["resumes"]
    checkpoint_path = config.logdir / CHECKPOINT
    if saved is not None:
        try:
            history, start_epoch = resume(saved, checkpoint_path, model, optimizers, device)
        except ValueError as exc:
            raise JobError(f"--resume: {exc}") from None
        say(f"resuming from {checkpoint_path} after epoch {start_epoch}")
    if main:
        make_logdir(config.logdir)
    ranks = f"; {world.size} ranks" if world.size > 1 else ""
    threads, follow = _threads(config)
    say(
        f"data: {source}; train {len(train_set)}, test {len(test_set)} samples; "
        f"device {device}{ranks}; {threads}"
    )
    # purge_step: TensorBoard drops what an earlier, interrupted process of this run logged
    # for the epochs trained again from the checkpoint.
    writer = SummaryWriter(str(config.logdir), purge_step=start_epoch + 1) if main else None
    report = _EpochReport(config, world, device, model, optimizers, history, resumes, writer)
    bar = (
        None
        if config.quiet or not main
        else lambda epoch, steps: tqdm(
            total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=None, leave=False
        )  # disable=None: off when not a terminal
    )
    try:
        fit(
            model,
            optimizers,
            train_batches(train_set, config, world),
            evaluation_loader(test_set, config, world),
            epochs=config.epochs,
            loss_fn=loss_fn,
            callbacks=[CosineDecay(optimizers, config.epochs), *follow, report, *callbacks],
            start_epoch=start_epoch,
            device=device,
            cost=cost,
            clip=config.clip or None,
            chunks=config.chunks,
            trained=wrap(model, device),
            progress=bar,
        )
    except KeyboardInterrupt:
        saved_path = checkpoint_path if report.done > 0 else None
        raise TrainingInterrupted(report.done + 1, config.epochs, saved_path) from None
    finally:
        if writer is not None:
            writer.flush()
    summary = None
    if main:
        report.topology.close()
        summary = write_report(model, history, source, config, resumes)
    barrier()  # the other ranks end when the files are written
    return summary


def _threads(config: TrainConfig) -> tuple[str, list[Callback]]:
    """Size the thread pools for ``config.threads`` (None: follow the load, up to the
    usable CPUs and torch's own count, which ``OMP_NUM_THREADS`` sets); returns the words
    of the start line and the callbacks that follow the load."""
    usable = usable_cpus()
    if config.threads is not None:
        set_num_threads(config.threads)
        return f"{config.threads} thread{'s' if config.threads > 1 else ''} (--threads)", []
    limit = min(usable, torch.get_num_threads())
    follow = LoadAwareThreads(limit)
    follow.on_epoch_start(0)  # the count the run starts with
    threads = torch.get_num_threads()
    return (
        f"{threads} thread{'s' if threads > 1 else ''} of {usable} usable CPUs (auto: fewer "
        "while other processes are busy)",
        [follow],
    )


class _EpochReport(Callback):
    """The job's end of an epoch: the history on every rank; on rank 0 TensorBoard
    scalars and topology, the printed line and the checkpoint."""

    def __init__(self, config, world, device, model, optimizers, history, resumes, writer):
        self.config, self.world, self.device = config, world, device
        self.model, self.optimizers = model, optimizers
        self.history, self.resumes, self.writer = history, resumes, writer
        self.topology = (
            TopologyLogger(writer, model, nulls=5, seed=config.seed) if world.is_main else None
        )
        self.done = len(history["test_acc"])  # epochs in the checkpoint

    def on_epoch_end(self, record: EpochRecord) -> None:
        results = (record.train_loss, record.train_acc, record.test_loss, record.test_acc)
        for key, value in zip(self.history, results, strict=True):
            self.history[key].append(value)
        if not self.world.is_main:
            return
        for key, value in self.history.items():
            self.writer.add_scalar(key.replace("_", "/", 1), value[-1], record.epoch)
        self.topology.log(record.epoch)
        self.writer.flush()
        print(epoch_line(record))
        state = checkpoint(
            self.model,
            self.optimizers,
            record.epoch - 1,
            self.history,
            self.config,
            self.device,
            self.resumes,
        )
        save_checkpoint(state, self.config.logdir / CHECKPOINT)
        self.done = record.epoch


def _silent(*args, **kwargs) -> None:
    pass
