"""Evaluation on MNIST with the classifier extractor: extractor throughput, a 10k-sample FID with
and without cached real statistics, and a whole evaluation at the default settings.

The generator is an untrained DCGAN at its default size, prepared by the fast path as the
training loop prepares it: evaluation time does not depend on what it has learnt.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch

from ganbench.api import LoadedData
from ganbench.evaluation.classifier import cached_classifier
from ganbench.evaluation.context import EvaluationContext, run_metrics
from ganbench.evaluation.extractors import classifier_extractor
from ganbench.evaluation.features import count_label, extract_features, real_statistics, to_uint8_rgb
from ganbench.planning import defaults
from ganbench.training import fastpath

CPU = torch.device("cpu")
DEFAULT_METRICS = ("fid", "kid", "is", "throughput")
"""What ``--metrics auto`` evaluates on MNIST (mode coverage needs 2D mixtures)."""


@pytest.fixture(scope="module")
def reference(real_data, scale) -> LoadedData:
    """The MNIST test split (its first images in fast mode): FID's reference and the classifier's data."""
    mnist = real_data("mnist")
    count = scale.reference_images
    return LoadedData(mnist.samples[:count], mnist.labels[:count], mnist.split)


@pytest.fixture(scope="module")
def classifier(reference, bench_cache, results) -> dict:
    """The classifier's checkpoint, trained now (once per cache) with its training time noted."""
    _, checkpoint = cached_classifier(to_uint8_rgb(reference.samples), reference.labels, 10, bench_cache)
    results.notes["classifier_train_seconds"] = float(checkpoint["train_seconds"])
    return checkpoint


@pytest.fixture(scope="module")
def generator(registry):
    architecture = registry.get("architecture", "dcgan")
    torch.manual_seed(0)
    generator, discriminator = architecture.build((1, 28, 28), architecture.defaults)
    generator, _ = fastpath.resolve(defaults.FAST_PATH_DEFAULTS, CPU).prepare_modules(generator, discriminator)
    return generator


@pytest.fixture
def evaluation(registry, reference, generator, bench_cache, scale, classifier):
    """``evaluation(*metric names)``: ``(metrics, context)`` at the default settings (fewer samples in fast mode)."""

    def make(*names: str) -> tuple[dict[str, Any], EvaluationContext]:
        metrics = {name: registry.get("metric", name) for name in names}
        settings = {key: value for metric in metrics.values() for key, value in metric.defaults.items()}
        settings["extractor"] = "classifier"
        if scale.fast:
            for key in ("real_samples", "fid_samples", "kid_samples", "is_samples"):
                settings[key] = scale.samples
            settings["kid_subset_size"] = scale.samples // 5
            settings["throughput_samples"] = settings["throughput_batch_size"] = scale.samples // 5
        context = EvaluationContext(generator=generator, latent_dim=registry.get("architecture", "dcgan")
                                    .defaults["latent_dim"], data_shape=(1, 28, 28), dataset_name="mnist",
                                    dataset=registry.get("dataset", "mnist"), real=reference, settings=settings,
                                    device=CPU, cache_dir=bench_cache, seed=0, step=0)
        return metrics, context

    return make


def test_extractor_throughput(benchmark, evaluation, scale, results):
    _, context = evaluation("fid")
    extractor = classifier_extractor(context, "benchmark")
    images = to_uint8_rgb(context.generate(scale.samples))
    benchmark.group = "evaluation"
    benchmark.extra_info.update(images=len(images), extractor="classifier", batch_size=extractor.batch_size)
    benchmark.pedantic(extract_features, args=(images, extractor, CPU), rounds=scale.rounds)
    seconds = results.add_evaluation(benchmark, "extractor")
    if seconds:
        results.notes["extractor_images_per_second"] = len(images) / seconds
        benchmark.extra_info["images_per_second"] = len(images) / seconds


def _fid_benchmark(benchmark, evaluation, scale, results, cached: bool) -> None:
    metrics, context = evaluation("fid")
    statistics = context.cache_dir / "real-statistics"

    def prepare() -> None:
        if cached:
            real_statistics(context, classifier_extractor(context, "benchmark"))
            context.memo.clear()
        else:
            shutil.rmtree(statistics, ignore_errors=True)

    benchmark.group = "evaluation"
    benchmark.extra_info.update(samples=scale.samples, real_statistics="cached" if cached else "computed")
    result = benchmark.pedantic(run_metrics, args=(metrics, context), setup=prepare, rounds=scale.rounds)
    assert f"fid{count_label(scale.samples)}_classifier" in result.values
    results.add_evaluation(benchmark, f"fid_{'cached' if cached else 'cold'}_statistics")


def test_fid_with_real_statistics_computed(benchmark, evaluation, scale, results):
    _fid_benchmark(benchmark, evaluation, scale, results, cached=False)


def test_fid_with_real_statistics_cached(benchmark, evaluation, scale, results):
    _fid_benchmark(benchmark, evaluation, scale, results, cached=True)


def test_evaluation_at_default_settings(benchmark, evaluation, scale, results):
    """FID, KID, IS and throughput, as a run on MNIST ends by default (real statistics cached)."""
    metrics, context = evaluation(*DEFAULT_METRICS)
    real_statistics(context, classifier_extractor(context, "benchmark"))
    context.memo.clear()
    benchmark.group = "evaluation"
    benchmark.extra_info.update(metrics=list(DEFAULT_METRICS), samples=scale.samples)
    result = benchmark.pedantic(run_metrics, args=(metrics, context), rounds=scale.rounds)
    assert len(result.values) > len(DEFAULT_METRICS)
    results.add_evaluation(benchmark, "evaluation_default_settings")
