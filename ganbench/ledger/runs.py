"""The run ledger: one directory per run under ``OUT/runs/<id>/``, and ``OUT/results.csv``.

A run directory holds ``config.json`` (the resolved RunSpec), ``status.json`` (status,
step reached, wall time, final metrics and their protocol), ``metrics.jsonl`` (the
history), ``checkpoint.pt`` (and ``checkpoint.prev.pt``), ``samples/*.png``, ``log.txt``
and ``output.txt`` (what the worker process printed). ``results.csv`` is always rebuilt
from the run directories, so it can be deleted or damaged without losing anything.

Two locks keep a run from ever training twice: ``OUT/.lock`` is held by the one
``ganbench run`` using ``OUT``, and ``runs/<id>/.lock`` by the one process training that run.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from ganbench.errors import UserError
from ganbench.ledger.statuses import RunStatus
from ganbench.ledger.storage import SymlinkRefused, atomic_write, open_append, open_no_follow, read_json, write_json

if TYPE_CHECKING:
    from ganbench.planning.spec import RunSpec


class RunBusy(Exception):
    """Another process holds a run's lock (it is training that run)."""


@dataclass(frozen=True)
class RunDirectory:
    """Paths of one run's files."""

    path: Path
    on_warning: Callable[[str], None] | None = field(default=None, compare=False)
    """Also told about every :meth:`warn` (the worker forwards them to the console)."""

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

    @property
    def output(self) -> Path:
        """What the worker process printed (stdout and stderr): warnings, a crash's last words."""
        return self.path / "output.txt"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def status(self) -> dict[str, Any]:
        """The run's status record; ``pending`` when none was written (or it is damaged)."""
        return self.read_status()[0]

    def read_status(self) -> tuple[dict[str, Any], bool]:
        """The status record and whether a status file exists but could not be read."""
        record = read_json(self.status_file)
        if isinstance(record, dict) and record.get("status") in tuple(RunStatus):
            return record, False
        return {"status": RunStatus.PENDING, "step": 0}, self.status_file.exists()

    def write_status(self, status: str, **fields: Any) -> None:
        record = {**self.status(), **fields, "status": status, "updated": time.time()}
        write_json(self.status_file, record)

    def log_line(self, message: str) -> None:
        """Append a timestamped line to ``log.txt`` (best effort: a full disk loses the line).

        A symbolic link in place of ``log.txt`` is :class:`ganbench.ledger.storage.SymlinkRefused`.
        """
        try:
            with open_append(self.log) as handle:
                handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except SymlinkRefused:
            raise
        except OSError:
            pass

    def warn(self, message: str) -> None:
        """Log a problem found in the run's files (and how it was handled), and report it."""
        self.log_line(f"warning: {message}")
        if self.on_warning is not None:
            self.on_warning(message)

    @contextlib.contextmanager
    def lock(self, wait_seconds: float = 0.0) -> Iterator[None]:
        """Hold the run's lock while training it; raise :class:`RunBusy` if another process keeps it.

        ``wait_seconds`` covers a worker of an interrupted grid that is still writing its
        last checkpoint when the grid is started again.
        """
        with _exclusive_lock(self.lock_file, wait_seconds) as holder:
            if holder is not None:
                raise RunBusy(f"run {self.path.name} is being trained by {holder}")
            yield


def run_directory(out: Path, spec: RunSpec) -> RunDirectory:
    """The directory of ``spec`` under ``out``, created with its config.json."""
    directory = RunDirectory(Path(out) / "runs" / spec.run_id)
    directory.samples.mkdir(parents=True, exist_ok=True)
    if read_json(directory.config) != spec.to_json():
        write_json(directory.config, spec.to_json())
    return directory


DAMAGED_CONFIG = "config.json is missing or damaged"


def results_rows(out: Path, on_warning: Callable[[str], None] = lambda message: None) -> list[dict[str, Any]]:
    """One flat row per run directory under ``out/runs``: config, status and final metrics.

    A run whose config.json cannot be read keeps a row (its directory name as run id, its
    status and metrics, the error :data:`DAMAGED_CONFIG`) and is reported to ``on_warning``.
    """
    rows = []
    for config_file in sorted((Path(out) / "runs").glob("*/config.json")):
        config = read_json(config_file)
        status = RunDirectory(config_file.parent).status()
        if not isinstance(config, dict) or "run_id" not in config:
            on_warning(f"run {config_file.parent.name}: its {DAMAGED_CONFIG}; results.csv lists it without "
                       f"its settings (restore the file, or delete {config_file.parent} to drop the run)")
            rows.append({"run_id": config_file.parent.name, "status": status.get("status"),
                         "step": status.get("step", 0), "wall_seconds": status.get("wall_seconds"),
                         "error": DAMAGED_CONFIG, **status.get("metrics", {})})
            continue
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


def write_results(out: Path, on_warning: Callable[[str], None] = lambda message: None) -> Path:
    """Rebuild ``out/results.csv`` atomically from the run directories; return its path.

    ``on_warning`` is told about every run directory whose files could not be read. The
    columns are every row's keys in order of first appearance; a missing or non-finite
    figure is an empty cell. Written with the csv module: no slow import that a second
    Ctrl-C could interrupt half-way.
    """
    rows = results_rows(out, on_warning)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(value) for key, value in row.items()})
    path = Path(out) / "results.csv"
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()), binary=False)
    return path


def _cell(value: Any) -> Any:
    """A results.csv cell: empty for a missing or non-finite figure."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def _describe_holder(lock_file: Path) -> str:
    try:
        record = json.loads(lock_file.read_text())
        return (f"process {record['pid']} on {record['host']} (started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record['started']))})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def _exclusive_lock(lock_file: Path, wait_seconds: float = 0.0) -> Iterator[str | None]:
    """Hold an flock on ``lock_file`` and write our process id into it.

    Yields None once held, or a description of the holder when it could not be taken
    within ``wait_seconds``. The kernel drops the lock when the process dies, even by
    ``kill -9``, so a stale lock file never blocks anyone.
    """
    fd = open_no_follow(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield _describe_holder(lock_file)
                    return
                time.sleep(0.2)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        yield None
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def lock_output(out: Path) -> Iterator[None]:
    """Hold ``OUT/.lock`` for a whole ``ganbench run``; a second one on ``OUT`` is a one-line error."""
    with _exclusive_lock(Path(out) / ".lock") as holder:
        if holder is not None:
            raise UserError(f"{out} is in use by another ganbench run, {holder}; wait for it to "
                            "finish (or stop it), or choose another --out.")
        yield
