"""Whole grids through the real CLI: the numbers in results.csv match what can be recomputed
independently from the samples a run saved (``--save-samples``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ganbench.cli import main
from ganbench.registry import get_registry
from metrics_support import shared_cache  # noqa: F401  (session fixture: the classifier is trained once)


def _run(*args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value.code


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv") as handle:
        return list(csv.DictReader(handle))


def _independent_mode_coverage(points: np.ndarray, modes: np.ndarray, std: float) -> tuple[int, float]:
    """VEEGAN/PacGAN mode coverage written from the definition, in numpy."""
    distances = np.sqrt(((points[:, None, :] - modes[None, :, :]) ** 2).sum(axis=2))
    nearest = distances.argmin(axis=1)
    high_quality = distances[np.arange(len(points)), nearest] <= 3 * std
    covered = len(set(nearest[high_quality].tolist()))
    return covered, 100.0 * high_quality.mean()


def test_mode_coverage_in_results_equals_a_recomputation_from_the_saved_samples(tmp_path, monkeypatch, cache_dir):
    monkeypatch.chdir(tmp_path)
    code = _run("run", "--archs", "mlp", "--losses", "ns,hinge", "--datasets", "ring8,grid25",
                "--steps", "150", "--metrics", "modes", "--save-samples", "--workers", "2",
                "--out", "out", "--quiet")
    assert code == 0
    rows = _rows(tmp_path / "out")
    assert len(rows) == 4 and {row["status"] for row in rows} == {"done"}
    registry = get_registry()
    for row in rows:
        dataset = registry.get("dataset", row["dataset"])
        with np.load(tmp_path / "out" / "runs" / row["run_id"] / "samples.npz", allow_pickle=False) as saved:
            points = saved["samples"]
        assert points.shape == (2500, 2)
        covered, high_quality = _independent_mode_coverage(points, np.asarray(dataset.modes), dataset.std)
        assert int(float(row["modes_covered"])) == covered
        assert float(row["modes_high_quality_percent"]) == pytest.approx(high_quality, abs=1e-9)
        assert "generated_samples=2500" in row["protocol.modes_covered"]


def test_an_mnist_grid_reports_fid_kid_and_is_with_the_classifier_protocol(tmp_path, monkeypatch, shared_data_dir,
                                                                           shared_cache):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    code = _run("run", "--archs", "dcgan", "--losses", "ns", "--datasets", "mnist",
                "--data-dir", str(shared_data_dir), "--cache-dir", str(shared_cache),
                "--steps", "20", "--batch-size", "32", "--metrics", "fid,kid,is",
                "--set", "fid_samples=1000", "--set", "kid_samples=1000", "--set", "is_samples=1000",
                "--set", "real_samples=1000", "--set", "extractor=classifier", "--workers", "1",
                "--out", "out", "--quiet")
    assert code == 0
    (row,) = _rows(tmp_path / "out")
    assert row["status"] == "done"
    for column in ("fid1k_classifier", "kid1k_classifier", "is1k_classifier"):
        assert np.isfinite(float(row[column])), column
        assert "classifier" in row[f"protocol.{column}"]
    # an untrained-ish generator is far from the data; the IS of a 10-class classifier is in [1, 10]
    assert float(row["fid1k_classifier"]) > 0
    assert 1.0 <= float(row["is1k_classifier"]) <= 10.0
    assert (tmp_path / "out" / "report" / "report.html").exists()


def test_eval_rescores_finished_runs_from_their_checkpoints_without_training(tmp_path, monkeypatch, cache_dir):
    monkeypatch.chdir(tmp_path)
    assert _run("run", "--archs", "mlp", "--losses", "ns", "--datasets", "ring8", "--steps", "40",
                "--metrics", "none", "--workers", "1", "--out", "out", "--quiet") == 0
    (row,) = _rows(tmp_path / "out")
    checkpoint = tmp_path / "out" / "runs" / row["run_id"] / "checkpoint.pt"
    trained_at = checkpoint.stat().st_mtime_ns
    assert _run("eval", "out", "--metrics", "modes", "--set", "modes_samples=1000") == 0
    (row,) = _rows(tmp_path / "out")
    assert 0 <= int(float(row["modes_covered"])) <= 8
    assert "generated_samples=1000" in row["protocol.modes_covered"]
    assert checkpoint.stat().st_mtime_ns == trained_at  # nothing was trained again
    assert _run("eval", "out", "--metrics", "nosuch") == 2


def test_a_dcgan_fid_on_mnist_goes_down_as_it_trains(tmp_path, monkeypatch, shared_data_dir, shared_cache):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    code = _run("run", "--archs", "dcgan", "--losses", "ns", "--datasets", "mnist",
                "--data-dir", str(shared_data_dir), "--cache-dir", str(shared_cache),
                "--steps", "400", "--batch-size", "64", "--eval-every", "100", "--metrics", "fid",
                "--set", "fid_samples=1000", "--set", "real_samples=1000", "--set", "extractor=classifier",
                "--set", "dcgan_width=32", "--workers", "1", "--out", "out", "--quiet")
    assert code == 0
    (row,) = _rows(tmp_path / "out")
    history = [json.loads(line) for line in
               (tmp_path / "out" / "runs" / row["run_id"] / "metrics.jsonl").read_text().splitlines()]
    fids = [(record["step"], record["fid1k_classifier"]) for record in history if record["kind"] == "eval"]
    assert [step for step, _ in fids] == [100, 200, 300, 400]
    first, last = fids[0][1], fids[-1][1]
    assert last < 0.7 * first, fids
    assert float(row["fid1k_classifier"]) == pytest.approx(last)
