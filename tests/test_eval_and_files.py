"""What the fault battery of issue 15 found in eval, the output directory's files and the inputs.

One tiny run (a 32-unit mlp, 20 steps on ring8, checkpoints at 10 and 20) is trained
in-process per module and copied for each test that changes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from ganbench.cli import main
from ganbench.errors import UserError
from ganbench.execution.recording import execute_run
from ganbench.execution.rescore import rescore
from ganbench.ledger.runs import RunDirectory, lock_output, write_results
from ganbench.ledger.storage import SymlinkRefused, append_jsonl, read_json, write_json
from ganbench.planning.grid import GridSpec, expand
from ganbench.registry import build_registry

pytestmark = pytest.mark.usefixtures("single_thread")
TRAINING = ("images_per_second", "steps_per_second", "peak_memory_mb", "train_seconds")


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def tiny_grid(**changes) -> GridSpec:
    grid = GridSpec(archs=["mlp"], losses=["ns"], datasets=["ring8"], seeds=[0], steps=20, batch_size=32,
                    metrics=["modes", "throughput"], checkpoint_every=10, sample_every=1000, log_every=5,
                    sets={"mlp_width": [32], "mlp_depth": [2], "num_points": [2000], "modes_samples": [500],
                          "throughput_samples": [500]})
    return dataclasses.replace(grid, **changes)


@pytest.fixture(scope="module")
def trained(registry, tmp_path_factory) -> Path:
    """OUT of the finished tiny run (do not change it: copy it with :func:`copy_of`)."""
    out = tmp_path_factory.mktemp("trained") / "out"
    (spec,) = expand(tiny_grid(), registry)
    outcome = execute_run(spec, out, registry=registry, device=torch.device("cpu"), data_dir=None,
                          cache_dir=out.parent / "cache")
    assert outcome.status == "done"
    RunDirectory(out / "runs" / spec.run_id).write_status("done", step=outcome.step, metrics=outcome.metrics,
                                                          protocol=outcome.protocol)
    write_results(out)
    return out


def copy_of(trained: Path, tmp_path: Path) -> tuple[Path, RunDirectory]:
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    (run,) = (out / "runs").iterdir()
    return out, RunDirectory(run)


def score(path: Path, metrics: list[str], registry) -> tuple[int, list[str]]:
    """``ganbench eval PATH --metrics ...`` in-process (500 samples for modes): runs scored and warnings."""
    warnings: list[str] = []
    overrides = {"modes_samples": "500"} if "modes" in metrics else {}
    count = rescore(path, metrics, overrides, registry=registry, device=torch.device("cpu"), data_dir=None,
                    cache_dir=path.parent / "cache", warn=warnings.append)
    return count, warnings


def test_eval_keeps_the_training_figures_it_cannot_measure(trained, tmp_path, registry):
    out, run = copy_of(trained, tmp_path)
    before = run.status()["metrics"]
    assert all(math.isfinite(before[column]) for column in TRAINING)
    count, warnings = score(run.path, ["modes", "throughput"], registry)
    after = run.status()["metrics"]
    assert count == 1
    assert {column: after[column] for column in TRAINING} == {column: before[column] for column in TRAINING}
    assert after["sampling_samples_per_second"] > 0  # what eval does measure is updated
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert all(row[column] == pytest.approx(before[column]) for column in TRAINING)
    assert any("kept the run's recorded images_per_second" in warning for warning in warnings)


def test_eval_of_an_image_metric_on_points_is_the_one_line_error_run_gives(trained, tmp_path, registry, capsys):
    out, _ = copy_of(trained, tmp_path)
    with pytest.raises(UserError, match="metric 'fid' does not apply to dataset 'ring8'"):
        score(out, ["fid"], registry)
    with pytest.raises(SystemExit) as exit_code:
        main(["eval", str(out), "--metrics", "fid"])
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_code.value.code == 2 and len(error) == 1
    assert error[0].startswith("ganbench: error: metric 'fid' does not apply to dataset 'ring8'")


def test_eval_of_a_damaged_checkpoint_says_and_records_the_step_it_scored(trained, tmp_path, registry):
    out, run = copy_of(trained, tmp_path)
    run.checkpoint.write_bytes(b"torn")
    count, warnings = score(run.path, ["modes"], registry)
    assert count == 1
    assert any("scored checkpoint.prev.pt at step 10, not the run's final step 20" in w for w in warnings)
    records = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert records[-1]["kind"] == "rescore" and records[-1]["step"] == 10
    status = run.status()
    assert status["step"] == 20
    assert "scored_step=10" in status["protocol"]["modes_covered"]
    assert "checkpoint.prev.pt (step 10)" in status["protocol"]["modes_covered"]


def test_eval_records_the_step_it_scored_on_an_intact_run_too(trained, tmp_path, registry):
    out, run = copy_of(trained, tmp_path)
    _, warnings = score(out, ["modes"], registry)
    assert "scored_step=20" in run.status()["protocol"]["modes_covered"]
    assert not any("checkpoint" in w for w in warnings)


def test_eval_waits_for_no_one_while_a_run_holds_the_output_directory(trained, tmp_path, registry):
    out, run = copy_of(trained, tmp_path)
    before = run.metrics.read_text()
    with lock_output(out):  # what `ganbench run` holds
        with pytest.raises(UserError, match="in use by another ganbench run"):
            score(run.path, ["modes"], registry)
    assert run.metrics.read_text() == before


def test_json_files_are_strict_json_with_null_for_non_finite_figures(trained, tmp_path):
    out, run = copy_of(trained, tmp_path)
    append_jsonl(run.metrics, [{"step": 20, "kind": "eval", "modes_reverse_kl": math.nan, "x": [math.inf]}])
    write_json(run.status_file, {**run.status(), "metrics": {"modes_reverse_kl": -math.inf}})

    def reject(constant):
        raise ValueError(f"bare {constant} is not JSON")

    records = [json.loads(line, parse_constant=reject) for line in run.metrics.read_text().splitlines()]
    assert records[-1]["modes_reverse_kl"] is None and records[-1]["x"] == [None]
    assert json.loads(run.status_file.read_text(), parse_constant=reject)["metrics"]["modes_reverse_kl"] is None


def test_negative_eval_every_is_rejected(registry):
    with pytest.raises(UserError, match="--eval-every -5: give a positive number of steps, or 0"):
        expand(tiny_grid(eval_every=-5), registry)
    assert expand(tiny_grid(eval_every=0), registry)  # 0: only at the end


@pytest.mark.parametrize("name", ["OUT/.lock", ".lock", "log.txt", "metrics.jsonl", "output.txt"])
def test_files_in_out_are_never_written_through_a_planted_symlink(trained, tmp_path, name):
    from ganbench.ledger.storage import open_append

    out, run = copy_of(trained, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = out / ".lock" if name == "OUT/.lock" else run.path / name
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    with pytest.raises(SymlinkRefused, match=f"{link} is a symbolic link"):
        if name == "OUT/.lock":
            with lock_output(out):
                pass
        elif name == ".lock":
            with run.lock():
                pass
        elif name == "log.txt":
            run.log_line("hello")
        elif name == "metrics.jsonl":
            append_jsonl(run.metrics, [{"step": 1}])
        else:  # how the executor opens a run's output.txt
            open_append(run.output, binary=True)
    assert victim.read_text() == "precious\n"


def test_a_damaged_config_keeps_its_row_in_results_csv_with_a_warning(trained, tmp_path):
    out, run = copy_of(trained, tmp_path)
    run.config.write_text("{ torn")
    warnings: list[str] = []
    write_results(out, on_warning=warnings.append)
    rows = pd.read_csv(out / "results.csv")
    assert rows["run_id"].tolist() == [run.path.name]
    assert rows["status"].tolist() == ["done"] and "damaged" in rows["error"][0]
    assert rows["images_per_second"][0] == pytest.approx(run.status()["metrics"]["images_per_second"])
    assert len(warnings) == 1 and run.path.name in warnings[0] and "config.json" in warnings[0]


def test_a_missing_data_dir_is_a_one_line_error_even_for_toy_datasets(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GANBENCH_DATA_DIR", raising=False)
    with pytest.raises(SystemExit) as exit_code:
        main(["run", "--archs", "mlp", "--losses", "ns", "--datasets", "ring8", "--steps", "20",
              "--data-dir", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_code.value.code == 2 and len(error) == 1 and "--data-dir" in error[0] and "no such directory" in error[0]
    assert not (tmp_path / "out" / "runs").exists()


def test_divergence_at_the_first_log_boundary_records_that_step(tmp_path, registry_with):
    from ganbench.api import Loss

    class NanAtTen(Loss):
        name = "nan-at-ten"
        description = "finite until the generator loss of step 10, the first logging boundary"
        defaults = {"optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_critic": 1}
        calls = 0

        def discriminator_loss(self, real_logits, fake_logits, params):
            return torch.nn.functional.softplus(-real_logits).mean() + torch.nn.functional.softplus(fake_logits).mean()

        def generator_loss(self, fake_logits, real_logits, params):
            NanAtTen.calls += 1
            loss = torch.nn.functional.softplus(-fake_logits).mean()
            return loss * math.nan if NanAtTen.calls == 10 else loss

    faulty = registry_with(("loss", NanAtTen()))
    grid = tiny_grid(losses=["nan-at-ten"], metrics=["none"], log_every=10, checkpoint_every=100,
                     sets={"mlp_width": [32], "mlp_depth": [2], "num_points": [2000]})
    (spec,) = expand(grid, faulty)
    outcome = execute_run(spec, tmp_path / "out", registry=faulty, device=torch.device("cpu"), data_dir=None,
                          cache_dir=tmp_path / "cache")
    assert outcome.status == "diverged" and outcome.step == 10 and "step 10" in outcome.error
    assert read_json(tmp_path / "out" / "runs" / spec.run_id / "status.json")["step"] == 10
