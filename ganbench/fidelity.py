"""torch-fidelity glue: images to uint8 in memory, features, cached real statistics, FID/KID/IS.

Generated samples never touch the disk: they are converted from ``[-1, 1]`` float to the
uint8 RGB batches torch-fidelity's extractors take, wrapped in a ``Dataset`` and fed to
torch-fidelity's own feature loop (``get_featuresdict_from_dataset``) and metric functions
(``fid_statistics_to_metric``, ``kid_features_to_metric``, ``isc_features_to_metric``).

Real-data statistics are cached by ganbench, not by torch-fidelity (whose cache unpickles
with ``weights_only=False`` and is keyed by a name the caller picks): each entry is an
``.npz`` under ``<cache_dir>/real-statistics/`` named by a content hash of the reference
images (after preprocessing), their split, the sample count and the extractor, and is
loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

if TYPE_CHECKING:
    from ganbench.evaluation import EvaluationContext
    from ganbench.extractors import Extractor

PREPROCESSING = "uint8 RGB: round((x + 1) * 127.5) clamped to [0, 255], grayscale tiled to 3 channels"
"""How samples in [-1, 1] become torch-fidelity's input. Part of every cache key and protocol."""
REFERENCE_SUBSET_SEED = 0
"""Seed of the permutation that picks ``real_samples`` reference images. Fixed, not the run's
seed, so every run compares against the same images and shares one cache entry."""
STATISTICS_FORMAT = "ganbench-real-statistics-v1"


def to_uint8_rgb(samples: torch.Tensor) -> torch.Tensor:
    """Return ``[n, 3, h, w]`` uint8 images from ``[n, c, h, w]`` floats in [-1, 1] (c = 1 or 3)."""
    if samples.dim() != 4 or samples.shape[1] not in (1, 3):
        raise ValueError(f"expected images [n, 1 or 3, h, w], got shape {tuple(samples.shape)}")
    images = ((samples.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images


def is_image_shape(data_shape: tuple[int, ...]) -> bool:
    """True when ``data_shape`` is ``(1 or 3, h, w)``, the images torch-fidelity can score."""
    return len(data_shape) == 3 and data_shape[0] in (1, 3)


class UInt8Images(TorchDataset):
    """In-memory uint8 images as the ``torch.utils.data.Dataset`` torch-fidelity iterates."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


@contextlib.contextmanager
def strict_fp32():
    """Disable TF32 for CUDA matmuls and convolutions inside the block, then restore.

    Uses the ``fp32_precision`` API only: reading it works whichever API the caller used,
    and restoring its old value leaves legacy ``allow_tf32`` reads working.
    """
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision, conv.fp32_precision = "ieee", "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def extract_features(images: torch.Tensor, extractor: "Extractor", device: torch.device,
                     layers: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Return ``{layer: float32 [n, d] CPU tensor}`` for uint8 RGB ``images``, computed by torch-fidelity.

    ``layers`` defaults to the extractor's FID and IS layers. Runs in strict fp32 (no TF32).
    """
    from torch_fidelity.utils import get_featuresdict_from_dataset

    layers = layers or tuple(dict.fromkeys((extractor.fid_layer, extractor.is_layer)))
    cuda = device.type == "cuda"
    with (torch.cuda.device(device) if cuda else contextlib.nullcontext()), strict_fp32():
        module = extractor.create(list(layers), cuda)
        features = get_featuresdict_from_dataset(UInt8Images(images), module, extractor.batch_size,
                                                 cuda, save_cpu_ram=True, verbose=False)
    return {layer: value.float().cpu() for layer, value in features.items()}


def content_hash(*parts: Any) -> str:
    """Hex sha256 of ``parts`` (strings, numbers, bytes or tensors), each length-prefixed."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            tensor = part.detach().cpu().contiguous()
            data = f"{tensor.dtype}{tuple(tensor.shape)}".encode() + tensor.view(torch.uint8).numpy().tobytes()
        elif isinstance(part, bytes):
            data = part
        else:
            data = repr(part).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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


def reference_images(context: "EvaluationContext") -> tuple[torch.Tensor, str, int]:
    """Return ``(uint8 images, split, requested count)`` of the reference set for FID/KID."""
    reference = context.reference_data(str(context.settings.get("reference_split", "test")))
    requested = int(context.settings.get("real_samples", 10_000))
    indices = reference_indices(len(reference.samples), min(requested, len(reference.samples)))
    return to_uint8_rgb(reference.samples[indices]), reference.split, requested


def real_statistics(context: "EvaluationContext", extractor: "Extractor") -> RealStatistics:
    """Reference features and statistics: from the disk cache, or computed once and cached."""
    memo_key = ("real-statistics", extractor.identity)
    if memo_key in context.memo:
        return context.memo[memo_key]
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
    statistics = RealStatistics(features, mu, sigma, split, len(images), requested, path)
    context.memo[memo_key] = statistics
    return statistics


def generated_features(context: "EvaluationContext", extractor: "Extractor", count: int) -> dict[str, torch.Tensor]:
    """Features (FID and IS layers) of ``count`` generated samples, shared by the metrics of one evaluation."""
    memo_key = ("generated-features", extractor.identity, count)
    if memo_key not in context.memo:
        images = to_uint8_rgb(context.generate(count))
        context.memo[memo_key] = extract_features(images, extractor, context.device)
    return context.memo[memo_key]


def fid_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of ``features`` in float64, by torch-fidelity."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    statistics = fid_features_to_statistics(features.double().cpu())
    return statistics["mu"], statistics["sigma"]


def frechet_distance(real: RealStatistics, features: torch.Tensor) -> float:
    """FID between the reference statistics and ``features``, by torch-fidelity (float64)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    mu, sigma = fid_statistics(features)
    result = fid_statistics_to_metric({"mu": real.mu, "sigma": real.sigma}, {"mu": mu, "sigma": sigma}, False)
    return float(result[KEY_METRIC_FID])


def kernel_distance(real_features: torch.Tensor, features: torch.Tensor, subsets: int,
                    subset_size: int) -> tuple[float, float]:
    """KID ``(mean, std)`` over ``subsets`` random subsets of ``subset_size``, by torch-fidelity.

    torch-fidelity's defaults: cubic polynomial kernel, unbiased MMD², subset seed 2020.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    result = kid_features_to_metric(real_features, features, kid_subsets=subsets,
                                    kid_subset_size=subset_size, verbose=False)
    return float(result[KEY_METRIC_KID_MEAN]), float(result[KEY_METRIC_KID_STD])


def inception_score(logits: torch.Tensor, splits: int) -> tuple[float, float]:
    """IS ``(mean, std)`` over ``splits`` shuffled splits of ``logits``, by torch-fidelity."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    result = isc_features_to_metric(logits.cpu(), splits=splits)
    return float(result[KEY_METRIC_ISC_MEAN]), float(result[KEY_METRIC_ISC_STD])


def feature_protocol(extractor: "Extractor", generated: int, real: RealStatistics | None = None) -> dict[str, str]:
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


def fidelity_version() -> str:
    from torch_fidelity import __version__

    return __version__
