"""Reading the runs of one or more output directories or run-record files into one pandas table.

Reads what the ledger wrote (``runs/<id>/config.json`` and ``status.json``), keeping the
metrics apart from the configuration, which ``results.csv`` flattens together. A source
that is a file is a ``runs.jsonl`` of run records (:mod:`ganbench.ledger.records`), which an
earlier report wrote. Runs are grouped into *configs*: everything that identifies a run
except its seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ganbench.errors import UserError
from ganbench.ledger.records import unpack_run_records
from ganbench.ledger.runs import RunDirectory
from ganbench.ledger.statuses import RunStatus
from ganbench.ledger.storage import read_json
from ganbench.planning.spec import IDENTITY_FIELDS, with_neutral_params

CONFIG_FIELDS = tuple(name for name in IDENTITY_FIELDS if name != "seed")
"""What makes two runs seeds of one config: the run id's fields without the seed."""
RUN_COLUMNS = ("out", "run_dir", "location", "run_id", "config_id", "architecture", "loss", "dataset", "split",
               "seed", "steps", "batch_size", "status", "step", "wall_seconds", "error")


@dataclass
class RunSet:
    """Every run found, as a table, plus what the table cannot hold."""

    frame: pd.DataFrame
    """One row per run: :data:`RUN_COLUMNS` and one column per metric (NaN where absent)."""
    metric_columns: list[str]
    configs: dict[str, dict[str, Any]]
    """config_id -> the config.json of its first run (all its runs share every field but the seed)."""
    statuses: dict[str, dict[str, Any]]
    """run_id -> its status.json."""
    sources: list[Path]
    notes: list[str] = field(default_factory=list)
    scratch: list[tempfile.TemporaryDirectory] = field(default_factory=list, repr=False)
    """Where run records were unpacked; removed with the RunSet."""


def config_id(config: dict[str, Any]) -> str:
    """A 12-hex-digit hash of the config fields (the run id's recipe without the seed)."""
    identity = {name: config.get(name) for name in CONFIG_FIELDS}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def distinguishing(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``config id -> "key=value ..."``: the fields, hyperparameters and plugin versions in which
    each of ``configs`` differs from the others (empty for a config alone)."""
    flat = {identity: {"steps": config.get("steps"), "batch_size": config.get("batch_size"),
                       "split": config.get("split"), **(config.get("params") or {}),
                       **{f"version:{k}": v for k, v in (config.get("versions") or {}).items()}}
            for identity, config in configs.items()}
    keys = sorted({key for values in flat.values() for key in values})
    differing = [key for key in keys if len({repr(values.get(key)) for values in flat.values()}) > 1]
    return {identity: " ".join(f"{key}={values.get(key)}" for key in differing) for identity, values in flat.items()}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def load_runs(out_dirs: list[Path] | tuple[Path, ...]) -> RunSet:
    """Read every run under each ``OUT/runs`` (or in each ``runs.jsonl``); a run found in two
    sources counts once, from the first that has it."""
    rows: list[dict[str, Any]] = []
    configs: dict[str, dict[str, Any]] = {}
    statuses: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    metric_columns: list[str] = []
    seen: dict[str, Path] = {}
    sources = [Path(out) for out in out_dirs]
    if not sources:
        raise UserError("give at least one output directory of `ganbench run` (e.g. ganbench report results).")
    scratch: list[tempfile.TemporaryDirectory] = []
    for out in sources:
        runs_dir = out / "runs"
        if out.is_file():  # run records written by an earlier report: read as run directories
            scratch.append(tempfile.TemporaryDirectory(prefix="ganbench-records-"))
            runs_dir = Path(scratch[-1].name) / "runs"
            unpack_run_records(out, runs_dir.parent)
        elif not runs_dir.is_dir():
            raise UserError(f"{out} has no runs/ directory; give the --out directory of a `ganbench run` "
                            "or the runs.jsonl of a report.")
        for config_file in sorted(runs_dir.glob("*/config.json")):
            config = read_json(config_file)
            if not isinstance(config, dict) or "run_id" not in config:
                notes.append(f"skipped {config_file.parent}: its config.json is missing or damaged")
                continue
            run_id = config["run_id"]
            if run_id in seen:
                notes.append(f"run {run_id} is in both {seen[run_id]} and {out}; counted once (from {seen[run_id]})")
                continue
            seen[run_id] = out
            # A run from before a setting existed is a seed of the config that has it at its neutral value.
            config["params"] = with_neutral_params(config.get("params") or {})
            status = RunDirectory(config_file.parent).status()
            identity = config_id(config)
            configs.setdefault(identity, config)
            statuses[run_id] = status
            location = f"{out}#{run_id}" if out.is_file() else str(config_file.parent)
            row = {"out": str(out), "run_dir": str(config_file.parent), "location": location, "run_id": run_id,
                   "config_id": identity,
                   **{name: config.get(name) for name in ("architecture", "loss", "dataset", "split", "seed",
                                                          "steps", "batch_size")},
                   "status": status.get("status", RunStatus.PENDING), "step": status.get("step", 0),
                   "wall_seconds": _number(status.get("wall_seconds")), "error": status.get("error", "")}
            metrics = status.get("metrics") or {}
            if row["status"] == RunStatus.DONE:  # only finished runs' figures are final
                for column, value in metrics.items():
                    key = column if column not in RUN_COLUMNS else f"metric:{column}"
                    if key not in metric_columns:
                        metric_columns.append(key)
                    row[key] = _number(value)
            rows.append(row)
    if not rows:
        raise UserError(f"no runs found under {', '.join(str(s) for s in sources)}; "
                        "run `ganbench run --out DIR` first.")
    frame = pd.DataFrame(rows)
    for column in metric_columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["seed"] = frame["seed"].astype(int)
    return RunSet(frame.sort_values(["dataset", "config_id", "seed"], kind="stable").reset_index(drop=True),
                  sorted(metric_columns), configs, statuses, sources, notes, scratch)


def protocols_of(status: dict[str, Any]) -> dict[str, dict[str, str]]:
    """A run's metric protocols as ``column -> {key: value}`` (a plain string becomes ``description``)."""
    protocol = status.get("protocol") or {}
    if not isinstance(protocol, dict):
        return {}
    result = {}
    for column, value in protocol.items():
        if isinstance(value, dict):
            result[column] = {str(k): str(v) for k, v in value.items()}
        else:
            result[column] = {"description": str(value)}
    return result


HARDWARE_KEYS = ("hardware", "device_name", "device")
BARE_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")
"""A torch device string names no hardware model; such a value is not taken as the hardware."""


def recorded_hardware(status: dict[str, Any]) -> str | None:
    """The hardware a run recorded: status ``hardware``, its protocol's ``training_hardware``, then
    (older runs) status ``device_name``/``device`` or a metric protocol's ``device_name``."""
    training = status.get("protocol") if isinstance(status.get("protocol"), dict) else {}
    candidates = [status.get("hardware"), training.get("training_hardware")]
    candidates += [status.get(key) for key in HARDWARE_KEYS]
    candidates += [protocol.get(key) for protocol in protocols_of(status).values() for key in HARDWARE_KEYS]
    for value in candidates:
        if value and not BARE_DEVICE.match(str(value).strip()):
            return str(value)
    return None
