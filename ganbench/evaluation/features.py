"""The helper layer every feature metric uses: FID, KID and IS, built in or from a plugin.

A metric that scores images in an extractor's feature space needs the same few steps;
they live here, once, and ``ganbench_plugins.metrics`` uses nothing else:

1. :func:`resolve_extractor` picks the extractor the ``extractor`` setting names;
2. :func:`real_statistics` gives the reference images' features and FID statistics
   (cached on disk by content, shared by the metrics of one evaluation);
3. :func:`generated_features` gives the features of ``count`` generated samples (shared too);
4. :func:`frechet_distance`, :func:`kernel_distance` and :func:`inception_score` compute the
   figures by torch-fidelity;
5. :func:`feature_protocol` says how they were measured, and :func:`count_label` puts the
   sample count into the column name (``fid10k_classifier``).

Real-data statistics are cached by ganbench, not by torch-fidelity (whose cache unpickles
with ``weights_only=False`` and is keyed by a name the caller picks): each entry is an
``.npz`` under ``<cache_dir>/real-statistics/`` named by a content hash of the reference
images (after preprocessing), their split, the sample count and the extractor, and is
loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganbench.evaluation.context import EvaluationContext
from ganbench.evaluation.extractors import Extractor, resolve_extractor
from ganbench.evaluation.fidelity import (extract_features, fid_statistics, fidelity_version, frechet_distance,
                                          inception_score, kernel_distance)
from ganbench.evaluation.hashing import content_hash
from ganbench.evaluation.images import PREPROCESSING, is_image_shape, to_uint8_rgb
from ganbench.ledger.storage import atomic_write

__all__ = ["Extractor", "RealStatistics", "count_label", "feature_protocol", "frechet_distance", "generated_features",
           "inception_score", "is_image_shape", "kernel_distance", "real_statistics", "resolve_extractor",
           "to_uint8_rgb"]
"""The layer, as docs/plugins.md ("Metrics") describes it to plugin authors."""

REFERENCE_SUBSET_SEED = 0
"""Seed of the permutation that picks ``real_samples`` reference images. Fixed, not the run's
seed, so every run compares against the same images and shares one cache entry."""
STATISTICS_FORMAT = "ganbench-real-statistics-v1"


def reference_indices(available: int, wanted: int) -> torch.Tensor:
    """Indices of the reference images: the first ``wanted`` of a fixed-seed permutation."""
    permutation = torch.randperm(available, generator=torch.Generator().manual_seed(REFERENCE_SUBSET_SEED))
    return permutation[:wanted]


@dataclass(frozen=True)
class RealStatistics:
    """Features of the reference images and their FID statistics."""

    features: torch.Tensor
    """float32 ``[count, d]`` at the extractor's FID/KID layer."""
    mu: np.ndarray
    """float64 ``[d]`` mean of ``features``."""
    sigma: np.ndarray
    """float64 ``[d, d]`` covariance of ``features``."""
    split: str
    """The split the images came from."""
    count: int
    """How many reference images were used (fewer than asked when the split is smaller)."""
    requested: int
    """How many were asked for (``real_samples``)."""
    path: Path
    """The cache file."""


def reference_images(context: EvaluationContext) -> tuple[torch.Tensor, str, int]:
    """Return ``(uint8 images, split, requested count)`` of the reference set for FID/KID."""
    reference = context.reference_data(str(context.settings.get("reference_split", "test")))
    requested = int(context.settings.get("real_samples", 10_000))
    indices = reference_indices(len(reference.samples), min(requested, len(reference.samples)))
    return to_uint8_rgb(reference.samples[indices]), reference.split, requested


def real_statistics(context: EvaluationContext, extractor: Extractor) -> RealStatistics:
    """Reference features and statistics: from the disk cache, or computed once and cached."""
    return context.shared(("real-statistics", extractor.identity), lambda: _real_statistics(context, extractor))


def _real_statistics(context: EvaluationContext, extractor: Extractor) -> RealStatistics:
    images, split, requested = reference_images(context)
    key = content_hash(STATISTICS_FORMAT, images, split, PREPROCESSING, len(images), extractor.identity,
                       extractor.fid_layer)
    path = Path(context.cache_dir) / "real-statistics" / f"{key[:32]}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            features, mu, sigma = torch.from_numpy(stored["features"]), stored["mu"], stored["sigma"]
    else:
        features = extract_features(images, extractor, context.device, (extractor.fid_layer,))[extractor.fid_layer]
        mu, sigma = fid_statistics(features)
        atomic_write(path, lambda file: np.savez(file, features=features.numpy(), mu=mu, sigma=sigma,
                                                  description=np.array(f"{context.dataset_name} {split} "
                                                                       f"{len(images)} {extractor.identity}")))
    return RealStatistics(features, mu, sigma, split, len(images), requested, path)


def generated_features(context: EvaluationContext, extractor: Extractor, count: int) -> dict[str, torch.Tensor]:
    """Features (FID and IS layers) of ``count`` generated samples, shared by the metrics of one evaluation."""
    return context.shared(("generated-features", extractor.identity, count),
                          lambda: extract_features(to_uint8_rgb(context.generate(count)), extractor, context.device))


def feature_protocol(extractor: Extractor, generated: int, real: RealStatistics | None = None) -> dict[str, str]:
    """The protocol shared by FID, KID and IS columns: extractor, sample counts, preprocessing."""
    protocol = {**extractor.protocol, "generated_samples": str(generated)}
    if real is not None:
        protocol.update(real_samples=str(real.count), reference_split=real.split)
        if real.count < real.requested:
            protocol["real_samples_requested"] = str(real.requested)
    protocol.update(preprocessing=PREPROCESSING, precision="float32 features (TF32 off), float64 statistics",
                    torch_fidelity=fidelity_version())
    return protocol


def count_label(count: int) -> str:
    """``10000`` -> ``"10k"``, ``2500`` -> ``"2500"``: the sample count in a column name (``fid10k``)."""
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)
