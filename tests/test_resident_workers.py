"""Resident workers: one worker process per slot trains run after run, each run in a fork of it.

What is pinned down here: the runs of a grid share a worker (torch is imported once), yet
nothing one run does to its process reaches the next (plugin globals, torch settings,
NumPy's generator, environment, monkeypatches); a run that kills its process is tried
again in a fresh one while the worker goes on; a worker killed under a run is replaced and
the run resumes, training exactly what an uninterrupted run trains.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from test_executors import (SMALL, Grid, assert_same_training, command, environment_with_faults,  # noqa: F401
                            fault_env, fault_site, grid_file, reference_runs, run_dirs, run_grid, status,
                            wait_for, RESUMABLE)

LEAKY_PLUGIN = '''
"""A metric that records the state its run's process started with, then changes all of it."""

import json
import os

import numpy as np
import torch

from ganbench import Metric, hookimpl
from ganbench.api import MetricResult

_evaluations = {"count": 0}
_real_tanh = torch.tanh


class LeakyState(Metric):
    name = "leaky-state"
    description = "records global state, then leaves it changed"

    def evaluate(self, context):
        _evaluations["count"] += 1
        seen = {
            "evaluations_in_this_process": _evaluations["count"],
            "default_dtype": str(torch.get_default_dtype()),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "autocast": torch.is_autocast_enabled("cpu"),
            "threads": torch.get_num_threads(),
            "environment": os.environ.get("GANBENCH_LEAKED"),
            "numpy_draw": float(np.random.random()),
            "tanh_patched": getattr(torch.tanh, "leaked", False),
            "pid": os.getpid(),
        }
        with open(os.path.join(os.environ["GANBENCH_FAULT_DIR"], f"seen-{context.seed}.json"), "w") as handle:
            json.dump(seen, handle)
        torch.set_default_dtype(torch.float64)
        torch.use_deterministic_algorithms(True)
        torch.set_autocast_enabled("cpu", True)
        torch.set_num_threads(3)
        os.environ["GANBENCH_LEAKED"] = "yes"
        np.random.seed(12345)

        def tanh(*args, **kwargs):
            return _real_tanh(*args, **kwargs)

        tanh.leaked = True
        torch.tanh = tanh
        return MetricResult({"leaky_value": 1.0}, {"leaky_value": "test metric"})


@hookimpl
def register_metrics(register):
    register(LeakyState())
'''


@pytest.fixture
def leaky_env(tmp_path) -> dict[str, str]:
    """A ``ganbench`` environment with the leaky metric installed (through a real entry point)."""
    site = tmp_path / "leaky-site"
    site.mkdir()
    (site / "ganbench_leaky.py").write_text(LEAKY_PLUGIN)
    info = site / "ganbench_leaky-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ganbench-leaky\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ganbench]\nleaky = ganbench_leaky\n")
    return environment_with_faults(site, tmp_path / "seen")


def worker_jobs(directory: Path) -> list[tuple[int, int]]:
    """``(worker pid, job number)`` of every attempt at the run, from its ``output.txt``."""
    return [(int(pid), int(job)) for pid, job in
            re.findall(r"^--- .* worker (\d+) \(job (\d+)\)", (directory / "output.txt").read_text(), re.M)]


def test_runs_share_a_worker_but_nothing_one_run_changes_reaches_the_next(tmp_path, leaky_env):
    out = tmp_path / "out"
    run_grid("--losses", "ns", "--seeds", "0,1,2", "--steps", "5", *SMALL[:4], *SMALL[6:], "--metrics",
             "leaky-state", "--workers", "1", out=out, cache=tmp_path / "cache", env=leaky_env,
             cores={sorted(os.sched_getaffinity(0))[0]})
    jobs = sorted(job for directory in run_dirs(out).values() for job in worker_jobs(directory))
    assert len({pid for pid, _ in jobs}) == 1 and [job for _, job in jobs] == [1, 2, 3], jobs
    seen = [json.loads((Path(leaky_env["GANBENCH_FAULT_DIR"]) / f"seen-{seed}.json").read_text())
            for seed in range(3)]
    assert len({record.pop("pid") for record in seen} | {jobs[0][0]}) == 4  # three runs, three processes
    import numpy as np

    after_leak = float(np.random.RandomState(12345).random_sample())
    for record in seen:
        assert record == {"evaluations_in_this_process": 1, "default_dtype": "torch.float32",
                          "deterministic": False, "autocast": False, "threads": 1, "environment": None,
                          "numpy_draw": seen[0]["numpy_draw"], "tanh_patched": False}
        assert record["numpy_draw"] != after_leak


def test_a_run_that_kills_its_process_is_retried_in_a_fresh_one_and_the_worker_goes_on(tmp_path, fault_env):
    out = tmp_path / "out"
    grid = run_grid("--losses", "exit-at,nan-at", "--set", "fault_step=3", "--steps", "10", *SMALL[2:],
                    "--workers", "1", out=out, cache=tmp_path / "cache", env=fault_env, expect=1)
    dirs = run_dirs(out)
    died = status(dirs["mlp/exit-at/ring8/seed0"])
    assert died["status"] == "failed" and "died on each of 2 attempt(s)" in died["error"], died
    assert "exited with code 3" in died["error"]
    assert status(dirs["mlp/nan-at/ring8/seed0"])["status"] == "diverged"  # its own fault, counted from 0
    jobs = sorted(job for directory in dirs.values() for job in worker_jobs(directory))
    assert len({pid for pid, _ in jobs}) == 1 and [job for _, job in jobs] == [1, 2, 3], jobs
    assert "trying again (attempt 2 of 2)" in grid.stdout


def test_a_killed_worker_is_replaced_and_its_run_resumes_as_if_never_interrupted(tmp_path, fault_env,
                                                                               reference_runs):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [str(grid_file(tmp_path, checkpoint_every=10, **RESUMABLE)), "--losses", "nan-at", "--set",
            "fault_step=0", "--set", "slow_seconds=0.05", *SMALL[2:], "--workers", "1"]
    with Grid(command(*args, out=out, cache=cache), env=fault_env,
              cores={sorted(os.sched_getaffinity(0))[0]}) as grid:
        directory = wait_for(lambda: next(iter(run_dirs(out).values()), None) if (out / "runs").exists() else None,
                             what="the run directory")
        wait_for(lambda: (directory / "status.json").exists() and status(directory).get("step", 0) >= 20,
                 what="a checkpoint at step 20")
        os.kill(worker_jobs(directory)[0][0], signal.SIGKILL)
        grid.wait()
    assert grid.returncode == 0, grid.stdout + grid.stderr
    assert "killed by SIGKILL" in grid.stdout and "trying again" in grid.stdout
    record = status(directory)
    assert record["status"] == "done" and record["placement"]["attempt"] == 2
    first, second = worker_jobs(directory)
    assert first[0] != second[0] and second[1] == 1  # a new worker, whose first job it is
    assert "resumed from step" in (directory / "log.txt").read_text()
    assert_same_training(directory, reference_runs["mlp/nan-at/ring8/seed0"])
