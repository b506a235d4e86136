"""Run records: the part of each run directory a report is made from, in one portable file.

A run directory holds checkpoints and pictures that are too large to publish and too many
to keep; what a comparison needs of it is small: ``config.json``, ``status.json`` and the
history in ``metrics.jsonl``. ``ganbench report`` writes these for every run it compares into
``runs.jsonl`` beside the report (one JSON object per line, one line per run), and accepts
such a file wherever it accepts an output directory. So a published report can be
re-analysed, and merged with runs trained later on another machine (more seeds of the same
configs), after its run directories are gone::

    ganbench report NEW_OUT results/pacgan-table1/runs.jsonl -o results/pacgan-table1

A line is ``{"schema": "ganbench-run-record/1", "run_id": ..., "config": <config.json>,
"status": <status.json>, "history": [<metrics.jsonl lines>]}``. Sample pictures and
checkpoints are not kept: a run read back from records cannot be resumed and contributes
no sample picture to a report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from ganbench.errors import UserError
from ganbench.ledger.runs import RunDirectory
from ganbench.ledger.storage import append_jsonl, atomic_write, json_line, read_json, read_jsonl, write_json

RECORDS_FILE = "runs.jsonl"
"""The name ``ganbench report`` gives the records of the runs it compared."""
RECORD_SCHEMA = "ganbench-run-record/1"
SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""A run id becomes a directory name when records are unpacked: nothing that could leave ``runs/``."""


def run_record(run_dir: Path) -> dict[str, Any]:
    """The record of one run directory (its config, status and full history)."""
    directory = RunDirectory(Path(run_dir))
    config = read_json(directory.config)
    if not isinstance(config, dict) or "run_id" not in config:
        raise UserError(f"{run_dir} has no readable config.json; it cannot be recorded.")
    history, _ = read_jsonl(directory.metrics)
    return {"schema": RECORD_SCHEMA, "run_id": config["run_id"], "config": config,
            "status": directory.status(), "history": history}


def write_run_records(run_dirs: Iterable[Path], path: Path) -> int:
    """Write the records of ``run_dirs`` to ``path`` (replacing it atomically); return how many."""
    lines = [json_line(run_record(run_dir)) for run_dir in run_dirs]
    atomic_write(Path(path), lambda handle: handle.write("".join(lines)), binary=False)
    return len(lines)


def read_run_records(path: Path) -> list[dict[str, Any]]:
    """Every record in ``path``; a line that is not a run record is a one-line :class:`UserError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot read run records {path}: {error.strerror or error}.") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not (isinstance(record, dict) and record.get("schema") == RECORD_SCHEMA
                and isinstance(record.get("config"), dict) and record.get("run_id") == record["config"].get("run_id")
                and isinstance(record["run_id"], str) and SAFE_RUN_ID.fullmatch(record["run_id"])
                and isinstance(record.get("status"), dict) and isinstance(record.get("history"), list)):
            raise UserError(f"{path}, line {number}, is not a ganbench run record ({RECORD_SCHEMA}); give the "
                            f"{RECORDS_FILE} that `ganbench report` wrote, or an output directory of `ganbench run`.")
        records.append(record)
    if not records:
        raise UserError(f"{path} holds no run records; give the {RECORDS_FILE} that `ganbench report` wrote.")
    return records


def unpack_run_records(path: Path, out: Path) -> list[str]:
    """Lay the records of ``path`` out as run directories under ``out/runs`` (config, status and
    history only), so that everything that reads run directories reads them; return the run ids."""
    run_ids: list[str] = []
    for record in read_run_records(path):
        if record["run_id"] in run_ids:  # the same run twice: it counts once, as across directories
            continue
        directory = RunDirectory(Path(out) / "runs" / str(record["run_id"]))
        directory.path.mkdir(parents=True, exist_ok=True)
        write_json(directory.config, record["config"])
        write_json(directory.status_file, record["status"])
        append_jsonl(directory.metrics, record["history"])
        run_ids.append(record["run_id"])
    return run_ids
