"""Fault injection: every way a run or the grid can die ends as the issue says, nothing else lost.

The faults come from the plugins of ``test_executors.FAULT_PLUGINS`` (registered through a
real entry point) or from the outside (signals to the grid's process group, files damaged
between two runs). A resumed run is compared, bit for bit, with one that was never
interrupted: same final weights, same loss history.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import torch

from test_executors import (REFERENCE, RESUMABLE, SMALL, Grid, assert_same_training, command,  # noqa: F401
                            fault_env, fault_site, grid_file, losses, reference_runs, results, run_dirs,
                            run_grid, starts, status, wait_for, weights)

CHECKPOINTED = dict(checkpoint_every=10, log_every=10, sample_every=1000)


def last_train_step(directory: Path) -> int:
    try:
        lines = (directory / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=0)


def assert_nothing_corrupt(out: Path) -> None:
    """No temporary file left, every JSON file and JSON line parses, every checkpoint loads."""
    assert not list(out.rglob("*.tmp")), list(out.rglob("*.tmp"))
    for path in out.rglob("*.json"):
        json.loads(path.read_text())
    for path in out.rglob("metrics.jsonl"):
        for line in path.read_text().splitlines():
            json.loads(line)
    for path in out.rglob("checkpoint*.pt"):
        torch.load(path, weights_only=True)
    results(out)


def test_faulty_plugins_end_as_their_status_and_the_grid_goes_on(tmp_path, fault_env):
    out = tmp_path / "out"
    grid = run_grid("--archs", "mlp,broken-build", "--losses", "nan-at,exit-at,oom-at", "--set", "fault_step=7",
                    "--steps", "20", *SMALL[2:], "--workers", "2", out=out, cache=tmp_path / "cache",
                    env=fault_env, expect=1)
    dirs = run_dirs(out)
    nan = status(dirs["mlp/nan-at/ring8/seed0"])
    assert nan["status"] == "diverged" and "non-finite loss at step 7" in nan["error"]
    oom = status(dirs["mlp/oom-at/ring8/seed0"])
    assert oom["status"] == "oom" and "out of memory" in oom["error"]
    assert starts(dirs["mlp/oom-at/ring8/seed0"]) == 1
    died = status(dirs["mlp/exit-at/ring8/seed0"])
    assert died["status"] == "failed" and died["attempts"] == 2, died
    assert "died on each of 2 attempt(s)" in died["error"] and "exited with code 3" in died["error"]
    assert starts(dirs["mlp/exit-at/ring8/seed0"]) == 2
    assert "trying again (attempt 2 of 2)" in grid.stdout
    for loss in ("nan-at", "exit-at", "oom-at"):
        broken = status(dirs[f"broken-build/{loss}/ring8/seed0"])
        assert broken["status"] == "failed"
        assert broken["error"] == "RuntimeError: this architecture is broken on purpose"
        assert starts(dirs[f"broken-build/{loss}/ring8/seed0"]) == 1  # a Python error is not retried
    assert {row["status"] for row in results(out).values()} == {"diverged", "failed", "oom"}


def test_sigkill_of_the_whole_grid_then_the_same_command_resumes_every_run(tmp_path, fault_env, reference_runs):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [str(grid_file(tmp_path, checkpoint_every=10, **RESUMABLE)), *REFERENCE]
    with Grid(command(*args, "--set", "slow_seconds=0.04", out=out, cache=cache), env=fault_env) as grid:
        wait_for(lambda: any(status(d).get("step", 0) >= 20 for d in run_dirs(out).values()
                             if (d / "status.json").exists()), what="a checkpoint at step 20")
        grid.signal(signal.SIGKILL)
    killed = {label: status(d) for label, d in run_dirs(out).items() if (d / "status.json").exists()}
    run_grid(*args, "--set", "slow_seconds=0.04", out=out, cache=cache, env=fault_env)
    rows = results(out)
    assert len(rows) == 3 and {row["status"] for row in rows.values()} == {"done"}
    assert any(record["step"] > 0 and record["status"] == "running" for record in killed.values())
    for label, record in killed.items():
        if record["status"] == "done":  # finished before the kill: skipped
            assert starts(run_dirs(out)[label]) == 1
            continue
        assert starts(run_dirs(out)[label]) == 2
        if record["step"] > 0:  # from its last checkpoint (a later one if the kill came as it was recorded)
            resumed = [int(line.rsplit(" ", 1)[1]) for line in (run_dirs(out)[label] / "log.txt").read_text()
                       .splitlines() if "resumed from step" in line]
            assert resumed and resumed[0] >= record["step"]
    for label, directory in run_dirs(out).items():
        assert_same_training(directory, reference_runs[label])
    assert_nothing_corrupt(out)


def test_sigkill_during_a_checkpoint_write_costs_only_the_steps_since_the_last(tmp_path, fault_env,
                                                                             reference_runs):
    out, cache = tmp_path / "out", tmp_path / "cache"
    toml = grid_file(tmp_path, checkpoint_every=10, **RESUMABLE)
    grid = run_grid(str(toml), "--losses", "kill-in-checkpoint", "--set", "fault_step=15", *SMALL[2:],
                    "--workers", "2", out=out, cache=cache, env=fault_env)
    assert "killed by SIGKILL" in grid.stdout and "trying again" in grid.stdout
    directory = run_dirs(out)["mlp/kill-in-checkpoint/ring8/seed0"]
    record = status(directory)
    assert record["status"] == "done" and record["placement"]["attempt"] == 2
    assert "resumed from step 10" in (directory / "log.txt").read_text()
    assert_nothing_corrupt(out)
    assert_same_training(directory, reference_runs["mlp/nan-at/ring8/seed0"])


def test_ctrl_c_checkpoints_the_running_run_and_the_same_command_finishes_it(tmp_path, fault_env, reference_runs):
    out, cache = tmp_path / "out", tmp_path / "cache"
    toml = grid_file(tmp_path, checkpoint_every=50, **RESUMABLE)
    args = [str(toml), "--losses", "nan-at", "--set", "fault_step=0", *SMALL[2:], "--workers", "2"]
    with Grid(command(*args, "--set", "slow_seconds=0.1", out=out, cache=cache), env=fault_env) as grid:
        wait_for(lambda: run_dirs(out) and last_train_step(next(iter(run_dirs(out).values()))) >= 20,
                 what="step 20")
        time.sleep(0.12)  # land between two log lines
        grid.signal(signal.SIGINT)  # what a terminal sends the whole foreground group
        stopped_at = time.monotonic()
        grid.wait(60)
    assert grid.returncode == 130, grid.stderr
    assert time.monotonic() - stopped_at < 30
    assert "to resume, run the same command again" in grid.stdout
    directory = run_dirs(out)["mlp/nan-at/ring8/seed0"]
    record = status(directory)
    assert record["status"] == "interrupted"
    assert 20 <= record["step"] < 60
    assert torch.load(directory / "checkpoint.pt", weights_only=True)["step"] == record["step"]
    run_grid(*args, "--set", "slow_seconds=0.1", out=out, cache=cache, env=fault_env)
    assert status(directory)["status"] == "done"
    assert f"resumed from step {record['step']}" in (directory / "log.txt").read_text()
    assert_same_training(directory, reference_runs["mlp/nan-at/ring8/seed0"])


def test_sigterm_during_evaluation_stops_it_at_once_and_the_rerun_evaluates(tmp_path, fault_env):
    out, cache = tmp_path / "out", tmp_path / "cache"
    toml = grid_file(tmp_path, steps=20, **CHECKPOINTED)
    args = [str(toml), "--losses", "ns", "--archs", "mlp", "--datasets", "ring8", "--metrics", "slow-eval",
            "--batch-size", "64", "--set", "mlp_width=32", "--set", "num_points=2000"]
    with Grid(command(*args, out=out, cache=cache), env=fault_env) as grid:
        wait_for(lambda: (Path(fault_env["GANBENCH_FAULT_DIR"]) / "evaluating").exists(), what="the evaluation")
        grid.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        grid.wait(60)
    assert grid.returncode == 130, grid.stderr
    assert time.monotonic() - stopped_at < 20  # the metric alone would sleep for two minutes
    directory = run_dirs(out)["mlp/ns/ring8/seed0"]
    assert status(directory)["status"] == "interrupted" and status(directory)["step"] == 20
    run_grid(*args, out=out, cache=cache, env=fault_env)
    assert status(directory)["status"] == "done"
    assert "resumed from step 20" in (directory / "log.txt").read_text()
    assert float(results(out)["mlp/ns/ring8/seed0/lr0.0002"]["slow_eval_value"]) == 1.0
    evaluations = [line for line in (directory / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert len(evaluations) == 1


def test_a_second_signal_stops_at_once(tmp_path, fault_env):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--losses", "nan-at", "--set", "fault_step=0", "--set", "slow_seconds=0.05", "--steps", "400", *SMALL]
    with Grid(command(*args, out=out, cache=cache), env=fault_env) as grid:
        wait_for(lambda: run_dirs(out) and (next(iter(run_dirs(out).values())) / "log.txt").exists()
                 and starts(next(iter(run_dirs(out).values()))) == 1, what="the run to start")
        grid.signal(signal.SIGINT, group=False)
        time.sleep(0.5)  # two signals sent at once may arrive as one
        grid.signal(signal.SIGINT, group=False)
        stopped_at = time.monotonic()
        grid.wait(60)
    assert grid.returncode == 130
    assert time.monotonic() - stopped_at < 10
    assert "stopped at once" in grid.stderr and "run the same command again" in grid.stderr


def test_damaged_files_found_on_resume_are_reported_and_handled(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    toml = grid_file(tmp_path, steps=40, checkpoint_every=20, log_every=10, sample_every=1000)
    args = [str(toml), "--losses", "ns,lsgan", *SMALL[2:], "--workers", "2"]
    run_grid(*args, out=out, cache=cache)
    dirs = run_dirs(out)
    ns, lsgan = dirs["mlp/ns/ring8/seed0"], dirs["mlp/lsgan/ring8/seed0"]
    finished = {label: (weights(d), losses(d)) for label, d in dirs.items()}
    # ns: killed after its last checkpoint began, before its end was recorded.
    (ns / "status.json").write_text(json.dumps({"status": "running", "step": 40}))
    data = (ns / "checkpoint.pt").read_bytes()
    (ns / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with open(ns / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 40, "kind": "tra')
    (lsgan / "status.json").write_text('{"status": "do')
    (out / "results.csv").write_bytes(b"run_id,status\nabc,done,extra,fields\n\xff\xfe")
    grid = run_grid(*args, out=out, cache=cache)
    text = " ".join(grid.stdout.split())
    assert "checkpoint checkpoint.pt is damaged" in text
    assert "skipped 1 damaged line(s) of metrics.jsonl" in text
    assert "the status file of mlp/lsgan/ring8/seed0" in text
    assert "results.csv is damaged" in text
    assert "resumed from step 20" in (ns / "log.txt").read_text()
    assert (ns / "checkpoint.pt.damaged").exists()
    assert "resumed from step 40" in (lsgan / "log.txt").read_text()
    for label, directory in dirs.items():
        final_weights, history = finished[label]
        assert all(torch.equal(final_weights[k], v) for k, v in weights(directory).items())
        assert losses(directory) == history
    assert {row["status"] for row in results(out).values()} == {"done"}


def test_a_full_disk_fails_the_run_with_a_clear_error_and_corrupts_nothing(tmp_path, fault_env):
    out = tmp_path / "out"
    toml = grid_file(tmp_path, steps=40, **CHECKPOINTED)
    grid = run_grid(str(toml), "--losses", "disk-full-at,ns", "--set", "fault_step=15", *SMALL[2:],
                    "--workers", "2", out=out, cache=tmp_path / "cache", env=fault_env, expect=1)
    dirs = run_dirs(out)
    full = status(dirs["mlp/disk-full-at/ring8/seed0"])
    assert full["status"] == "failed"
    assert full["error"].startswith("no space left on device while writing ")
    assert "run the same command again" in full["error"]
    assert "no space left on device" in grid.stdout
    assert torch.load(dirs["mlp/disk-full-at/ring8/seed0"] / "checkpoint.pt", weights_only=True)["step"] == 10
    assert status(dirs["mlp/ns/ring8/seed0"])["status"] == "done"
    assert_nothing_corrupt(out)
