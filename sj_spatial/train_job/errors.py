"""The one error a job raises for a user's mistake."""

from __future__ import annotations


class JobError(ValueError):
    """A mistake in a job's options, data, device or logdir, found before any file is
    written (or, for the data, before training). The message is one line that names the
    option; ``sj-spatial`` prints it as ``sj-spatial COMMAND: error: MESSAGE`` and exits
    with status 1, while Python callers catch it as a ``ValueError``."""
