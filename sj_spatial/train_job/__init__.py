"""The main job, ``sj-spatial train``, in pieces; ``sj_spatial/cli.py`` parses the options.

- ``config.py``: :class:`TrainConfig`, the settings of one run.
- ``checks.py``: what is checked before any file is written (world, device, backend,
  logdir, data folder).
- ``recipe.py``: the data, model, optimiser, learning-rate schedule and training step.
- ``checkpoints.py``: ``checkpoint.pt``: save, load, check and resume.
- ``report.py``: the summary, its table and the figures.
- ``run.py``: the job in order, from the checks to the last file.
- ``errors.py``: :class:`JobError`, what the job raises for a user's mistake.
- ``loop.py``: :func:`fit`, the epoch loop every training runs, with its callbacks.

The extension points are :func:`train`'s factories, loss and callbacks, and :func:`fit`
for a training that is not the job's (another model, data or report).
"""

from .errors import JobError
from .loop import Callback, CosineDecay, EpochRecord, LoadAwareThreads, fit
from .run import train

__all__ = [
    "Callback",
    "CosineDecay",
    "EpochRecord",
    "JobError",
    "LoadAwareThreads",
    "fit",
    "train",
]
