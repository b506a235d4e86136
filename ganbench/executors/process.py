"""One worker process (``python -m ganbench.worker``) training one run (or a pack), seen from its launcher.

The job goes in on stdin; events come back as JSON lines on a pipe of their own (a
plugin printing to stdout cannot garble them); the worker's stdout and stderr go to the
run's ``output.txt``. Both executors use this class: the local one for each slot, the Ray
one inside each Ray task.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ganbench.executors.base import WorkerResult, output_tail
from ganbench.ledger import RunDirectory
from ganbench.worker import Job


class WorkerProcess:
    """A running worker and what it has reported so far."""

    def __init__(self, job: Job, env: dict[str, str] | None = None) -> None:
        self.job = job
        self.directory = RunDirectory(Path(job.out) / "runs" / job.spec.run_id)
        self.directory.path.mkdir(parents=True, exist_ok=True)
        for spec in job.companions:  # a packed run's output is its pack's: say where it is
            companion = RunDirectory(Path(job.out) / "runs" / spec.run_id)
            companion.path.mkdir(parents=True, exist_ok=True)
            with open(companion.output, "a") as output:
                output.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} packed with {job.spec.label}: the "
                             f"worker's output is in runs/{job.spec.run_id}/{self.directory.output.name}\n")
        self.ends: dict[str, dict[str, Any]] = {}
        """``run_id -> end event`` of the runs that reported their end."""
        self.started = time.monotonic()
        self._buffer = b""
        read_fd, write_fd = os.pipe()
        environment = {**os.environ, **(env or {}),
                       "OMP_NUM_THREADS": str(job.threads), "MKL_NUM_THREADS": str(job.threads)}
        with open(self.directory.output, "ab") as output:
            output.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} worker for {job.spec.label}, "
                         f"{json.dumps(dict(job.placement))}\n".encode())
            for spec in job.companions:
                output.write(f"    packed with {spec.label} ({spec.run_id})\n".encode())
            output.flush()
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "ganbench.worker"], stdin=subprocess.PIPE, stdout=output,
                    stderr=subprocess.STDOUT, pass_fds=(write_fd,), env=environment, close_fds=True)
            finally:
                os.close(write_fd)
        self._events = read_fd
        os.set_blocking(read_fd, False)
        try:
            self.process.stdin.write(json.dumps({**job.to_json(), "events_fd": write_fd}).encode())
            self.process.stdin.close()
        except BrokenPipeError:  # it died at once; poll() and result() tell how
            pass
        self._terminated = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def fileno(self) -> int:
        """The events pipe, for ``select``."""
        return self._events

    def read_events(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call (an ``end`` event is also kept in :attr:`end`)."""
        chunks = []
        while True:
            try:
                chunk = os.read(self._events, 65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        self._buffer += b"".join(chunks)
        *lines, self._buffer = self._buffer.split(b"\n")
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "end":
                self.ends[event.get("run_id", self.job.spec.run_id)] = event
            events.append(event)
        return events

    def poll(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        """Ask the worker to checkpoint and stop (SIGTERM); asking twice changes nothing."""
        if not self._terminated and self.process.poll() is None:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def result(self) -> WorkerResult:
        """How the finished worker ended (call after :meth:`poll` returned its exit status)."""
        self.process.wait()
        self.read_events()
        os.close(self._events)
        every_end = all(spec.run_id in self.ends for spec in self.job.specs)
        return WorkerResult(ends=dict(self.ends), exit_code=self.process.returncode,
                            output_tail="" if every_end else output_tail(self.directory.output))


def follow(worker: WorkerProcess, should_stop: Callable[[], bool],
           on_event: Callable[[dict[str, Any]], None] = lambda event: None, poll_seconds: float = 0.5) -> WorkerResult:
    """Wait for ``worker`` to end, passing on its events and stopping it once ``should_stop()``."""
    while worker.poll() is None:
        select.select([worker], [], [], poll_seconds)
        for event in worker.read_events():
            on_event(event)
        if should_stop():
            worker.terminate()
    return worker.result()
