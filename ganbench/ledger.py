"""The run ledger: one directory per run under ``OUT/runs/<id>/``, and ``OUT/results.csv``.

A run directory holds ``config.json`` (the resolved RunSpec), ``status.json`` (status,
step reached, wall time, final metrics and their protocol), ``metrics.jsonl`` (the
history), ``checkpoint.pt``, ``samples/*.png`` and ``log.txt``. ``results.csv`` is always
rebuilt from the run directories, so it can be deleted or damaged without losing anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ganbench.config import RunSpec
from ganbench.storage import atomic_write, read_json, write_json

FINISHED = ("done", "diverged")
"""Statuses a re-run skips. ``failed``, ``interrupted``, ``oom`` and ``running`` resume."""
STATUSES = ("pending", "running", "done", "diverged", "failed", "interrupted", "oom")


@dataclass(frozen=True)
class RunDirectory:
    """Paths of one run's files."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def previous_checkpoint(self) -> Path:
        return self.path / "checkpoint.prev.pt"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    def status(self) -> dict[str, Any]:
        """The run's status record; ``pending`` when none was written (or it is damaged)."""
        return read_json(self.status_file) or {"status": "pending", "step": 0}

    def write_status(self, status: str, **fields: Any) -> None:
        record = {**self.status(), **fields, "status": status, "updated": time.time()}
        write_json(self.status_file, record)

    def log_line(self, message: str) -> None:
        with open(self.log, "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def run_directory(out: Path, spec: RunSpec) -> RunDirectory:
    """The directory of ``spec`` under ``out``, created with its config.json."""
    directory = RunDirectory(Path(out) / "runs" / spec.run_id)
    directory.samples.mkdir(parents=True, exist_ok=True)
    if read_json(directory.config) != spec.to_json():
        write_json(directory.config, spec.to_json())
    return directory


def results_rows(out: Path) -> list[dict[str, Any]]:
    """One flat row per run directory under ``out/runs``: config, status and final metrics."""
    rows = []
    for config_file in sorted((Path(out) / "runs").glob("*/config.json")):
        config = read_json(config_file)
        if config is None:
            continue
        status = RunDirectory(config_file.parent).status()
        row: dict[str, Any] = {
            "run_id": config["run_id"], "architecture": config["architecture"],
            "loss": config["loss"], "dataset": config["dataset"], "split": config["split"],
            "seed": config["seed"], "steps": config["steps"], "batch_size": config["batch_size"],
            "status": status.get("status"), "step": status.get("step", 0),
            "wall_seconds": status.get("wall_seconds"), "error": status.get("error", ""),
        }
        row.update(_prefixed("", config.get("params", {})))
        row.update(status.get("metrics", {}))
        row.update(_prefixed("protocol.", status.get("protocol", {})))
        row["versions"] = ";".join(f"{k}={v}" for k, v in sorted(config.get("versions", {}).items()))
        rows.append(row)
    return rows


def _prefixed(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in values.items()}


def write_results(out: Path) -> Path:
    """Rebuild ``out/results.csv`` atomically from the run directories; return its path."""
    import pandas as pd

    rows = results_rows(out)
    frame = pd.DataFrame(rows)
    path = Path(out) / "results.csv"
    atomic_write(path, lambda handle: frame.to_csv(handle, index=False), binary=False)
    return path
