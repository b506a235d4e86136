"""One run in-process: determinism, checkpoints, resume after an interruption or a crash, divergence.

Runs are tiny (a 32-unit mlp on 2,000 ring8 points) and go through ``execute_run``, the
function every executor's worker process calls.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ganbench.api import Loss
from ganbench.errors import Interrupted
from ganbench.execution.recording import execute_run
from ganbench.ledger.runs import RunDirectory, results_rows
from ganbench.ledger.storage import read_json, read_jsonl, write_json
from ganbench.planning.grid import GridSpec, expand
from ganbench.registry import build_registry

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS = 40
CHECKPOINT_EVERY = 10
LOG_EVERY = 5


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def tiny_run(registry, loss: str = "ns", seed: int = 0, **changes):
    grid = GridSpec(archs=["mlp"], losses=[loss], datasets=["ring8"], seeds=[seed], steps=STEPS, batch_size=32,
                    metrics=["none"], checkpoint_every=CHECKPOINT_EVERY, sample_every=1000, log_every=LOG_EVERY,
                    sets={"mlp_width": [32], "mlp_depth": [2], "num_points": [2000]})
    run, = expand(dataclasses.replace(grid, **changes), registry)
    return run


def train(spec, out: Path, registry, cache_dir: Path, should_stop=lambda: False):
    return execute_run(spec, out, registry=registry, device=torch.device("cpu"), data_dir=None,
                       cache_dir=cache_dir, should_stop=should_stop)


def stop_before_step(step: int):
    """A ``should_stop`` that asks to stop once ``step`` generator steps are done (it is polled before each)."""
    calls = []

    def should_stop() -> bool:
        calls.append(None)
        return len(calls) > step

    return should_stop


def losses(directory: Path) -> dict[int, tuple[float, float, float]]:
    """``step -> (d_loss, g_loss, penalty)`` of the training records in metrics.jsonl."""
    records, damaged = read_jsonl(directory / "metrics.jsonl")
    assert damaged == 0
    return {r["step"]: (r["d_loss"], r["g_loss"], r["penalty"]) for r in records if r["kind"] == "train"}


def checkpoint(directory: Path, name: str = "checkpoint.pt") -> dict:
    return torch.load(directory / name, map_location="cpu", weights_only=True)


def assert_same_tensors(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{key} differs"


def test_same_seed_and_config_give_identical_losses_and_weights(tmp_path, registry, cache_dir):
    # wgan-gp also draws from torch's global RNG (the penalty's interpolation weights).
    spec = tiny_run(registry, loss="wgan-gp", steps=20)
    first, second = tmp_path / "first", tmp_path / "second"
    assert train(spec, first, registry, cache_dir).status == "done"
    torch.manual_seed(12345)  # whatever the global RNG held before must not matter
    assert train(spec, second, registry, cache_dir).status == "done"
    run_dir = Path("runs") / spec.run_id
    assert losses(first / run_dir) == losses(second / run_dir)
    assert len(losses(first / run_dir)) == 20 // LOG_EVERY
    assert_same_tensors(checkpoint(first / run_dir)["generator"], checkpoint(second / run_dir)["generator"])


def test_a_different_seed_gives_different_losses(tmp_path, registry, cache_dir):
    seed0, seed1 = tiny_run(registry, seed=0, steps=10), tiny_run(registry, seed=1, steps=10)
    train(seed0, tmp_path, registry, cache_dir)
    train(seed1, tmp_path, registry, cache_dir)
    first, second = losses(tmp_path / "runs" / seed0.run_id), losses(tmp_path / "runs" / seed1.run_id)
    assert first.keys() == second.keys()
    assert all(first[step] != second[step] for step in first)


def test_finished_run_leaves_config_history_checkpoint_samples_and_log(tmp_path, registry, cache_dir):
    spec = tiny_run(registry)
    outcome = train(spec, tmp_path, registry, cache_dir)
    directory = tmp_path / "runs" / spec.run_id
    assert (outcome.status, outcome.step) == ("done", STEPS)
    assert read_json(directory / "config.json") == spec.to_json()
    status = read_json(directory / "status.json")
    assert (status["status"], status["step"]) == ("done", STEPS) and status["wall_seconds"] > 0
    assert sorted(losses(directory)) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert (directory / "samples" / f"step_{STEPS:07d}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "start mlp/ns/ring8/seed0" in (directory / "log.txt").read_text()
    row, = results_rows(tmp_path)
    assert (row["run_id"], row["status"], row["step"], row["loss"], row["mlp_width"]) == (
        spec.run_id, "done", STEPS, "ns", 32)


def test_checkpoint_holds_models_optimisers_rng_and_step_and_loads_with_weights_only(tmp_path, registry,
                                                                                      cache_dir):
    spec = tiny_run(registry)
    train(spec, tmp_path, registry, cache_dir)
    directory = tmp_path / "runs" / spec.run_id
    state = checkpoint(directory)  # weights_only=True: nothing but tensors and plain containers
    assert state["step"] == STEPS
    assert {"generator", "discriminator", "optimizer_g", "optimizer_d", "rng"} <= state.keys()
    assert {"cpu", "data", "noise"} <= state["rng"].keys()
    assert state["optimizer_g"]["state"], "the optimiser's moments are saved, not just its settings"
    assert checkpoint(directory, "checkpoint.prev.pt")["step"] == STEPS - CHECKPOINT_EVERY


def test_interrupted_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, registry, cache_dir):
    spec = tiny_run(registry)
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    train(spec, whole, registry, cache_dir)

    with pytest.raises(Interrupted):
        train(spec, interrupted, registry, cache_dir, should_stop=stop_before_step(23))
    directory = interrupted / "runs" / spec.run_id
    assert RunDirectory(directory).status()["status"] == "interrupted"
    assert checkpoint(directory)["step"] == 23  # a stop request checkpoints where it is
    assert train(spec, interrupted, registry, cache_dir).status == "done"

    assert "resumed from step 23" in (directory / "log.txt").read_text()
    final, reference = checkpoint(directory), checkpoint(whole / "runs" / spec.run_id)
    for part in ("generator", "discriminator"):
        assert_same_tensors(final[part], reference[part])
    assert final["optimizer_g"]["state"][0]["exp_avg"].equal(reference["optimizer_g"]["state"][0]["exp_avg"])
    # The stop fell inside a logging window (21-25): the resumed run still logs the same records.
    assert losses(directory) == losses(whole / "runs" / spec.run_id)


def test_crashed_run_redoes_the_steps_after_its_last_checkpoint_identically(tmp_path, registry, cache_dir):
    spec = tiny_run(registry)
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    train(spec, whole, registry, cache_dir)

    # A kill -9 at step 27: the last periodic checkpoint is step 20, metrics.jsonl runs on to
    # step 25 and the status still says running.
    with pytest.raises(Interrupted):
        train(spec, crashed, registry, cache_dir, should_stop=stop_before_step(27))
    directory = crashed / "runs" / spec.run_id
    (directory / "checkpoint.prev.pt").replace(directory / "checkpoint.pt")
    status = read_json(directory / "status.json")
    write_json(directory / "status.json", {**status, "status": "running", "step": 20})
    assert max(losses(directory)) > 20

    assert train(spec, crashed, registry, cache_dir).status == "done"
    assert "resumed from step 20" in (directory / "log.txt").read_text()
    assert losses(directory) == losses(whole / "runs" / spec.run_id)
    assert_same_tensors(checkpoint(directory)["generator"], checkpoint(whole / "runs" / spec.run_id)["generator"])


def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, registry, cache_dir):
    spec = tiny_run(registry)
    whole, damaged = tmp_path / "whole", tmp_path / "damaged"
    train(spec, whole, registry, cache_dir)
    with pytest.raises(Interrupted):
        train(spec, damaged, registry, cache_dir, should_stop=stop_before_step(27))
    directory = damaged / "runs" / spec.run_id
    assert checkpoint(directory, "checkpoint.prev.pt")["step"] == 20
    data = (directory / "checkpoint.pt").read_bytes()
    (directory / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # a disk that lost half the file

    assert train(spec, damaged, registry, cache_dir).status == "done"
    assert "resumed from step 20" in (directory / "log.txt").read_text()
    assert_same_tensors(checkpoint(directory)["generator"], checkpoint(whole / "runs" / spec.run_id)["generator"])


class NanAtStepSeven(Loss):
    """The non-saturating loss, except that the discriminator's loss is NaN from the 7th step on."""

    name = "nan-at-step-seven"
    description = "Test loss that becomes NaN at step 7"
    defaults = {"n_critic": 1}

    def __init__(self):
        self.discriminator_steps = 0

    def discriminator_loss(self, real_logits, fake_logits, params):
        self.discriminator_steps += 1
        value = torch.nn.functional.softplus(-real_logits).mean() + torch.nn.functional.softplus(fake_logits).mean()
        return value * float("nan") if self.discriminator_steps >= 7 else value

    def generator_loss(self, fake_logits, real_logits, params):
        return torch.nn.functional.softplus(-fake_logits).mean()


def test_non_finite_loss_marks_the_run_diverged_at_that_step_and_the_grid_goes_on(tmp_path, registry_with,
                                                                                 cache_dir):
    registry = registry_with(("loss", NanAtStepSeven()))
    grid = GridSpec(archs=["mlp"], losses=["nan-at-step-seven", "ns"], datasets=["ring8"], seeds=[0], steps=20,
                    batch_size=32, metrics=["none"], log_every=LOG_EVERY, checkpoint_every=CHECKPOINT_EVERY,
                    sample_every=1000, sets={"mlp_width": [32], "num_points": [2000]})
    runs = expand(grid, registry)
    # As an executor does: every run of the grid in turn, whatever the previous one did.
    outcomes = {spec.loss: train(spec, tmp_path, registry, cache_dir) for spec in runs}

    assert (outcomes["nan-at-step-seven"].status, outcomes["ns"].status) == ("diverged", "done")
    assert "non-finite loss at step 7" in outcomes["nan-at-step-seven"].error
    diverged_dir = tmp_path / "runs" / runs[0].run_id
    status = read_json(diverged_dir / "status.json")
    assert status["status"] == "diverged" and "step 7" in status["error"]
    assert status["step"] == 7 and outcomes["nan-at-step-seven"].step == 7, "the step it diverged at, not the log's"
    assert sorted(losses(diverged_dir)) == [5], "nothing is logged from the diverged window on"
    rows = {row["loss"]: row for row in results_rows(tmp_path)}
    assert (rows["nan-at-step-seven"]["status"], rows["ns"]["status"]) == ("diverged", "done")
    assert rows["ns"]["step"] == 20
