"""The ``linear`` learning-rate schedule, and run ids that survive new hyperparameters at their neutral value."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ganbench.errors import UserError
from ganbench.errors import Interrupted
from ganbench.execution.recording import execute_run
from ganbench.planning.grid import GridSpec, expand
from ganbench.planning.spec import RunSpec
from ganbench.registry import build_registry

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def spec(registry, schedule: str, steps: int = 10) -> RunSpec:
    grid = GridSpec(archs=["mlp"], losses=["ns"], datasets=["ring8"], steps=steps, batch_size=16, metrics=["none"],
                    sample_every=1000, checkpoint_every=4, log_every=2,
                    sets={"lr_schedule": [schedule], "mlp_width": [16], "mlp_depth": [1], "num_points": [300],
                          "lr_g": [1e-3], "lr_d": [2e-3]})
    run, = expand(grid, registry)
    return run


def test_the_linear_schedule_trains_step_k_at_lr_times_one_minus_k_over_steps(tmp_path, cache_dir, registry):
    run = spec(registry, "linear")
    seen = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.Adam.step = recording_step
    try:
        outcome = execute_run(run, tmp_path, registry=registry, device=CPU, data_dir=None, cache_dir=cache_dir)
    finally:
        torch.optim.Adam.step = original
    assert outcome.status == "done", outcome.error
    # per step: the discriminator's optimiser, then the generator's
    expected = [lr * (1 - k / 10) for k in range(10) for lr in (2e-3, 1e-3)]
    assert seen == pytest.approx(expected, rel=1e-12)


def test_an_interrupted_linear_run_resumes_to_the_same_weights(tmp_path, cache_dir, registry):
    run = spec(registry, "linear")
    execute_run(run, tmp_path / "whole", registry=registry, device=CPU, data_dir=None, cache_dir=cache_dir)
    calls = []
    with pytest.raises(Interrupted):  # stopped after 6 of 10 steps, between two checkpoints
        execute_run(run, tmp_path / "parts", registry=registry, device=CPU, data_dir=None, cache_dir=cache_dir,
                    should_stop=lambda: calls.append(None) or len(calls) > 6)
    execute_run(run, tmp_path / "parts", registry=registry, device=CPU, data_dir=None, cache_dir=cache_dir)
    whole, parts = (torch.load(tmp_path / where / "runs" / run.run_id / "checkpoint.pt", weights_only=True)
                    for where in ("whole", "parts"))
    for name, value in whole["generator"].items():
        assert torch.equal(value, parts["generator"][name])


def test_a_constant_schedule_keeps_the_run_id_it_had_before_the_setting_existed(registry):
    constant, linear = spec(registry, "constant"), spec(registry, "linear")
    without = dataclasses.replace(constant, params={k: v for k, v in constant.params.items() if k != "lr_schedule"})
    assert constant.run_id == without.run_id
    assert linear.run_id != constant.run_id


def test_an_unknown_schedule_is_one_line(registry):
    with pytest.raises(UserError, match="lr_schedule='cosine': choose one of constant, linear"):
        spec(registry, "cosine")
