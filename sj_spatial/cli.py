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

This module is the command line: the options, :func:`main` and its one-line errors. The
job itself is in ``sj_spatial/train_job/`` (recipe, checkpoints, report).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

import torch

from . import __version__
from .export_job import export_run, report_lines
from .train_job.checkpoints import load_checkpoint
from .train_job.config import DATA_ROOT_DEFAULTS, TrainConfig
from .train_job.errors import JobError
from .train_job.report import summary_table
from .train_job.run import TrainingInterrupted, train

__all__ = ["load_checkpoint", "main", "make_parser", "summary_table", "train"]


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


def _below_one(text: str) -> float:
    """The argparse ``type=`` of ``--stretch``: a number in ``[0, 1)``."""
    value = _nonnegative(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be < 1, got {text}")
    return value


def _threads_option(text: str) -> int | None:
    """The argparse ``type=`` of ``--threads``: ``auto`` (None) or an integer >= 1."""
    return None if text == "auto" else _count(text)


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
    """The parser of ``sj-spatial``; its ``train`` options are the fields of
    :class:`~sj_spatial.train_job.config.TrainConfig`, with the same defaults; those of
    :data:`~sj_spatial.train_job.config.DATA_ROOT_DEFAULTS` parse to None when not given
    (``TrainConfig.from_options`` resolves them)."""
    defaults = TrainConfig()

    def default(name: str) -> str:
        return f"default: {getattr(defaults, name)}; {DATA_ROOT_DEFAULTS[name]} with --data-root"

    parser = _Parser(prog="sj-spatial", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sj-spatial {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train_command = commands.add_parser(
        "train",
        help="train the recurrent spatial model on SHD (default: built-in data)",
        description="Train 700 -> recurrent LIF with spatial delays -> 20 leaky readouts.",
        formatter_class=_HelpFormatter,
    )
    add = train_command.add_argument
    add(
        "--data-root",
        type=Path,
        default=defaults.data_root,
        help="folder with shd_train.h5 and shd_test.h5 (default: built-in SHD-format data)",
    )
    add("--epochs", type=_count, help=f"number of training epochs ({default('epochs')})")
    add("--dt", type=_positive, default=defaults.dt, help="time step in seconds")
    add("--duration", type=_positive, default=defaults.duration, help="seconds of each sample used")
    add("--dim", type=_count, default=defaults.dim, help="dimension of the position space")
    add(
        "--max-delay", type=_natural, default=defaults.max_delay, help="longest delay in time steps"
    )
    add(
        "--delay-scale",
        type=_nonnegative,
        default=defaults.delay_scale,
        help="time steps per unit of distance; 3 gives initial delays up to ~8 steps",
    )
    add("--hidden", type=_count, default=defaults.hidden, help="number of recurrent neurons")
    add(
        "--batch-size",
        type=_count,
        default=defaults.batch_size,
        help="samples per optimiser step; under torchrun, the global batch over all ranks",
    )
    add("--lr", type=_positive, default=defaults.lr, help="Adam learning rate of weights")
    add(
        "--position-lr",
        type=_positive,
        default=defaults.position_lr,
        help="Adam learning rate of positions",
    )
    add("--clip", type=_nonnegative, default=defaults.clip, help="gradient norm clipping; 0: off")
    add(
        "--wiring-cost",
        type=_nonnegative,
        default=defaults.wiring_cost,
        help="strength of the L1 wiring cost sum |w| * distance; 0: none",
    )
    add(
        "--device",
        type=_device_option,
        default=defaults.device,
        help="cpu, cuda, cuda:N or mps; auto: cuda if available, else cpu",
    )
    add(
        "--backend",
        default=defaults.backend,
        choices=("torch", "cupy"),
        help="implementation of the delayed recurrent product (cupy: CUDA kernels, needs CuPy)",
    )
    add("--logdir", type=Path, default=defaults.logdir, help="folder of the outputs")
    add("--resume", action="store_true", help="continue from LOGDIR/checkpoint.pt")
    add("--seed", type=_natural, default=defaults.seed, help="seed of initialisation and shuffling")
    add(
        "--limit",
        type=_count,
        default=defaults.limit,
        help="use a fixed random subset of this many samples per split (default: all)",
    )
    memory = train_command.add_mutually_exclusive_group()
    memory.add_argument(
        "--tbptt",
        type=_count,
        default=defaults.tbptt,
        metavar="STEPS",
        help="truncated BPTT: gradients stop every STEPS time steps; memory grows with "
        "STEPS instead of the sequence length (docs/long_sequences.md)",
    )
    memory.add_argument(
        "--recompute",
        type=_count,
        default=defaults.recompute,
        metavar="STEPS",
        help="exact gradients with memory bounded like --tbptt: keep the state every STEPS "
        "steps and recompute the chunks in the backward pass (about 2x the time)",
    )
    add(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="the paper's training augmentation: random channel shift (up to 40) of every "
        "sample, plus as many same-class blends per epoch (doubles the epoch); default: on "
        "with --data-root, off on the built-in data",
    )
    add(
        "--stretch",
        type=_below_one,
        default=defaults.stretch,
        help="with --augment, also stretch the time of every sample by a random factor "
        "in [1 - F, 1 + F] (speaking rate; not in the paper); 0: off",
    )
    add(
        "--threads",
        type=_threads_option,
        default=defaults.threads,
        metavar="N",
        help="CPU threads of torch and the kernels; default (auto): the usable CPUs "
        "(affinity, cgroup quota, OMP_NUM_THREADS) less those other processes keep busy, "
        "followed during the run",
    )
    add("--quiet", action="store_true", help="no progress bars")
    export = commands.add_parser(
        "export",
        help="write the model of a finished run as a NIR graph (docs/deploy.md)",
        description="Write a run's model as a NIR graph; print its test accuracy as trained, "
        "with delays rounded to integers, and rounded and clamped to --max-delay-steps.",
        formatter_class=_HelpFormatter,
    )
    export.add_argument("run", type=Path, metavar="RUN", help="a run folder or its checkpoint.pt")
    export.add_argument("--out", type=Path, required=True, help="the NIR file to write (HDF5)")
    export.add_argument(
        "--max-delay-steps", type=_natural, help="the target's longest delay in time steps"
    )
    export.add_argument("--clamp", action="store_true", help="clamp longer delays, do not refuse")
    return parser


#: The exit status of a job stopped by Ctrl-C (SIGINT), as shells report it.
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run ``sj-spatial`` with ``argv``. A user's mistake (an option, the data, the device,
    the logdir) ends as one line ``sj-spatial COMMAND: error: MESSAGE`` on stderr and a
    SystemExit with a non-zero status (2 for options argparse rejects, else 1); Ctrl-C as
    one line that says how to continue, with status 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        prog = f"{parser.prog} {args.command}"
        try:
            summary = train(TrainConfig.from_options(args))
        except JobError as exc:
            message = _one_line(exc)
            print(f"{prog}: error: {message}", file=sys.stderr)
            raise _Reported(message) from None
        except KeyboardInterrupt as exc:
            message = _interrupted(exc, parser.prog, argv)
            print(f"{prog}: {message}", file=sys.stderr)
            raise _Reported(message, INTERRUPTED) from None
        if summary is not None:
            print(summary_table(summary))
    if args.command == "export":
        try:
            report = export_run(args.run, args.out, args.max_delay_steps, args.clamp)
        except (ValueError, ImportError) as exc:
            print(f"{parser.prog} export: error: {_one_line(exc)}", file=sys.stderr)
            raise _Reported(_one_line(exc)) from None
        print(report_lines(report))
    return 0


def _interrupted(exc: KeyboardInterrupt, prog: str, argv: list[str]) -> str:
    """The line that reports Ctrl-C: where the job stopped and how to continue."""
    if not isinstance(exc, TrainingInterrupted):
        return "interrupted before training began; nothing was saved"
    where = f"interrupted during epoch {exc.epoch} of {exc.epochs}"
    if exc.checkpoint is None:
        return f"{where}, before any epoch was saved; nothing to resume"
    again = argv if "--resume" in argv else [*argv, "--resume"]
    return f"{where}; {exc.checkpoint} is intact: continue with {prog} {shlex.join(again)}"


if __name__ == "__main__":
    sys.exit(main())
