"""Grid specs (flags, TOML files, presets) -> validated runs with content-hash ids. Nothing trains here."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from ganbench.api import Metric, MetricResult
from ganbench.errors import UserError
from ganbench.planning.grid import GridSpec, expand, load_grid_file, load_preset, preset_names
from ganbench.planning.spec import RunSpec
from ganbench.registry import build_registry


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def grid(**changes) -> GridSpec:
    base = GridSpec(archs=["mlp"], losses=["ns"], datasets=["ring8"], seeds=[0], steps=100, metrics=["none"])
    return dataclasses.replace(base, **changes)


def user_error(function, *args) -> str:
    """The message of the UserError ``function(*args)`` raises, checked to be one line."""
    with pytest.raises(UserError) as caught:
        function(*args)
    message = str(caught.value)
    assert "\n" not in message, f"a user error must be one line: {message!r}"
    return message


class ProbeMetric(Metric):
    name = "probe"
    description = "Test metric with one evaluation setting"
    defaults = {"probe_samples": 100}

    def evaluate(self, context):
        return MetricResult({"probe": 0.0})


# --- axes ----------------------------------------------------------------------------

def test_grid_is_the_product_of_its_axes_with_one_id_per_run(registry):
    runs = expand(grid(losses=["ns", "lsgan"], datasets=["ring8", "grid25"], seeds=[0, 1, 2]), registry)
    assert len(runs) == 2 * 2 * 3
    cells = {(run.architecture, run.loss, run.dataset, run.seed) for run in runs}
    assert cells == set(itertools.product(["mlp"], ["ns", "lsgan"], ["ring8", "grid25"], [0, 1, 2]))
    assert len({run.run_id for run in runs}) == len(runs)


def test_each_loss_trains_with_its_papers_settings_unless_set(registry):
    wgan_gp, = expand(grid(losses=["wgan-gp"]), registry)
    assert (wgan_gp.params["n_critic"], wgan_gp.params["lr_g"], wgan_gp.params["beta1"]) == (5, 1e-4, 0.0)
    overridden, = expand(grid(losses=["wgan-gp"], sets={"n_critic": ["2"], "gp_weight": ["1"]}), registry)
    assert overridden.params["n_critic"] == 2
    assert overridden.params["gp_weight"] == 1.0 and isinstance(overridden.params["gp_weight"], float)


def test_set_lr_doubles_the_runs_and_sets_both_learning_rates(registry):
    single = expand(grid(losses=["ns", "hinge"]), registry)
    runs = expand(grid(losses=["ns", "hinge"], sets={"lr": ["1e-4", "2e-4"]}), registry)
    assert len(runs) == 2 * len(single)
    assert sorted((run.loss, run.params["lr_g"], run.params["lr_d"]) for run in runs) == [
        ("hinge", 1e-4, 1e-4), ("hinge", 2e-4, 2e-4), ("ns", 1e-4, 1e-4), ("ns", 2e-4, 2e-4)]
    assert len({run.run_id for run in runs}) == 4


def test_set_axis_applies_only_to_cells_whose_plugins_read_it(registry):
    # clip_value belongs to wgan: the ns cell is not multiplied by it.
    runs = expand(grid(losses=["ns", "wgan"], sets={"clip_value": ["0.01", "0.05"]}), registry)
    assert sorted(run.loss for run in runs) == ["ns", "wgan", "wgan"]
    assert {run.params["clip_value"] for run in runs if run.loss == "wgan"} == {0.01, 0.05}


@pytest.mark.parametrize("sets, named", [
    ({"n_critic": ["abc"]}, "n_critic"),
    ({"n_critic": ["1.5"]}, "n_critic"),
    ({"lr": ["fast"]}, "lr_"),
    ({"mlp_width": ["true"]}, "mlp_width"),
    ({"n_critic": ["0"]}, "n_critic"),
    ({"lr": ["-1e-4"]}, "lr_"),
    ({"optimizer": ["sgd"]}, "optimizer"),
])
def test_bad_set_value_is_a_one_line_error_naming_the_key(registry, sets, named):
    assert named in user_error(expand, grid(sets=sets), registry)


def test_unknown_set_key_is_rejected_with_the_known_keys(registry):
    message = user_error(expand, grid(sets={"learning_rate": ["1e-4"]}), registry)
    assert "learning_rate" in message
    for known in ("lr", "lr_g", "n_critic", "mlp_width", "latent_dim"):
        assert known in message


@pytest.mark.parametrize("kind, axis, name", [("loss", "losses", "nosuch"), ("architecture", "archs", "nosuch"),
                                              ("dataset", "datasets", "nosuch")])
def test_unknown_plugin_name_lists_the_available_ones(registry, kind, axis, name):
    message = user_error(expand, grid(**{axis: [name]}), registry)
    assert f"'{name}'" in message
    for available in registry.names(kind):
        assert available in message


def test_unknown_plugin_name_suggests_the_closest(registry):
    assert "Did you mean 'wgan-gp'?" in user_error(expand, grid(losses=["wgan_gp"]), registry)


def test_architecture_rejects_an_incompatible_data_shape_before_anything_trains(registry):
    message = user_error(expand, grid(archs=["mlp", "dcgan"], datasets=["ring8"]), registry)
    assert "dcgan" in message and "ring8" in message and "(2,)" in message
    assert "--archs mlp" in message  # the fix


@pytest.mark.parametrize("changes", [{"steps": 0}, {"batch_size": 0}, {"seeds": []}, {"checkpoint_every": 0}])
def test_impossible_grid_settings_are_rejected(registry, changes):
    user_error(expand, grid(**changes), registry)


# --- run ids -------------------------------------------------------------------------

def test_same_config_gives_the_same_run_id(registry):
    first = [run.run_id for run in expand(grid(losses=["ns", "lsgan"], seeds=[0, 1]), registry)]
    again = [run.run_id for run in expand(grid(losses=["ns", "lsgan"], seeds=[0, 1]), build_registry())]
    assert first == again
    assert all(len(run_id) == 12 and int(run_id, 16) >= 0 for run_id in first)
    run, = expand(grid(), registry)
    assert RunSpec.from_json(run.to_json()).run_id == run.run_id


@pytest.mark.parametrize("changes", [
    {"seeds": [1]}, {"steps": 101}, {"batch_size": 32}, {"losses": ["lsgan"]}, {"datasets": ["grid25"]},
    {"split": "test"}, {"sets": {"lr": ["1e-4"]}}, {"sets": {"mlp_width": ["128"]}},
    {"sets": {"num_points": ["5000"]}},
])
def test_changing_what_is_trained_changes_the_run_id(registry, changes):
    base, = expand(grid(), registry)
    changed, = expand(grid(**changes), registry)
    assert changed.run_id != base.run_id


def test_a_new_plugin_version_changes_the_run_id(registry):
    run, = expand(grid(), registry)
    versions = {**run.versions, "loss:ns": "ganbench==0.2.0"}
    assert dataclasses.replace(run, versions=versions).run_id != run.run_id


def test_evaluation_settings_and_schedules_do_not_change_the_run_id(registry_with):
    registry = registry_with(("metric", ProbeMetric()))
    base, = expand(grid(), registry)
    evaluated, = expand(grid(metrics=["probe"], sets={"probe_samples": ["7"]}, eval_every=10,
                             checkpoint_every=3, sample_every=4, log_every=2, save_samples=True), registry)
    assert evaluated.evaluation == {"probe_samples": 7} and evaluated.metrics == ("probe",)
    assert evaluated.run_id == base.run_id


def test_evaluation_setting_takes_one_value_not_an_axis(registry_with):
    registry = registry_with(("metric", ProbeMetric()))
    assert "probe_samples" in user_error(expand, grid(metrics=["probe"], sets={"probe_samples": ["1", "2"]}),
                                         registry)


# --- grid files and presets ----------------------------------------------------------

def test_grid_file_gives_axes_settings_and_hyperparameters(tmp_path, registry):
    path = tmp_path / "grid.toml"
    path.write_text('archs = ["mlp"]\nlosses = ["ns", "wgan-gp"]\ndatasets = ["grid25"]\nseeds = [3, 4]\n'
                    'steps = 50\nbatch_size = 16\nmetrics = ["none"]\ncheckpoint_every = 25\n'
                    '[set]\nlr = [1e-4, 3e-4]\nmlp_width = 32\n')
    spec = load_grid_file(path)
    assert (spec.losses, spec.seeds, spec.steps, spec.checkpoint_every) == (["ns", "wgan-gp"], [3, 4], 50, 25)
    runs = expand(spec, registry)
    assert len(runs) == 2 * 2 * 2
    assert {(run.params["lr_g"], run.params["lr_d"]) for run in runs} == {(1e-4, 1e-4), (3e-4, 3e-4)}
    assert {run.params["mlp_width"] for run in runs} == {32}
    assert {(run.dataset, run.steps, run.batch_size, run.checkpoint_every) for run in runs} == {("grid25", 50, 16, 25)}


def test_loss_table_sets_values_for_that_loss_only(tmp_path, registry):
    path = tmp_path / "grid.toml"
    path.write_text('archs = ["mlp"]\nlosses = ["ns", "wgan-gp"]\nsteps = 50\nmetrics = ["none"]\n'
                    '[set]\nlr = 1e-3\nmlp_width = [32, 64]\n'
                    '[loss.wgan-gp]\nlr = 1e-4\nn_critic = [1, 5]\n[arch.mlp]\nmlp_depth = 2\n')
    runs = expand(load_grid_file(path), registry)
    settings = {(run.loss, run.params["lr_g"], run.params["lr_d"], run.params["n_critic"], run.params["mlp_width"],
                 run.params["mlp_depth"]) for run in runs}
    assert settings == {("ns", 1e-3, 1e-3, 1, 32, 2), ("ns", 1e-3, 1e-3, 1, 64, 2),
                        ("wgan-gp", 1e-4, 1e-4, 1, 32, 2), ("wgan-gp", 1e-4, 1e-4, 5, 32, 2),
                        ("wgan-gp", 1e-4, 1e-4, 1, 64, 2), ("wgan-gp", 1e-4, 1e-4, 5, 64, 2)}
    assert len(runs) == len(settings)


def test_loss_table_gives_the_same_run_id_as_the_setting_given_for_the_whole_grid(registry):
    per_loss = expand(grid(losses=["wgan-gp"], per_plugin={"loss": {"wgan-gp": {"lr": [3e-4]}}}), registry)
    global_set = expand(grid(losses=["wgan-gp"], sets={"lr": [3e-4]}), registry)
    assert [run.run_id for run in per_loss] == [run.run_id for run in global_set]


def test_loss_table_of_a_loss_outside_the_grid_is_ignored_and_a_misspelt_one_lists_the_losses(registry):
    assert len(expand(grid(per_plugin={"loss": {"wgan-gp": {"lr": [1e-4]}}}), registry)) == 1
    # ... even with a setting only that loss knows (wgan's clip_value, in a grid of ns runs)
    assert len(expand(grid(per_plugin={"loss": {"wgan": {"clip_value": [0.02]}}}), registry)) == 1
    assert "fid_samples" in user_error(expand, grid(metrics=["fid"], datasets=["mnist"], archs=["dcgan"],
                                                    per_plugin={"loss": {"ns": {"fid_samples": [10]}}}), registry)
    message = user_error(expand, grid(per_plugin={"loss": {"wgan-gpp": {"lr": [1e-4]}}}), registry)
    assert "wgan-gpp" in message and "wgan-gp" in message.replace("wgan-gpp", "")


def test_command_line_set_wins_over_a_loss_table(tmp_path, run_cli, captured_runs):
    path = tmp_path / "grid.toml"
    path.write_text('losses = ["ns", "wgan-gp"]\nsteps = 1\nmetrics = ["none"]\n[loss.wgan-gp]\nlr = 1e-4\n'
                    'n_critic = 2\n')
    code, out, err = run_cli("run", str(path), "--set", "lr_d=5e-4", "--out", str(tmp_path / "out"))
    assert code == 0, err
    settings = {run.loss: (run.params["lr_g"], run.params["lr_d"], run.params["n_critic"]) for run in captured_runs}
    assert settings == {"ns": (2e-4, 5e-4, 1), "wgan-gp": (1e-4, 5e-4, 2)}


def test_grid_file_axis_may_be_a_single_value(tmp_path, registry):
    path = tmp_path / "grid.toml"
    path.write_text('losses = "lsgan"\nseeds = 2\n')
    spec = load_grid_file(path)
    assert (spec.losses, spec.seeds) == (["lsgan"], [2])


@pytest.mark.parametrize("text, named", [
    ("losses = [\n", "not valid TOML"),
    ("lossess = ['ns']\n", "lossess"),
    ("steps = 'ten'\n", "steps"),
    ("steps = 1.5\n", "steps"),
    ("seeds = ['a']\n", "seeds"),
    ("save_samples = 1\n", "save_samples"),
    ("set = 3\n", "[set]"),
    ("loss = 3\n", "[loss.NAME]"),
    ("[loss]\nlr = 1e-4\n", "[loss.NAME]"),
])
def test_bad_grid_file_is_a_one_line_error_naming_the_problem(tmp_path, text, named):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    message = user_error(load_grid_file, path)
    assert named in message and str(path) in message


def test_missing_grid_file_is_a_one_line_error(tmp_path):
    assert "does not exist" in user_error(load_grid_file, tmp_path / "nope.toml")


def test_quickstart_preset_is_the_one_critic_step_losses_on_the_offline_ring(registry):
    assert "quickstart" in preset_names()
    spec = load_preset("quickstart")
    assert spec.archs == ["mlp"] and spec.datasets == ["ring8"]
    assert {"minimax", "ns", "lsgan", "hinge"} == set(spec.losses)
    runs = expand(spec.replace(metrics=["none"]), registry)
    assert len(runs) == len(spec.losses)
    assert {(run.params["lr_g"], run.params["lr_schedule"], run.params["n_critic"], run.steps) for run in runs} == {
        (2e-3, "linear", 1, 6000)}
    # The losses left out of the default train at their own papers' learning rates when added.
    wasserstein = expand(spec.replace(losses=["wgan", "wgan-gp"], metrics=["none"]), registry)
    assert {run.loss: (run.params["lr_g"], run.params["lr_d"], run.params["n_critic"]) for run in wasserstein} == {
        loss: (registry.get("loss", loss).defaults["lr_g"], registry.get("loss", loss).defaults["lr_d"], 5)
        for loss in ("wgan", "wgan-gp")}


def test_unknown_preset_lists_the_presets():
    message = user_error(load_preset, "nope")
    assert "'nope'" in message and "quickstart" in message


def test_a_bad_precision_is_rejected_before_anything_trains():

    with pytest.raises(UserError, match="precision"):
        expand(GridSpec(sets={"precision": ["fp8"]}), build_registry())
