"""``sj-spatial train`` in order: the checks, the checkpoint to resume, the data, the
epochs (TensorBoard events and a checkpoint after each), the report.

Under ``torchrun`` every rank runs this; rank 0 prints and writes the files.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

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
from .recipe import (
    anneal,
    build_model,
    build_optimizers,
    build_wiring_cost,
    datasets,
    evaluation_loader,
    global_means,
    run_epoch,
    train_batches,
)
from .report import write_report


def train(config: TrainConfig) -> dict | None:
    """Run the main job; returns the summary dict (None on the ranks other than 0 of a
    torchrun job, and when ``config.resume`` finds the run finished).

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
    with process_group(world, device):
        return _train(config, world or World(), device, saved)


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
    config: TrainConfig, world: World, device: torch.device, saved: dict | None
) -> dict | None:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    main = world.is_main
    say = print if main else _silent
    torch.manual_seed(config.seed)
    (train_set, test_set), source = datasets(config, world)
    model = build_model(config).to(device)
    optimizers = build_optimizers(model, config)
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
    say(
        f"data: {source}; train {len(train_set)}, test {len(test_set)} samples; "
        f"device {device}{ranks}"
    )
    trained = wrap(model, device)

    # purge_step: TensorBoard drops what an earlier, interrupted process of this run logged
    # for the epochs trained again from the checkpoint.
    writer = SummaryWriter(str(config.logdir), purge_step=start_epoch + 1) if main else None
    topo = TopologyLogger(writer, model, nulls=5, seed=config.seed) if main else None
    test_loader = evaluation_loader(test_set, config, world)
    done = start_epoch  # epochs in the checkpoint
    try:
        for epoch in range(start_epoch, config.epochs):
            anneal(optimizers, config, epoch)
            if config.augment:
                train_set.set_epoch(epoch)  # fresh shifts and blends, the same on every rank
            batches, steps = train_batches(train_set, config, world, epoch)
            t0 = time.perf_counter()
            with tqdm(
                total=steps,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                # None: off when not a terminal
                disable=True if config.quiet or not main else None,
                leave=False,
            ) as bar:
                clip = config.clip or None
                sums = run_epoch(
                    trained, batches, device, optimizers, cost, bar, clip, config.chunks
                )
            train_loss, train_acc = global_means(sums, device)
            tests = ((x, y, 1.0) for x, y in test_loader)
            test_loss, test_acc = global_means(run_epoch(model, tests, device), device)
            results = (train_loss, train_acc, test_loss, test_acc)
            for key, value in zip(history, results, strict=True):
                history[key].append(value)
            if not main:
                continue
            for key, value in history.items():
                writer.add_scalar(key.replace("_", "/", 1), value[-1], epoch + 1)
            topo.log(epoch + 1)
            writer.flush()
            print(
                f"epoch {epoch + 1}: train loss {train_loss:.3f} acc {train_acc:.3f} | "
                f"test loss {test_loss:.3f} acc {test_acc:.3f} ({time.perf_counter() - t0:.0f} s)"
            )
            state = checkpoint(model, optimizers, epoch, history, config, device, resumes)
            save_checkpoint(state, checkpoint_path)
            done = epoch + 1
    except KeyboardInterrupt:
        saved_path = checkpoint_path if done > 0 else None
        raise TrainingInterrupted(done + 1, config.epochs, saved_path) from None
    finally:
        if writer is not None:
            writer.flush()
    summary = None
    if main:
        topo.close()
        summary = write_report(model, history, source, config, resumes)
    barrier()  # the other ranks end when the files are written
    return summary


def _silent(*args, **kwargs) -> None:
    pass
