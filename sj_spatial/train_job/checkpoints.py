"""``checkpoint.pt``, written by ``sj-spatial train`` after every epoch: what it holds,
how it is written, read, checked against a run, and resumed from."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .._rng import rng_state, set_rng_state
from ..data._files import atomic_path
from .config import TrainConfig

#: The checkpoint's file name in the logdir.
CHECKPOINT = "checkpoint.pt"
#: What a checkpoint of ``sj-spatial train`` holds.
CHECKPOINT_KEYS = ("model", "optimizers", "epoch", "history", "rng", "args")
#: Options that define the model; a resumed run must use the checkpoint's values.
MODEL_OPTIONS = ("hidden", "dim", "max_delay", "delay_scale", "dt")
#: Options that define the data a run sees (the files, their binning, the subset, the
#: shuffles and the augmentation); a resumed run must use the checkpoint's values too.
DATA_OPTIONS = ("data_root", "duration", "limit", "seed", "augment", "stretch")
#: Options a resumed run changes without a note: ``--epochs`` (to train longer) and those
#: that do not touch the training (``--resume`` itself, where and how it reports).
FREE_OPTIONS = ("epochs", "resume", "logdir", "quiet")


def checkpoint(
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    epoch: int,
    history: dict,
    config: TrainConfig,
    device: torch.device,
    resumes: list[dict] = (),
) -> dict:
    """The checkpoint after ``epoch`` (counted from 0), with the random states of this
    process, the options as strings under ``"args"`` (``"command"``: ``"train"``) and,
    under ``"resumes"``, what each ``--resume`` of the run changed
    (``{"after_epoch": n, "changed": {name: [old, new]}}``)."""
    return {
        "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers],
        "epoch": epoch,
        "history": history,
        "rng": rng_state(device),
        "args": {"command": "train", **{k: str(v) for k, v in asdict(config).items()}},
        "resumes": list(resumes),
    }


def save_checkpoint(state: dict, path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically: through a temporary file next to it,
    flushed to disk and renamed, so readers see the old or the new file, never a part."""
    # Earlier versions wrote through PATH.tmp, which a killed save left behind.
    path.with_name(path.name + ".tmp").unlink(missing_ok=True)
    # Through a file object: torch.save names the records inside the archive after a path
    # it is given, and the temporary name holds the host and process.
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        torch.save(state, file)


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


def check_compatible(state: dict, path: Path, config: TrainConfig) -> dict[str, list[str]]:
    """Check that checkpoint ``state`` (read from ``path``) can go on as ``config``.

    Raises ValueError naming the file, the option and both values when ``config`` has
    other :data:`MODEL_OPTIONS` or :data:`DATA_OPTIONS` than the checkpoint. Returns the
    other options that changed, ``{name: [checkpoint's value, this run's]}`` as strings
    (``--lr``, ``--device``, ...; not :data:`FREE_OPTIONS`), for the run's summary.
    """
    saved = state["args"]
    changed = {}
    for name, value in asdict(config).items():
        if name not in saved or name in FREE_OPTIONS or _same(name, saved[name], value):
            continue
        old, new = _option_text(name, saved[name]), _option_text(name, str(value))
        if name in MODEL_OPTIONS:
            raise ValueError(
                f"checkpoint {path} is of another model: it was written with {old}, this run "
                f"has {new}"
            )
        if name in DATA_OPTIONS:
            raise ValueError(
                f"checkpoint {path} was trained on other data: it was written with {old}, "
                f"this run has {new} (a resumed run keeps its data and model options; "
                "--epochs and the training options may change)"
            )
        changed[name] = [saved[name], str(value)]
    return changed


def _same(name: str, saved: str, value) -> bool:
    """Whether an option's value in a checkpoint (a string) is this run's ``value``; data
    folders compare as the folders they name."""
    if name == "data_root" and value is not None and saved != "None":
        return Path(saved).expanduser().resolve() == Path(value).expanduser().resolve()
    return saved == str(value)


def _option_text(name: str, value: str) -> str:
    """How an option with ``value`` (a string of a checkpoint) reads on the command line."""
    option = "--" + name.replace("_", "-")
    if value in ("True", "False"):
        return option if value == "True" else f"--no-{option[2:]}"
    if value == "None":
        return "the built-in data" if name == "data_root" else f"no {option}"
    return f"{option} {value}"


def resume(
    state: dict,
    path: Path,
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    device: torch.device,
) -> tuple[dict, int]:
    """Restore model, optimisers and random states from checkpoint ``state`` (read from
    ``path``); returns (history, first epoch to run). Raises ValueError naming the file
    when it does not fit. Each group keeps the ``initial_lr`` this run's optimisers were
    built with, so that a resumed run with another ``--lr`` schedules that one."""
    try:
        model.load_state_dict(state["model"])
        for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
            base = [group.get("initial_lr") for group in opt.param_groups]
            opt.load_state_dict(opt_state)
            for group, initial_lr in zip(opt.param_groups, base, strict=True):
                if initial_lr is not None:
                    group["initial_lr"] = initial_lr
    except (RuntimeError, ValueError, KeyError) as exc:
        details = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ValueError(f"checkpoint {path} does not fit this model: {details}") from exc
    set_rng_state(state["rng"], device)
    return state["history"], state["epoch"] + 1
