"""The local executor end to end: parallel workers, the output lock, re-runs, options.

Every grid runs through the real ``ganbench run`` command in a subprocess of its own
session, with bounded timeouts, so a test that goes wrong leaves no process behind. The
helpers and the fault-injection plugins here are shared with ``test_faults.py`` and
``test_ray.py``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

TIMEOUT_SECONDS = 180
SMALL = ["--archs", "mlp", "--datasets", "ring8", "--metrics", "none", "--batch-size", "64",
         "--set", "mlp_width=32", "--set", "num_points=2000"]
"""A grid cell that trains in a fraction of a second per 10 steps on one core."""
TIMING_COLUMNS = {"wall_seconds", "images_per_second", "steps_per_second", "train_seconds",
                  "peak_memory_mb", "evaluation_seconds"}

FAULT_PLUGINS = '''
"""Fault injection for ganbench's executor tests: each fault fires in the worker process."""

import errno
import os
import signal
import time

import torch
import torch.nn.functional as F

from ganbench import Architecture, Loss, Metric, hookimpl
from ganbench.api import MetricResult

_calls = {"generator_loss": 0}


def first_time(name):
    """True for the first caller across all processes of the test (a file in GANBENCH_FAULT_DIR)."""
    try:
        os.close(os.open(os.path.join(os.environ["GANBENCH_FAULT_DIR"], name), os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


class FaultLoss(Loss):
    """The non-saturating loss; `fault` runs at generator step `fault_step` of this process."""

    defaults = {"optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
                "n_critic": 1, "fault_step": 5, "slow_seconds": 0.0}

    def discriminator_loss(self, real_logits, fake_logits, params):
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def generator_loss(self, fake_logits, real_logits, params):
        _calls["generator_loss"] += 1
        time.sleep(params["slow_seconds"])
        loss = F.softplus(-fake_logits).mean()
        if _calls["generator_loss"] == params["fault_step"]:
            return self.fault(loss)
        return loss

    def fault(self, loss):
        return loss


class NanLoss(FaultLoss):
    name = "nan-at"
    description = "returns NaN at step fault_step"

    def fault(self, loss):
        return loss * float("nan")


class ExitLoss(FaultLoss):
    name = "exit-at"
    description = "the worker process exits (os._exit) at step fault_step"

    def fault(self, loss):
        os._exit(3)


class OomLoss(FaultLoss):
    name = "oom-at"
    description = "raises CUDA out-of-memory at step fault_step"

    def fault(self, loss):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")


class DiskFullLoss(FaultLoss):
    name = "disk-full-at"
    description = "the disk is full from step fault_step on (every fsync fails with ENOSPC)"

    def fault(self, loss):
        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        os.fsync = full
        return loss


class KillInCheckpointLoss(FaultLoss):
    name = "kill-in-checkpoint"
    description = "from step fault_step, the first checkpoint write is cut by SIGKILL half-way"

    def fault(self, loss):
        real_save = torch.save

        def save(obj, handle, *args, **kwargs):
            if not first_time("checkpoint-kill"):
                return real_save(obj, handle, *args, **kwargs)
            import io
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save
        return loss


class KillLauncherLoss(FaultLoss):
    name = "kill-launcher-at"
    description = "kills the process that launched the run's worker (a Ray worker) at step fault_step, once"

    def fault(self, loss):
        if first_time("kill-launcher"):
            # The run is a fork of its resident worker, whose parent is the launcher.
            with open(f"/proc/{os.getppid()}/stat") as stat:
                launcher = int(stat.read().rsplit(")", 1)[1].split()[1])
            os.kill(launcher, signal.SIGKILL)
        return loss


class BrokenArchitecture(Architecture):
    name = "broken-build"
    description = "raises while building its model"
    defaults = {"latent_dim": 8}

    def build(self, data_shape, params):
        raise RuntimeError("this architecture is broken on purpose")


class SlowMetric(Metric):
    name = "slow-eval"
    description = "the first evaluation of the test sleeps for two minutes"

    def evaluate(self, context):
        if first_time("slow-eval"):
            open(os.path.join(os.environ["GANBENCH_FAULT_DIR"], "evaluating"), "w").close()
            for _ in range(1200):
                time.sleep(0.1)
        return MetricResult({"slow_eval_value": 1.0}, {"note": "test metric"})


@hookimpl
def register_losses(register):
    for loss in (NanLoss(), ExitLoss(), OomLoss(), DiskFullLoss(), KillInCheckpointLoss(), KillLauncherLoss()):
        register(loss)


@hookimpl
def register_architectures(register):
    register(BrokenArchitecture())


@hookimpl
def register_metrics(register):
    register(SlowMetric())
'''


@pytest.fixture(scope="session")
def fault_site(tmp_path_factory) -> Path:
    """A folder holding the fault plugins as an installed distribution (module + dist-info),
    for the ``PYTHONPATH`` of ``ganbench`` subprocesses: found through real entry points."""
    site = tmp_path_factory.mktemp("fault-site")
    (site / "ganbench_faults.py").write_text(FAULT_PLUGINS)
    info = site / "ganbench_faults-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ganbench-faults\nVersion: 1.0\n"
                                   "Requires-Dist: ganbench>=0.1\n")
    (info / "entry_points.txt").write_text("[ganbench]\nfaults = ganbench_faults\n")
    return site


def environment_with_faults(site: Path, fault_dir: Path) -> dict[str, str]:
    fault_dir.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")]))
    environment = {**os.environ, "PYTHONPATH": path, "GANBENCH_FAULT_DIR": str(fault_dir)}
    environment.pop("GANBENCH_LOAD_PLUGINS", None)
    return environment


@pytest.fixture
def fault_env(fault_site, tmp_path) -> dict[str, str]:
    """The environment of a ``ganbench`` subprocess that has the fault-injection plugins."""
    return environment_with_faults(fault_site, tmp_path / "faults")


RESUMABLE = dict(steps=60, log_every=10, sample_every=1000)
"""The grid file settings of the runs the resume tests interrupt (``checkpoint_every`` may
vary: it changes when checkpoints are written, not what is trained)."""
REFERENCE = ["--losses", "nan-at", "--set", "fault_step=0", "--seeds", "0,1,2", *SMALL[2:], "--workers", "2"]
"""Three runs never interrupted; the resume tests train the same runs (with fault losses
that compute the same, ``--workers 2`` for the same thread count) and compare."""


@pytest.fixture(scope="session")
def reference_runs(fault_site, tmp_path_factory) -> dict[str, Path]:
    """``{label: run directory}`` of the :data:`REFERENCE` grid (trained once per session)."""
    root = tmp_path_factory.mktemp("reference")
    env = environment_with_faults(fault_site, root / "faults")
    run_grid(str(grid_file(root, checkpoint_every=10, **RESUMABLE)), *REFERENCE, out=root / "out",
             cache=root / "cache", env=env)
    return run_dirs(root / "out")


def command(*args: str, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-c", "from ganbench.cli import main; main()", "run", *args,
            "--out", str(out), "--cache-dir", str(cache), "--quiet"]


def session_processes(session: int) -> list[int]:
    """Every live process of a session (Ray puts its workers in process groups of their own)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def kill_session(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGKILL the process group and session that ``process`` leads; wait until they are gone."""
    deadline = time.monotonic() + timeout
    while True:
        members = session_processes(process.pid)
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not members and process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class Grid:
    """A ``ganbench run`` in its own session; always torn down, whatever the test does."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cores: set[int] | None = None) -> None:
        self.started = time.monotonic()
        preexec = (lambda: os.sched_setaffinity(0, cores)) if cores else None
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, start_new_session=True, preexec_fn=preexec)
        self.stdout = self.stderr = ""

    def wait(self, timeout: float = TIMEOUT_SECONDS) -> "Grid":
        try:
            self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(self.process)
            self.stdout, self.stderr = self.process.communicate()
            pytest.fail(f"ganbench run did not end in {timeout}s\n{self.stdout}\n{self.stderr}")
        finally:
            kill_session(self.process)
        return self

    @property
    def returncode(self) -> int:
        return self.process.returncode

    def signal(self, number: int, group: bool = True) -> None:
        if group:
            os.killpg(self.process.pid, number)
        else:
            self.process.send_signal(number)

    def __enter__(self) -> "Grid":
        return self

    def __exit__(self, *exc: Any) -> None:
        kill_session(self.process)
        if self.process.stdout:
            self.process.communicate()


def run_grid(*args: str, out: Path, cache: Path, env: dict[str, str] | None = None,
             cores: set[int] | None = None, timeout: float = TIMEOUT_SECONDS, expect: int | None = 0) -> Grid:
    """Run ``ganbench run ARGS`` to the end; check its exit code unless ``expect`` is None."""
    grid = Grid(command(*args, out=out, cache=cache), env=env, cores=cores).wait(timeout)
    if expect is not None:
        assert grid.returncode == expect, f"exit code {grid.returncode}\n{grid.stdout}\n{grid.stderr}"
    return grid


def wait_for(condition: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def results(out: Path) -> dict[str, dict[str, str]]:
    """``results.csv`` as ``{label: row}``; asserts that each run appears once."""
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = [f"{r['architecture']}/{r['loss']}/{r['dataset']}/seed{r['seed']}|{r['run_id']}" for r in rows]
    assert len(labels) == len(set(labels)), labels
    return {f"{r['architecture']}/{r['loss']}/{r['dataset']}/seed{r['seed']}/lr{r.get('lr_g')}": r for r in rows}


def without_timing(row: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in row.items() if key not in TIMING_COLUMNS}


def run_dirs(out: Path) -> dict[str, Path]:
    """``{label: run directory}``."""
    found = {}
    for config_file in (out / "runs").glob("*/config.json"):
        config = json.loads(config_file.read_text())
        label = f"{config['architecture']}/{config['loss']}/{config['dataset']}/seed{config['seed']}"
        found[label] = config_file.parent
    return found


def status(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "status.json").read_text())


def weights(directory: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(directory / "checkpoint.pt", weights_only=True)
    return {**{f"g.{k}": v for k, v in checkpoint["generator"].items()},
            **{f"d.{k}": v for k, v in checkpoint["discriminator"].items()}}


def losses(directory: Path) -> list[tuple[int, float, float]]:
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["d_loss"], r["g_loss"]) for r in records if r.get("kind") == "train"]


def assert_same_training(left: Path, right: Path) -> None:
    """Two run directories trained the same: identical final weights and loss history."""
    a, b = weights(left), weights(right)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a), "final weights differ"
    assert [loss for loss in losses(left)] == [loss for loss in losses(right)]


def starts(directory: Path) -> int:
    """How many times a worker started training this run."""
    return sum(" start " in line for line in (directory / "log.txt").read_text().splitlines())


def grid_file(tmp_path: Path, **settings: Any) -> Path:
    """A grid TOML (for the settings that have no flag: checkpoint_every, log_every...)."""
    path = tmp_path / "grid.toml"
    lines = []
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


# --- tests ----------------------------------------------------------------------------------


def test_two_workers_give_each_run_the_results_it_gives_alone(tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    per_worker = set(cores[: max(1, len(cores) // 2)])
    grid = ["--losses", "ns,lsgan", "--steps", "60", *SMALL]
    together = run_grid(*grid, "--workers", "2", out=tmp_path / "together", cache=tmp_path / "cache")
    assert "2 worker(s) on the CPU" in together.stdout
    for loss in ("ns", "lsgan"):
        alone = tmp_path / f"alone-{loss}"
        run_grid(*[a if a != "ns,lsgan" else loss for a in grid], "--workers", "1", out=alone,
                 cache=tmp_path / "cache", cores=per_worker)
        label = f"mlp/{loss}/ring8/seed0"
        assert_same_training(run_dirs(tmp_path / "together")[label], run_dirs(alone)[label])
        together_row = results(tmp_path / "together")[f"{label}/lr0.0002"]
        assert without_timing(together_row) == without_timing(results(alone)[f"{label}/lr0.0002"])
        assert status(run_dirs(alone)[label])["placement"]["threads"] == len(per_worker)
        assert status(run_dirs(tmp_path / "together")[label])["placement"]["threads"] == len(per_worker)


def test_a_second_run_on_the_same_output_stops_naming_the_first(tmp_path, fault_env):
    out, cache = tmp_path / "out", tmp_path / "cache"
    slow = ["--losses", "nan-at", "--set", "fault_step=0", "--set", "slow_seconds=0.05", "--steps", "80", *SMALL]
    with Grid(command(*slow, out=out, cache=cache), env=fault_env) as first:
        wait_for(lambda: (out / ".lock").exists() and str(first.process.pid) in (out / ".lock").read_text(),
                 what="the first run's lock")
        second = run_grid(*slow, out=out, cache=cache, env=fault_env, expect=2)
        message = second.stderr.strip().splitlines()
        assert len(message) == 1 and f"process {first.process.pid}" in message[0], second.stderr
        assert "in use by another ganbench run" in message[0]
        first.wait()
        assert first.returncode == 0, first.stderr
    directory = run_dirs(out)["mlp/nan-at/ring8/seed0"]
    assert starts(directory) == 1
    assert status(directory)["status"] == "done"


def test_a_changed_value_trains_only_the_changed_runs_and_keeps_the_old(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    base = ["--losses", "ns", "--steps", "20", *SMALL]
    run_grid(*base, "--set", "lr=1e-4,2e-4", "--workers", "2", out=out, cache=cache)
    again = run_grid(*base, "--set", "lr=2e-4,3e-4", "--workers", "2", out=out, cache=cache)
    assert "1 of 2 runs already finished" in again.stdout
    rows = results(out)
    assert sorted(rows) == [f"mlp/ns/ring8/seed0/lr{lr}" for lr in ("0.0001", "0.0002", "0.0003")]
    assert all(row["status"] == "done" for row in rows.values())
    for directory in (out / "runs").iterdir():
        assert starts(directory) == 1, directory


def test_without_ray_the_ray_executor_is_a_one_line_error(tmp_path):
    shadow = tmp_path / "no-ray"
    (shadow / "ray").mkdir(parents=True)
    (shadow / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))}
    grid = run_grid("--losses", "ns", "--steps", "5", *SMALL, "--executor", "ray", out=tmp_path / "out",
                    cache=tmp_path / "cache", env=env, expect=2)
    lines = grid.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'ganbench[ray]'" in lines[0], grid.stderr


def test_quiet_progress_is_plain_lines(tmp_path):
    grid = run_grid("--losses", "ns", "--steps", "10", *SMALL, out=tmp_path / "out", cache=tmp_path / "cache")
    assert "start mlp/ns/ring8/seed0" in grid.stdout
    assert "end mlp/ns/ring8/seed0: done" in grid.stdout
    assert "\x1b[" not in grid.stdout  # no terminal control sequences


@pytest.mark.parametrize("flags, message", [
    (["--gpus", "0"], "no CUDA GPU is visible"),
    (["--runs-per-gpu", "2"], "needs GPUs"),
    (["--workers", "0"], "give 1 or more"),
    (["--address", "ray://x:10001"], "add --executor ray"),
])
def test_impossible_placements_are_one_line_errors(tmp_path, flags, message):
    no_gpu = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the same on a machine with GPUs
    grid = run_grid("--losses", "ns", "--steps", "5", *SMALL, *flags, out=tmp_path / "out",
                    cache=tmp_path / "cache", env=no_gpu, expect=2)
    lines = grid.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], grid.stderr
