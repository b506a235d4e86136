"""The resident worker process: it trains the jobs an executor sends it, each in a fork of itself.

Executors do not call :func:`ganbench.execution.recording.execute_run` in their own
process. Each worker slot has a resident worker process, ``python -m
ganbench.execution.worker``, that imports torch, ganbench and the plugins once and then trains the jobs it reads on stdin (one :class:`Job` per JSON
line) one after another, **each in a fork of itself**: the run gets a fresh process, with
the worker's imports already done (milliseconds instead of seconds), and nothing a run
does (seeds, torch's and NumPy's random generators, torch settings, autocast, threads,
plugin globals, monkeypatches) can reach the next one. The worker reports events (JSON
lines: ``forked``, ``started``, ``progress``, ``warning``, ``end``, ``exit``) on the pipe
named by ``--events-fd``; a run that crashes (killed, a segfault, ``os._exit``) costs that
run alone, and the worker goes on with the next job. Workers ignore SIGINT (Ctrl-C reaches
the launcher, which forwards a SIGTERM); SIGTERM, or the launcher dying, makes the running
run checkpoint, mark itself ``interrupted`` and exit, and the worker exit after it.
"""


from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from ganbench.errors import Interrupted
from ganbench.execution.recording import execute_pack, execute_run, one_line
from ganbench.ledger.runs import RunDirectory
from ganbench.ledger.statuses import RunStatus
from ganbench.planning.spec import RunSpec

PARENT_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Job:
    """What a worker is given: one run, where to write it, and where to train it."""

    spec: RunSpec
    out: str
    cache_dir: str
    data_dir: str | None = None
    device: str = "cpu"
    """As the run sees it: ``cpu`` or ``cuda:0`` (its GPU is its only visible one)."""
    threads: int = 1
    disabled: tuple[str, ...] = ()
    """``--disable-plugin`` values, so the worker sees the same plugins as the launcher."""
    placement: Mapping[str, Any] = field(default_factory=dict)
    """Recorded in the run's status: executor, slot or node, GPU, attempt."""
    companions: tuple[RunSpec, ...] = ()
    """Runs packed with ``spec`` (``--pack``): trained together in this worker (:mod:`ganbench.training.packing`)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables of the run's process (``CUDA_VISIBLE_DEVICES`` of its GPU), set
    before anything touches CUDA."""

    @property
    def specs(self) -> tuple[RunSpec, ...]:
        """Every run of the job, ``spec`` first."""
        return (self.spec, *self.companions)

    @property
    def output(self) -> Path:
        """The file that gets the run's stdout and stderr (a pack's go to its first run's)."""
        return RunDirectory(Path(self.out) / "runs" / self.spec.run_id).output

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.to_json(), "out": self.out, "cache_dir": self.cache_dir,
                "data_dir": self.data_dir, "device": self.device, "threads": self.threads,
                "disabled": list(self.disabled), "placement": dict(self.placement),
                "companions": [spec.to_json() for spec in self.companions], "env": dict(self.env)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Job":
        return cls(spec=RunSpec.from_json(data["spec"]), out=data["out"], cache_dir=data["cache_dir"],
                   data_dir=data.get("data_dir"), device=data.get("device", "cpu"),
                   threads=int(data.get("threads", 1)), disabled=tuple(data.get("disabled", ())),
                   placement=dict(data.get("placement", {})),
                   companions=tuple(RunSpec.from_json(spec) for spec in data.get("companions", ())),
                   env={str(key): str(value) for key, value in data.get("env", {}).items()})


class _Events:
    """JSON lines to the launcher; a launcher that went away is not the run's problem."""

    def __init__(self, fd: int | None) -> None:
        self.handle = os.fdopen(fd, "w", buffering=1) if fd is not None else None

    def send(self, event: str, fresh_line: bool = False, **fields: Any) -> None:
        """Write one event; ``fresh_line`` first ends whatever line a killed run left half-written."""
        if self.handle is None:
            return
        try:
            self.handle.write(("\n" if fresh_line else "") + json.dumps({"event": event, **fields}, default=str)
                              + "\n")
        except (OSError, ValueError):
            self.handle = None


class _StopFlag:
    """The run's view of SIGTERM: a flag the training loop polls between steps, and an
    immediate :class:`Interrupted` inside :meth:`interruptible` phases (evaluation, sampling),
    which may run for minutes in plugin code that never polls anything."""

    def __init__(self) -> None:
        self.requested = False
        self._depth = 0
        self._raised = False

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self._depth and not self._raised:
            self._raised = True
            raise Interrupted(f"stopped by {signal.Signals(signum).name} during evaluation or sampling")

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        if self.requested and not self._raised:
            self._raised = True
            raise Interrupted("stopped before evaluation or sampling")
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1


def _watch_parent(parent: int) -> None:
    """Stop politely when the worker that forked this run dies (``kill -9`` of the worker or its launcher)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="ganbench-parent-watch", daemon=True).start()


def _device(job: Job, warn: Callable[[str], None]) -> torch.device:
    device = torch.device(job.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        # Ray can hand out GPUs torch cannot use (a fake GPU resource, a driver problem).
        warn(f"this run was given GPU {job.placement.get('gpu')} but torch sees no CUDA device; "
             "training on the CPU")
        return torch.device("cpu")
    return device


def run_job(job: Job, events: _Events, stop: _StopFlag) -> None:
    """Train the job's run (or pack) in this process and send an ``end`` event for each of its runs."""
    events.send("started", pid=os.getpid())
    torch.set_num_threads(job.threads)
    with contextlib.suppress(RuntimeError):  # already set by an earlier parallel region
        torch.set_num_interop_threads(job.threads)

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)
        events.send("warning", message=message)

    directories = {spec.run_id: RunDirectory(Path(job.out) / "runs" / spec.run_id) for spec in job.specs}

    def send_ends(status: str, error: str) -> None:
        for run_id, directory in directories.items():
            record = directory.status()
            events.send("end", run_id=run_id, status=status, step=record.get("step", 0), error=error,
                        recorded=record.get("status") == status)

    try:
        from ganbench.registry import get_registry

        device = _device(job, warn)
        common = dict(registry=get_registry(job.disabled), device=device, data_dir=job.data_dir,
                      cache_dir=Path(job.cache_dir), should_stop=stop, interruptible=stop.interruptible,
                      on_warning=warn, placement={**job.placement, "device": str(device), "threads": job.threads})
        if job.companions:
            outcomes = execute_pack(job.specs, Path(job.out), **common, on_progress=lambda spec, step, total, rate:
                                    events.send("progress", run_id=spec.run_id, step=step, total=total, rate=rate))
        else:
            outcomes = {job.spec.run_id: execute_run(
                job.spec, Path(job.out), **common, on_progress=lambda step, total, rate: events.send(
                    "progress", run_id=job.spec.run_id, step=step, total=total, rate=rate))}
    except Interrupted as interruption:
        send_ends(RunStatus.INTERRUPTED, str(interruption))
        return
    except BaseException as error:  # noqa: BLE001 - outside execute_run: say so, let the launcher record it
        traceback.print_exc()
        for run_id, directory in directories.items():
            events.send("end", run_id=run_id, status=RunStatus.FAILED, step=directory.status().get("step", 0),
                        error=f"{type(error).__name__}: {one_line(error)}", recorded=False)
        return
    for run_id, outcome in outcomes.items():
        recorded = outcome.status == RunStatus.RUNNING or directories[run_id].status().get("status") == outcome.status
        events.send("end", run_id=run_id, status=outcome.status, step=outcome.step, error=outcome.error,
                    wall_seconds=outcome.wall_seconds, recorded=recorded)


PRELOADED_MODULES = ("ganbench.training.packing", "ganbench.training.pictures", "ganbench.evaluation.features",
                     "ganbench.evaluation.samples", "matplotlib.pyplot", "torchvision.utils", "scipy.linalg")
"""Imported once by the worker, so that no run pays for them (its sample pictures, its metrics)."""


def _preload() -> None:
    """Import what runs use (best effort: a run imports what is missing itself), touching no device.

    Nothing here may start torch's thread pools or initialise CUDA: the worker forks after it.
    """
    import importlib

    with contextlib.suppress(Exception):
        import matplotlib

        matplotlib.use("Agg")
    for name in PRELOADED_MODULES:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


class _Worker:
    """The resident worker: reads jobs on stdin and trains each in a fork of itself (see the module docstring)."""

    def __init__(self, events_fd: int | None) -> None:
        self.events = _Events(events_fd)
        self.launcher = os.getppid()
        self.stopping = False
        self.child: int | None = None
        self._pending = b""

    def handle_sigterm(self, signum: int, frame: Any) -> None:
        self.stopping = True
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signal.SIGTERM)

    def launcher_gone(self) -> bool:
        return os.getppid() != self.launcher

    def next_job(self) -> Job | None:
        """The next job on stdin; None at its end, on SIGTERM or when the launcher is gone."""
        while b"\n" not in self._pending:
            if self.stopping or self.launcher_gone():
                return None
            ready, _, _ = select.select([0], [], [], PARENT_CHECK_SECONDS)
            if ready:
                chunk = os.read(0, 1 << 16)
                if not chunk:  # stdin closed: no more jobs (the last one may lack its newline)
                    line, self._pending = self._pending, b""
                    return Job.from_json(json.loads(line)) if line.strip() else None
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return Job.from_json(json.loads(line)) if line.strip() else self.next_job()

    def train(self, job: Job) -> None:
        """Train ``job`` in a fork of this process; report its pid and, when it is gone, its exit status."""
        _redirect_output(job.output)
        with contextlib.suppress(Exception):  # the run reports a broken plugin itself
            from ganbench.registry import get_registry

            get_registry(job.disabled)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._run_forked(job)
        self.child = pid
        self.events.send("forked", pid=pid)
        if self.stopping:  # a SIGTERM that arrived while forking
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        returncode = self._wait(pid)
        self.child = None
        self.events.send("exit", fresh_line=True, pid=pid, returncode=returncode)

    def _run_forked(self, job: Job) -> None:
        """The run's own process: train the job, then leave without running anything of the worker's."""
        code = 1
        try:
            stop = _StopFlag()
            signal.signal(signal.SIGTERM, stop.handle)
            stop.requested = self.stopping
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)  # the worker's job queue is not the run's
            os.close(devnull)
            os.environ.update(job.env)
            _watch_parent(os.getppid())
            run_job(job, self.events, stop)
            code = 0
        except BaseException:  # noqa: BLE001 - whatever happens, this process must not return to the worker's loop
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _wait(self, pid: int) -> int:
        """Wait for the run ``pid``; its exit status as ``subprocess`` gives it (negative: killed by that signal)."""
        try:
            handle: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            handle = None
        told = False
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status)
                if not told and self.launcher_gone():  # let the run checkpoint, then leave
                    told, self.stopping = True, True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                if handle is not None:
                    select.select([handle], [], [], PARENT_CHECK_SECONDS)
                else:
                    time.sleep(0.02)
        finally:
            if handle is not None:
                os.close(handle)


def _redirect_output(path: Path) -> None:
    """Send this process's stdout and stderr (and its runs') to ``path``, appending."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:  # a symbolic link planted as output.txt is not followed (the executor refuses it first)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ganbench.execution.worker --events-fd N``: train the jobs on stdin until it closes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    events_fd = int(argv[argv.index("--events-fd") + 1]) if "--events-fd" in argv else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = _Worker(events_fd)
    signal.signal(signal.SIGTERM, worker.handle_sigterm)
    _preload()
    while not worker.stopping:
        job = worker.next_job()
        if job is None:
            break
        worker.train(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
