"""``sj-spatial``: the project's command line. ``sj-spatial train`` is the main job.

It trains the paper's recurrent model (700 -> recurrent LIF with spatial delays -> 20
leaky readouts) on SHD, or, without ``--data-root``, on the built-in SHD-format data,
and writes into ``--logdir``: TensorBoard events (losses, accuracies, topology),
``checkpoint.pt`` after every epoch (``--resume`` continues from it), ``summary.md`` /
``summary.json`` and PNG figures (positions, |w|-weighted delay histogram, learning
curves).

Under ``torchrun --nproc_per_node=N`` it trains with DistributedDataParallel:
``--batch-size`` is the global batch, split over the N ranks, and rank 0 prints and
writes the files (``docs/distributed.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset

from . import __version__, topology
from ._rng import rng_state, set_rng_state
from .backends import cupy_missing
from .callbacks import TopologyLogger, position_figure
from .cost import WiringCost
from .data import (
    AugmentedSHD,
    SHDFormatError,
    builtin_shd_root,
    collate,
    find_shd_file,
    shd_splits,
)
from .data.shd import SEARCH_DIRS
from .distributed import (
    ShardedBatchSampler,
    World,
    all_reduce_sums,
    barrier,
    process_group,
    shard_range,
    world_from_env,
    wrap,
)
from .layers import SpatialRecurrentContainer
from .models import recurrent_shd_model
from .positions import NeuronPositions, param_groups
from .training import checkpointed_bptt, truncated_bptt

CHECKPOINT = "checkpoint.pt"


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit status 2), not a
    usage block: ``PROG: error: MESSAGE (see PROG --help)``; unrecognized arguments are
    reported by the command they were given to (``sj-spatial train``)."""

    def error(self, message: str):
        self._fail(self.prog, message)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            prog = self.prog if command is None else f"{self.prog} {command}"
            self._fail(prog, f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _fail(self, prog: str, message: str):
        self.exit(2, f"{prog}: error: {_one_line(message)} (see {prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the default of every option except those that are None or False (flags and
    options whose help says what their absence means)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Reported(SystemExit):
    """A user's mistake that :func:`main` has printed: ``str()`` is the message and
    ``code`` the exit status, so the interpreter ends without printing it again."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.code = status


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _number(kind: type, low: float, strict: bool = False):
    """An argparse ``type=``: a finite ``kind`` (int or float) ``>= low`` (``> low`` with
    ``strict``); errors name the option (argparse adds it) and the bound."""
    bound = f"{'>' if strict else '>='} {low}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


_count = _number(int, 1)
_natural = _number(int, 0)
_positive = _number(float, 0, strict=True)
_nonnegative = _number(float, 0)
#: Device types ``--device`` accepts, besides ``auto``.
DEVICE_TYPES = ("cpu", "cuda", "mps")


def _device_option(text: str) -> str:
    """The argparse ``type=`` of ``--device``: ``auto`` or a device string of
    :data:`DEVICE_TYPES` that torch can parse (``cuda:1``); availability is checked later."""
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sj-spatial", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sj-spatial {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = commands.add_parser(
        "train",
        help="train the recurrent spatial model on SHD (default: built-in data)",
        description="Train 700 -> recurrent LIF with spatial delays -> 20 leaky readouts.",
        formatter_class=_HelpFormatter,
    )
    add = train.add_argument
    add(
        "--data-root",
        type=Path,
        default=None,
        help="folder with shd_train.h5 and shd_test.h5 (default: built-in SHD-format data)",
    )
    add("--epochs", type=_count, default=10, help="number of training epochs")
    add("--dt", type=_positive, default=10e-3, help="time step in seconds")
    add("--duration", type=_positive, default=1.0, help="seconds of each sample used")
    add("--dim", type=_count, default=2, help="dimension of the position space")
    add("--max-delay", type=_natural, default=25, help="longest delay in time steps")
    add(
        "--delay-scale",
        type=_nonnegative,
        default=3.0,
        help="time steps per unit of distance; 3 gives initial delays up to ~8 steps",
    )
    add("--hidden", type=_count, default=128, help="number of recurrent neurons")
    add(
        "--batch-size",
        type=_count,
        default=64,
        help="samples per optimiser step; under torchrun, the global batch over all ranks",
    )
    add("--lr", type=_positive, default=1e-3, help="Adam learning rate of weights")
    add("--position-lr", type=_positive, default=0.05, help="Adam learning rate of positions")
    add("--clip", type=_nonnegative, default=1.0, help="gradient norm clipping; 0: off")
    add(
        "--wiring-cost",
        type=_nonnegative,
        default=0.0,
        help="strength of the L1 wiring cost sum |w| * distance; 0: none",
    )
    add(
        "--device",
        type=_device_option,
        default="auto",
        help="cpu, cuda, cuda:N or mps; auto: cuda if available, else cpu",
    )
    add(
        "--backend",
        default="torch",
        choices=("torch", "cupy"),
        help="implementation of the delayed recurrent product (cupy: CUDA kernels, needs CuPy)",
    )
    add("--logdir", type=Path, default=Path("runs/train"), help="folder of the outputs")
    add("--resume", action="store_true", help="continue from LOGDIR/checkpoint.pt")
    add("--seed", type=_natural, default=0, help="seed of initialisation and shuffling")
    add(
        "--limit",
        type=_count,
        default=None,
        help="use a fixed random subset of this many samples per split (default: all)",
    )
    memory = train.add_mutually_exclusive_group()
    memory.add_argument(
        "--tbptt",
        type=_count,
        default=None,
        metavar="STEPS",
        help="truncated BPTT: gradients stop every STEPS time steps; memory grows with "
        "STEPS instead of the sequence length (docs/long_sequences.md)",
    )
    memory.add_argument(
        "--recompute",
        type=_count,
        default=None,
        metavar="STEPS",
        help="exact gradients with memory bounded like --tbptt: keep the state every STEPS "
        "steps and recompute the chunks in the backward pass (about 2x the time)",
    )
    add(
        "--augment",
        action="store_true",
        help="the paper's training augmentation: random channel shift (up to 40) of every "
        "sample, plus as many same-class blends per epoch (doubles the epoch)",
    )
    add("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``sj-spatial`` with ``argv``. A user's mistake (an option, the data, the device,
    the logdir) ends as one line ``sj-spatial COMMAND: error: MESSAGE`` on stderr and a
    SystemExit with a non-zero status (2 for options argparse rejects, else 1)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        try:
            summary = train(args)
        except SystemExit as exc:
            if not isinstance(exc.code, str):
                raise
            message = _one_line(exc.code)
            print(f"{parser.prog} {args.command}: error: {message}", file=sys.stderr)
            raise _Reported(message) from None
        if summary is not None:
            print(summary_table(summary))
    return 0


def _check_args(args, world: World) -> None:
    """Checks across options and the world (argparse checked each option's range)."""
    if args.batch_size % world.size:
        raise SystemExit(
            f"--batch-size is the global batch, split evenly over the world size "
            f"{world.size} (WORLD_SIZE, torchrun --nproc_per_node); it must be divisible by "
            f"{world.size}, got {args.batch_size}"
        )


def _device(name: str, world: World | None) -> torch.device:
    """The device of this process: under torchrun, CUDA means ``cuda:LOCAL_RANK``.
    Raises SystemExit when the device is not on this machine."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    _check_available(device, name)
    if world is None or device.type != "cuda":
        return device
    if device.index is not None and device.index != world.local_rank:
        raise SystemExit(
            f"--device: under torchrun rank {world.rank} uses cuda:{world.local_rank} "
            f"(LOCAL_RANK); pass --device cuda or auto, got {name}"
        )
    return torch.device("cuda", world.local_rank)


def _check_available(device: torch.device, name: str) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SystemExit(
                f"--device {name}: no CUDA GPU is visible to torch (torch.cuda.is_available() "
                "is False); use --device cpu or auto"
            )
        if device.index is not None and device.index >= count:
            raise SystemExit(
                f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SystemExit(f"--device {name}: no MPS device (Apple GPU) is available")


def _check_backend(backend: str, device: torch.device) -> None:
    """Raise SystemExit when ``--backend`` cannot run on ``device`` here."""
    if backend != "cupy":
        return
    reason = cupy_missing()
    if reason is not None:
        raise SystemExit(f"--backend cupy is unavailable: {reason}")
    if device.type != "cuda":
        raise SystemExit(f"--backend cupy runs on CUDA GPUs; use --device cuda, got {device}")


def _check_logdir(logdir: Path) -> None:
    """Raise SystemExit unless ``logdir`` is, or can be made, a folder this user may write
    in (nothing is created here)."""
    # os.path.exists, unlike Path.exists, says False for a path it may not look at.
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise SystemExit(f"--logdir {logdir} is a file, not a folder")
    existing = next(p for p in (logdir, *logdir.absolute().parents) if os.path.exists(p))
    if not os.path.isdir(existing):
        raise SystemExit(f"--logdir {logdir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SystemExit(f"--logdir {logdir}: no permission to write in {existing}")


def _make_logdir(logdir: Path) -> None:
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(
            f"--logdir {logdir}: cannot create it ({exc.strerror or type(exc).__name__})"
        ) from None


def _check_data_root(root: Path | None) -> None:
    """Raise SystemExit unless ``root`` (None: the built-in data) is a folder where both
    SHD files are found (their contents are checked when they are read)."""
    if root is None:
        return
    folder = root.expanduser()
    if not os.path.exists(folder):
        raise SystemExit(f"--data-root {root}: no such folder")
    if not os.path.isdir(folder):
        raise SystemExit(
            f"--data-root {root} is a file, not a folder; give the folder that holds "
            "shd_train.h5 and shd_test.h5"
        )
    missing = []
    for train, stem in ((True, "shd_train"), (False, "shd_test")):
        try:
            find_shd_file(folder, train)
        except FileNotFoundError:
            missing.append(f"{stem}.h5")
        except PermissionError as exc:
            raise SystemExit(f"--data-root {root}: no permission to read {exc.filename}") from None
    if missing:
        subs = ", ".join(f"{sub}/" for sub in SEARCH_DIRS if sub)
        raise SystemExit(
            f"--data-root {root} holds no {' and no '.join(missing)} (nor .h5.gz / .h5.zip), "
            f"directly or in {subs}"
        )


def _datasets(args):
    """``((train, test), source)``; files that are missing, unreadable or not SHD raise
    SystemExit naming the file and the fault."""
    if args.data_root is None:
        source = f"built-in SHD-format data ({builtin_shd_root()})"
        option = "built-in data"
    else:
        source = f"SHD files in {args.data_root}"
        option = "--data-root"
    try:
        splits = shd_splits(args.data_root, args.dt, args.duration, args.limit, seed=args.seed)
    except (SHDFormatError, FileNotFoundError) as exc:
        raise SystemExit(f"{option}: {exc}") from None
    except PermissionError as exc:
        raise SystemExit(f"{option}: no permission to read or cache {exc.filename}") from None
    return splits, source


def _datasets_in_turn(args, world: World):
    """The datasets; rank 0 builds any missing data files and caches before the others
    read them."""
    if not world.is_main:
        barrier()
    result = _datasets(args)
    if world.is_main:
        barrier()
    return result


def _model(args) -> nn.Module:
    return recurrent_shd_model(
        dt=args.dt,
        hidden=args.hidden,
        dim=args.dim,
        max_delay=args.max_delay,
        delay_scale=args.delay_scale,
        backend=args.backend,
    )


def _optimizers(model: nn.Module, args):
    return [torch.optim.Adam(param_groups(model, args.lr, args.position_lr))]


def _anneal(optimizers, args, epoch: int) -> None:
    """Cosine learning-rate decay over the run, a function of the epoch (so resume-safe)."""
    factor = 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))
    for opt in optimizers:
        for group, base in zip(opt.param_groups, (args.lr, args.position_lr), strict=False):
            group["lr"] = base * factor


def _train_batches(train_set, args, world: World, epoch: int):
    """This rank's ``(x, y, share)`` of every global batch of one epoch, and their number.

    The global batches are those of ``DataLoader(shuffle=True)`` with a generator seeded
    by seed and epoch; each rank takes its contiguous part (``ShardedBatchSampler``).
    """
    shuffle = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    sampler = ShardedBatchSampler(
        RandomSampler(train_set, generator=shuffle), args.batch_size, world.rank, world.size
    )
    loader = DataLoader(train_set, batch_sampler=sampler, generator=shuffle, collate_fn=collate)
    batches = ((x, y, share) for (x, y), share in zip(loader, sampler.shares(), strict=True))
    return batches, len(sampler)


def _train_step(model, x, y, optimizers, cost=None, clip=None, share=1.0, chunk=None, exact=False):
    """One optimiser step on a batch: ``share * cross-entropy + cost``, backward (DDP
    averages the gradients over the ranks), clipping, step. Returns (logits, loss).

    ``chunk``: backpropagate through time in chunks of that many steps, truncated
    (:func:`~sj_spatial.truncated_bptt`) or, with ``exact``, recomputed
    (:func:`~sj_spatial.checkpointed_bptt`); memory then grows with the chunk, not T.
    """
    for opt in optimizers:
        opt.zero_grad()
    if chunk is None:
        logits = model(x).mean(0)
        loss = F.cross_entropy(logits, y)
        full = loss * share
        if cost is not None:
            full = full + cost()
        full.backward()
    else:
        in_chunks = checkpointed_bptt if exact else truncated_bptt
        _, out = in_chunks(model, x, lambda o: share * F.cross_entropy(o.mean(0), y), chunk)
        logits = out.mean(0)
        loss = F.cross_entropy(logits, y)
        if cost is not None:
            cost().backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    for opt in optimizers:
        opt.step()
    return logits.detach(), loss.detach()


def _run_epoch(
    model, batches, device, optimizers=None, cost=None, progress=None, clip=None, chunks=None
):
    """One pass over ``(x, y, share)`` batches; trains when ``optimizers`` are given.

    Returns this rank's (summed loss, correct, count)."""
    model.train(optimizers is not None)
    total_loss = correct = count = 0
    with torch.set_grad_enabled(optimizers is not None):
        for x, y, share in batches:
            x, y = x.to(device), y.to(device)
            if optimizers is None:
                logits = model(x).mean(0)
                loss = F.cross_entropy(logits, y)
            else:
                chunk, exact = chunks or (None, False)
                logits, loss = _train_step(
                    model, x, y, optimizers, cost, clip, share, chunk=chunk, exact=exact
                )
            functional.reset_net(model)
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{total_loss / count:.3f}", acc=f"{correct / count:.3f}")
    return total_loss, correct, count


def _global_means(sums, device) -> tuple[float, float]:
    """(mean loss, accuracy) over all ranks from each rank's (loss sum, correct, count)."""
    total_loss, correct, count = all_reduce_sums(sums, device)
    return total_loss / max(count, 1), correct / max(count, 1)


# ---------------------------------------------------------------- checkpoints


def _save_atomic(obj, path: Path) -> None:
    """``torch.save`` to ``path.tmp``, then rename: readers see the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: What a checkpoint of ``sj-spatial train`` holds.
CHECKPOINT_KEYS = ("model", "optimizers", "epoch", "history", "rng", "args")
#: Options that define the model; a resumed run must use the checkpoint's values.
MODEL_OPTIONS = ("hidden", "dim", "max_delay", "delay_scale", "dt")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by ``sj-spatial train`` (tensors and plain data only).

    Raises FileNotFoundError when ``path`` does not exist and ValueError, naming the
    file, when it is truncated, not a torch file, or not a checkpoint of this job.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"cannot read checkpoint {path}: truncated, or not a file that torch.save wrote "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(
            f"cannot read checkpoint {path}: expected a dict with keys "
            f"{', '.join(CHECKPOINT_KEYS)}, got a {type(state).__name__}"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ValueError(
            f"cannot read checkpoint {path}: not a checkpoint of sj-spatial train, it lacks "
            f"{', '.join(missing)} (a bare state_dict?)"
        )
    return state


def _check_compatible(state: dict, path: Path, args) -> None:
    saved = state["args"]
    for name in MODEL_OPTIONS:
        if name in saved and saved[name] != str(getattr(args, name)):
            option = "--" + name.replace("_", "-")
            raise ValueError(
                f"checkpoint {path} is of another model: it was written with {option} "
                f"{saved[name]}, this run has {option} {getattr(args, name)}"
            )


def _saved_run(args) -> dict:
    """The checkpoint that ``--resume`` continues, checked against this run's model
    options; raises SystemExit naming the file when there is none or it does not fit."""
    path = args.logdir / CHECKPOINT
    try:
        state = load_checkpoint(path)
        _check_compatible(state, path, args)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"--resume: {exc}") from None
    return state


def _resume(state: dict, path: Path, model, optimizers, device) -> tuple[dict, int]:
    """Restore model, optimisers and random states from checkpoint ``state`` (read from
    ``path``); returns (history, first epoch to run). Raises ValueError naming the file
    when it does not fit."""
    try:
        model.load_state_dict(state["model"])
        for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
    except (RuntimeError, ValueError, KeyError) as exc:
        details = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ValueError(f"checkpoint {path} does not fit this model: {details}") from exc
    set_rng_state(state["rng"], device)
    return state["history"], state["epoch"] + 1


def _checkpoint(model, optimizers, epoch: int, history: dict, args, device) -> dict:
    return {
        "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers],
        "epoch": epoch,
        "history": history,
        "rng": rng_state(device),
        "args": {k: str(v) for k, v in vars(args).items()},
    }


# ---------------------------------------------------------------- the job


def train(args) -> dict | None:
    """Run the main job with parsed ``args``; returns the summary dict (None on the ranks
    other than 0 of a torchrun job, and when ``--resume`` finds the run finished).

    A user's mistake raises SystemExit with a message before any file is written: the
    options, device, backend, logdir and ``--resume`` checkpoint are checked first, the
    data is read next, and the logdir is created only then."""
    try:
        world = world_from_env()
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    _check_args(args, world or World())
    device = _device(args.device, world)
    _check_backend(args.backend, device)
    _check_logdir(args.logdir)
    _check_data_root(args.data_root)
    saved = _saved_run(args) if args.resume else None
    if saved is not None and saved["epoch"] + 1 >= args.epochs:
        if (world or World()).is_main:
            done = saved["epoch"] + 1
            print(
                f"--resume: the run in {args.logdir} already trained {done} "
                f"epoch{'s' if done != 1 else ''} of --epochs {args.epochs}; nothing to do "
                "(raise --epochs to train longer)"
            )
        return None
    with process_group(world, device):
        return _train(args, world or World(), device, saved)


def _train(args, world: World, device: torch.device, saved: dict | None) -> dict | None:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    main = world.is_main
    say = print if main else _silent
    torch.manual_seed(args.seed)
    (train_set, test_set), source = _datasets_in_turn(args, world)
    if args.augment:
        train_set = AugmentedSHD(train_set, seed=args.seed)
        source += ", augmented (shift + blend)"
    model = _model(args).to(device)
    optimizers = _optimizers(model, args)
    # The cost reads the parameters of the bare model; its gradients join DDP's in the
    # same backward pass.
    cost = WiringCost(model, strength=args.wiring_cost) if args.wiring_cost > 0 else None
    history = {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
    start_epoch = 0
    checkpoint_path = args.logdir / CHECKPOINT
    if saved is not None:
        try:
            history, start_epoch = _resume(saved, checkpoint_path, model, optimizers, device)
        except ValueError as exc:
            raise SystemExit(f"--resume: {exc}") from None
        say(f"resuming from {checkpoint_path} after epoch {start_epoch}")
    if main:
        _make_logdir(args.logdir)
    ranks = f"; {world.size} ranks" if world.size > 1 else ""
    say(
        f"data: {source}; train {len(train_set)}, test {len(test_set)} samples; "
        f"device {device}{ranks}"
    )
    trained = wrap(model, device)

    writer = SummaryWriter(str(args.logdir)) if main else None
    topo = TopologyLogger(writer, model, nulls=5, seed=args.seed) if main else None
    # Each rank evaluates its own part of the test set; the sums are added over ranks.
    test_part = Subset(test_set, shard_range(len(test_set), world.rank, world.size))
    test_loader = DataLoader(test_part, args.batch_size // world.size, collate_fn=collate)
    chunks = None
    if args.tbptt or args.recompute:
        chunks = (args.recompute, True) if args.recompute else (args.tbptt, False)
    for epoch in range(start_epoch, args.epochs):
        _anneal(optimizers, args, epoch)
        if args.augment:
            train_set.set_epoch(epoch)  # fresh shifts and blends, the same on every rank
        batches, steps = _train_batches(train_set, args, world, epoch)
        t0 = time.perf_counter()
        with tqdm(
            total=steps,
            desc=f"epoch {epoch + 1}/{args.epochs}",
            disable=True if args.quiet or not main else None,  # None: off when not a terminal
            leave=False,
        ) as bar:
            sums = _run_epoch(
                trained, batches, device, optimizers, cost, bar, args.clip or None, chunks
            )
        train_loss, train_acc = _global_means(sums, device)
        tests = ((x, y, 1.0) for x, y in test_loader)
        test_loss, test_acc = _global_means(_run_epoch(model, tests, device), device)
        for key, value in zip(history, (train_loss, train_acc, test_loss, test_acc), strict=True):
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
        _save_atomic(_checkpoint(model, optimizers, epoch, history, args, device), checkpoint_path)
    summary = None
    if main:
        topo.close()
        rec = _recurrent(model)
        labels = topology.communities(rec.effective_weight().detach().cpu(), seed=args.seed)
        summary = _summary(model, history, source, args, labels)
        (args.logdir / "summary.json").write_text(json.dumps(summary, indent=2))
        (args.logdir / "summary.md").write_text(summary_table(summary) + "\n")
        _figures(model, history, args.logdir, labels)
    barrier()  # the other ranks end when the files are written
    return summary


def _silent(*args, **kwargs) -> None:
    pass


def _recurrent(model: nn.Module) -> SpatialRecurrentContainer:
    return next(m for m in model.modules() if isinstance(m, SpatialRecurrentContainer))


def _summary(model, history, source, args, labels) -> dict:
    rec = _recurrent(model)
    positions = sum(
        p.numel() for m in model.modules() if isinstance(m, NeuronPositions) for p in m.parameters()
    )
    total = sum(p.numel() for p in model.parameters())
    metrics = topology.analyze(rec, seed=args.seed, nulls=5, labels=labels)
    return {
        "data": source,
        "epochs": len(history["test_acc"]),
        "test_accuracy": history["test_acc"][-1] if history["test_acc"] else math.nan,
        "best_test_accuracy": max(history["test_acc"], default=math.nan),
        "parameters": total,
        "position_parameters": positions,
        "delay_parameters_if_per_synapse": rec.num_features**2,
        "topology": {k: float(v) for k, v in metrics.items()},
    }


def summary_table(summary: dict) -> str:
    """The summary as a markdown table."""
    rows = [
        ("data", summary["data"]),
        ("epochs", summary["epochs"]),
        (
            "test accuracy (last / best)",
            f"{summary['test_accuracy']:.3f} / {summary['best_test_accuracy']:.3f}",
        ),
        (
            "parameters (of which positions)",
            f"{summary['parameters']} ({summary['position_parameters']}; per-synapse delays "
            f"would need {summary['delay_parameters_if_per_synapse']})",
        ),
    ]
    rows += [(f"topology: {k}", f"{v:.4g}") for k, v in summary["topology"].items()]
    lines = ["| quantity | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _figures(model, history, logdir: Path, labels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rec = _recurrent(model)
    weight = rec.effective_weight().detach().cpu().numpy()
    pos = rec.positions.positions.detach().cpu().numpy()
    image = position_figure(weight, pos, pos, labels=labels, title="recurrent layer")
    plt.imsave(logdir / "positions.png", image)

    delays = rec.delays().detach().cpu().numpy().ravel()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.hist(delays, bins=40, weights=np.abs(weight).ravel())
    ax.set(xlabel="delay (time steps)", ylabel="sum of |w|", title="|w|-weighted delays")
    fig.tight_layout()
    fig.savefig(logdir / "delay_histogram.png", dpi=100)
    plt.close(fig)

    epochs = np.arange(1, len(history["test_acc"]) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    for split in ("train", "test"):
        a.plot(epochs, history[f"{split}_loss"], label=split)
        b.plot(epochs, history[f"{split}_acc"], label=split)
    a.set(xlabel="epoch", ylabel="loss")
    b.set(xlabel="epoch", ylabel="accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(logdir / "learning_curves.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
