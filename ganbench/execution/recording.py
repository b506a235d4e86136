"""Train a run (or a pack of runs) in this process and record how it ended: what every worker calls.

Whatever happens inside a run (a diverged loss, a plugin that raises, out of memory) ends
as a status in the run's ``status.json``; nothing escapes to stop the rest of the grid,
except an interruption, which is recorded and re-raised so the launcher can stop.
Executors reach these through the resident worker processes of :mod:`ganbench.execution.worker`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping, Sequence

import torch

from ganbench.errors import Interrupted, UserError
from ganbench.ledger.runs import RunBusy, RunDirectory, run_directory
from ganbench.ledger.statuses import RunStatus
from ganbench.ledger.storage import remove_temporaries
from ganbench.planning.spec import RunSpec
from ganbench.registry import Registry
from ganbench.training.loop import Outcome, train_run

RUN_LOCK_WAIT_SECONDS = 120.0
"""How long a worker waits for a run that another (dying) worker still holds."""


def execute_run(spec: RunSpec, out: Path, *, registry: Registry, device: torch.device,
                data_dir: str | None, cache_dir: Path,
                should_stop: Callable[[], bool] = lambda: False,
                on_progress: Callable[[int, int, float], None] = lambda step, total, rate: None,
                interruptible: Callable[[], ContextManager[None]] = contextlib.nullcontext,
                on_warning: Callable[[str], None] | None = None,
                placement: Mapping[str, Any] | None = None) -> Outcome:
    """Train and evaluate ``spec`` under ``out/runs/<id>/``; record and return the outcome.

    ``interruptible()`` wraps the phases that may be cut short by a stop request (sampling
    and evaluation); ``on_warning`` hears about damaged files found on resume;
    ``placement`` (slot, GPU, attempt...) is stored in the final status.
    """
    directory = dataclasses.replace(run_directory(out, spec), on_warning=on_warning)
    try:
        with directory.lock(wait_seconds=RUN_LOCK_WAIT_SECONDS):
            return _execute_locked(spec, directory, registry=registry, device=device, data_dir=data_dir,
                                   cache_dir=cache_dir, should_stop=should_stop, on_progress=on_progress,
                                   interruptible=interruptible, placement=dict(placement or {}))
    except RunBusy as busy:  # never write the status of a run another process is training
        return Outcome(RunStatus.RUNNING, directory.status().get("step", 0), 0.0, error=str(busy))


def _execute_locked(spec: RunSpec, directory: RunDirectory, *, registry: Registry, device: torch.device,
                    data_dir: str | None, cache_dir: Path, should_stop: Callable[[], bool],
                    on_progress: Callable[[int, int, float], None],
                    interruptible: Callable[[], ContextManager[None]], placement: dict[str, Any]) -> Outcome:
    _begin(spec, directory, device, placement)
    started = time.time()
    try:
        outcome = train_run(spec, directory, registry=registry, device=device, data_dir=data_dir,
                            cache_dir=cache_dir, should_stop=should_stop, on_progress=on_progress,
                            interruptible=interruptible)
    except Interrupted as stop:
        _record_interrupted(directory, stop, placement, started)
        raise
    except Exception as error:  # noqa: BLE001 - recorded as the run's outcome, the grid goes on
        outcome = _failure(error, directory)
    _record_end(directory, outcome, placement, started)
    return outcome


def execute_pack(specs: Sequence[RunSpec], out: Path, *, registry: Registry, device: torch.device,
                 data_dir: str | None, cache_dir: Path,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_progress: Callable[[RunSpec, int, int, float], None] = lambda spec, step, total, rate: None,
                 interruptible: Callable[[], ContextManager[None]] = contextlib.nullcontext,
                 on_warning: Callable[[str], None] | None = None,
                 placement: Mapping[str, Any] | None = None) -> dict[str, Outcome]:
    """Train ``specs`` together (:mod:`ganbench.training.packing`) and record each run's outcome; ``run_id -> outcome``.

    Each run is recorded exactly as :func:`execute_run` records it. A run another process
    holds is left out (its outcome is ``running``); an error of the pack's training is
    every run's error.
    """
    from ganbench.training.packing import train_packed

    placement = {**(placement or {}), "pack": len(specs)}
    outcomes: dict[str, Outcome] = {}
    with contextlib.ExitStack() as locks:
        packed: list[tuple[RunSpec, RunDirectory]] = []
        for spec in specs:
            directory = dataclasses.replace(run_directory(out, spec), on_warning=on_warning)
            try:
                locks.enter_context(directory.lock(wait_seconds=RUN_LOCK_WAIT_SECONDS))
            except RunBusy as busy:
                outcomes[spec.run_id] = Outcome(RunStatus.RUNNING, directory.status().get("step", 0), 0.0, error=str(busy))
                continue
            _begin(spec, directory, device, placement)
            packed.append((spec, directory))
        if not packed:
            return outcomes
        started = time.time()
        try:
            trained = train_packed([spec for spec, _ in packed], [directory for _, directory in packed],
                                   registry=registry, device=device, data_dir=data_dir, cache_dir=cache_dir,
                                   should_stop=should_stop, on_progress=on_progress, interruptible=interruptible)
        except Interrupted as stop:
            for _, directory in packed:
                _record_interrupted(directory, stop, placement, started)
            raise
        except Exception as error:  # noqa: BLE001 - every run of the pack ends with it
            trained = {spec.run_id: _failure(error, directory) for spec, directory in packed}
        for spec, directory in packed:
            _record_end(directory, trained[spec.run_id], placement, started)
        outcomes.update(trained)
    return outcomes


def _begin(spec: RunSpec, directory: RunDirectory, device: torch.device, placement: Mapping[str, Any]) -> None:
    removed = remove_temporaries(directory.path)
    if removed:
        directory.log_line(f"removed {len(removed)} temporary file(s) of an interrupted write: "
                           f"{', '.join(path.name for path in removed)}")
    where = ", ".join(f"{key} {value}" for key, value in placement.items() if value not in (None, ""))
    directory.log_line(f"start {spec.label} on {device}" + (f" ({where})" if where else ""))


def _record_interrupted(directory: RunDirectory, stop: Interrupted, placement: Mapping[str, Any],
                        started: float) -> None:
    directory.log_line(f"interrupted: {stop}")
    with contextlib.suppress(OSError, UserError):
        directory.write_status(RunStatus.INTERRUPTED, error=str(stop),
                               placement={**placement, "started": started, "ended": time.time()})


def _failure(error: Exception, directory: RunDirectory) -> Outcome:
    """The outcome of a run whose training raised ``error``."""
    step = directory.status().get("step", 0)
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return Outcome(RunStatus.OOM, step, 0.0, error=one_line(error))
    if isinstance(error, UserError):  # bad data, a full disk: the message says what to do
        return Outcome(RunStatus.FAILED, step, 0.0, error=str(error))
    directory.log_line(traceback.format_exc())  # a bug in a plugin or in ganbench: keep the grid going
    return Outcome(RunStatus.FAILED, step, 0.0, error=f"{type(error).__name__}: {one_line(error)}")


def _record_end(directory: RunDirectory, outcome: Outcome, placement: Mapping[str, Any], started: float) -> None:
    directory.log_line(f"end: {outcome.status} at step {outcome.step} {outcome.error}".rstrip())
    fields = {"step": outcome.step, "error": outcome.error, "metrics": outcome.metrics,
              "protocol": outcome.protocol,
              "placement": {**placement, "started": started, "ended": time.time()}}
    if outcome.wall_seconds:
        fields["wall_seconds"] = outcome.wall_seconds
    try:
        directory.write_status(outcome.status, **fields)
    except (OSError, UserError) as error:  # the launcher writes it (see the worker's "end" event)
        directory.log_line(f"could not record the status: {error}")


def one_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
