"""Run one spec in one directory and record how it ended: the only thing executors call.

Whatever happens inside a run (a diverged loss, a plugin that raises, out of memory) ends
as a status in the run's ``status.json``; nothing escapes to stop the rest of the grid,
except an interruption, which is recorded and re-raised so the launcher can stop.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Callable

import torch

from ganbench.config import RunSpec
from ganbench.errors import UserError
from ganbench.ledger import RunDirectory, run_directory
from ganbench.registry import Registry
from ganbench.train import Interrupted, Outcome, train_run


def execute_run(spec: RunSpec, out: Path, *, registry: Registry, device: torch.device,
                data_dir: str | None, cache_dir: Path,
                should_stop: Callable[[], bool] = lambda: False,
                on_progress: Callable[[int, int, float], None] = lambda step, total, rate: None) -> Outcome:
    """Train and evaluate ``spec`` under ``out/runs/<id>/``; record and return the outcome."""
    directory: RunDirectory = run_directory(out, spec)
    directory.log_line(f"start {spec.label} on {device}")
    try:
        outcome = train_run(spec, directory, registry=registry, device=device, data_dir=data_dir,
                            cache_dir=cache_dir, should_stop=should_stop, on_progress=on_progress)
    except Interrupted as stop:
        directory.log_line(f"interrupted: {stop}")
        directory.write_status("interrupted", error=str(stop))
        raise
    except torch.cuda.OutOfMemoryError as error:
        outcome = Outcome("oom", directory.status().get("step", 0), 0.0, error=_one_line(error))
    except UserError as error:
        outcome = Outcome("failed", directory.status().get("step", 0), 0.0, error=str(error))
    except Exception as error:  # a bug in a plugin or in ganbench: record it, keep the grid going
        directory.log_line(traceback.format_exc())
        outcome = Outcome("failed", directory.status().get("step", 0), 0.0,
                          error=f"{type(error).__name__}: {_one_line(error)}")
    directory.log_line(f"end: {outcome.status} at step {outcome.step} {outcome.error}".rstrip())
    fields = {"step": outcome.step, "error": outcome.error, "metrics": outcome.metrics,
              "protocol": outcome.protocol}
    if outcome.wall_seconds:
        fields["wall_seconds"] = outcome.wall_seconds
    directory.write_status(outcome.status, **fields)
    return outcome


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
