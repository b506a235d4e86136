"""The Ray executor against a real local Ray instance that ``ganbench run`` starts itself.

Each grid runs in a session of its own; Ray's processes stay in that session (its workers
in process groups of their own), and the teardown kills that session, nothing by name.
``RAY_OVERRIDE_RESOURCES`` is Ray's own switch for the resources of a node it starts: it
gives the local instance exactly 2 CPUs (as ``ray.init(num_cpus=2)``) and, for the GPU
tests, 2 fake GPUs.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from test_executors import (SMALL, Grid, assert_same_training, command, fault_env, fault_site,  # noqa: F401
                            grid_file, results, run_dirs, run_grid, starts, status, wait_for, without_timing)

pytest.importorskip("ray")

RAY_TIMEOUT_SECONDS = 300


def ray_env(base: dict[str, str] | None = None, **resources: float) -> dict[str, str]:
    return {**(base or os.environ), "RAY_OVERRIDE_RESOURCES": json.dumps({"CPU": 2, **resources})}


def test_a_grid_on_ray_gives_the_same_results_rows_as_locally(tmp_path):
    cache = tmp_path / "cache"
    grid = ["--losses", "ns,lsgan", "--steps", "30", *SMALL, "--workers", "2"]
    two_cores = set(sorted(os.sched_getaffinity(0))[:2])
    run_grid(*grid, out=tmp_path / "local", cache=cache, cores=two_cores)
    run_grid(*grid, "--executor", "ray", out=tmp_path / "ray", cache=cache, env=ray_env(),
             timeout=RAY_TIMEOUT_SECONDS)
    local, ray = results(tmp_path / "local"), results(tmp_path / "ray")
    assert local.keys() == ray.keys() and len(ray) == 2
    for label in local:
        assert without_timing(local[label]) == without_timing(ray[label])
    for label, directory in run_dirs(tmp_path / "ray").items():
        assert status(directory)["placement"]["executor"] == "ray"
        local_files = sorted(path.name for path in run_dirs(tmp_path / "local")[label].iterdir())
        assert sorted(path.name for path in directory.iterdir()) == local_files  # the same layout
        assert_same_training(directory, run_dirs(tmp_path / "local")[label])


@pytest.mark.parametrize("runs_per_gpu", [1, 2])
def test_fake_gpus_give_each_run_a_gpu_and_at_most_runs_per_gpu_share_one(tmp_path, runs_per_gpu):
    out = tmp_path / "out"
    grid = run_grid("--losses", "ns", "--seeds", "0,1,2,3", "--steps", "20", *SMALL, "--executor", "ray",
                    "--runs-per-gpu", str(runs_per_gpu), out=out, cache=tmp_path / "cache",
                    env=ray_env(GPU=2), timeout=RAY_TIMEOUT_SECONDS)
    assert "torch sees no CUDA device; training on the CPU" in grid.stdout
    placements = [status(directory)["placement"] for directory in run_dirs(out).values()]
    assert len(placements) == 4 and all(p["gpu"] in ("0", "1") for p in placements)
    for placement in placements:  # the runs that overlapped it in time, on its GPU
        sharing = [other for other in placements if other["gpu"] == placement["gpu"]
                   and other["started"] < placement["ended"] and placement["started"] < other["ended"]]
        assert len(sharing) <= runs_per_gpu


def test_a_killed_ray_worker_is_retried_and_the_run_resumes(tmp_path, fault_env):
    out, cache = tmp_path / "out", tmp_path / "cache"
    toml = grid_file(tmp_path, steps=60, checkpoint_every=10, log_every=10, sample_every=1000)
    grid = run_grid(str(toml), "--losses", "kill-launcher-at", "--set", "fault_step=25", "--set", "slow_seconds=0.02",
                    *SMALL[2:], "--executor", "ray", out=out, cache=cache, env=ray_env(fault_env),
                    timeout=RAY_TIMEOUT_SECONDS)
    assert "Ray reported" in grid.stdout and "trying again" in grid.stdout
    directory = run_dirs(out)["mlp/kill-launcher-at/ring8/seed0"]
    record = status(directory)
    assert record["status"] == "done" and record["placement"]["attempt"] == 2
    assert starts(directory) == 2 and "resumed from step" in (directory / "log.txt").read_text()
    reference = tmp_path / "reference"
    run_grid(str(toml), "--losses", "nan-at", "--set", "fault_step=0", *SMALL[2:], out=reference, cache=cache,
             env=fault_env)
    assert_same_training(directory, run_dirs(reference)["mlp/nan-at/ring8/seed0"])


def test_sigterm_stops_ray_tasks_politely_and_the_local_executor_resumes_them(tmp_path, fault_env):
    out, cache = tmp_path / "out", tmp_path / "cache"
    toml = grid_file(tmp_path, steps=120, checkpoint_every=100, log_every=10, sample_every=1000)
    args = [str(toml), "--losses", "nan-at", "--set", "fault_step=0", "--set", "slow_seconds=0.05", *SMALL[2:]]
    with Grid(command(*args, "--executor", "ray", out=out, cache=cache), env=ray_env(fault_env)) as grid:
        wait_for(lambda: run_dirs(out) and "start" in next(iter(run_dirs(out).values())).joinpath("log.txt").read_text()
                 if run_dirs(out) and next(iter(run_dirs(out).values())).joinpath("log.txt").exists() else False,
                 timeout=RAY_TIMEOUT_SECONDS, what="the Ray task to start training")
        time.sleep(2)
        grid.signal(signal.SIGTERM, group=False)
        grid.wait(120)
    assert grid.returncode == 130, grid.stdout + grid.stderr
    directory = run_dirs(out)["mlp/nan-at/ring8/seed0"]
    record = status(directory)
    assert record["status"] == "interrupted" and 0 < record["step"] < 120
    run_grid(*args, out=out, cache=cache, env=fault_env)
    assert status(directory)["status"] == "done"
    assert f"resumed from step {record['step']}" in (directory / "log.txt").read_text()
