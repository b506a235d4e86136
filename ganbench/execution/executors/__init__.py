"""Executors: how a grid's runs are spread over worker processes.

``local`` runs one resident worker process per slot of this machine (a GPU, a share of a
GPU, or a share of the CPU cores); ``ray`` runs each run as a Ray core task on a Ray
cluster, handed to a resident worker of the Ray worker process that runs the task. Both
use the same worker (:mod:`ganbench.execution.worker`), which trains each run in a fresh fork of
itself, and share the retry-and-record rules of :mod:`ganbench.execution.executors.base`, so a run
ends the same way, with the same files, whichever executor ran it.
"""

from __future__ import annotations

from ganbench.errors import UserError
from ganbench.execution.executors.base import Executor, RunOptions

EXECUTORS = ("local", "ray")


def make_executor(options: RunOptions) -> Executor:
    """The executor ``options.executor`` names; a UserError names the choices or the missing package."""
    if options.executor == "local":
        from ganbench.execution.executors.local import LocalExecutor

        return LocalExecutor(options)
    if options.executor == "ray":
        from ganbench.execution.executors.ray import RayExecutor

        return RayExecutor(options)
    raise UserError(f"unknown executor '{options.executor}'; choose one of {', '.join(EXECUTORS)}.")
