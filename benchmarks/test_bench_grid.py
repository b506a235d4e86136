"""What a grid costs beyond its runs' training and evaluation: the per-run overhead of the local executor.

A grid of 5 short mlp runs on ring8 (the quickstart's model, its metrics and schedule, 100
steps) goes through :class:`ganbench.execution.executors.local.LocalExecutor` with one worker at one
torch thread, as ``ganbench run --workers 1`` on one core would send it. For each run, the launcher's
time from handing it to a worker to recording its end, minus its training (its steps at its
measured steady rate, so the warm-up steps count as training) and its evaluation, is its
overhead: starting a process, imports, loading data, building models, checkpoints, sample
pictures, status files. The first run of a worker also pays for starting the worker
(importing torch and the plugins), which is what every run paid when each had a process of
its own; the ratio of the two is printed with the other ratios.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from bench_support import SHARED_DATA
from ganbench.execution.executors.base import RunOptions
from ganbench.execution.executors.local import LocalExecutor
from ganbench.ledger.runs import RunDirectory
from ganbench.planning.grid import expand, load_preset
from ganbench.planning.spec import RunSpec
from ganbench.registry import get_registry

class LauncherClock:
    """A reporter that notes when the launcher handed each run to a worker and when it recorded its end."""

    def __init__(self) -> None:
        self.handed: dict[str, float] = {}
        self.recorded: dict[str, float] = {}
        self.statuses: dict[str, str] = {}

    def started(self, spec: RunSpec, where: str) -> None:
        self.handed[spec.run_id] = time.perf_counter()

    def progress(self, spec: RunSpec, step: int, total: int, rate: float) -> None:
        pass

    def warning(self, spec: RunSpec, message: str) -> None:
        pass

    def finished(self, spec: RunSpec, status: str, error: str) -> None:
        self.recorded[spec.run_id] = time.perf_counter()
        self.statuses[spec.run_id] = status


def run_overheads(specs: list[RunSpec], out: Path, cache_dir: Path) -> list[float]:
    """Train ``specs`` with one local worker; each run's overhead in seconds, in the order they ran."""
    clock = LauncherClock()
    options = RunOptions(out=out, cache_dir=cache_dir, data_dir=str(SHARED_DATA), device="cpu", workers=1,
                         threads=1, quiet=True)
    LocalExecutor(options).run(specs, clock, stop=lambda: False)
    overheads = []
    for spec in sorted(specs, key=lambda spec: clock.handed[spec.run_id]):
        record = RunDirectory(out / "runs" / spec.run_id).status()
        assert clock.statuses[spec.run_id] == "done", record
        training = spec.steps / record["metrics"]["steps_per_second"]
        evaluation = record["metrics"].get("evaluation_seconds", 0.0)
        overheads.append(clock.recorded[spec.run_id] - clock.handed[spec.run_id] - training - evaluation)
    return overheads


def test_grid_overhead_per_run(benchmark, scale, results, tmp_path):
    runs, steps = (3, 20) if scale.fast else (5, 100)
    grid = load_preset("quickstart").replace(losses=["ns"], datasets=["ring8"], seeds=list(range(runs)),
                                             steps=steps, metrics=["none"] if scale.fast else None)
    specs = expand(grid, get_registry())
    rounds: list[list[float]] = []

    def grid_once(out: Path) -> None:
        rounds.append(run_overheads(specs, out, tmp_path / "cache"))

    counter = iter(range(1_000))
    benchmark.pedantic(grid_once, setup=lambda: ((tmp_path / f"out{next(counter)}",), {}), rounds=1,
                       warmup_rounds=0, iterations=1)
    overheads = rounds[-1]
    first, later = overheads[0], statistics.median(overheads[1:])
    benchmark.group = "grid"
    benchmark.extra_info.update(runs=runs, steps=steps, threads=torch.get_num_threads(),
                                overhead_first_run_seconds=first, overhead_per_run_seconds=later,
                                overheads_seconds=overheads)
    if getattr(benchmark, "stats", None) is not None:  # measuring, not the test command's single pass
        results.notes["grid_overhead_first_run_seconds"] = first
        results.notes["grid_overhead_per_run_seconds"] = later
    assert all(value > -1.0 for value in overheads), overheads  # timings that add up
