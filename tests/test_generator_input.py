"""``g_steps`` (generator updates per round) and ``latent`` (the distribution of z): what they
train, that every place ganbench draws z follows ``latent``, and that at their defaults the
runs keep the ids (and the arithmetic) they had before the settings existed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ganbench.errors import UserError
from ganbench.evaluation.context import EvaluationContext
from ganbench.ledger.runs import run_directory
from ganbench.planning.grid import GridSpec, expand
from ganbench.planning.spec import RunSpec
from ganbench.registry import build_registry
from ganbench.training.loop import train_step
from ganbench.training.state import RunState

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def spec(registry, **sets) -> RunSpec:
    grid = GridSpec(archs=["mlp"], losses=["ns"], datasets=["ring8"], steps=4, batch_size=16, metrics=["none"],
                    sample_every=1000, checkpoint_every=1000, log_every=2,
                    sets={"mlp_width": [16], "mlp_depth": [1], "num_points": [300],
                          **{key: [value] for key, value in sets.items()}})
    run, = expand(grid, registry)
    return run


def run_state(registry, tmp_path, cache_dir, **sets) -> RunState:
    run = spec(registry, **sets)
    return RunState(run, run_directory(tmp_path, run), registry=registry, device=CPU, data_dir=None,
                    cache_dir=cache_dir)


def generator_inputs(run: RunState) -> list[torch.Tensor]:
    """Every batch of z the run's generator is called on from now on (in order)."""
    seen: list[torch.Tensor] = []
    run.generator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen


def test_two_generator_steps_per_round_update_g_twice_on_the_same_noise(tmp_path, cache_dir, registry):
    run = run_state(registry, tmp_path, cache_dir, g_steps=2)
    seen = generator_inputs(run)
    before = {name: value.clone() for name, value in run.generator.state_dict().items()}
    train_step(run)
    d_noise, first, second = seen  # one D step (its fake batch), then the generator twice
    assert torch.equal(first, second) and not torch.equal(d_noise, first)
    assert [state["step"].item() for state in run.optimizer_g.state.values()] == [2.0] * len(run.optimizer_g.state)
    assert [state["step"].item() for state in run.optimizer_d.state.values()] == [1.0] * len(run.optimizer_d.state)
    assert any(not torch.equal(before[name], value) for name, value in run.generator.state_dict().items())


def test_one_generator_step_trains_exactly_as_a_run_without_the_setting(tmp_path, cache_dir, registry):
    plain = run_state(registry, tmp_path / "plain", cache_dir)
    explicit = run_state(registry, tmp_path / "explicit", cache_dir, g_steps=1, latent="normal")
    for run in (plain, explicit):
        for _ in range(3):
            train_step(run)
    for name, value in plain.generator.state_dict().items():
        assert torch.equal(value, explicit.generator.state_dict()[name]), name


def test_the_defaults_keep_the_run_ids_runs_had_before_the_settings_existed(registry):
    run = spec(registry)
    assert run.params["g_steps"] == 1 and run.params["latent"] == "normal"
    without = dataclasses.replace(run, params={key: value for key, value in run.params.items()
                                               if key not in ("g_steps", "latent")})
    assert run.run_id == without.run_id
    assert spec(registry, g_steps=2).run_id != run.run_id
    assert spec(registry, latent="uniform").run_id != run.run_id


def test_uniform_z_is_what_training_pictures_and_metrics_draw(tmp_path, cache_dir, registry):
    runs = {latent: run_state(registry, tmp_path / latent, cache_dir, latent=latent)
            for latent in ("normal", "uniform")}
    for latent, run in runs.items():
        seen = generator_inputs(run)
        train_step(run)
        context = EvaluationContext(generator=run.generator, latent_dim=run.latent_dim, data_shape=run.data_shape,
                                    dataset_name="ring8", dataset=run.dataset, real=run.real_data, settings={},
                                    device=CPU, cache_dir=cache_dir, seed=0, step=1, params=run.params)
        context.generate(3000)
        drawn = torch.cat([z.flatten() for z in seen] + [run.fixed_noise.flatten()])
        outside = (drawn.abs() > 1).float().mean().item()
        if latent == "uniform":
            assert drawn.abs().max() <= 1 and drawn.min() < -0.95 and drawn.max() > 0.95
            assert drawn.mean().abs() < 0.05 and drawn.var().item() == pytest.approx(1 / 3, abs=0.02)
        else:  # N(0, 1): about 32% of the draws lie outside [-1, 1]
            assert outside == pytest.approx(0.317, abs=0.03)


@pytest.mark.parametrize(("setting", "message"), [
    ({"g_steps": 0}, "g_steps=0: the generator takes at least 1 step per round"),
    ({"latent": "gaussian"}, "latent='gaussian': choose one of normal, uniform"),
])
def test_a_bad_value_is_one_line_naming_the_choices(registry, setting, message):
    with pytest.raises(UserError, match=message):
        spec(registry, **setting)
