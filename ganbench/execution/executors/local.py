"""The local executor: one resident worker process per slot of this machine, each pinned to its device.

Slots come from :func:`ganbench.execution.devices.plan_slots`: every selected GPU (or
``runs_per_gpu`` shares of it), or ``workers`` shares of the CPU cores. A free slot takes
the next run (or the next pack of runs, with ``pack``) and hands it to its worker, which
trains it in a fresh fork of itself (:mod:`ganbench.execution.worker`); a worker that died is
replaced by a new one. Each run sees only its slot's GPU (``CUDA_VISIBLE_DEVICES``) and
uses the slot's thread count. When the grid is asked to stop, every worker gets a SIGTERM
(its run checkpoints, then it exits); if this process is interrupted again, they are killed.
"""

from __future__ import annotations

import contextlib
import select
import time
from pathlib import Path
from typing import Any, Callable

from ganbench.errors import UserError
from ganbench.execution.devices import Slot, cpu_cores, plan_slots, visible_gpus
from ganbench.execution.executors.base import GridState, Reporter, RunOptions
from ganbench.execution.executors.process import Worker, WorkerProcess, stop_workers
from ganbench.execution.worker import Job
from ganbench.ledger.statuses import RunStatus
from ganbench.planning.spec import RunSpec

KILL_WAIT_SECONDS = 10.0
CLOSE_WAIT_SECONDS = 10.0
"""How long idle workers get to exit at the end of a grid before they are killed."""


class LocalExecutor:
    """Runs a grid on this machine's GPUs or CPU cores (see the module docstring)."""

    def __init__(self, options: RunOptions, slots: list[Slot] | None = None) -> None:
        self.options = options
        self.slots = slots if slots is not None else plan_slots(
            device=options.device, gpus=options.gpus, runs_per_gpu=options.runs_per_gpu,
            workers=options.workers, threads=options.threads, available_gpus=visible_gpus(), cores=cpu_cores())
        self.workers: dict[str, Worker] = {}
        """``slot name -> `` its resident worker process."""

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def describe(self) -> str:
        slot = self.slots[0]
        where = "GPU(s)" if slot.gpu is not None else "the CPU"
        return (f"{len(self.slots)} worker(s) on {where}, {slot.threads} torch thread(s) each: "
                f"{', '.join(s.name for s in self.slots)}")

    def _job(self, group: tuple[RunSpec, ...], slot: Slot, attempt: int) -> Job:
        return Job(spec=group[0], companions=group[1:], out=str(Path(self.options.out).resolve()),
                   cache_dir=str(Path(self.options.cache_dir).resolve()), data_dir=self.options.data_dir,
                   device=slot.device, threads=slot.threads, disabled=tuple(self.options.disabled),
                   placement={"executor": "local", "slot": slot.name, "gpu": slot.gpu, "attempt": attempt},
                   env=_slot_env(slot))

    def _worker(self, slot: Slot, job: Job) -> Worker:
        """The slot's resident worker, started (again) when it has none or it died."""
        worker = self.workers.get(slot.name)
        if worker is None or not worker.suits(slot.threads, job.env):
            if worker is not None:
                stop_workers([worker], 0.0)
            job.output.parent.mkdir(parents=True, exist_ok=True)
            worker = self.workers[slot.name] = Worker(slot.threads, job.env, output=job.output)
        return worker

    def run(self, specs: list[RunSpec], reporter: Reporter, stop: Callable[[], bool]) -> dict[str, str]:
        state = GridState(specs, self.options, reporter)
        free = list(self.slots)
        running: dict[WorkerProcess, tuple[Slot, tuple[RunSpec, ...], int]] = {}
        stopping = False
        try:
            while state.has_pending() or running:
                if stop() and not stopping:
                    stopping = True
                    for worker in running:
                        worker.terminate()
                while free and state.has_pending() and not stopping:
                    group, attempt = state.next()
                    slot = free.pop(0)
                    job = self._job(group, slot, attempt)
                    worker = WorkerProcess(job, self._worker(slot, job))
                    running[worker] = (slot, group, attempt)
                    where = slot.name + (f", pack of {len(group)}" if len(group) > 1 else "")
                    for spec in group:
                        reporter.started(spec, where)
                if not running:
                    break
                select.select(list(running), [], [], 0.25)
                for worker, (slot, group, attempt) in list(running.items()):
                    by_id = {spec.run_id: spec for spec in group}
                    ended = worker.poll() is not None
                    for event in worker.read_events():
                        if event.get("event") == "progress":
                            spec = by_id.get(event.get("run_id"), group[0])
                            reporter.progress(spec, event["step"], event["total"], event["rate"])
                        elif event.get("event") == "warning":
                            reporter.warning(group[0], event.get("message", ""))
                    if ended:
                        del running[worker]
                        state.settle(group, attempt, worker.result(), stopping)
                        free.append(slot)
                        free.sort(key=self.slots.index)
        finally:
            if running:  # interrupted a second time, or a bug: leave no worker behind
                for worker in running:
                    worker.kill()
                deadline = time.monotonic() + KILL_WAIT_SECONDS
                for worker, (slot, group, attempt) in running.items():
                    if worker.wait(max(0.1, deadline - time.monotonic())) is None:
                        continue
                    for spec in group:
                        with contextlib.suppress(OSError, UserError):
                            state.directory(spec).write_status(RunStatus.INTERRUPTED, error="killed by a second interrupt")
            stop_workers(list(self.workers.values()), CLOSE_WAIT_SECONDS)
            self.workers.clear()
        return state.statuses


def _slot_env(slot: Slot) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": slot.gpu} if slot.gpu is not None else {}
