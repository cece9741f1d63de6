"""The main job, ``sj-spatial train``, in pieces; ``sj_spatial/cli.py`` parses the options.

- ``config.py``: :class:`TrainConfig`, the settings of one run.
- ``checks.py``: what is checked before any file is written (world, device, backend,
  logdir, data folder).
- ``recipe.py``: the data, model, optimiser, learning-rate schedule and training step.
- ``checkpoints.py``: ``checkpoint.pt``: save, load, check and resume.
- ``report.py``: the summary, its table and the figures.
- ``run.py``: the job in order, from the checks to the last file.
- ``errors.py``: :class:`JobError`, what the job raises for a user's mistake.
"""
