"""Shared by the metric and extractor tests: real MNIST, stand-in generators, evaluation contexts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pytest
import torch
from torch import nn

from ganbench.api import DataRequest, Dataset, LoadedData
from ganbench.evaluation.context import EvaluationContext
from ganbench.registry import get_registry

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""``../shared/data`` from the checkout; ``mnist/`` below it holds the MNIST test split."""
LATENT_DIM = 16


def mnist_dataset() -> Dataset:
    return get_registry().get("dataset", "mnist")


def load_mnist(cache_dir: Path) -> LoadedData:
    """The MNIST test split: 10,000 digits, [-1, 1] float32 (n, 1, 28, 28), with labels."""
    request = DataRequest(data_dir=str(SHARED_DATA), cache_dir=str(cache_dir), split="test", seed=0)
    return mnist_dataset().load(request)


class UntrainedGenerator(nn.Module):
    """A randomly initialised DCGAN-style generator: noise -> tanh images that look like no digit."""

    def __init__(self, latent_dim: int = LATENT_DIM, channels: int = 1):
        super().__init__()
        torch.manual_seed(1234)
        self.project = nn.Linear(latent_dim, 32 * 7 * 7)
        self.upsample = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(),
                                      nn.ConvTranspose2d(16, channels, 4, 2, 1), nn.Tanh())

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(noise).view(-1, 32, 7, 7))


class ReplayGenerator(nn.Module):
    """Returns fixed samples in order, ignoring the noise: a "perfect" generator of those samples.

    The position restarts whenever the module is switched to eval or train mode, which
    ``EvaluationContext.generate`` does before sampling, so every call replays from the start.
    """

    def __init__(self, samples: torch.Tensor):
        super().__init__()
        self.register_buffer("samples", samples)
        self.position = 0

    def train(self, mode: bool = True) -> "ReplayGenerator":
        self.position = 0
        return super().train(mode)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        indices = torch.arange(self.position, self.position + len(noise)) % len(self.samples)
        self.position += len(noise)
        return self.samples[indices].to(noise.device)


def make_context(generator: nn.Module, real: LoadedData, dataset: Dataset, settings: Mapping[str, Any],
                 cache_dir: Path, data_shape: tuple[int, ...] = (1, 28, 28), **extra: Any) -> EvaluationContext:
    return EvaluationContext(generator=generator, latent_dim=LATENT_DIM, data_shape=data_shape,
                             dataset_name=dataset.name, dataset=dataset, real=real, settings=dict(settings),
                             device=torch.device("cpu"), cache_dir=Path(cache_dir), seed=0, step=0, **extra)


def metric_settings(*names: str, **overrides: Any) -> dict[str, Any]:
    """The resolved settings of the named built-in metrics (their defaults) with ``overrides``."""
    settings: dict[str, Any] = {}
    for name in names:
        settings.update(get_registry().get("metric", name).defaults)
    settings.update(overrides)
    return settings


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One ganbench cache for the whole session, so the classifier is trained once for both test files."""
    path = tmp_path_factory.getbasetemp() / "ganbench-metrics-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def mnist(shared_cache) -> LoadedData:
    return load_mnist(shared_cache)


@pytest.fixture(scope="session")
def mnist_classifier(mnist, shared_cache):
    """``(checkpoint path, checkpoint)`` of the classifier trained on the MNIST test split."""
    from ganbench.evaluation.classifier import cached_classifier
    from ganbench.evaluation.images import to_uint8_rgb

    return cached_classifier(to_uint8_rgb(mnist.samples), mnist.labels, 10, shared_cache)
