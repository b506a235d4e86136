"""Feature extractors: the MNIST classifier, its cache and torch-fidelity registration, choosing one."""

from __future__ import annotations

import torch

import pytest
from ganbench.errors import UserError
from ganbench.evaluation import classifier, extractors
from ganbench.evaluation.classifier import (ClassifierNet, cached_classifier, register_classifier, train_classifier,
                                            uint8_to_unit)
from ganbench.evaluation.extractors import resolve_extractor
from ganbench.evaluation.fidelity import strict_fp32
from ganbench.evaluation.images import to_uint8_rgb
from metrics_support import (UntrainedGenerator, make_context, metric_settings, mnist, mnist_classifier,  # noqa: F401
                             mnist_dataset, shared_cache)


def test_classifier_reaches_98_percent_on_held_out_mnist(mnist_classifier):
    path, checkpoint = mnist_classifier
    assert checkpoint["test_accuracy"] >= 0.98
    assert (checkpoint["train_samples"], checkpoint["test_samples"]) == (8500, 1500)
    stored = torch.load(path, weights_only=True)
    assert stored["test_accuracy"] == checkpoint["test_accuracy"]


def test_classifier_held_out_accuracy_recomputed_independently(mnist, mnist_classifier):
    path, checkpoint = mnist_classifier
    net = ClassifierNet(10)
    net.load_state_dict(checkpoint["state_dict"])
    net.eval()
    # The held-out part is the first 15% of the recipe's seeded permutation.
    held_out = torch.randperm(10_000, generator=torch.Generator().manual_seed(0))[:1500]
    images = ((mnist.samples[held_out] + 1) * 127.5).round().expand(-1, 3, -1, -1) / 127.5 - 1
    with torch.no_grad():
        accuracy = (net(images)[1].argmax(1) == mnist.labels[held_out]).double().mean().item()
    assert accuracy == pytest.approx(checkpoint["test_accuracy"], abs=1e-9)


def test_cached_classifier_is_loaded_not_retrained(mnist, mnist_classifier, shared_cache, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("retrained although the checkpoint is cached")

    monkeypatch.setattr(classifier, "train_classifier", fail)
    path, checkpoint = cached_classifier(to_uint8_rgb(mnist.samples), mnist.labels, 10, shared_cache)
    assert path == mnist_classifier[0]


def test_classifier_training_is_deterministic_and_leaves_global_rng_alone(mnist):
    images, labels = to_uint8_rgb(mnist.samples[:256]), mnist.labels[:256]
    state = torch.get_rng_state()
    first = train_classifier(images, labels, 10)
    assert torch.equal(torch.get_rng_state(), state)
    second = train_classifier(images, labels, 10)
    for name, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][name]), name


def test_classifier_weights_do_not_depend_on_the_callers_thread_count(mnist):
    """A one-thread worker and the two-thread main process must train the same classifier."""
    images, labels = to_uint8_rgb(mnist.samples[:512]), mnist.labels[:512]
    before = torch.get_num_threads()
    trained = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            trained[threads] = train_classifier(images, labels, 10)["state_dict"]
            assert torch.get_num_threads() == threads  # the caller's count is restored
    finally:
        torch.set_num_threads(before)
    for name, tensor in trained[1].items():
        assert torch.equal(tensor, trained[2][name]), name


def test_classifier_registered_in_torch_fidelity_gives_penultimate_features_and_logits(mnist, mnist_classifier):
    from torch_fidelity.utils import create_feature_extractor

    register_classifier()
    path, checkpoint = mnist_classifier
    module = create_feature_extractor("ganbench-classifier", ["penultimate", "logits"], cuda=False,
                                      verbose=False, feature_extractor_weights_path=str(path))
    images = to_uint8_rgb(mnist.samples[:50])
    penultimate, logits = module(images)
    net = ClassifierNet(10)
    net.load_state_dict(checkpoint["state_dict"])
    with torch.no_grad():
        expected_penultimate, expected_logits = net.eval()(uint8_to_unit(images))
    assert penultimate.shape == (50, 128) and logits.shape == (50, 10)
    assert torch.allclose(penultimate, expected_penultimate) and torch.allclose(logits, expected_logits)
    assert module.get_default_feature_layer_for_metric("fid") == "penultimate"
    assert module.get_default_feature_layer_for_metric("isc") == "logits"


def _context(mnist, cache, **settings):
    return make_context(UntrainedGenerator(), mnist, mnist_dataset(), metric_settings("fid", **settings), cache)


def test_auto_uses_the_classifier_without_inception_weights_and_says_why(mnist, mnist_classifier, shared_cache,
                                                                        monkeypatch, tmp_path):
    monkeypatch.delenv(extractors.WEIGHTS_VARIABLE, raising=False)
    monkeypatch.setattr(extractors, "default_inception_path", lambda: tmp_path / "absent.pth")
    extractor = resolve_extractor(_context(mnist, shared_cache))
    assert extractor.name == "classifier"
    assert extractor.weights_path == str(mnist_classifier[0])
    assert "no Inception weights" in extractor.protocol["extractor_choice"]
    assert extractor.protocol["classifier_test_accuracy"] == f"{mnist_classifier[1]['test_accuracy']:.4f}"


def test_auto_uses_inception_when_weights_are_given_by_setting_or_environment(mnist, monkeypatch, tmp_path):
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not loaded by this test")
    monkeypatch.delenv(extractors.WEIGHTS_VARIABLE, raising=False)
    by_setting = resolve_extractor(_context(mnist, tmp_path, inception_weights=str(weights)))
    monkeypatch.setenv(extractors.WEIGHTS_VARIABLE, str(weights))
    by_environment = resolve_extractor(_context(mnist, tmp_path))
    for extractor in (by_setting, by_environment):
        assert (extractor.name, extractor.fidelity_name) == ("inception", "inception-v3-compat")
        assert extractor.weights_path == str(weights)
        assert extractor.protocol["inception_weights"] == str(weights)


def test_auto_uses_inception_weights_torch_fidelity_downloaded_before(mnist, monkeypatch, tmp_path):
    downloaded = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    downloaded.write_bytes(b"x")
    monkeypatch.delenv(extractors.WEIGHTS_VARIABLE, raising=False)
    monkeypatch.setattr(extractors, "default_inception_path", lambda: downloaded)
    assert resolve_extractor(_context(mnist, tmp_path)).weights_path == str(downloaded)


def test_a_missing_weights_file_or_unknown_extractor_is_a_user_error(mnist, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_extractor(_context(mnist, tmp_path, inception_weights=str(tmp_path / "missing.pth")))
    with pytest.raises(UserError, match="unknown extractor"):
        resolve_extractor(_context(mnist, tmp_path, extractor="vgg"))


def test_offline_inception_download_failure_names_the_fix(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)  # ganbench downloads, not torch-fidelity
    extractor = extractors.inception_extractor(None, "test")
    with pytest.raises(UserError, match="--inception-weights"):
        extractor.create(["2048"], cuda=False)


def test_strict_fp32_disables_tf32_inside_and_restores_after():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    with strict_fp32():
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    assert (matmul.fp32_precision, conv.fp32_precision) == before
