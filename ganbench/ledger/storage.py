"""Files on disk: atomic writes, append-only JSON lines, and the checks made on resume.

Everything ganbench writes goes through here. A write lands whole or not at all
(temporary file in the same directory, fsync, rename), so a crash or ``kill -9`` at any
moment leaves the previous version of a file, never half of a new one. A full disk is a
:class:`DiskFullError` that names the file, never a half-written one.

No write follows a symbolic link: whole files are renamed into place (which replaces a
link, never its target) and appended or locked files are opened with ``O_NOFOLLOW``, so a
link planted in a shared results directory cannot make ganbench overwrite the file it
points to; it is a :class:`SymlinkRefused` error naming the link instead.

JSON is strict (RFC 8259): a non-finite float (NaN, ±infinity: a figure that could not
be computed) is written as ``null``, so ``jq`` and strict parsers read every file.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping

from ganbench.errors import UserError

TEMPORARY_SUFFIX = ".tmp"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class SymlinkRefused(UserError):
    """A file ganbench writes in place (log, lock, JSON lines) is a symbolic link; nothing was written."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is a symbolic link; ganbench does not write through links in its output "
                         "directory. Remove the link (or choose another --out), then run the command again")
        self.path = Path(path)


class DiskFullError(UserError):
    """The disk (or quota) filled up while ganbench wrote a file; the file was left as it was."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no space left on device while writing {path}; free some space, then run "
                         "the same command again to resume")
        self.path = Path(path)


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def _new_file_mode() -> int:
    """The permissions ``open()`` would give a new file (mkstemp's 0600 would hide results from
    the other users of a shared results directory)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True, *,
                 keep_previous: Path | None = None) -> None:
    """Create ``path`` through ``write(file)`` on a temporary file, then rename it into place.

    With ``keep_previous``, the file being replaced is first renamed to that path, so the
    last two versions survive (a checkpoint and the one before it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=TEMPORARY_SUFFIX)
    try:
        os.fchmod(fd, _new_file_mode())
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            raise DiskFullError(path) from error
        raise
    _fsync_directory(path.parent)


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)``; :class:`SymlinkRefused` when ``path`` is a link."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SymlinkRefused(Path(path)) from None
        raise


def open_append(path: Path, binary: bool = False) -> IO[Any]:
    """Open ``path`` for appending (created if missing) without following a symbolic link."""
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _new_file_mode())
    return os.fdopen(fd, "ab" if binary else "a")


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


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left in ``directory``.

    Only call this while no other process writes there (under the run's or the output
    directory's lock). Returns what was removed.
    """
    removed = []
    for candidate in Path(directory).glob(f".*{TEMPORARY_SUFFIX}"):
        if candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, in nested dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def json_line(record: Mapping[str, Any]) -> str:
    """One strict JSON line (non-finite floats as null), keys sorted, with its newline."""
    return json.dumps(strict_json(record), sort_keys=True, default=str, allow_nan=False) + "\n"


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented, strict JSON (non-finite floats as null)."""
    text = json.dumps(strict_json(data), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text), binary=False)


def read_json(path: Path) -> Any | None:
    """Read a JSON file; None when it is missing or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def append_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append one strict JSON line per record and fsync; on a failure the file is cut back to its old end.

    Non-finite floats are written as ``null``. ``path`` must not be a symbolic link.
    """
    lines = "".join(json_line(record) for record in records)
    if not lines:
        return
    with open_append(path) as handle:
        end = handle.tell()
        try:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as error:
            try:
                handle.truncate(end)
            except OSError:
                pass  # the reader skips a torn last line
            if error.errno in _DISK_FULL:
                raise DiskFullError(Path(path)) from error
            raise


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Return the records of a JSON-lines file and how many damaged lines were skipped."""
    records, damaged = [], 0
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            damaged += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            damaged += 1
    return records, damaged


def rewrite_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Atomically replace a JSON-lines file with ``records``."""
    text = "".join(json_line(record) for record in records)
    atomic_write(path, lambda handle: handle.write(text), binary=False)


def csv_problem(path: Path) -> str | None:
    """Say what is wrong with a CSV table (unreadable, ragged rows), or None when it is intact or absent."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        return f"unreadable ({type(error).__name__})"
    if not rows or not rows[0]:
        return "empty"
    width = len(rows[0])
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            return f"line {number} has {len(row)} fields, the header {width}"
    return None


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
