"""Whole grids through the real CLI: the numbers in results.csv match what can be recomputed
independently from the samples a run saved (``--save-samples``): mode coverage, and FID from
the MNIST IDX files, the named classifier and scipy."""

from __future__ import annotations

import csv
import gzip
import json
import warnings
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


def _mnist_test_images(folder: Path) -> np.ndarray:
    """uint8 ``[10000, 28, 28]`` from the IDX file, read from the format's definition (magic, sizes, bytes)."""
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "rb") as handle:
        data = handle.read()
    assert data[:4] == bytes([0, 0, 0x08, 3])  # unsigned bytes, 3 dimensions
    count, rows, columns = (int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(3))
    return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, columns)


def _classifier_features(uint8_rgb: np.ndarray, checkpoint_path: Path) -> np.ndarray:
    """Penultimate features of the cached classifier, run directly (not through torch-fidelity)."""
    import torch

    from ganbench.evaluation.classifier import ClassifierNet

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    net = ClassifierNet(int(checkpoint["num_classes"]))
    net.load_state_dict(checkpoint["state_dict"])
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(uint8_rgb).float() / 127.5 - 1)[0].double().numpy()


def _frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """FID from its definition: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), in float64 with scipy."""
    from scipy import linalg

    mu1, mu2 = first.mean(axis=0), second.mean(axis=0)
    sigma1, sigma2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU units make the covariances singular; sqrtm still converges
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(sigma1 @ sigma2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * root))


def test_an_mnist_grid_reports_fid_kid_and_is_with_the_classifier_protocol(tmp_path, monkeypatch, shared_data_dir,
                                                                           shared_cache):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    code = _run("run", "--archs", "dcgan", "--losses", "ns", "--datasets", "mnist",
                "--data-dir", str(shared_data_dir), "--cache-dir", str(shared_cache),
                "--steps", "20", "--batch-size", "32", "--metrics", "fid,kid,is",
                "--set", "fid_samples=1000", "--set", "kid_samples=1000", "--set", "is_samples=1000",
                "--set", "real_samples=1000", "--set", "extractor=classifier", "--workers", "1",
                "--save-samples", "--out", "out", "--quiet")
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

    # FID recomputed from the saved samples and the IDX files: the protocol's reference subset
    # (the first 1000 of a seed-0 permutation of the test split), the classifier the protocol names.
    with np.load(tmp_path / "out" / "runs" / row["run_id"] / "samples.npz", allow_pickle=False) as saved:
        generated = saved["samples"]
    assert generated.shape == (1000, 1, 28, 28)
    generated_uint8 = np.clip(np.round((generated.astype(np.float64) + 1) * 127.5), 0, 255).astype(np.uint8)
    import torch

    chosen = torch.randperm(10_000, generator=torch.Generator().manual_seed(0))[:1000].numpy()
    real_uint8 = _mnist_test_images(shared_data_dir / "mnist")[chosen][:, None]
    name = row["protocol.fid1k_classifier"].split("ganbench classifier ", 1)[1][:16]
    (classifier,) = (shared_cache / "classifiers").glob(f"{name}*.pt")
    fid = _frechet_distance(_classifier_features(np.repeat(generated_uint8, 3, axis=1), classifier),
                            _classifier_features(np.repeat(real_uint8, 3, axis=1), classifier))
    assert float(row["fid1k_classifier"]) == pytest.approx(fid, rel=1e-4)


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
