"""What every executor shares: the grid's options, how an attempt ended, and what to do next.

An executor hands each attempt at a run to a worker (which trains it in a process of its
own, :mod:`ganbench.execution.worker`) and gets back a :class:`WorkerResult`. :class:`GridState` decides the rest the same way for every
executor: a worker that reported an ``end`` event is settled (its Python errors are not
retried: they would fail the same way again); a worker that died without one (killed,
``os._exit``, a segfault, a lost Ray node) is tried again up to ``retries`` times and then
recorded as ``failed`` with how it died.
"""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from ganbench.errors import UserError
from ganbench.ledger.runs import RunDirectory
from ganbench.ledger.statuses import FINISHED, RunStatus
from ganbench.planning.spec import RunSpec

STOP_FILE = ".stop"
"""``OUT/.stop``: created when the grid is asked to stop, for workers on other machines (Ray)."""
OUTPUT_TAIL_CHARACTERS = 2000


@dataclass
class RunOptions:
    """Where and how a grid runs (none of this changes a run's id)."""

    out: Path
    cache_dir: Path
    data_dir: str | None = None
    device: str = "auto"
    quiet: bool = False
    executor: str = "local"
    address: str | None = None
    """Ray: the cluster to connect to; None starts a local Ray instance."""
    workers: int | None = None
    """CPU runs at once (the cores are divided between them)."""
    threads: int | None = None
    """torch threads of each CPU worker; None: the cores divided evenly between the workers."""
    gpus: list[int] | None = None
    """Local: the GPUs to use (torch indices); None: all visible ones."""
    runs_per_gpu: int = 1
    retries: int = 1
    """How often a run whose worker died is tried again."""
    pack: int = 1
    """Runs trained together per worker as one stacked model (:mod:`ganbench.training.packing`)."""
    disabled: tuple[str, ...] = ()
    """``--disable-plugin`` values, passed on to every worker."""


@dataclass
class WorkerResult:
    """How one attempt at a run ended, as seen by its launcher."""

    ends: dict[str, dict[str, Any]]
    """``run_id -> `` the worker's ``end`` event of that run (status, step, error, recorded);
    a run is missing when the worker died before reporting its end."""
    exit_code: int | None = None
    """The process's exit status (negative: killed by that signal); None when unknown."""
    output_tail: str = ""
    problem: str = ""
    """What the executor saw instead of an exit (a Ray error), if anything."""
    warnings: list[str] = field(default_factory=list)

    def death(self) -> str:
        """A sentence on how the worker died, with its last words."""
        if self.problem:
            how = self.problem
        elif self.exit_code is not None and self.exit_code < 0:
            how = f"killed by {_signal_name(-self.exit_code)}"
        elif self.exit_code is not None:
            how = f"exited with code {self.exit_code} without reporting an end"
        else:
            how = "vanished"
        last = [line for line in self.output_tail.strip().splitlines() if line.strip()]
        return how + (f"; its last output: {last[-1].strip()}" if last else "")

    def to_json(self) -> dict[str, Any]:
        return {"ends": self.ends, "exit_code": self.exit_code, "output_tail": self.output_tail,
                "problem": self.problem, "warnings": self.warnings}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WorkerResult":
        return cls(ends=dict(data.get("ends", {})), exit_code=data.get("exit_code"),
                   output_tail=data.get("output_tail", ""),
                   problem=data.get("problem", ""), warnings=list(data.get("warnings", [])))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Reporter(Protocol):
    """What an executor tells the progress display."""

    def started(self, spec: RunSpec, where: str) -> None: ...

    def progress(self, spec: RunSpec, step: int, total: int, rate: float) -> None: ...

    def warning(self, spec: RunSpec, message: str) -> None: ...

    def finished(self, spec: RunSpec, status: str, error: str) -> None: ...


class Executor(Protocol):
    """Runs a grid's pending runs; see :mod:`ganbench.execution.executors`.

    Used as a context manager around :meth:`run`: entering connects to whatever the
    executor needs (a Ray cluster) before the launcher installs its signal handlers, and
    leaving releases it, stopping whatever still runs.
    """

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc: Any) -> None: ...

    def describe(self) -> str:
        """One line on where the runs go (shown before they start)."""
        ...

    def run(self, specs: list[RunSpec], reporter: Reporter, stop: Callable[[], bool]) -> dict[str, str]:
        """Train ``specs`` until done or ``stop()``; return ``run_id -> status`` of those that ended."""
        ...


class GridState:
    """The runs still to start (in packs of ``options.pack``), their attempts, and the statuses of those that ended."""

    def __init__(self, specs: list[RunSpec], options: RunOptions, reporter: Reporter) -> None:
        from ganbench.training.packing import plan_packs

        self.queue: deque[tuple[tuple[RunSpec, ...], int]] = deque(
            (group, 1) for group in plan_packs(specs, options.pack))
        self.options = options
        self.reporter = reporter
        self.statuses: dict[str, str] = {}

    def has_pending(self) -> bool:
        return bool(self.queue)

    def next(self) -> tuple[tuple[RunSpec, ...], int]:
        """The next runs to start in one worker (one, or a pack) and their attempt number (1 for the first)."""
        return self.queue.popleft()

    def directory(self, spec: RunSpec) -> RunDirectory:
        return RunDirectory(Path(self.options.out) / "runs" / spec.run_id)

    def settle(self, group: tuple[RunSpec, ...], attempt: int, result: WorkerResult, stopping: bool) -> None:
        """Record how each run of an attempt ended, or queue again those whose worker died first."""
        for message in result.warnings:
            self.reporter.warning(group[0], message)
        again = [spec for spec in group if not self._settle_one(spec, attempt, result, stopping)]
        if again:
            self.queue.append((tuple(again), attempt + 1))

    def _settle_one(self, spec: RunSpec, attempt: int, result: WorkerResult, stopping: bool) -> bool:
        """Record how ``spec`` ended; False when it is to be tried again."""
        directory = self.directory(spec)
        end = result.ends.get(spec.run_id)
        if end is not None:
            status, error = end.get("status", RunStatus.FAILED), end.get("error", "")
            if not end.get("recorded", True):
                self._record(spec, directory, status, step=end.get("step", 0), error=error)
        elif directory.status().get("status") in FINISHED:  # it died after recording its end
            status, error = directory.status()["status"], directory.status().get("error", "")
        elif stopping:
            status, error = RunStatus.INTERRUPTED, f"the worker process was stopped: {result.death()}"
            self._record(spec, directory, status, error=error)
        elif attempt <= self.options.retries:
            directory.log_line(f"worker process died ({result.death()}); trying again")
            self.reporter.warning(spec, f"the worker process died ({result.death()}); trying again "
                                        f"(attempt {attempt + 1} of {self.options.retries + 1})")
            return False
        else:
            status = RunStatus.FAILED
            error = f"the worker process died on each of {attempt} attempt(s); last: {result.death()}"
            self._record(spec, directory, status, error=error, attempts=attempt)
        self.statuses[spec.run_id] = status
        self.reporter.finished(spec, status, error)
        return True

    def _record(self, spec: RunSpec, directory: RunDirectory, status: str, **fields: Any) -> None:
        directory.log_line(f"end: {status} {fields.get('error', '')}".rstrip())
        try:
            directory.write_status(status, **fields)
        except (OSError, UserError) as error:
            self.reporter.warning(spec, f"could not record status {status!r} in {directory.status_file}: {error}")


def output_tail(path: Path) -> str:
    """The end of a worker's output file (where a crash's traceback lands)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - OUTPUT_TAIL_CHARACTERS))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""
