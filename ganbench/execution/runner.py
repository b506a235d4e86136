"""Run a grid: lock the output, skip finished runs, hand the rest to an executor, show progress, collect."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ganbench.errors import UserError
from ganbench.execution.devices import (RunSize, available_memory_bytes, cpu_cores, default_cpu_workers,
                              measure_run_size, visible_gpus)
from ganbench.execution.executors import make_executor
from ganbench.execution.executors.base import STOP_FILE, RunOptions
from ganbench.ledger.runs import RunDirectory, lock_output, write_results
from ganbench.ledger.statuses import FINISHED, RunStatus
from ganbench.ledger.storage import csv_problem, ensure_writable_directory, remove_temporaries
from ganbench.planning.spec import RunSpec
from ganbench.registry import Registry
from ganbench.training.data import load_real_data

__all__ = ["GridSummary", "RunOptions", "StopRequest", "choose_workers", "iter_statuses", "run_grid"]

QUIET_PROGRESS_SECONDS = 30.0
"""With ``--quiet``, a running run's progress is printed at most this often."""


@dataclass
class GridSummary:
    """What happened to each run of a grid."""

    statuses: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    interrupted: bool = False

    @property
    def all_finished(self) -> bool:
        return not self.interrupted and all(s in FINISHED for s in self.statuses.values())


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a polite stop; a second one exits at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> dict[int, Any]:
        return {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}


def choose_workers(runs: list[RunSpec], registry: Registry, options: RunOptions) -> str:
    """Without ``--workers``, a local grid on the CPU gets as many workers as pay; say how many and why.

    Sets ``options.workers`` and ``options.threads`` (see
    :func:`ganbench.execution.devices.default_cpu_workers`) and returns the sentence for the first
    line of output; returns "" and changes nothing when the choice is the user's or the
    grid goes to GPUs or Ray. The choice depends on the machine and on the whole grid
    (not on how many of its runs are left), so a resumed grid trains its runs with the
    thread counts it started with.
    """
    if options.workers is not None or options.executor != "local" or not runs:
        return ""
    if options.device != "cpu" and (options.device != "auto" or visible_gpus()):
        return ""
    sizes: dict[str, RunSize | None] = {}
    for spec in runs:
        key = repr((spec.architecture, spec.dataset, spec.batch_size, sorted(spec.params.items())))
        if key not in sizes:
            dataset = registry.get("dataset", spec.dataset)
            sizes[key] = measure_run_size(registry.get("architecture", spec.architecture),
                                          tuple(dataset.data_shape(spec.params)), spec.params, spec.batch_size)
    known = [size for size in sizes.values() if size is not None]
    largest = max(known, key=lambda size: (size.memory_bytes, size.step_flops)) if known else None
    if largest is not None:
        largest = RunSize(parameters=largest.parameters, memory_bytes=largest.memory_bytes,
                          step_flops=max(size.step_flops for size in known))
    plan = default_cpu_workers(cores=cpu_cores(), runs=len(runs), largest=largest,
                               memory_bytes=available_memory_bytes())
    options.workers, options.threads = plan.workers, plan.threads
    return plan.reason


def check_data(runs: list[RunSpec], registry: Registry, options: RunOptions, console: Console) -> None:
    """Load each dataset of the grid once, so missing data fails before anything trains."""
    seen = set()
    for spec in runs:
        key = (spec.dataset, spec.split)
        if key in seen:
            continue
        seen.add(key)
        data = load_real_data(registry.get("dataset", spec.dataset), spec, options.data_dir, options.cache_dir)
        if data.note:
            console.print(f"[yellow]note:[/yellow] {escape(data.note)}")


class _Progress:
    """The executor's reporter: the grid bar and each running run's step rate (rich), or plain
    lines with ``--quiet``; rebuilds ``results.csv`` whenever a run ends."""

    def __init__(self, console: Console, total: int, quiet: bool, out: Path) -> None:
        self.console, self.total, self.quiet, self.out = console, total, quiet, out
        self.display: Progress | None = None
        self.grid_task: Any = None
        self.run_tasks: dict[str, Any] = {}
        self.started_at: dict[str, float] = {}
        self.printed_at: dict[str, float] = {}

    def __enter__(self) -> "_Progress":
        if not self.quiet:
            self.display = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                     console=self.console, transient=False)
            self.display.__enter__()
            self.grid_task = self.display.add_task("grid", total=self.total, rate="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.display:
            self.display.__exit__(*exc)

    def started(self, spec: RunSpec, where: str) -> None:
        self.started_at[spec.run_id] = time.perf_counter()
        if self.display:
            if spec.run_id not in self.run_tasks:
                self.run_tasks[spec.run_id] = self.display.add_task(
                    escape(f"{spec.label} [{where}]"), total=spec.steps, rate="")
        else:
            self.console.print(f"start {escape(spec.label)} ({spec.run_id}) on {escape(where)}", highlight=False)

    def progress_line_due(self, run_id: str) -> bool:
        now = time.perf_counter()
        if now - self.printed_at.get(run_id, self.started_at.get(run_id, now)) < QUIET_PROGRESS_SECONDS:
            return False
        self.printed_at[run_id] = now
        return True

    def progress(self, spec: RunSpec, step: int, total: int, rate: float) -> None:
        if self.display:
            task = self.run_tasks.get(spec.run_id)
            if task is not None:
                self.display.update(task, completed=step, rate=f"{rate:.1f} steps/s")
        elif self.progress_line_due(spec.run_id):
            self.console.print(f"  {escape(spec.label)}: step {step}/{total}, {rate:.1f} steps/s", highlight=False)

    def warning(self, spec: RunSpec, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {escape(spec.label)} ({spec.run_id}): {escape(message)}",
                           highlight=False)

    def finished(self, spec: RunSpec, status: str, error: str) -> None:
        seconds = time.perf_counter() - self.started_at.get(spec.run_id, time.perf_counter())
        if self.display:
            task = self.run_tasks.pop(spec.run_id, None)
            if task is not None:
                self.display.remove_task(task)
            self.display.advance(self.grid_task)
        else:
            self.console.print(f"end {escape(spec.label)}: {status} in {seconds:.1f}s", highlight=False)
        if error and status not in (RunStatus.DONE, RunStatus.INTERRUPTED):
            self.console.print(f"[red]{escape(spec.label)}: {status}[/red]: {escape(error)}", highlight=False)
        try:
            write_results(self.out)
        except (OSError, UserError) as problem:
            self.console.print(f"[yellow]warning:[/yellow] could not rebuild results.csv: {escape(str(problem))}")


def _tidy_output(out: Path, console: Console) -> None:
    """Clear what an interrupted grid left in ``OUT`` (under its lock) and report damaged files."""
    (out / STOP_FILE).unlink(missing_ok=True)
    remove_temporaries(out)
    problem = csv_problem(out / "results.csv")
    if problem:
        console.print(f"[yellow]warning:[/yellow] {out / 'results.csv'} is damaged ({escape(problem)}); "
                      "rebuilding it from the run directories.")
        write_results(out)


def _unfinished(runs: list[RunSpec], out: Path, summary: GridSummary, console: Console) -> list[RunSpec]:
    """The runs that still need training; records the finished ones in ``summary``."""
    pending = []
    for spec in runs:
        record, damaged = RunDirectory(out / "runs" / spec.run_id).read_status()
        if damaged:
            console.print(f"[yellow]warning:[/yellow] the status file of {escape(spec.label)} ({spec.run_id}) "
                          "is damaged; the run resumes from its last checkpoint.")
        if record["status"] in FINISHED:
            summary.statuses[spec.run_id] = record["status"]
            summary.skipped += 1
        else:
            pending.append(spec)
    return pending


def run_grid(runs: list[RunSpec], registry: Registry, options: RunOptions, console: Console) -> GridSummary:
    """Train every unfinished run of ``runs`` and rebuild ``results.csv``."""
    out = ensure_writable_directory(options.out)
    summary = GridSummary()
    with lock_output(out):
        executor = make_executor(options)
        check_data(runs, registry, options, console)
        _tidy_output(out, console)
        pending = _unfinished(runs, out, summary, console)
        if summary.skipped:
            console.print(f"{summary.skipped} of {len(runs)} runs already finished in {out}; skipping them.")
        stop = StopRequest()
        try:
            if pending:
                console.print(executor.describe(), highlight=False)
                with executor:  # Ray installs signal handlers of its own when it starts: ours go after
                    previous = stop.install()
                    try:
                        with _Progress(console, len(pending), options.quiet, out) as progress:
                            summary.statuses.update(executor.run(pending, progress, stop))
                    finally:
                        for sig, handler in previous.items():
                            signal.signal(sig, handler)
        finally:
            (out / STOP_FILE).unlink(missing_ok=True)
            write_results(out, on_warning=lambda message: console.print(
                f"[yellow]warning:[/yellow] {escape(message)}", highlight=False))
        summary.interrupted = stop.requested
        for spec in pending:  # not started (a stop came first): as the ledger has them
            summary.statuses.setdefault(spec.run_id, RunDirectory(out / "runs" / spec.run_id).status()["status"])
    return summary


def iter_statuses(summary: GridSummary) -> Iterator[tuple[str, int]]:
    """``(status, count)`` pairs, most common first."""
    counts: dict[str, int] = {}
    for status in summary.statuses.values():
        counts[status] = counts.get(status, 0) + 1
    yield from sorted(counts.items(), key=lambda item: -item[1])
