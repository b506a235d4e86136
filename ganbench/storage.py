"""Files on disk: atomic writes, append-only JSON lines, and the results table.

Everything ganbench writes goes through here. A write lands whole or not at all
(temporary file in the same directory, fsync, rename), so a crash or ``kill -9`` at any
moment leaves the previous version of a file, never half of a new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ganbench.errors import UserError


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Create ``path`` through ``write(file)`` on a temporary file, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda handle: handle.write(text), binary=False)


def read_json(path: Path) -> Any | None:
    """Read a JSON file; None when it is missing or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def append_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append one JSON line per record and fsync."""
    lines = "".join(json.dumps(record, sort_keys=True, default=str) + "\n" for record in records)
    if not lines:
        return
    with open(path, "a") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Return the records of a JSON-lines file and how many damaged lines were skipped."""
    records, damaged = [], 0
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            damaged += 1
    return records, damaged


def rewrite_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Atomically replace a JSON-lines file with ``records``."""
    text = "".join(json.dumps(record, sort_keys=True, default=str) + "\n" for record in records)
    atomic_write(path, lambda handle: handle.write(text), binary=False)


def ensure_writable_directory(path: Path) -> Path:
    """Create ``path`` if needed and check that ganbench can write there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".ganbench-write-test-", delete=True)
        probe.close()
    except OSError as error:
        raise UserError(f"cannot write to output directory {path} ({error.strerror}); "
                        "choose another with --out.") from None
    return path
