"""The settings of one run of ``sj-spatial train``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

#: The recipe for a user's data (``--data-root``), where it differs from the defaults of
#: the short built-in run: longer training, with the paper's augmentation against
#: learning the training speakers by heart (benchmarks/RESULTS.md, "Spoken digits from
#: speech synthesizers"). The learning rate, 1e-2, is the same for both: on the built-in
#: data it brings every seed to the same accuracy ("The main job").
DATA_ROOT_DEFAULTS = {"epochs": 60, "augment": True}


@dataclass(frozen=True)
class TrainConfig:
    """The options of ``sj-spatial train``, one field per option (``--max-delay`` is
    ``max_delay``) with the same default; ranges are checked by the parser. With a
    ``data_root``, options left unset take :data:`DATA_ROOT_DEFAULTS` instead
    (:meth:`from_options`).

    Times: ``dt`` and ``duration`` in seconds; ``max_delay`` in time steps;
    ``delay_scale`` in time steps per unit of distance; ``tbptt`` and ``recompute`` in
    time steps (None: whole sequences); ``limit`` in samples per split (None: all);
    ``data_root`` None: the built-in SHD-format data; ``threads`` None: as many as the
    usable CPUs that other processes leave free, followed during the run.
    """

    data_root: Path | None = None
    epochs: int = 12
    dt: float = 10e-3
    duration: float = 1.0
    dim: int = 2
    max_delay: int = 25
    delay_scale: float = 3.0
    hidden: int = 128
    batch_size: int = 64
    lr: float = 1e-2
    position_lr: float = 0.05
    clip: float = 1.0
    wiring_cost: float = 0.0
    device: str = "auto"
    backend: str = "torch"
    logdir: Path = Path("runs/train")
    resume: bool = False
    seed: int = 0
    limit: int | None = None
    tbptt: int | None = None
    recompute: int | None = None
    augment: bool = False
    stretch: float = 0.0
    threads: int | None = None
    quiet: bool = False

    @classmethod
    def from_options(cls, options: object) -> TrainConfig:
        """The config of parsed options: any object with an attribute per field (an
        ``argparse.Namespace``); other attributes are ignored. An option of
        :data:`DATA_ROOT_DEFAULTS` that is None (not given) takes its value there when
        ``data_root`` is set, else the field's default."""
        values = {field.name: getattr(options, field.name) for field in fields(cls)}
        for name, value in DATA_ROOT_DEFAULTS.items():
            if values[name] is None:
                values[name] = value if values["data_root"] is not None else _DEFAULTS[name]
        return cls(**values)

    @property
    def chunks(self) -> tuple[int, bool] | None:
        """``(steps, exact)`` of backpropagation in time chunks (exact: ``--recompute``,
        else ``--tbptt``), or None for whole sequences."""
        if self.recompute:
            return self.recompute, True
        if self.tbptt:
            return self.tbptt, False
        return None


_DEFAULTS = {field.name: field.default for field in fields(TrainConfig)}
