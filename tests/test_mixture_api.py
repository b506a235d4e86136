"""A third party's points dataset gets mode coverage by returning its mixture from ``Dataset.mixture``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganbench import Dataset, GaussianMixture, LoadedData
from ganbench.execution.recording import execute_run
from ganbench.planning.grid import GridSpec, expand

pytestmark = pytest.mark.usefixtures("single_thread")

MEANS = ((0.0, 0.0, 0.0), (5.0, 0.0, 0.0), (0.0, 5.0, 0.0))


class ThreeBlobs(Dataset):
    """Three isotropic Gaussians in 3D, std ``blobs_std``."""

    name = "three-blobs"
    description = "three Gaussians in 3D"
    source = "synthetic"
    defaults = {"blobs_std": 0.1}

    def data_shape(self, params):
        return (3,)

    def mixture(self, params):
        return GaussianMixture(MEANS, float(params["blobs_std"]))

    def load(self, request):
        rng = torch.Generator().manual_seed(request.seed)
        labels = torch.randint(3, (600,), generator=rng)
        noise = torch.randn(600, 3, generator=rng) * float(request.params["blobs_std"])
        return LoadedData(torch.tensor(MEANS)[labels] + noise, labels, request.split)


def test_a_plugin_mixture_is_scored_by_the_modes_metric_with_its_own_std(tmp_path, cache_dir, registry_with):
    registry = registry_with(("dataset", ThreeBlobs()))
    grid = GridSpec(archs=["mlp"], losses=["ns"], datasets=["three-blobs"], steps=3, batch_size=8,
                    metrics=["auto"], sample_every=1000, save_samples=True,
                    sets={"mlp_width": [8], "mlp_depth": [1], "blobs_std": [2.0], "modes_samples": [300]})
    spec, = expand(grid, registry)
    assert "modes" in spec.metrics and "fid" not in spec.metrics
    outcome = execute_run(spec, tmp_path, registry=registry, device=torch.device("cpu"), data_dir=None,
                          cache_dir=cache_dir)
    assert outcome.status == "done", outcome.error

    samples = np.load(tmp_path / "runs" / spec.run_id / "samples.npz")["samples"].astype(np.float64)[:300]
    distances = np.linalg.norm(samples[:, None, :] - np.asarray(MEANS)[None], axis=2)
    good = distances.min(axis=1) <= 3 * 2.0  # the run's blobs_std, not the default 0.1
    assert outcome.metrics["modes_high_quality_percent"] == pytest.approx(100 * good.mean())
    assert outcome.metrics["modes_covered"] == len(set(distances.argmin(axis=1)[good]))
    protocol = next(text for column, text in outcome.protocol.items() if "modes_covered" in column)
    assert "mode_std=2" in protocol


def test_a_dataset_without_a_mixture_is_not_scored_and_asking_for_modes_is_one_line(registry_with):
    from ganbench.errors import UserError

    class Plain(ThreeBlobs):
        name = "plain-blobs"

        def mixture(self, params):
            return None

    registry = registry_with(("dataset", Plain()))
    with pytest.raises(UserError, match="mixture"):
        expand(GridSpec(archs=["mlp"], datasets=["plain-blobs"], metrics=["modes"]), registry)


def test_a_mixture_rejects_what_is_not_one():
    with pytest.raises(ValueError, match="positive std"):
        GaussianMixture(((0.0, 0.0),), 0.0)
    with pytest.raises(ValueError, match="one dimension"):
        GaussianMixture(((0.0, 0.0), (1.0,)), 1.0)
    assert math.isclose(GaussianMixture(((1.0,),), 0.5).std, 0.5)
