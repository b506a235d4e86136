"""Resident worker processes (``python -m ganbench.execution.worker``) and the jobs they train, seen from their launcher.

A :class:`Worker` is started once per slot and trains job after job, each in a fork of
itself (see :mod:`ganbench.execution.worker`), so a run starts in milliseconds, with torch and the
plugins already imported, and still in a process of its own. Jobs go in on the worker's
stdin; events come back as JSON lines on a pipe of their own (a plugin printing to stdout
cannot garble them); the output of a job's process goes to its run's ``output.txt``. A
:class:`WorkerProcess` is one job in a worker: its events, how its process ended, and
how to stop it. Both executors use these classes: the local one for each slot, the Ray
one inside each Ray worker process.
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

from ganbench.execution.executors.base import WorkerResult, output_tail
from ganbench.execution.worker import Job
from ganbench.ledger.runs import RunDirectory
from ganbench.ledger.statuses import RunStatus
from ganbench.ledger.storage import open_append


class Worker:
    """A resident worker process: one slot's torch threads and environment, trains one job at a time."""

    def __init__(self, threads: int, env: dict[str, str] | None = None, output: Path | None = None) -> None:
        """Start it; ``output`` gets what it prints before its first job (an import error, say)."""
        self.threads = threads
        self.env = dict(env or {})
        self.jobs = 0
        """Jobs submitted so far."""
        read_fd, write_fd = os.pipe()
        environment = {**os.environ, **self.env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        # torch.cuda.is_available() by NVML: a plugin that asks at import time must not
        # initialise CUDA in the worker, whose runs are forks of it.
        environment.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        try:
            with open(output if output is not None else os.devnull, "ab") as handle:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "ganbench.execution.worker", "--events-fd", str(write_fd)],
                    stdin=subprocess.PIPE, stdout=handle, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                    env=environment, close_fds=True)
        finally:
            os.close(write_fd)
        self._events = read_fd
        os.set_blocking(read_fd, False)
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def fileno(self) -> int:
        """The events pipe, for ``select``."""
        return self._events

    def alive(self) -> bool:
        return self.process.poll() is None

    def suits(self, threads: int, env: dict[str, str] | None) -> bool:
        """True when it is alive and started with this thread count and environment."""
        return self.alive() and self.threads == threads and self.env == dict(env or {})

    def submit(self, job: Job) -> None:
        """Queue ``job``; a worker that died meanwhile shows in :meth:`alive`."""
        self.jobs += 1
        try:
            self.process.stdin.write(json.dumps(job.to_json()).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def read_events(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call."""
        chunks = []
        while True:
            try:
                chunk = os.read(self._events, 65536)
            except (BlockingIOError, OSError):
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
            except ValueError:  # an empty line, or what a killed run left half-written
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def close(self) -> None:
        """No more jobs: it exits once its current one (if any) has ended."""
        try:
            self.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def terminate(self) -> None:
        """Stop: its running job checkpoints and stops (SIGTERM), then it exits."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            self.process.kill()

    def wait(self, timeout: float) -> int | None:
        """Its exit status, waiting up to ``timeout`` seconds; None if it still runs."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def release(self) -> None:
        """Close the events pipe (after the process is gone)."""
        try:
            os.close(self._events)
        except OSError:
            pass


def stop_workers(workers: list[Worker], wait_seconds: float) -> None:
    """Close every worker, wait up to ``wait_seconds`` in all for them to exit, kill the rest."""
    for worker in workers:
        worker.close()
    deadline = time.monotonic() + wait_seconds
    for worker in workers:
        if worker.wait(max(0.0, deadline - time.monotonic())) is None:
            worker.kill()
            worker.wait(5.0)
        worker.release()


class WorkerProcess:
    """One job (a run or a pack) trained by a :class:`Worker`, and what it has reported so far."""

    def __init__(self, job: Job, worker: Worker) -> None:
        self.job = job
        self.worker = worker
        self.directory = RunDirectory(Path(job.out) / "runs" / job.spec.run_id)
        self.directory.path.mkdir(parents=True, exist_ok=True)
        for spec in job.companions:  # a packed run's output is its pack's: say where it is
            companion = RunDirectory(Path(job.out) / "runs" / spec.run_id)
            companion.path.mkdir(parents=True, exist_ok=True)
            with open_append(companion.output) as output:
                output.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} packed with {job.spec.label}: the "
                             f"worker's output is in runs/{job.spec.run_id}/{self.directory.output.name}\n")
        with open_append(self.directory.output) as output:
            output.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} worker {worker.pid} (job {worker.jobs + 1}) "
                         f"for {job.spec.label}, {json.dumps(dict(job.placement))}\n")
            for spec in job.companions:
                output.write(f"    packed with {spec.label} ({spec.run_id})\n")
        self.ends: dict[str, dict[str, Any]] = {}
        """``run_id -> end event`` of the runs that reported their end."""
        self.pid: int | None = None
        """The job's own process (a fork of the worker), once the worker has reported it."""
        self.returncode: int | None = None
        self.worker_died = False
        """True when the worker itself ended before reporting the job's end."""
        self.started = time.monotonic()
        self._terminated = False
        self._unread: list[dict[str, Any]] = []
        worker.submit(job)

    def fileno(self) -> int:
        """The worker's events pipe, for ``select``."""
        return self.worker.fileno()

    def _pull(self) -> None:
        """Take what the worker reported, keeping it for :meth:`read_events`."""
        for event in self.worker.read_events():
            kind = event.get("event")
            if kind == "forked":
                self.pid = event.get("pid")
            elif kind == "exit":
                self.returncode = int(event.get("returncode", 1))
            elif kind == "end":
                self.ends[event.get("run_id", self.job.spec.run_id)] = event
            self._unread.append(event)

    def read_events(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call (an ``end`` event is also kept in :attr:`ends`)."""
        self._pull()
        events, self._unread = self._unread, []
        return events

    def poll(self) -> int | None:
        """The exit status of the job's process once it ended (the worker's, if the worker died); else None."""
        if self.returncode is None:
            self._pull()
        if self.returncode is None and not self.worker.alive():
            self._pull()
            if self.returncode is None:
                self.worker_died = True
                self.returncode = self.worker.process.returncode
        return self.returncode

    def terminate(self) -> None:
        """Ask the job to checkpoint and stop (SIGTERM to its worker, which exits after it); twice changes nothing."""
        if not self._terminated and self.poll() is None:
            self._terminated = True
            self.worker.terminate()

    def kill(self) -> None:
        """Kill the job's process and its worker at once."""
        if self.poll() is None:
            if self.pid:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.worker.kill()

    def wait(self, timeout: float) -> int | None:
        """The job's exit status, waiting up to ``timeout`` seconds; None if it still runs."""
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            select.select([self], [], [], min(0.2, max(0.0, deadline - time.monotonic())))
        return self.returncode

    def result(self) -> WorkerResult:
        """How the job ended (waits for it)."""
        while self.poll() is None:
            select.select([self], [], [], 0.5)
        ends = dict(self.ends)
        if self.worker_died and not self._terminated:
            # The worker died under it and the run stopped politely: a death, to be tried again.
            ends = {run_id: end for run_id, end in ends.items() if end.get("status") != RunStatus.INTERRUPTED}
        every_end = all(spec.run_id in ends for spec in self.job.specs)
        return WorkerResult(ends=ends, exit_code=self.returncode,
                            output_tail="" if every_end else output_tail(self.directory.output))


def follow(worker: WorkerProcess, should_stop: Callable[[], bool],
           on_event: Callable[[dict[str, Any]], None] = lambda event: None, poll_seconds: float = 0.5) -> WorkerResult:
    """Wait for ``worker``'s job to end, passing on its events and stopping it once ``should_stop()``."""
    while True:
        for event in worker.read_events():
            on_event(event)
        if worker.poll() is not None:
            break
        if should_stop():
            worker.terminate()
        select.select([worker], [], [], poll_seconds)
    for event in worker.read_events():
        on_event(event)
    return worker.result()
