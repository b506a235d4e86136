"""The Ray executor: each run (or pack of runs, ``--pack``) of the grid is one Ray core task (not Ray Tune).

A task asks Ray for the run's resources (:func:`ganbench.execution.devices.plan_ray_tasks`:
a fraction of a GPU when packing) and hands the run to the same resident worker process
as the local executor uses, one per Ray worker process, started by its first task and
kept for the next ones (Ray reuses its worker processes), so a run starts without
importing torch again, in a fresh fork, and its files, statuses and interruption behave
exactly as locally. This assumes ``OUT`` (and the cache directory) is on a filesystem every node
sees at the same path; the driver reads the results from there.

Ray's own failures (a lost node, a killed task) reach :class:`GridState` as a worker that
died: tried again, or recorded as failed. A stop request creates ``OUT/.stop``, which every
task polls and answers by stopping its worker politely.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

from ganbench.errors import UserError
from ganbench.execution.devices import TaskResources, plan_ray_tasks
from ganbench.execution.executors.base import STOP_FILE, GridState, Reporter, RunOptions, WorkerResult
from ganbench.execution.executors.process import Worker, WorkerProcess, follow
from ganbench.execution.worker import Job
from ganbench.ledger.storage import read_json, write_json
from ganbench.planning.spec import RunSpec

PROGRESS_FILE = "progress.json"
"""``runs/<id>/progress.json``: a running task's latest progress, read by the driver, removed at the end."""
PROGRESS_SECONDS = 2.0

_resident: list[Worker] = []
"""The resident worker of this Ray worker process (at most one), kept between tasks."""


def import_ray() -> Any:
    """The ``ray`` module, or a UserError that says what to install."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, which is not installed; install it with "
                        "pip install 'ganbench[ray]'.") from None
    return ray


def run_task(job_data: dict[str, Any]) -> dict[str, Any]:
    """The body of one Ray task: run the job's worker process on this node, return how it ended."""
    import ray

    gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()]  # Ray also set CUDA_VISIBLE_DEVICES to these
    placement = {**job_data.get("placement", {}), "node": ray.util.get_node_ip_address(),
                 "gpu": ",".join(gpu_ids) or None}
    env = {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids)} if gpu_ids else {}
    job = Job.from_json({**job_data, "device": "cuda:0" if gpu_ids else "cpu", "placement": placement,
                         "env": env})
    stop_file = Path(job.out) / STOP_FILE
    progress_files = {spec.run_id: Path(job.out) / "runs" / spec.run_id / PROGRESS_FILE for spec in job.specs}
    warnings: list[str] = []
    last_progress: dict[str, float] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "warning":
            warnings.append(event.get("message", ""))
        elif event.get("event") == "progress":
            run_id = event.get("run_id", job.spec.run_id)
            if time.monotonic() - last_progress.get(run_id, 0.0) > PROGRESS_SECONDS and run_id in progress_files:
                last_progress[run_id] = time.monotonic()
                with contextlib.suppress(OSError, UserError):
                    write_json(progress_files[run_id], event)

    worker = WorkerProcess(job, _resident_worker(job))
    try:
        result = follow(worker, should_stop=stop_file.exists, on_event=on_event)
    finally:
        if worker.poll() is None:  # the task was cancelled: let the run checkpoint, briefly
            worker.terminate()
            worker.wait(30)
            worker.kill()
        for progress_file in progress_files.values():
            progress_file.unlink(missing_ok=True)
    result.warnings = warnings
    return result.to_json()


def _resident_worker(job: Job) -> Worker:
    """This Ray worker process's resident worker, started (again) when there is none that suits ``job``."""
    if _resident and _resident[0].suits(job.threads, {}):
        return _resident[0]
    for old in _resident:
        old.close()
        old.kill()
        old.wait(5.0)
        old.release()
    _resident.clear()
    job.output.parent.mkdir(parents=True, exist_ok=True)
    _resident.append(Worker(job.threads, output=job.output))
    return _resident[0]


class RayExecutor:
    """Runs a grid as Ray tasks (see the module docstring)."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.ray = import_ray()
        self.started_here = False
        self.in_flight: dict[Any, tuple[tuple[RunSpec, ...], int]] = {}

    def __enter__(self) -> "RayExecutor":
        self.started_here = self._connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        for ref in self.in_flight:  # interrupted a second time: leave no task behind
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self.in_flight.clear()
        if self.started_here:
            self.ray.shutdown()

    def describe(self) -> str:
        where = f"the Ray cluster at {self.options.address}" if self.options.address else "a local Ray instance"
        return f"Ray tasks on {where}"

    def _connect(self) -> bool:
        """Connect to (or start) Ray; True when this process started it."""
        ray = self.ray
        if ray.is_initialized():
            return False
        if self.options.address:
            ray.init(address=self.options.address, log_to_driver=False, logging_level=logging.WARNING)
            return False
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        return True

    def _plan(self) -> tuple[TaskResources, int]:
        """Each task's resources, and how many tasks the cluster runs at once."""
        cluster = self.ray.cluster_resources()
        cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
        largest = max((float(node.get("Resources", {}).get("CPU", 0)) for node in self.ray.nodes()
                       if node.get("Alive")), default=cpus)
        resources = plan_ray_tasks(device=self.options.device, gpus=self.options.gpus,
                                   runs_per_gpu=self.options.runs_per_gpu, workers=self.options.workers,
                                   cluster_cpus=cpus, cluster_gpus=gpus, largest_node_cpus=largest)
        capacity = int(cpus // resources.num_cpus) if resources.num_cpus else 1
        if resources.num_gpus:
            capacity = min(capacity, int(round(gpus * self.options.runs_per_gpu)))
        return resources, max(1, capacity)

    def _job(self, group: tuple[RunSpec, ...], resources: TaskResources, attempt: int) -> Job:
        return Job(spec=group[0], companions=group[1:], out=str(Path(self.options.out).resolve()),
                   cache_dir=str(Path(self.options.cache_dir).resolve()), data_dir=self.options.data_dir,
                   threads=resources.threads, disabled=tuple(self.options.disabled),
                   placement={"executor": "ray", "attempt": attempt})

    def run(self, specs: list[RunSpec], reporter: Reporter, stop: Callable[[], bool]) -> dict[str, str]:
        ray, in_flight = self.ray, self.in_flight
        stop_file = Path(self.options.out) / STOP_FILE
        resources, capacity = self._plan()
        # max_calls=0: a Ray worker process keeps running tasks (GPU tasks too, whose GPU
        # memory belongs to the run's own process), so its resident worker is reused.
        task = ray.remote(max_calls=0)(run_task).options(num_cpus=resources.num_cpus,
                                                         num_gpus=resources.num_gpus, max_retries=0)
        state = GridState(specs, self.options, reporter)
        stopping, shown = False, 0.0
        while state.has_pending() or in_flight:
            if stop() and not stopping:
                stopping = True
                stop_file.touch()
            while state.has_pending() and len(in_flight) < capacity and not stopping:
                group, attempt = state.next()
                in_flight[task.remote(self._job(group, resources, attempt).to_json())] = (group, attempt)
                for spec in group:
                    reporter.started(spec, "ray" + (f", pack of {len(group)}" if len(group) > 1 else ""))
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0.5)
            for ref in done:
                group, attempt = in_flight.pop(ref)
                state.settle(group, attempt, self._result(ref), stopping)
            if time.monotonic() - shown > PROGRESS_SECONDS:
                shown = time.monotonic()
                for spec in (spec for group, _ in in_flight.values() for spec in group):
                    event = read_json(Path(self.options.out) / "runs" / spec.run_id / PROGRESS_FILE)
                    if isinstance(event, dict) and "step" in event:
                        reporter.progress(spec, event["step"], event.get("total", spec.steps),
                                          event.get("rate", 0.0))
        return state.statuses

    def _result(self, ref: Any) -> WorkerResult:
        try:
            return WorkerResult.from_json(self.ray.get(ref))
        except self.ray.exceptions.RayError as error:
            lines = str(error).strip().splitlines()
            return WorkerResult(ends={}, problem=f"Ray reported {type(error).__name__}"
                                                  + (f": {lines[0]}" if lines else ""))
