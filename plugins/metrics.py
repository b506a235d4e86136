"""The built-in metrics: fid, kid and is (computed by torch-fidelity), modes and throughput.

FID, KID and IS use ganbench's helper layer for feature metrics,
:mod:`ganbench.evaluation.features`, exactly as a third party's feature metric would.
Column names carry what changes a figure's meaning: ``fid10k_classifier`` is the FID of
10,000 generated samples in the classifier's feature space, never in one column with an
Inception FID or a 50k FID. Everything else (reference split and count, extractor accuracy,
precision) is in the columns' protocol. torch and torch-fidelity are imported inside
methods, so listing plugins stays quick.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from ganbench import Metric, hookimpl
from ganbench.api import MetricResult

if TYPE_CHECKING:
    import torch

    from ganbench.evaluation.context import EvaluationContext

FEATURE_SETTINGS: dict[str, Any] = {
    "extractor": "auto",
    "inception_weights": "",
    "real_samples": 10_000,
    "reference_split": "test",
}
"""Settings fid, kid and is share. 10k generated vs 10k real as in Lucic et al. 2018 ("Are GANs
Created Equal?"), against the test split."""


@hookimpl
def register_metrics(register):
    for metric in (FidMetric(), KidMetric(), InceptionScoreMetric(), ModesMetric(), ThroughputMetric()):
        register(metric)
    from .stacked_mnist import StackedModesMetric  # beside the dataset it scores

    register(StackedModesMetric())


def _setting(context: "EvaluationContext", key: str, kind: type) -> Any:
    return kind(context.settings[key])


class _FeatureMetric(Metric):
    """What fid, kid and is share: images only, an extractor, sample counts in the column name."""

    def unsupported_reason(self, dataset, data_shape):
        from ganbench.evaluation.features import is_image_shape

        if not is_image_shape(tuple(data_shape)):
            return (f"{self.name} scores images with 1 or 3 channels; {dataset.name} samples have shape "
                    f"{tuple(data_shape)}")
        return None

    @staticmethod
    def _column(metric: str, count: int, extractor_name: str) -> str:
        from ganbench.evaluation.features import count_label

        return f"{metric}{count_label(count)}_{extractor_name}"


class FidMetric(_FeatureMetric):
    """Fréchet Inception Distance (Heusel et al. 2017): Fréchet distance between Gaussians fitted
    to the features of generated and reference images. Lower is better.

    Column ``fid<count>_<extractor>``, e.g. ``fid10k_inception`` or ``fid10k_classifier``.
    The protocol's ``fid_floor`` (two halves of the real data) and ``fid_ceiling`` (the
    run's architecture untrained) place the figure (:mod:`ganbench.evaluation.fid_bounds`); turn them
    off with ``--set fid_bounds=false``.
    """

    name = "fid"
    description = "Frechet distance of extractor features, generated vs real (torch-fidelity); lower is better"
    defaults = {**FEATURE_SETTINGS, "fid_samples": 10_000, "fid_bounds": True}

    def evaluate(self, context):
        from ganbench.evaluation import features

        extractor = features.resolve_extractor(context)
        count = _setting(context, "fid_samples", int)
        real = features.real_statistics(context, extractor)
        generated = features.generated_features(context, extractor, count)[extractor.fid_layer]
        value = features.frechet_distance(real, generated)
        protocol = features.feature_protocol(extractor, count, real)
        if _setting(context, "fid_bounds", bool):
            from ganbench.evaluation.fid_bounds import bounds_protocol

            protocol.update(bounds_protocol(context, extractor, real, count))
        return MetricResult({self._column("fid", count, extractor.name): value}, protocol)


class KidMetric(_FeatureMetric):
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with a cubic polynomial
    kernel, averaged over random subsets. Lower is better; slightly negative means "same".

    Columns ``kid<count>_<extractor>`` and ``kid<count>_<extractor>_std`` (over subsets).
    """

    name = "kid"
    description = "Kernel (MMD) distance of extractor features, generated vs real (torch-fidelity); lower is better"
    defaults = {**FEATURE_SETTINGS, "kid_samples": 10_000, "kid_subsets": 100, "kid_subset_size": 1000}

    def evaluate(self, context):
        from ganbench.evaluation import features

        extractor = features.resolve_extractor(context)
        count = _setting(context, "kid_samples", int)
        real = features.real_statistics(context, extractor)
        generated = features.generated_features(context, extractor, count)[extractor.fid_layer]
        subsets = _setting(context, "kid_subsets", int)
        subset_size = min(_setting(context, "kid_subset_size", int), real.count, count)
        mean, std = features.kernel_distance(real.features, generated, subsets, subset_size)
        column = self._column("kid", count, extractor.name)
        protocol = {**features.feature_protocol(extractor, count, real), "kid_subsets": str(subsets),
                    "kid_subset_size": str(subset_size),
                    "kid_kernel": "polynomial (x.y / dim + 1)^3, unbiased MMD^2"}
        return MetricResult({column: mean, f"{column}_std": std}, protocol)


class InceptionScoreMetric(_FeatureMetric):
    """Inception Score (Salimans et al. 2016): exp of the mean KL between each sample's class
    distribution and the marginal, over torch-fidelity's shuffled splits. Higher is better;
    at most the number of classes.

    Columns ``is<count>_<extractor>`` and ``is<count>_<extractor>_std`` (over splits).
    """

    name = "is"
    description = "Inception Score of generated samples' extractor logits (torch-fidelity); higher is better"
    defaults = {**FEATURE_SETTINGS, "is_samples": 10_000, "is_splits": 10}

    def evaluate(self, context):
        from ganbench.evaluation import features

        extractor = features.resolve_extractor(context)
        count = _setting(context, "is_samples", int)
        splits = _setting(context, "is_splits", int)
        logits = features.generated_features(context, extractor, count)[extractor.is_layer]
        mean, std = features.inception_score(logits, splits)
        column = self._column("is", count, extractor.name)
        protocol = {**features.feature_protocol(extractor, count), "is_splits": str(splits)}
        return MetricResult({column: mean, f"{column}_std": std}, protocol)


class ModesMetric(Metric):
    """Mode coverage of a mixture of Gaussians (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018).

    Applies to every dataset whose :meth:`ganbench.Dataset.mixture` returns a
    :class:`ganbench.api.GaussianMixture` (ring8, grid25, or a plugin's own mixture). A
    sample is high quality when it lies within ``modes_threshold_std`` standard deviations
    (Euclidean distance) of its nearest mode; a mode is covered when at least one
    high-quality sample is nearest to it. Columns: ``modes_covered`` (count),
    ``modes_high_quality_percent`` and ``modes_reverse_kl`` (nats), the KL divergence from
    the high-quality samples' histogram over modes to the uniform one (NaN when no sample
    is high quality).
    """

    name = "modes"
    description = "Gaussian mixtures: modes covered, % high-quality samples, reverse KL to uniform (VEEGAN/PacGAN)"
    defaults = {"modes_samples": 2500, "modes_threshold_std": 3.0}

    def unsupported_reason(self, dataset, data_shape):
        if dataset.mixture(dataset.defaults) is None:
            return (f"modes needs a dataset whose mixture() returns its Gaussian mixture (ring8, grid25); "
                    f"{dataset.name} does not")
        return None

    def evaluate(self, context):
        import torch

        count = _setting(context, "modes_samples", int)
        threshold = _setting(context, "modes_threshold_std", float)
        mixture = context.dataset.mixture({**context.dataset.defaults, **context.params})
        modes, std = torch.tensor(mixture.means, dtype=torch.float64), float(mixture.std)
        covered, high_quality_percent, reverse_kl = mode_statistics(context.generate(count), modes, std, threshold)
        protocol = {"generated_samples": str(count), "modes_total": str(len(modes)), "mode_std": f"{std:g}",
                    "high_quality_within": f"{threshold:g} std of the nearest mode"}
        return MetricResult({"modes_covered": covered, "modes_high_quality_percent": high_quality_percent,
                             "modes_reverse_kl": reverse_kl}, protocol)

    MEANINGFUL_HIGH_QUALITY_PERCENT = 50.0
    """Below this percentage of high-quality samples, mode coverage and reverse KL describe a
    handful of stray samples, not the generator (a blurred ring covers every mode)."""

    def not_meaningful(self, values):
        percent = values.get("modes_high_quality_percent")
        if percent is None or not math.isfinite(percent) or percent >= self.MEANINGFUL_HIGH_QUALITY_PERCENT:
            return {}
        reason = (f"only {percent:.1f}% of samples are high quality (below "
                  f"{self.MEANINGFUL_HIGH_QUALITY_PERCENT:g}%): the samples lie mostly off the modes")
        return {"modes_covered": reason, "modes_reverse_kl": reason}


def mode_statistics(samples: "torch.Tensor", modes: "torch.Tensor", std: float,
                    threshold_std: float = 3.0) -> tuple[float, float, float]:
    """Return ``(modes covered, % high-quality samples, reverse KL in nats)`` of ``samples`` [n, d]."""
    import torch

    distances = torch.cdist(samples.double().cpu(), modes.double().cpu())
    nearest_distance, nearest = distances.min(dim=1)
    high_quality = nearest_distance <= threshold_std * std
    counts = torch.bincount(nearest[high_quality], minlength=len(modes)).double()
    covered = float((counts > 0).sum())
    high_quality_percent = 100.0 * float(high_quality.double().mean()) if len(samples) else math.nan
    if counts.sum() == 0:
        return covered, high_quality_percent, math.nan
    histogram = counts / counts.sum()
    present = histogram > 0
    reverse_kl = float((histogram[present] * torch.log(histogram[present] * len(modes))).sum())
    return covered, high_quality_percent, reverse_kl


class ThroughputMetric(Metric):
    """Speed and memory: the training loop's figures plus the generator's sampling rate.

    Columns: ``images_per_second`` and ``steps_per_second`` (training, steady state),
    ``peak_memory_mb`` and ``train_seconds`` (NaN when the loop did not measure them),
    ``sampling_samples_per_second`` (measured here: the generator alone, samples left on
    the device) and ``evaluation_seconds_so_far`` (earlier evaluations of the run plus this
    one up to this metric). The device name is in the protocol.
    """

    name = "throughput"
    description = "Training images/s, steps/s, peak memory, generator samples/s, evaluation seconds"
    defaults = {"throughput_samples": 5000, "throughput_batch_size": 500}
    TRAINING_COLUMNS = ("images_per_second", "steps_per_second", "peak_memory_mb", "train_seconds")

    def evaluate(self, context):
        count = _setting(context, "throughput_samples", int)
        batch_size = _setting(context, "throughput_batch_size", int)
        values = {column: _number(context.training.get(column)) for column in self.TRAINING_COLUMNS}
        values["sampling_samples_per_second"] = sampling_rate(context.generator, context.latent_dim,
                                                              context.device, count, batch_size)
        current = time.perf_counter() - context.evaluation_started if context.evaluation_started else 0.0
        values["evaluation_seconds_so_far"] = (context.training.get("evaluation_seconds") or 0.0) + current
        protocol = {
            "device_name": str(context.training.get("device_name", context.device)),
            "training_figures": "measured by the training loop at steady state, warm-up and evaluation excluded",
            "sampling": f"{count} samples in batches of {batch_size} on {context.device} after one warm-up batch",
        }
        return MetricResult(values, protocol)


def _number(value: Any) -> float:
    """A figure from the loop as a float; NaN when it was not measured (missing or None)."""
    return math.nan if value is None else float(value)


def sampling_rate(generator: "torch.nn.Module", latent_dim: int, device: "torch.device", count: int,
                  batch_size: int) -> float:
    """Samples per second the generator produces in eval mode, without autograd, on ``device``."""
    import torch

    noise = torch.randn(batch_size, latent_dim, generator=torch.Generator().manual_seed(0)).to(device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda *args: None)
    batches = max(1, -(-count // batch_size))
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            generator(noise)
            synchronize(device)
            started = time.perf_counter()
            for _ in range(batches):
                generator(noise)
            synchronize(device)
            elapsed = time.perf_counter() - started
    finally:
        generator.train(was_training)
    return batches * batch_size / elapsed
