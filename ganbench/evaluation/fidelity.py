"""torch-fidelity's code, called on ganbench's in-memory images: features, FID, KID and IS.

Samples are fed as uint8 RGB batches (:mod:`ganbench.evaluation.images`) to torch-fidelity's
own feature loop (``get_featuresdict_from_dataset``) and metric functions
(``fid_statistics_to_metric``, ``kid_features_to_metric``, ``isc_features_to_metric``), in
strict float32 (TF32 off). Metrics reach these through :mod:`ganbench.evaluation.features`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from ganbench.evaluation.images import UInt8Images

if TYPE_CHECKING:
    from ganbench.evaluation.extractors import Extractor
    from ganbench.evaluation.features import RealStatistics

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


def fidelity_version() -> str:
    """The installed torch-fidelity's version, for protocols."""
    from torch_fidelity import __version__

    return __version__
