"""The built-in metrics, each figure checked against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ganbench.api import LoadedData, Metric, MetricResult
from ganbench.evaluation import features as evaluation_features
from ganbench.evaluation.classifier import ClassifierNet
from ganbench.evaluation.context import run_metrics
from ganbench.evaluation.samples import save_samples
from ganbench.registry import get_registry
from ganbench_plugins.metrics import mode_statistics
from metrics_support import (ReplayGenerator, UntrainedGenerator, make_context, metric_settings,  # noqa: F401
                             mnist, mnist_classifier, mnist_dataset, shared_cache)


def metric(name: str) -> Metric:
    return get_registry().get("metric", name)


# Independent reference implementations (numpy/scipy, float64) ------------------------------------

def reference_fid(features_1: np.ndarray, features_2: np.ndarray) -> float:
    features_1, features_2 = features_1.astype(np.float64), features_2.astype(np.float64)
    mu_1, mu_2 = features_1.mean(0), features_2.mean(0)
    sigma_1, sigma_2 = np.cov(features_1, rowvar=False), np.cov(features_2, rowvar=False)
    covariance_mean = scipy.linalg.sqrtm(sigma_1 @ sigma_2).real
    return float(((mu_1 - mu_2) ** 2).sum() + np.trace(sigma_1) + np.trace(sigma_2) - 2 * np.trace(covariance_mean))


def reference_kid(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """Unbiased MMD² with the kernel (x.y / d + 1)^3 over all samples."""
    x, y = features_1.astype(np.float64), features_2.astype(np.float64)
    dim, m, n = x.shape[1], len(x), len(y)
    k_xx, k_yy, k_xy = ((a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


def reference_inception_score(logits: np.ndarray) -> float:
    logits = logits.astype(np.float64)
    log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    p = np.exp(log_p)
    log_marginal = np.log(p.mean(0))
    return float(np.exp((p * (log_p - log_marginal)).sum(1).mean()))


def reference_uint8(samples: torch.Tensor) -> torch.Tensor:
    pixels = np.clip(np.round((samples.numpy().astype(np.float32) + 1) * np.float32(127.5)), 0, 255)
    return torch.from_numpy(np.repeat(pixels.astype(np.uint8), 3, axis=1))


def reference_subset(available: int, wanted: int) -> torch.Tensor:
    """The documented reference subset: the first ``wanted`` of torch.randperm seeded with 0."""
    return torch.randperm(available, generator=torch.Generator().manual_seed(0))[:wanted]


def classifier_features(checkpoint, images_uint8: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    net = ClassifierNet(10)
    net.load_state_dict(checkpoint["state_dict"])
    with torch.no_grad():
        penultimate, logits = net.eval()(images_uint8.float() / 127.5 - 1)
    return penultimate.numpy(), logits.numpy()


# Conversion ----------------------------------------------------------------------------------------

def test_samples_become_uint8_rgb_with_grayscale_tiled():
    samples = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.3]).view(1, 1, 2, 3)
    images = evaluation_features.to_uint8_rgb(samples)
    assert images.dtype == torch.uint8 and images.shape == (1, 3, 2, 3)
    assert images[0, 0].flatten().tolist() == [0, 64, 128, 191, 255, 255]
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    random = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(evaluation_features.to_uint8_rgb(random), reference_uint8(random))


# FID, KID, IS on hand-made features ------------------------------------------------------------------

def _gaussian_features(seed: int, count: int = 2000, dim: int = 32, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=torch.Generator().manual_seed(99)) / dim ** 0.5
    return (torch.randn(count, dim, generator=generator) @ mixing + shift).float()


def _statistics_of(features: torch.Tensor) -> evaluation_features.RealStatistics:
    mu, sigma = evaluation_features.fid_statistics(features)
    return evaluation_features.RealStatistics(features, mu, sigma, "test", len(features), len(features), None)


def test_fid_of_a_feature_set_against_itself_is_zero():
    features = _gaussian_features(0)
    assert abs(evaluation_features.frechet_distance(_statistics_of(features), features)) < 1e-8


@pytest.mark.parametrize("shift", [0.0, 0.3, 3.0])
def test_fid_equals_scipy_sqrtm_frechet_distance_on_the_same_features(shift):
    real, generated = _gaussian_features(0), _gaussian_features(1, count=1500, shift=shift)
    value = evaluation_features.frechet_distance(_statistics_of(real), generated)
    expected = reference_fid(real.numpy(), generated.numpy())
    assert value == pytest.approx(expected, rel=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_clearly_positive_for_different_ones():
    real = _gaussian_features(0)
    same, _ = evaluation_features.kernel_distance(real, _gaussian_features(1), subsets=20, subset_size=1000)
    different, _ = evaluation_features.kernel_distance(real, _gaussian_features(1, shift=0.5), subsets=20, subset_size=1000)
    assert abs(same) < 0.01 * different
    assert different > 0.5


def test_kid_with_one_subset_of_everything_equals_the_unbiased_mmd():
    real, generated = _gaussian_features(0, count=600), _gaussian_features(1, count=600, shift=0.2)
    mean, std = evaluation_features.kernel_distance(real, generated, subsets=1, subset_size=600)
    assert mean == pytest.approx(reference_kid(real.numpy(), generated.numpy()), rel=1e-4)
    assert std == 0.0


def test_inception_score_is_one_for_uniform_predictions_and_the_class_count_for_confident_balanced_ones():
    assert evaluation_features.inception_score(torch.zeros(1000, 10), splits=10) == pytest.approx((1.0, 0.0), abs=1e-12)
    confident = 50.0 * torch.eye(10).repeat(100, 1)  # 1000 samples, 100 per class
    assert evaluation_features.inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-9)
    mean, _ = evaluation_features.inception_score(confident, splits=10)  # shuffled splits are only nearly balanced
    assert 9.5 < mean <= 10.0


def test_inception_score_equals_an_independent_computation():
    logits = torch.randn(500, 10, generator=torch.Generator().manual_seed(0)) * 3
    assert evaluation_features.inception_score(logits, splits=1)[0] == pytest.approx(reference_inception_score(logits.numpy()),
                                                                        rel=1e-9)


# FID, KID, IS end to end on MNIST with the classifier -----------------------------------------------

FEATURE_METRICS = ("fid", "kid", "is")


def _evaluate(generator, mnist, cache, names=FEATURE_METRICS, **settings):
    context = make_context(generator, mnist, mnist_dataset(),
                           metric_settings(*names, extractor="classifier", **settings), cache)
    return run_metrics({name: metric(name) for name in names}, context), context


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # dead ReLU units: scipy warns, the value is right
@pytest.mark.parametrize("generator_kind", ["untrained", "real digits"])
def test_fid_and_is_on_mnist_equal_independent_computations(generator_kind, mnist, mnist_classifier, shared_cache):
    reference = reference_subset(10_000, 3000)
    other = torch.ones(10_000, dtype=torch.bool)
    other[reference] = False
    generator = UntrainedGenerator() if generator_kind == "untrained" else ReplayGenerator(mnist.samples[other])
    evaluation, context = _evaluate(generator, mnist, shared_cache, names=("fid", "is"), real_samples=3000,
                                    fid_samples=2000, is_samples=2000, is_splits=1)
    checkpoint = mnist_classifier[1]
    real_features, _ = classifier_features(checkpoint, reference_uint8(mnist.samples[reference]))
    generated_features, generated_logits = classifier_features(checkpoint, reference_uint8(context.generate(2000)))
    values = evaluation.values
    assert values["fid2k_classifier"] == pytest.approx(reference_fid(real_features, generated_features), rel=1e-6)
    assert values["is2k_classifier"] == pytest.approx(reference_inception_score(generated_logits), rel=1e-6)


def test_kid_on_mnist_equals_the_unbiased_mmd_when_it_uses_every_sample(mnist, mnist_classifier, shared_cache):
    evaluation, context = _evaluate(UntrainedGenerator(), mnist, shared_cache, names=("kid",), real_samples=1000,
                                    kid_samples=1000, kid_subsets=1, kid_subset_size=1000)
    checkpoint = mnist_classifier[1]
    real_features, _ = classifier_features(checkpoint, reference_uint8(mnist.samples[reference_subset(10_000, 1000)]))
    generated_features, _ = classifier_features(checkpoint, reference_uint8(context.generate(1000)))
    assert evaluation.values["kid1k_classifier"] == pytest.approx(reference_kid(real_features, generated_features),
                                                                  rel=1e-4)


def test_real_digits_score_far_better_than_an_untrained_generator(mnist, mnist_classifier, shared_cache):
    reference = reference_subset(10_000, 5000)
    other = torch.ones(10_000, dtype=torch.bool)
    other[reference] = False
    counts = dict(real_samples=5000, fid_samples=5000, kid_samples=5000, is_samples=5000)
    real_half, _ = _evaluate(ReplayGenerator(mnist.samples[other]), mnist, shared_cache, **counts)
    untrained, _ = _evaluate(UntrainedGenerator(), mnist, shared_cache, **counts)
    real_half, untrained = real_half.values, untrained.values
    print({"real half": real_half, "untrained": untrained})
    assert real_half["fid5k_classifier"] < 0.01 * untrained["fid5k_classifier"]
    assert abs(real_half["kid5k_classifier"]) < 0.01 * untrained["kid5k_classifier"]
    assert real_half["is5k_classifier"] > 9.0 > 2.0 > untrained["is5k_classifier"]


def test_columns_and_protocols_name_the_extractor_and_sample_counts(mnist, mnist_classifier, shared_cache):
    evaluation, _ = _evaluate(UntrainedGenerator(), mnist, shared_cache, real_samples=20_000, fid_samples=1000,
                              kid_samples=1000, is_samples=500)
    assert set(evaluation.values) == {"fid1k_classifier", "kid1k_classifier", "kid1k_classifier_std",
                                      "is500_classifier", "is500_classifier_std", "evaluation_seconds"}
    fid = evaluation.protocols["fid1k_classifier"]
    assert fid["metric"] == "fid" and fid["extractor"] == "classifier"
    assert float(fid["classifier_test_accuracy"]) >= 0.98
    assert fid["generated_samples"] == "1000" and fid["reference_split"] == "test"
    # The test split has 10,000 digits: all of them are used and the shortfall is recorded.
    assert (fid["real_samples"], fid["real_samples_requested"]) == ("10000", "20000")
    assert "TF32 off" in fid["precision"]
    assert evaluation.protocols["kid1k_classifier_std"]["kid_subsets"] == "100"
    assert evaluation.protocols["is500_classifier"]["is_splits"] == "10"


def test_real_statistics_are_computed_once_then_read_from_the_disk_cache(mnist, mnist_classifier, shared_cache,
                                                                         monkeypatch):
    extracted: list[int] = []
    original = evaluation_features.extract_features

    def counting(images, *args, **kwargs):
        extracted.append(len(images))
        return original(images, *args, **kwargs)

    monkeypatch.setattr(evaluation_features, "extract_features", counting)
    counts = dict(real_samples=1234, fid_samples=500, kid_samples=500, is_samples=500)
    first, _ = _evaluate(UntrainedGenerator(), mnist, shared_cache, **counts)
    assert extracted == [1234, 500]  # reference once; generated once, shared by fid, kid and is
    files = list((shared_cache / "real-statistics").glob("*.npz"))
    entry = next(path for path in files if len(np.load(path, allow_pickle=False)["features"]) == 1234)
    modified = entry.stat().st_mtime_ns
    extracted.clear()
    second, _ = _evaluate(UntrainedGenerator(), mnist, shared_cache, **counts)
    assert extracted == [500]
    assert entry.stat().st_mtime_ns == modified
    assert second.values["fid500_classifier"] == first.values["fid500_classifier"]
    with np.load(entry, allow_pickle=False) as stored:
        assert stored["mu"].dtype == np.float64 and stored["sigma"].shape == (128, 128)
    extracted.clear()
    _evaluate(UntrainedGenerator(), mnist, shared_cache, names=("fid",), real_samples=1235, fid_samples=500)
    assert extracted == [1235, 500]  # another count is another entry


def test_feature_metrics_do_not_apply_to_points():
    ring = get_registry().get("dataset", "ring8")
    for name in FEATURE_METRICS:
        assert "images" in metric(name).unsupported_reason(ring, (2,))
        assert metric(name).unsupported_reason(mnist_dataset(), (1, 28, 28)) is None


def test_metrics_sharing_a_setting_share_its_default():
    seen: dict[str, object] = {}
    for entry in get_registry().all("metric"):
        for key, value in entry.obj.defaults.items():
            assert seen.setdefault(key, value) == value, key


# Inception, offline, from a weights file --------------------------------------------------------------

@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A weights file for torch-fidelity's Inception with random values: the real ones need the network."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: None)
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        network = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    torch.save(network.state_dict(), path)
    return path


def test_inception_runs_offline_from_a_weights_file(random_inception_weights, mnist, tmp_path):
    settings = metric_settings(*FEATURE_METRICS, extractor="inception", inception_weights=str(random_inception_weights),
                               real_samples=4, fid_samples=4, kid_samples=4, is_samples=4, is_splits=2)
    context = make_context(UntrainedGenerator(), mnist, mnist_dataset(), settings, tmp_path)
    evaluation = run_metrics({name: metric(name) for name in FEATURE_METRICS}, context)
    assert {"fid4_inception", "kid4_inception", "is4_inception"} <= set(evaluation.values)
    assert all(math.isfinite(value) for value in evaluation.values.values())
    protocol = evaluation.protocols["fid4_inception"]
    assert protocol["inception_weights"] == str(random_inception_weights)
    assert protocol["extractor_network"] == "torch-fidelity inception-v3-compat"
    assert evaluation.protocols["kid4_inception"]["kid_subset_size"] == "4"


# modes -------------------------------------------------------------------------------------------------

@pytest.fixture(params=["ring8", "grid25"])
def mixture(request):
    return get_registry().get("dataset", request.param)


def test_all_samples_on_one_mode_cover_one_mode_and_are_all_high_quality(mixture):
    samples = mixture.modes[3].repeat(100, 1) + mixture.std * 0.5
    covered, high_quality, reverse_kl = mode_statistics(samples, mixture.modes, mixture.std)
    assert (covered, high_quality) == (1, 100.0)
    assert reverse_kl == pytest.approx(math.log(len(mixture.modes)))  # KL(one-hot || uniform) = log K


def test_samples_far_from_every_mode_are_not_high_quality(mixture):
    samples = torch.full((50, 2), 100.0)
    covered, high_quality, reverse_kl = mode_statistics(samples, mixture.modes, mixture.std)
    assert (covered, high_quality) == (0, 0.0) and math.isnan(reverse_kl)


def test_the_3_std_threshold_is_a_distance_to_the_nearest_mode(mixture):
    direction = torch.tensor([0.6, 0.8], dtype=torch.float64)
    inside = mixture.modes[0] + 2.99 * mixture.std * direction
    outside = mixture.modes[0] + 3.01 * mixture.std * direction
    assert mode_statistics(torch.stack([inside, outside]), mixture.modes, mixture.std)[1] == 50.0


def test_a_perfect_sampler_covers_every_mode_with_a_near_uniform_histogram(mixture, tmp_path):
    from ganbench.api import DataRequest

    real = mixture.load(DataRequest(None, str(tmp_path), "train", seed=0, params={"num_points": 2500}))
    context = make_context(ReplayGenerator(real.samples), real, mixture, metric_settings("modes"), tmp_path,
                           data_shape=(2,))
    result = metric("modes").evaluate(context)
    modes = len(mixture.modes)
    assert result.values["modes_covered"] == modes
    # Gaussian samples fall within 3 std (Euclidean, 2D) with probability 1 - exp(-4.5) = 98.9%.
    assert result.values["modes_high_quality_percent"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=1.0)
    assert 0 <= result.values["modes_reverse_kl"] < 0.02
    assert result.protocol["modes_total"] == str(modes)
    assert metric("modes").unsupported_reason(mixture, (2,)) is None


def test_reverse_kl_of_a_uniform_histogram_is_zero(mixture):
    samples = mixture.modes.repeat(7, 1)
    covered, high_quality, reverse_kl = mode_statistics(samples, mixture.modes, mixture.std)
    assert (covered, high_quality) == (len(mixture.modes), 100.0)
    assert abs(reverse_kl) < 1e-12


def test_reverse_kl_equals_an_independent_computation():
    ring = get_registry().get("dataset", "ring8")
    per_mode = [10, 0, 5, 1, 1, 1, 2, 30]
    samples = torch.cat([ring.modes[i].repeat(n, 1) for i, n in enumerate(per_mode)])
    _, _, reverse_kl = mode_statistics(samples, ring.modes, ring.std)
    p = np.array([n for n in per_mode if n]) / sum(per_mode)
    assert reverse_kl == pytest.approx(float((p * np.log(p / (1 / 8))).sum()), rel=1e-12)


def test_modes_does_not_apply_to_datasets_without_a_mixture():
    assert "modes" in metric("modes").unsupported_reason(mnist_dataset(), (1, 28, 28))


# throughput, run_metrics, save_samples ------------------------------------------------------------------

def test_throughput_reports_training_figures_sampling_rate_and_device(mnist, tmp_path):
    training = {"images_per_second": 1234.5, "steps_per_second": 19.3, "peak_memory_mb": 512.0,
                "train_seconds": 60.0, "evaluation_seconds": 7.0, "device_name": "NVIDIA H100 80GB HBM3"}
    context = make_context(UntrainedGenerator(), mnist, mnist_dataset(), metric_settings("throughput",
                           throughput_samples=1000), tmp_path, training=training)
    evaluation = run_metrics({"throughput": metric("throughput")}, context)
    values = evaluation.values
    assert {key: values[key] for key in ("images_per_second", "steps_per_second", "peak_memory_mb",
                                         "train_seconds")} == {key: training[key] for key in
                                                               ("images_per_second", "steps_per_second",
                                                                "peak_memory_mb", "train_seconds")}
    assert values["sampling_samples_per_second"] > 0
    assert 7.0 < values["evaluation_seconds_so_far"] < 7.0 + values["evaluation_seconds"] + 1e-6
    assert evaluation.protocols["sampling_samples_per_second"]["device_name"] == "NVIDIA H100 80GB HBM3"


def test_throughput_without_loop_figures_reports_nan(mnist, tmp_path):
    context = make_context(UntrainedGenerator(), mnist, mnist_dataset(),
                           metric_settings("throughput", throughput_samples=500), tmp_path)
    values = metric("throughput").evaluate(context).values
    assert math.isnan(values["images_per_second"]) and values["sampling_samples_per_second"] > 0


class _Fixed(Metric):
    description = "test metric"

    def __init__(self, name, result):
        self.name, self.result = name, result

    def evaluate(self, context):
        return self.result


def test_run_metrics_returns_values_and_a_protocol_per_column(mnist, tmp_path):
    context = make_context(UntrainedGenerator(), mnist, mnist_dataset(), {}, tmp_path)
    evaluation = run_metrics({"a": _Fixed("a", MetricResult({"x": 1, "y": 2.5}, {"k": "v"}))}, context)
    assert evaluation.values["x"] == 1.0 and isinstance(evaluation.values["x"], float)
    assert evaluation.protocols == {"x": {"metric": "a", "k": "v"}, "y": {"metric": "a", "k": "v"}}
    assert evaluation.values["evaluation_seconds"] >= 0 and context.memo == {}


def test_run_metrics_rejects_a_plain_mapping_and_duplicate_columns(mnist, tmp_path):
    context = make_context(UntrainedGenerator(), mnist, mnist_dataset(), {}, tmp_path)
    with pytest.raises(TypeError, match="MetricResult"):
        run_metrics({"a": _Fixed("a", {"x": 1.0})}, context)
    with pytest.raises(ValueError, match="both produce the column 'x'"):
        run_metrics({"a": _Fixed("a", MetricResult({"x": 1.0})), "b": _Fixed("b", MetricResult({"x": 2.0}))},
                    context)


def test_save_samples_writes_an_npz_other_tools_can_score(tmp_path):
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = save_samples(images, tmp_path / "samples.npz")
    with np.load(path, allow_pickle=False) as stored:
        assert np.array_equal(stored["samples"], images.numpy())
        assert stored["arr_0"].dtype == np.uint8 and stored["arr_0"].shape == (5, 28, 28, 3)
        assert np.array_equal(stored["arr_0"], reference_uint8(images).permute(0, 2, 3, 1).numpy())
    points = torch.randn(7, 2)
    with np.load(save_samples(points, tmp_path / "points.npz"), allow_pickle=False) as stored:
        assert np.array_equal(stored["arr_0"], points.numpy())
