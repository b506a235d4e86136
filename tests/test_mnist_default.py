"""The MNIST default that draws digits: a run given no steps trains its dataset's recommended steps,
and the fid protocol places a figure between its floor (two halves of the real data) and its ceiling
(the run's architecture untrained), both checked against independent computations."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from ganbench.cli import main
from ganbench.planning.defaults import DEFAULT_STEPS
from ganbench.planning.grid import GridSpec, expand, load_grid_file
from ganbench.registry import get_registry
from metrics_support import SHARED_DATA, load_mnist, shared_cache  # noqa: F401


def _cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value.code


def test_mnist_recommends_more_steps_than_the_generic_default():
    mnist = get_registry().get("dataset", "mnist")
    assert mnist.recommended_steps is not None and mnist.recommended_steps > DEFAULT_STEPS


def test_a_grid_without_steps_trains_each_datasets_recommended_steps_or_the_default():
    registry = get_registry()
    grid = GridSpec(archs=["dcgan"], datasets=["mnist", "cifar10"], metrics=["none"])
    steps = {run.dataset: run.steps for run in expand(grid, registry)}
    assert steps == {"mnist": registry.get("dataset", "mnist").recommended_steps, "cifar10": DEFAULT_STEPS}
    assert registry.get("dataset", "cifar10").recommended_steps is None
    ring = expand(GridSpec(archs=["mlp"], datasets=["ring8"], metrics=["none"]), registry)
    assert ring[0].steps == registry.get("dataset", "ring8").recommended_steps


def test_steps_given_anywhere_win_over_the_datasets_recommendation(tmp_path):
    registry = get_registry()
    grid = GridSpec(archs=["dcgan"], datasets=["mnist"], metrics=["none"], steps=7)
    assert [run.steps for run in expand(grid, registry)] == [7]
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('archs = ["dcgan"]\ndatasets = ["mnist"]\nmetrics = ["none"]\nsteps = 9\n')
    assert [run.steps for run in expand(load_grid_file(grid_file), registry)] == [9]
    grid_file.write_text('steps = "many"\n')
    with pytest.raises(Exception, match=r"steps = 'many' is not of type int; write it like steps = 1000"):
        load_grid_file(grid_file)


def _empty_grid(tmp_path: Path) -> str:
    """A grid file with nothing in it: ganbench's defaults (the quickstart's [set] tunes the mlp)."""
    grid = tmp_path / "grid.toml"
    grid.write_text("")
    return str(grid)


def test_the_cli_without_steps_trains_mnist_for_its_recommended_steps(captured_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = _empty_grid(tmp_path)
    assert _cli("run", grid, "--archs", "dcgan", "--losses", "ns", "--datasets", "mnist", "--metrics", "none") == 0
    assert [run.steps for run in captured_runs] == [get_registry().get("dataset", "mnist").recommended_steps]
    captured_runs.clear()
    assert _cli("run", grid, "--archs", "dcgan", "--losses", "ns", "--datasets", "mnist", "--metrics", "none",
                "--steps", "30") == 0
    assert [run.steps for run in captured_runs] == [30]


# --- the floor and ceiling in the fid protocol ------------------------------------------------


def _frechet(first: np.ndarray, second: np.ndarray) -> float:
    """FID from its definition, in float64 with scipy (no torch-fidelity)."""
    mu_1, mu_2 = first.mean(axis=0), second.mean(axis=0)
    sigma_1, sigma_2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root = scipy.linalg.sqrtm(sigma_1 @ sigma_2).real
    return float(((mu_1 - mu_2) ** 2).sum() + np.trace(sigma_1 + sigma_2 - 2 * root))


def _classifier_features(samples: torch.Tensor, checkpoint_path: Path) -> np.ndarray:
    """Penultimate features of the cached classifier, run directly on uint8-quantised images."""
    from ganbench.evaluation.classifier import ClassifierNet

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    net = ClassifierNet(int(checkpoint["num_classes"]))
    net.load_state_dict(checkpoint["state_dict"])
    net.eval()
    images = ((samples.float() + 1) * 127.5).round().clamp(0, 255).expand(-1, 3, -1, -1) / 127.5 - 1
    with torch.no_grad():
        return net(images)[0].double().numpy()


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # an untrained 8-wide dcgan: near-singular
def test_the_fid_protocol_has_a_floor_and_a_ceiling_that_match_independent_computations(tmp_path, shared_cache):
    out, real_count, generated = tmp_path / "out", 1000, 500
    assert _cli("run", _empty_grid(tmp_path), "--archs", "dcgan", "--losses", "ns", "--datasets", "mnist",
                "--data-dir", str(SHARED_DATA),
                "--cache-dir", str(shared_cache), "--steps", "2", "--batch-size", "16", "--set", "dcgan_width=8",
                "--metrics", "fid", "--set", "extractor=classifier", "--set", f"fid_samples={generated}",
                "--set", f"real_samples={real_count}", "--out", str(out), "--quiet") == 0
    with open(out / "results.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    protocol = row[f"protocol.fid{generated}_classifier"]
    floor = float(re.search(r"fid_floor=([0-9.e+]+) \(two disjoint random halves of the 1000 reference images, "
                            r"500 vs 500\)", protocol)[1])
    ceiling = float(re.search(r"fid_ceiling=([0-9.e+]+) \(dcgan untrained", protocol)[1])
    classifier = next((shared_cache / "classifiers").glob("*.pt"))

    # Floor: the same 1,000 reference images (fixed permutation, seed 0), split by a seed-0 permutation.
    mnist = load_mnist(shared_cache)
    reference = mnist.samples[torch.randperm(10_000, generator=torch.Generator().manual_seed(0))[:real_count]]
    halves = torch.randperm(real_count, generator=torch.Generator().manual_seed(0))
    features = _classifier_features(reference, classifier)
    expected_floor = _frechet(features[halves[:500].numpy()], features[halves[500:].numpy()])
    assert floor == pytest.approx(expected_floor, rel=1e-3)

    # Ceiling: dcgan built with seed 0 from the run's hyperparameters, sampled with the run's evaluation noise.
    spec = json.loads(next((out / "runs").glob("*/config.json")).read_text())
    torch.manual_seed(0)
    generator, _ = get_registry().get("architecture", "dcgan").build((1, 28, 28), spec["params"])
    generator.eval()
    noise = torch.randn(generated, spec["params"]["latent_dim"],
                        generator=torch.Generator().manual_seed(spec["seed"] + 1_000_003))
    with torch.no_grad():
        samples = generator(noise)
    expected_ceiling = _frechet(_classifier_features(samples, classifier), features)
    assert ceiling == pytest.approx(expected_ceiling, rel=1e-3)
    assert floor < ceiling
