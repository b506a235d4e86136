"""The ``ganbench run`` command, black-box: exit codes, one-line errors, the files a grid leaves.

One test starts the real console script, to see the exit code and stderr a user sees; the
rest call ``ganbench.cli.main`` in this process (training still happens in the executor's
worker processes). ``--workers 2`` gives
each worker one torch thread, several times faster than two threads on two shared cores.
"""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import torch

from ganbench.ledger.storage import read_json, write_json
from ganbench.planning.defaults import FAST_PATH_DEFAULTS, FAST_PATH_OFF
from ganbench.planning.grid import GridSpec, load_preset
from ganbench.registry import get_registry

GANBENCH = Path(sys.executable).parent / "ganbench"
"""The console script installed next to this interpreter."""


def ganbench_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the real ``ganbench`` command (GANBENCH_CACHE_DIR comes from the ``cache_dir`` fixture)."""
    return subprocess.run([str(GANBENCH), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganbench: error: "), err
    return lines[0]


def read_results(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# --- the examples ------------------------------------------------------------

def test_unknown_loss_prints_one_line_listing_the_losses_and_exits_2(tmp_path, cache_dir):
    result = ganbench_script("run", "--losses", "nosuch", cwd=tmp_path)
    line = one_line_error(result.returncode, result.stderr)
    assert "'nosuch'" in line
    for loss in get_registry().names("loss"):
        assert loss in line
    assert list(tmp_path.iterdir()) == [cache_dir], "nothing is written for a bad grid"


def test_grid_trains_every_run_once_and_the_same_command_again_trains_nothing(tmp_path, run_cli):
    # The example with 20 steps instead of 300 and a smaller batch.
    command = ["run", "--losses", "minimax,lsgan,wgan-gp", "--archs", "mlp", "--datasets", "ring8",
               "--seeds", "0,1", "--steps", "20", "--batch-size", "64", "--out", "X", "--metrics", "none",
               "--quiet", "--workers", "2"]
    code, stdout, err = run_cli(*command)
    assert code == 0, stdout + err
    out = tmp_path / "X"
    rows = read_results(out)
    assert len(rows) == 6
    assert {(row["loss"], row["seed"]) for row in rows} == {
        (loss, seed) for loss in ("minimax", "lsgan", "wgan-gp") for seed in ("0", "1")}
    assert {(row["status"], row["step"], row["architecture"], row["dataset"]) for row in rows} == {
        ("done", "20", "mlp", "ring8")}
    assert all(float(row["wall_seconds"]) > 0 for row in rows)
    assert {row["n_critic"] for row in rows if row["loss"] == "wgan-gp"} == {"5"}  # config columns
    for row in rows:
        run_dir = out / "runs" / row["run_id"]
        assert read_json(run_dir / "config.json")["run_id"] == row["run_id"]
        assert (run_dir / "metrics.jsonl").stat().st_size > 0 and (run_dir / "log.txt").exists()
        assert (run_dir / "samples" / "step_0000020.png").exists()
        torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoints = {path: path.stat().st_mtime_ns for path in out.glob("runs/*/checkpoint.pt")}

    code, stdout, err = run_cli(*command)
    assert code == 0, err
    assert "6 of 6 runs already finished" in stdout
    assert {path: path.stat().st_mtime_ns for path in out.glob("runs/*/checkpoint.pt")} == checkpoints
    assert [row["status"] for row in read_results(out)] == ["done"] * 6


def test_dcgan_on_real_mnist_saves_an_8x8_png_grid_of_28x28_samples(run_cli, tmp_path, shared_data_dir):
    from PIL import Image

    code, stdout, err = run_cli("run", "--archs", "dcgan", "--losses", "ns", "--datasets", "mnist",
                                 "--data-dir", str(shared_data_dir), "--steps", "30", "--batch-size", "32",
                                 "--metrics", "none", "--out", "M", "--quiet", "--workers", "2")
    assert code == 0, stdout + err
    assert "only the test split" in stdout  # the shared folder holds MNIST's test split alone
    row, = read_results(tmp_path / "M")
    assert (row["status"], row["step"], row["dataset"]) == ("done", "30", "mnist")
    with Image.open(tmp_path / "M" / "runs" / row["run_id"] / "samples" / "step_0000030.png") as image:
        assert image.format == "PNG"
        pixels = torch.from_numpy(numpy.array(image.convert("L"))).float()
    assert pixels.shape == (242, 242)
    # 8 tiles of 28 pixels per side with 2-pixel gutters: 8 * (28 + 2) + 2 = 242.
    gutters = torch.zeros(242, dtype=torch.bool)
    for start in range(0, 242, 30):
        gutters[start:start + 2] = True
    assert pixels[gutters].eq(0).all() and pixels[:, gutters].eq(0).all()
    tiles = pixels[~gutters][:, ~gutters].reshape(8, 28, 8, 28).permute(0, 2, 1, 3).reshape(64, 28 * 28)
    assert (tiles.std(dim=1) > 0).all(), "every tile is a generated image, not padding"


def test_grid_file_run_survives_a_diverged_cell_and_resumes_a_crashed_run(run_cli, tmp_path):
    # gp_weight is read only by wgan-gp; 1e39 overflows float32, so that cell's loss is
    # infinite at its first step while the ns cell trains normally.
    (tmp_path / "grid.toml").write_text(
        'archs = ["mlp"]\nlosses = ["ns", "wgan-gp"]\ndatasets = ["ring8"]\nseeds = [0]\nsteps = 20\n'
        'batch_size = 32\ncheckpoint_every = 10\nmetrics = ["none"]\n'
        '[set]\ngp_weight = 1e39\nmlp_width = 32\nnum_points = 2000\n')
    command = ["run", "grid.toml", "--out", "G", "--quiet", "--workers", "2"]
    code, stdout, err = run_cli(*command)
    assert code == 0, stdout + err  # diverging is a result, not a failure
    rows = {row["loss"]: row for row in read_results(tmp_path / "G")}
    assert (rows["ns"]["status"], rows["ns"]["step"]) == ("done", "20")
    assert rows["wgan-gp"]["status"] == "diverged" and "non-finite loss at step 1 " in rows["wgan-gp"]["error"]
    assert rows["ns"]["gp_weight"] == "" and float(rows["wgan-gp"]["gp_weight"]) == 1e39

    # Make the ns run look killed at step 15: status running, last checkpoint step 10.
    run_dir = tmp_path / "G" / "runs" / rows["ns"]["run_id"]
    finished = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    (run_dir / "checkpoint.prev.pt").replace(run_dir / "checkpoint.pt")
    write_json(run_dir / "status.json", {"status": "running", "step": 10})

    code, stdout, err = run_cli(*command)
    assert code == 0, stdout + err
    assert "1 of 2 runs already finished" in stdout  # the diverged run is not retried
    assert "resumed from step 10" in (run_dir / "log.txt").read_text()
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 20
    for name, tensor in finished["generator"].items():
        assert torch.equal(resumed["generator"][name], tensor), name
    assert {row["loss"]: row["status"] for row in read_results(tmp_path / "G")} == {"ns": "done",
                                                                                   "wgan-gp": "diverged"}


# --- bad input: one line on stderr, exit code 2, no run directories --------------------

@pytest.mark.parametrize("args, named", [
    (["--losses", "nosuch"], "Available losses: hinge, lsgan, minimax, ns, wgan, wgan-gp"),
    (["--archs", "dcgn"], "Did you mean 'dcgan'?"),
    (["--set", "n_critic=abc"], "n_critic"),
    (["--set", "nosuch=1"], "nosuch"),
    (["--set", "lr"], "key=value"),
    (["--seeds", "0,x"], "--seeds"),
    (["--steps", "0"], "--steps"),
    (["--archs", "dcgan", "--datasets", "ring8"], "use --archs mlp"),
    (["--archs", "mlp,dcgan", "--datasets", "ring8"], "cannot model dataset 'ring8'"),
    (["--preset", "nope"], "quickstart"),
    (["missing.toml"], "missing.toml does not exist"),
    (["--bogus-flag"], "--bogus-flag"),
])
def test_bad_input_is_one_line_naming_the_fix_with_exit_code_2_and_nothing_written(run_cli, tmp_path, args,
                                                                                    named):
    code, stdout, err = run_cli("run", *args, "--out", "out", "--metrics", "none")
    assert named in one_line_error(code, err)
    assert not (tmp_path / "out").exists()


def test_unwritable_output_directory_is_one_line_naming_out(run_cli, tmp_path):
    (tmp_path / "a-file").write_text("")
    code, stdout, err = run_cli("run", "--archs", "mlp", "--losses", "ns", "--datasets", "ring8", "--steps", "1",
                                 "--metrics", "none", "--out", "a-file/results")
    assert "--out" in one_line_error(code, err)


def test_missing_mnist_without_network_is_one_line_naming_data_dir(run_cli, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (blocked by the test)")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    (tmp_path / "empty").mkdir()
    code, stdout, err = run_cli("run", "--archs", "dcgan", "--losses", "ns", "--datasets", "mnist",
                                 "--data-dir", "empty", "--steps", "1", "--metrics", "none", "--out", "out")
    line = one_line_error(code, err)
    assert "MNIST" in line and "--data-dir" in line
    assert not (tmp_path / "out" / "runs").exists()


# --- how flags, presets and grid files combine ----------------------------------------

def test_no_grid_flags_run_the_quickstart_preset(run_cli, captured_runs):
    code, stdout, err = run_cli("run", "--metrics", "none")
    assert code == 0, err
    quickstart = load_preset("quickstart")
    assert {(run.architecture, run.loss, run.dataset, run.seed) for run in captured_runs} == {
        (arch, loss, dataset, seed) for arch in quickstart.archs for loss in quickstart.losses
        for dataset in quickstart.datasets for seed in quickstart.seeds}
    # The preset names no steps: each run trains its dataset's recommended steps.
    assert quickstart.steps is None
    assert {(run.steps, run.batch_size) for run in captured_runs} == {
        (get_registry().get("dataset", dataset).recommended_steps, quickstart.batch_size)
        for dataset in quickstart.datasets}


def test_other_archs_or_datasets_without_a_preset_leave_the_quickstarts_mlp_settings_behind(run_cli, captured_runs):
    code, stdout, err = run_cli("run", "--archs", "dcgan", "--datasets", "mnist", "--metrics", "none")
    assert code == 0, err
    quickstart = load_preset("quickstart")
    assert {run.loss for run in captured_runs} == set(quickstart.losses)
    assert {(run.architecture, run.dataset, run.batch_size) for run in captured_runs} == {
        ("dcgan", "mnist", GridSpec().batch_size)}
    assert all(run.params["lr_schedule"] == "constant" and "mlp_width" not in run.params for run in captured_runs)
    assert {run.params["lr_g"] for run in captured_runs if run.loss == "ns"} == {2e-4}
    code, stdout, err = run_cli("run", "--preset", "quickstart", "--archs", "dcgan", "--datasets", "mnist",
                                "--metrics", "none")
    assert code == 2 and "mlp_width" in err  # a preset named on purpose keeps its settings


def test_each_flag_replaces_only_its_axis_of_the_preset(run_cli, captured_runs):
    code, stdout, err = run_cli("run", "--preset", "quickstart", "--losses", "ns,hinge", "--seeds", "1,2",
                                 "--steps", "7", "--metrics", "none")
    assert code == 0, err
    assert {(run.architecture, run.loss, run.dataset, run.seed) for run in captured_runs} == {
        ("mlp", loss, "ring8", seed) for loss in ("ns", "hinge") for seed in (1, 2)}
    assert {run.steps for run in captured_runs} == {7}


def test_flags_replace_the_axes_of_a_grid_file(run_cli, captured_runs, tmp_path):
    (tmp_path / "grid.toml").write_text('losses = ["ns", "lsgan"]\ndatasets = ["grid25"]\nsteps = 9\n'
                                        '[set]\nmlp_width = [16, 32]\n')
    code, stdout, err = run_cli("run", "grid.toml", "--datasets", "ring8", "--set", "mlp_depth=1",
                                 "--metrics", "none")
    assert code == 0, err
    assert {(run.loss, run.dataset, run.steps, run.params["mlp_width"], run.params["mlp_depth"])
            for run in captured_runs} == {
        (loss, "ring8", 9, width, 1) for loss in ("ns", "lsgan") for width in (16, 32)}


def test_set_lr_doubles_the_runs_and_sets_both_learning_rates(run_cli, captured_runs):
    code, stdout, err = run_cli("run", "--archs", "mlp", "--losses", "ns,lsgan", "--datasets", "ring8",
                                 "--set", "lr=1e-4,2e-4", "--metrics", "none")
    assert code == 0, err
    assert sorted((run.loss, run.params["lr_g"], run.params["lr_d"]) for run in captured_runs) == [
        ("lsgan", 1e-4, 1e-4), ("lsgan", 2e-4, 2e-4), ("ns", 1e-4, 1e-4), ("ns", 2e-4, 2e-4)]


# --- fast-path flags: shorthands for --set ---------------------------------------------

FAST_PATH_GRID = ("--archs", "mlp", "--losses", "ns,wgan-gp", "--datasets", "ring8,grid25", "--seeds", "0,1",
                  "--metrics", "none")
NO_FAST_PATH_SETS = tuple(arg for key, value in FAST_PATH_OFF.items()
                          for arg in ("--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"))


def expanded(run_cli, captured_runs, *args: str) -> list:
    """The runs ``ganbench run`` would train with ``args``, without training them."""
    captured_runs.clear()
    code, stdout, err = run_cli("run", *FAST_PATH_GRID, *args)
    assert code == 0, stdout + err
    return list(captured_runs)


@pytest.mark.parametrize("flags, sets, expected", [
    (["--precision", "bf16"], ["--set", "precision=bf16"], {"precision": "bf16"}),
    (["--precision", "fp32"], ["--set", "precision=fp32"], {"precision": "fp32"}),
    (["--precision", "auto"], ["--set", "precision=auto"], {"precision": "auto"}),
    (["--no-channels-last"], ["--set", "channels_last=false"], {"channels_last": False}),
    (["--channels-last"], ["--set", "channels_last=true"], {"channels_last": True}),
    (["--compile"], ["--set", "compile=true"], {"compile": True}),
    (["--tf32"], ["--set", "tf32=true"], {"tf32": True}),
    (["--no-fast-path"], list(NO_FAST_PATH_SETS), dict(FAST_PATH_OFF)),
    (["--no-fast-path", "--no-channels-last", "--set", "precision=fp32"], list(NO_FAST_PATH_SETS), dict(FAST_PATH_OFF)),
    (["--tf32", "--no-channels-last", "--precision", "bf16"],
     ["--set", "tf32=true", "--set", "channels_last=false", "--set", "precision=bf16"],
     {"tf32": True, "channels_last": False, "precision": "bf16"}),
])
def test_a_fast_path_flag_gives_the_same_run_ids_as_its_set(run_cli, captured_runs, flags, sets, expected):
    by_flag = expanded(run_cli, captured_runs, *flags)
    by_set = expanded(run_cli, captured_runs, *sets)
    assert len(by_flag) == 8
    assert [run.run_id for run in by_flag] == [run.run_id for run in by_set]
    for run in by_flag:
        assert {key: run.params[key] for key in expected} == expected
        assert {key: type(run.params[key]) for key in expected} == {key: type(FAST_PATH_DEFAULTS[key])
                                                                   for key in expected}
    default_ids = {run.run_id for run in expanded(run_cli, captured_runs)}
    changes_a_default = any(FAST_PATH_DEFAULTS[key] != value for key, value in expected.items())
    assert default_ids.isdisjoint(run.run_id for run in by_flag) == changes_a_default


def test_no_fast_path_trains_every_setting_as_fastpath_off(run_cli, captured_runs):
    runs = expanded(run_cli, captured_runs, "--no-fast-path")
    assert runs and all({key: run.params[key] for key in FAST_PATH_OFF} == dict(FAST_PATH_OFF) for run in runs)


def test_a_fast_path_flag_replaces_the_setting_of_a_grid_file(run_cli, captured_runs, tmp_path):
    (tmp_path / "grid.toml").write_text('metrics = ["none"]\n[set]\nprecision = "fp32"\ntf32 = true\n')
    code, stdout, err = run_cli("run", "grid.toml", "--precision", "bf16")
    assert code == 0, err
    assert {(run.params["precision"], run.params["tf32"]) for run in captured_runs} == {("bf16", True)}


@pytest.mark.parametrize("args, named", [
    (["--precision", "bf16", "--set", "precision=fp32"], ("--precision bf16", "--set precision=fp32")),
    (["--set", "precision=bf16,fp32", "--precision", "bf16"], ("--precision bf16", "--set precision=bf16,fp32")),
    (["--tf32", "--set", "tf32=false"], ("--tf32", "--set tf32=false")),
    (["--no-channels-last", "--set", "channels_last=true"], ("--no-channels-last", "--set channels_last=true")),
    (["--no-fast-path", "--precision", "bf16"], ("--precision bf16", "--no-fast-path")),
    (["--no-fast-path", "--compile"], ("--compile", "--no-fast-path")),
    (["--no-fast-path", "--channels-last"], ("--channels-last", "--no-fast-path")),
    (["--no-fast-path", "--set", "fused_optimizers=true"], ("--no-fast-path", "--set fused_optimizers=true")),
    (["--precision", "fp16"], ("--precision", "'fp16'")),
])
def test_a_fast_path_flag_contradicting_another_is_one_line_naming_both(run_cli, tmp_path, args, named):
    code, stdout, err = run_cli("run", *args, "--out", "out", "--metrics", "none")
    line = one_line_error(code, err)
    assert all(name in line for name in named), line
    assert not (tmp_path / "out").exists()


def test_run_help_lists_the_fast_path_flags(run_cli):
    code, stdout, err = run_cli("run", "--help")
    assert code == 0, err
    for flag in ("--precision [auto|fp32|bf16]", "--channels-last / --no-channels-last", "--compile", "--tf32",
                 "--no-fast-path"):
        assert flag in stdout, flag


@pytest.mark.parametrize("args, hint", [(["--bogus"], "(see ganbench --help)"),
                                        (["run", "--bogus"], "(see ganbench run --help)"),
                                        (["report"], "(see ganbench report --help)")])
def test_a_usage_error_names_the_help_of_the_command_it_is_about(run_cli, args, hint):
    code, stdout, err = run_cli(*args)
    assert one_line_error(code, err).endswith(hint)
