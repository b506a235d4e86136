"""Run a grid: check the data, skip finished runs, train the rest with progress, collect results."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ganbench.config import RunSpec
from ganbench.devices import resolve_device
from ganbench.errors import UserError
from ganbench.ledger import FINISHED, RunDirectory, write_results
from ganbench.registry import Registry
from ganbench.storage import ensure_writable_directory
from ganbench.train import Interrupted, load_real_data
from ganbench.worker import execute_run


@dataclass
class RunOptions:
    """Where and how a grid runs (none of this changes a run's id)."""

    out: Path
    cache_dir: Path
    data_dir: str | None = None
    device: str = "auto"
    quiet: bool = False


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
            console.print(f"[yellow]note:[/yellow] {data.note}")


@dataclass
class _Progress:
    """Overall grid progress plus the current run's step rate (rich), or plain lines."""

    console: Console
    total: int
    quiet: bool
    progress: Progress | None = None
    grid_task: Any = None
    run_task: Any = None

    def __enter__(self) -> "_Progress":
        if not self.quiet:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                     console=self.console, transient=False)
            self.progress.__enter__()
            self.grid_task = self.progress.add_task("grid", total=self.total, rate="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress:
            self.progress.__exit__(*exc)

    def start_run(self, spec: RunSpec) -> None:
        if self.progress:
            if self.run_task is not None:
                self.progress.remove_task(self.run_task)
            self.run_task = self.progress.add_task(spec.label, total=spec.steps, rate="")
        else:
            self.console.print(f"start {spec.label} ({spec.run_id})")

    def step(self, step: int, total: int, rate: float) -> None:
        if self.progress:
            self.progress.update(self.run_task, completed=step, rate=f"{rate:.1f} steps/s")

    def end_run(self, spec: RunSpec, status: str, seconds: float) -> None:
        if self.progress:
            self.progress.advance(self.grid_task)
        else:
            self.console.print(f"end {spec.label}: {status} in {seconds:.1f}s")


def run_grid(runs: list[RunSpec], registry: Registry, options: RunOptions, console: Console) -> GridSummary:
    """Train every unfinished run of ``runs`` and rebuild ``results.csv``."""
    ensure_writable_directory(options.out)
    device = resolve_device(options.device)
    check_data(runs, registry, options, console)
    summary = GridSummary()
    pending = []
    for spec in runs:
        status = RunDirectory(options.out / "runs" / spec.run_id).status()["status"]
        if status in FINISHED:
            summary.statuses[spec.run_id] = status
            summary.skipped += 1
        else:
            pending.append(spec)
    if summary.skipped:
        console.print(f"{summary.skipped} of {len(runs)} runs already finished in {options.out}; skipping them.")
    stop = StopRequest()
    previous = stop.install()
    try:
        with _Progress(console, len(pending), options.quiet) as progress:
            for spec in pending:
                progress.start_run(spec)
                started = time.perf_counter()
                try:
                    outcome = execute_run(spec, options.out, registry=registry, device=device,
                                          data_dir=options.data_dir, cache_dir=options.cache_dir,
                                          should_stop=stop, on_progress=progress.step)
                except Interrupted:
                    summary.interrupted = True
                    summary.statuses[spec.run_id] = "interrupted"
                    break
                summary.statuses[spec.run_id] = outcome.status
                progress.end_run(spec, outcome.status, time.perf_counter() - started)
                if outcome.error:
                    console.print(f"[red]{spec.label}: {outcome.status}[/red]: {outcome.error}")
                write_results(options.out)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        write_results(options.out)
    return summary


def iter_statuses(summary: GridSummary) -> Iterator[tuple[str, int]]:
    """``(status, count)`` pairs, most common first."""
    counts: dict[str, int] = {}
    for status in summary.statuses.values():
        counts[status] = counts.get(status, 0) + 1
    yield from sorted(counts.items(), key=lambda item: -item[1])
