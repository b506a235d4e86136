"""How a run stands, as written in its ``status.json`` and ``results.csv``."""

from __future__ import annotations

import enum


class RunStatus(str, enum.Enum):
    """A run's status. A ``str``, so files, JSON and comparisons with plain strings are unchanged."""

    PENDING = "pending"
    """Planned, never started (no ``status.json`` yet)."""
    RUNNING = "running"
    """Training now, or stopped without a word (a killed process); resumed by the next run."""
    DONE = "done"
    """Trained to its last step and evaluated."""
    DIVERGED = "diverged"
    """Stopped because a loss became NaN or infinite; not retried."""
    FAILED = "failed"
    """Raised an error; resumed by the next run."""
    INTERRUPTED = "interrupted"
    """Stopped on request (Ctrl-C, SIGTERM) after a checkpoint; resumed by the next run."""
    OOM = "oom"
    """Ran out of memory; resumed by the next run."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__
    __hash__ = str.__hash__  # equal to the plain string in sets and dicts, on every Python version


FINISHED = (RunStatus.DONE, RunStatus.DIVERGED)
"""Statuses a re-run skips; every other status resumes."""
FAILED = (RunStatus.FAILED, RunStatus.OOM)
"""Statuses reports count as failed."""
UNFINISHED = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.INTERRUPTED)
"""Statuses reports count as unfinished."""
