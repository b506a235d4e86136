"""The classifier feature extractor: a small CNN ganbench trains once per labelled dataset.

Trained on the CPU with a fixed seed on the labelled reference split (at most 10,000
images, 15% of them held out to measure its accuracy; about 15-25 s on two CPU cores),
cached under ``<cache_dir>/classifiers/`` by a content hash of the data, architecture and
recipe (:data:`CLASSIFIER_RECIPE`), and registered into torch-fidelity as
``ganbench-classifier`` (:func:`register_classifier`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from ganbench.evaluation.hashing import content_hash
from ganbench.ledger.storage import atomic_write

CLASSIFIER_FIDELITY_NAME = "ganbench-classifier"
CLASSIFIER_RECIPE: Mapping[str, Any] = {
    "architecture": "conv5x5x16-relu-pool2, conv5x5x32-relu-pool2, avgpool7x7, fc128-relu, fc-classes (v1)",
    "input": "uint8 RGB / 127.5 - 1",
    "optimizer": "adam with a one-cycle learning rate schedule",
    "max_lr": 4e-3,
    "epochs": 6,
    "batch_size": 128,
    "augmentation": "one random shift of up to 2 pixels per batch, edges replicated",
    "max_samples": 10_000,
    "held_out_fraction": 0.15,
    "seed": 0,
    "device": "cpu",
    "torch_threads": 1,
}
"""Everything that decides the classifier's weights besides the data; part of its cache key.

``torch_threads``: the classifier always trains on this many CPU threads, whatever the calling
process uses. Its weights depend on the thread count (the order of a convolution gradient's
sums changes with it: at 1 and 2 threads the same recipe gives 99.13% and 99.27% held-out
accuracy on the MNIST test digits, and Stacked MNIST mode counts that differ by tens), so
without it a figure would depend on which process, a one-thread worker or the two-thread main
process, happened to fill the cache first."""

logger = logging.getLogger("ganbench")


class ClassifierNet(nn.Module):
    """The classifier: two conv blocks and a 128-unit hidden layer, on images in [-1, 1]."""

    def __init__(self, num_classes: int, in_channels: int = 3, hidden: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(32 * 7 * 7, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(penultimate [n, 128], logits [n, classes])``."""
        penultimate = self.features(images)
        return penultimate, self.head(penultimate)


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [-1, 1], the classifier's input."""
    return images.float() / 127.5 - 1


class ClassifierFeatureExtractor(FeatureExtractorBase):
    """The classifier as a torch-fidelity feature extractor (uint8 RGB in, features out).

    torch-fidelity instantiates it with ``feature_extractor_weights_path``, the checkpoint
    written by :func:`cached_classifier`, loaded with ``weights_only=True``.
    """

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: Any):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError("the ganbench classifier needs feature_extractor_weights_path (a trained checkpoint)")
        checkpoint = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        self.net = ClassifierNet(int(checkpoint["num_classes"]))
        self.net.load_state_dict(checkpoint["state_dict"])
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("penultimate", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "logits" if metric == "isc" else "penultimate"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 28, 28, dtype=torch.uint8)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [n, 3, h, w], got {images.dtype} {tuple(images.shape)}")
        penultimate, logits = self.net(uint8_to_unit(images))
        features = {"penultimate": penultimate, "logits": logits}
        return tuple(features[name] for name in self.features_list)


def register_classifier() -> None:
    """Register :class:`ClassifierFeatureExtractor` into torch-fidelity (once per process)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if CLASSIFIER_FIDELITY_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(CLASSIFIER_FIDELITY_NAME, ClassifierFeatureExtractor)


def cached_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                      cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Return ``(checkpoint path, checkpoint)`` of the classifier for this data, training it on a cache miss."""
    labels = labels.to(torch.int64).cpu()
    key = content_hash("ganbench-classifier", images, labels, num_classes, json.dumps(CLASSIFIER_RECIPE, sort_keys=True))
    path = cache_dir / "classifiers" / f"{key[:32]}.pt"
    if path.exists():
        return path, torch.load(path, map_location="cpu", weights_only=True)
    logger.warning("training the classifier feature extractor on %d labelled images (once; cached at %s)",
                   len(images), path)
    checkpoint = train_classifier(images, labels, num_classes)
    atomic_write(path, lambda file: torch.save(checkpoint, file))
    return path, checkpoint


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Train :class:`ClassifierNet` on uint8 ``images`` by :data:`CLASSIFIER_RECIPE`; return its checkpoint.

    Uses at most ``max_samples`` images (a seeded random subset, so a 60k split trains as
    fast as a 10k one), the first ``held_out_fraction`` of them held out for the accuracy.
    Deterministic: seeded from the recipe, on the CPU at the recipe's thread count (restored
    afterwards), without touching the global RNG.
    """
    recipe = CLASSIFIER_RECIPE
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _torch_threads(recipe["torch_threads"]):
        torch.manual_seed(recipe["seed"])
        rng = torch.Generator().manual_seed(recipe["seed"])
        order = torch.randperm(len(images), generator=rng)[:recipe["max_samples"]]
        held_out = max(1, round(len(order) * recipe["held_out_fraction"]))
        test, train = order[:held_out], order[held_out:]
        net = ClassifierNet(num_classes)
        batch_size, epochs = recipe["batch_size"], recipe["epochs"]
        optimizer = torch.optim.Adam(net.parameters())
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe["max_lr"], epochs=epochs,
                                                       steps_per_epoch=-(-len(train) // batch_size))
        net.train()
        for _ in range(epochs):
            shuffled = train[torch.randperm(len(train), generator=rng)]
            for start in range(0, len(shuffled), batch_size):
                batch = shuffled[start:start + batch_size]
                inputs = _random_shift(uint8_to_unit(images[batch]), 2, rng)
                loss = F.cross_entropy(net(inputs)[1], labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        net.eval()
        with torch.no_grad():
            predictions = torch.cat([net(uint8_to_unit(images[test[start:start + 500]]))[1].argmax(1)
                                     for start in range(0, len(test), 500)])
    return {
        "state_dict": net.state_dict(),
        "num_classes": num_classes,
        "test_accuracy": float((predictions == labels[test]).double().mean()),
        "train_samples": len(train),
        "test_samples": len(test),
        "train_seconds": time.perf_counter() - started,
    }


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run the block with torch using ``count`` intra-op CPU threads, then restore the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _random_shift(images: torch.Tensor, pixels: int, rng: torch.Generator) -> torch.Tensor:
    """Shift the whole batch by one random offset of up to ``pixels`` in each direction."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (pixels,) * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * pixels + 1, (2,), generator=rng).tolist()
    return padded[..., dy:dy + height, dx:dx + width]
