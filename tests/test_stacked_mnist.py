"""Stacked MNIST: every channel of a sample is a real MNIST digit and the label is the three digits;
the stacked-modes metric finds all 1,000 modes in real stacked data, one mode in a one-digit generator
(KL = ln 1000), and a short CLI run on stacked-mnist writes both columns with their protocol."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganbench.api import DataRequest
from ganbench.cli import main
from ganbench.errors import UserError
from ganbench.evaluation.context import run_metrics
from ganbench.registry import get_registry
from metrics_support import (SHARED_DATA, ReplayGenerator, load_mnist, make_context, mnist,  # noqa: F401
                             shared_cache)

STACKED_SHAPE = (3, 28, 28)


def stacked_dataset():
    return get_registry().get("dataset", "stacked-mnist")


def stacked_metric():
    return get_registry().get("metric", "stacked-modes")


def load_stacked(cache_dir: Path, size: int, seed: int = 0, split: str = "test"):
    request = DataRequest(data_dir=str(SHARED_DATA), cache_dir=str(cache_dir), split=split, seed=seed,
                          params={"stacked_images": size})
    return stacked_dataset().load(request)


def evaluate_stacked_modes(generator: nn.Module, real, cache_dir: Path, count: int) -> dict:
    context = make_context(generator, real, stacked_dataset(), {"stacked_modes_samples": count}, cache_dir,
                           data_shape=STACKED_SHAPE)
    evaluation = run_metrics({"stacked-modes": stacked_metric()}, context)
    return {"values": evaluation.values, "protocols": evaluation.protocols}


def test_every_channel_is_an_mnist_digit_and_the_label_is_its_three_digits(shared_cache, mnist):
    stacked = load_stacked(shared_cache, 3000)
    assert stacked.samples.shape == (3000, *STACKED_SHAPE) and stacked.samples.dtype == torch.float32
    assert stacked.labels.dtype == torch.int64 and stacked.labels.shape == (3000,)
    # Look every channel up among the MNIST test images by its bytes (labels loaded independently).
    label_of = {}
    for image, label in zip(mnist.samples.numpy(), mnist.labels.tolist()):
        label_of.setdefault(image.tobytes(), set()).add(label)
    for sample, label in zip(stacked.samples.numpy(), stacked.labels.tolist()):
        digits = []
        for channel in sample:
            found = label_of.get(channel[None].tobytes())
            assert found is not None, "a channel is not an MNIST test image"
            digits.append(next(iter(found)) if len(found) == 1 else None)
        if None not in digits:
            assert label == 100 * digits[0] + 10 * digits[1] + digits[2]
    assert float(stacked.samples.min()) == -1.0 and float(stacked.samples.max()) == 1.0


def test_the_channels_are_drawn_independently_and_cover_all_digit_triples(shared_cache):
    labels = load_stacked(shared_cache, 20_000).labels.numpy()
    hundreds, tens, units = labels // 100, labels // 10 % 10, labels % 10
    assert len(np.unique(labels)) == 1000  # 20 per mode on average: every triple appears
    # Independence: the channels' digits are uncorrelated (|r| < 0.03 for 20k draws, about 4 std).
    for a, b in ((hundreds, tens), (tens, units), (hundreds, units)):
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.03


def test_stacked_data_is_the_same_for_a_seed_and_differs_between_seeds_and_splits(shared_cache):
    first, again = load_stacked(shared_cache, 500, seed=3), load_stacked(shared_cache, 500, seed=3)
    assert torch.equal(first.samples, again.samples) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.labels, load_stacked(shared_cache, 500, seed=4).labels)
    # Only MNIST's test split is on disk, so "train" stacks test digits, but not the same stacks.
    train = load_stacked(shared_cache, 500, seed=3, split="train")
    assert "only the test split" in train.note
    assert not torch.equal(first.labels, train.labels)


def test_a_bad_size_is_a_user_error_naming_the_setting(shared_cache):
    with pytest.raises(UserError, match="stacked_images"):
        load_stacked(shared_cache, 0)


def test_real_stacked_data_scored_as_a_generator_covers_all_1000_modes_with_kl_near_zero(shared_cache):
    # 10,000 rather than the published 26,000 keeps the test short: every mode still gets
    # about 10 samples (a mode is missed with probability e^-10).
    count = 10_000
    real = load_stacked(shared_cache, count)
    result = evaluate_stacked_modes(ReplayGenerator(real.samples), real, shared_cache, count)
    covered = result["values"]["stacked_modes10k_covered"]
    reverse_kl = result["values"]["stacked_modes10k_reverse_kl_nats"]
    # The same KL from the true labels, in numpy: what drawing 10,000 samples of 1,000 modes gives
    # (about 999 / (2 * 10,000) = 0.05 nats).
    p = np.bincount(real.labels.numpy(), minlength=1000) / count
    true_kl = float(np.sum(p[p > 0] * np.log(p[p > 0] * 1000)))
    assert covered >= 995
    assert 0.03 < true_kl < 0.07
    assert reverse_kl == pytest.approx(true_kl, abs=0.02)  # classifier errors move a little mass
    protocol = result["protocols"]["stacked_modes10k_covered"]
    assert float(protocol["classifier_test_accuracy"]) > 0.97
    assert protocol["generated_samples"] == "10000"
    assert result["values"]["stacked_modes10k_recognised_percent"] > 80
    # The recognised samples alone (over 8,000 of them) still find every mode, and their histogram
    # is close to even: the same KL computed in numpy from the true labels of the recognised samples
    # (digits the classifier recognises are almost always its true label) agrees.
    recognised = result["values"]["stacked_modes10k_recognised_samples"]
    assert recognised == pytest.approx(count * result["values"]["stacked_modes10k_recognised_percent"] / 100)
    assert result["values"]["stacked_modes10k_recognised_covered"] >= 995
    from ganbench_plugins.stacked_mnist import classify_stacked, digit_classifier
    classifier, _ = digit_classifier(make_context(nn.Identity(), real, stacked_dataset(), {"stacked_modes_samples": 1},
                                                  shared_cache, data_shape=STACKED_SHAPE))
    _, recognised_mask = classify_stacked(classifier, real.samples, torch.device("cpu"), with_recognised=True)
    q = np.bincount(real.labels[recognised_mask].numpy(), minlength=1000) / int(recognised_mask.sum())
    true_recognised_kl = float(np.sum(q[q > 0] * np.log(q[q > 0] * 1000)))
    assert result["values"]["stacked_modes10k_recognised_reverse_kl_nats"] == pytest.approx(true_recognised_kl,
                                                                                             abs=0.02)
    assert "real stacked data:" in result["protocols"]["stacked_modes10k_recognised_covered"]["recognised_only"]
    assert "real stacked data:" in result["protocols"]["stacked_modes10k_recognised_percent"]["recognised"]
    assert protocol["classifier_data"].startswith("MNIST test digits")


def test_coverage_of_samples_that_are_not_digits_is_marked_not_meaningful(shared_cache):
    # Real digits blurred by a 5x5 box filter: the classifier still puts them in hundreds of
    # modes (it labels every image), but it recognises almost none of them as digits.
    count = 2000
    real = load_stacked(shared_cache, count)
    metric = stacked_metric()
    sharp = evaluate_stacked_modes(ReplayGenerator(real.samples), real, shared_cache, count)["values"]
    blurred = torch.nn.functional.avg_pool2d(real.samples, 5, stride=1, padding=2)
    blurry = evaluate_stacked_modes(ReplayGenerator(blurred), real, shared_cache, count)["values"]
    recognised_only = {"stacked_modes2k_recognised_covered", "stacked_modes2k_recognised_reverse_kl_nats"}
    assert sharp["stacked_modes2k_recognised_percent"] > 80
    # 2,000 samples are too few for the recognised-only figures (an even generator would find
    # about 860 modes with 1,800), however many of them are recognised; the papers' figures stand
    assert 1500 < sharp["stacked_modes2k_recognised_samples"] < 2000
    assert set(metric.not_meaningful(sharp)) == recognised_only
    assert "an even generator would cover" in metric.not_meaningful(sharp)["stacked_modes2k_recognised_covered"]
    assert blurry["stacked_modes2k_covered"] > 500  # the figure the flag is for
    assert blurry["stacked_modes2k_recognised_percent"] < 50
    flagged = metric.not_meaningful(blurry)
    assert set(flagged) == {"stacked_modes2k_covered", "stacked_modes2k_reverse_kl_nats"} | recognised_only
    assert "recognised" in flagged["stacked_modes2k_covered"]


def test_the_expected_coverage_of_an_even_generator_is_what_drawing_samples_gives():
    from ganbench_plugins.stacked_mnist import MEANINGFUL_RECOGNISED_SAMPLES, expected_even_coverage

    generator = torch.Generator().manual_seed(0)
    for samples in (100, 1000, MEANINGFUL_RECOGNISED_SAMPLES):
        drawn = [len(torch.randint(1000, (samples,), generator=generator).unique()) for _ in range(200)]
        assert expected_even_coverage(samples) == pytest.approx(np.mean(drawn), abs=3 * np.std(drawn) / 200 ** 0.5 + 0.5)
    assert 989.5 < expected_even_coverage(MEANINGFUL_RECOGNISED_SAMPLES) < 990.5  # the threshold's meaning


def test_the_real_datas_recognised_share_is_computed_once_per_run_and_is_the_real_datas(shared_cache, monkeypatch):
    # Every evaluation of a run reports the real data's recognised share beside the generator's;
    # the real samples do not change, so they are labelled once, not at every evaluation.
    from ganbench_plugins import stacked_mnist

    count = 1000
    real = load_stacked(shared_cache, count)
    shutil.rmtree(shared_cache / "stacked-labels", ignore_errors=True)  # labelled by earlier tests
    calls = []
    original = stacked_mnist.classify_stacked

    def counting(classifier, samples, device, *args, **kwargs):
        calls.append(samples)
        return original(classifier, samples, device, *args, **kwargs)

    monkeypatch.setattr(stacked_mnist, "classify_stacked", counting)
    blurred = torch.nn.functional.avg_pool2d(real.samples, 5, stride=1, padding=2)
    first = evaluate_stacked_modes(ReplayGenerator(real.samples), real, shared_cache, count)
    second = evaluate_stacked_modes(ReplayGenerator(blurred), real, shared_cache, count)
    real_calls = [samples for samples in calls if torch.equal(samples, real.samples[:count])]
    assert len(calls) == 3 and len(real_calls) == 2  # two generators' samples, the real data once
    # (the first generator replays the real data, so its samples equal them too)
    recognised_text = [result["protocols"]["stacked_modes1k_recognised_percent"]["recognised"]
                       for result in (first, second)]
    assert recognised_text[0] == recognised_text[1]
    # The figure in the protocol is the real data's own share, as the generator column computes it
    # for a generator that replays the real data.
    assert f"real stacked data: {first['values']['stacked_modes1k_recognised_percent']:.1f}% of {count}" \
        in recognised_text[0]
    # The recognised-only figures come with the real data's at the generator's count of recognised
    # samples: for a generator that replays the real data, exactly its own figures.
    values, only = first["values"], first["protocols"]["stacked_modes1k_recognised_covered"]["recognised_only"]
    samples = int(values["stacked_modes1k_recognised_samples"])
    assert (f"{values['stacked_modes1k_recognised_covered']:.0f} modes, KL "
            f"{values['stacked_modes1k_recognised_reverse_kl_nats']:.3f} from the first {samples} of them") in only
    blurred_samples = int(second["values"]["stacked_modes1k_recognised_samples"])
    assert f"from the first {blurred_samples} of them" in \
        second["protocols"]["stacked_modes1k_recognised_covered"]["recognised_only"]


def test_recognised_means_all_three_channels_get_their_label_with_high_probability(shared_cache, mnist):
    from ganbench_plugins.stacked_mnist import RECOGNISED_PROBABILITY, classify_stacked, digit_classifier

    real = load_stacked(shared_cache, 300)
    context = make_context(nn.Identity(), real, stacked_dataset(), {"stacked_modes_samples": 1}, shared_cache,
                           data_shape=STACKED_SHAPE)
    classifier, _ = digit_classifier(context)
    samples = real.samples.clone()
    samples[::2, 1] = -1.0  # every other sample: its middle channel black, not a digit
    labels, recognised = classify_stacked(classifier, samples, torch.device("cpu"), with_recognised=True)
    # Independently: the classifier's probabilities channel by channel.
    from ganbench.evaluation.images import to_uint8_rgb
    with torch.no_grad():
        probability = classifier(to_uint8_rgb(samples.reshape(-1, 1, 28, 28)))[0].float().softmax(dim=1)
    expected = (probability.max(dim=1).values >= RECOGNISED_PROBABILITY).reshape(-1, 3).all(dim=1)
    assert torch.equal(recognised, expected)
    assert torch.equal(labels, classify_stacked(classifier, samples, torch.device("cpu")))
    assert float(recognised[::2].double().mean()) < float(recognised[1::2].double().mean())


def test_a_generator_of_one_digit_triple_covers_one_mode_with_kl_ln_1000(shared_cache, mnist):
    real = load_stacked(shared_cache, 100)
    seven = mnist.samples[mnist.labels == 7][0]
    one_sample = seven.expand(3, 28, 28).unsqueeze(0)
    result = evaluate_stacked_modes(ReplayGenerator(one_sample), real, shared_cache, 600)
    assert result["values"]["stacked_modes600_covered"] == 1.0
    assert result["values"]["stacked_modes600_reverse_kl_nats"] == pytest.approx(math.log(1000), abs=1e-9)
    # a real 777 is recognised: the recognised-only figures say the same, from all 600 samples
    assert result["values"]["stacked_modes600_recognised_samples"] == 600
    assert result["values"]["stacked_modes600_recognised_covered"] == 1.0
    assert result["values"]["stacked_modes600_recognised_reverse_kl_nats"] == pytest.approx(math.log(1000), abs=1e-9)


def test_the_classifier_labels_each_channel_of_real_samples_with_its_digit(shared_cache):
    from ganbench_plugins.stacked_mnist import classify_stacked, digit_classifier

    real = load_stacked(shared_cache, 2000)
    context = make_context(nn.Identity(), real, stacked_dataset(), {"stacked_modes_samples": 1}, shared_cache,
                           data_shape=STACKED_SHAPE)
    classifier, _ = digit_classifier(context)
    predicted = classify_stacked(classifier, real.samples, torch.device("cpu"))
    assert float((predicted == real.labels).double().mean()) > 0.95  # three digits right, ~0.99^3


def test_stacked_modes_applies_only_to_stacked_mnist():
    registry = get_registry()
    metric = stacked_metric()
    assert metric.unsupported_reason(stacked_dataset(), STACKED_SHAPE) is None
    for name in ("mnist", "ring8"):
        dataset = registry.get("dataset", name)
        assert "stacked-mnist" in metric.unsupported_reason(dataset, dataset.data_shape(dataset.defaults))


def test_a_short_cli_run_on_stacked_mnist_writes_modes_and_kl_with_their_protocol(tmp_path, shared_cache):
    out, grid = tmp_path / "out", tmp_path / "grid.toml"
    grid.write_text("")  # an empty grid: ganbench's defaults, not the quickstart's tuned [set] for the mlp
    with pytest.raises(SystemExit) as exited:
        main(["run", str(grid), "--archs", "dcgan", "--losses", "ns", "--datasets", "stacked-mnist",
              "--data-dir", str(SHARED_DATA), "--cache-dir", str(shared_cache), "--steps", "3",
              "--batch-size", "16", "--metrics", "stacked-modes", "--set", "stacked_images=2000",
              "--set", "dcgan_width=8", "--set", "stacked_modes_samples=1000", "--out", str(out), "--quiet"])
    assert exited.value.code == 0
    with open(out / "results.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["status"] == "done" and row["dataset"] == "stacked-mnist"
    assert 0 <= float(row["stacked_modes1k_covered"]) <= 1000
    assert 0 <= float(row["stacked_modes1k_reverse_kl_nats"]) <= math.log(1000) + 1e-9
    assert "classifier_test_accuracy=" in row["protocol.stacked_modes1k_covered"]
    assert "generated_samples=1000" in row["protocol.stacked_modes1k_reverse_kl_nats"]


def test_the_stacked_mnist_presets_expand_to_their_grids_and_line_up_with_the_published_table():
    from ganbench.planning.grid import expand, load_preset
    from ganbench.report.reference import load_reference

    registry = get_registry()
    paper = expand(load_preset("pacgan-table2"), registry)
    assert len(paper) == 4 * 10
    assert {run.params["pac"] for run in paper} == {1, 2, 3, 4} and {run.seed for run in paper} == set(range(10))
    run = paper[0]
    assert (run.architecture, run.loss, run.dataset, run.batch_size) == ("dcgan", "ns", "stacked-mnist", 64)
    assert run.steps == 50 * 128_000 // 64  # 50 epochs of batch 64
    assert (run.params["lr_g"], run.params["lr_d"], run.params["beta1"], run.params["latent_dim"]) == (2e-4, 2e-4,
                                                                                                        0.5, 100)
    assert run.params["stacked_images"] == 128_000 and run.evaluation["stacked_modes_samples"] == 26_000
    assert (run.params["g_steps"], run.params["latent"]) == (2, "uniform")  # their DCGAN-tensorflow loop
    cpu = expand(load_preset("stacked-mnist-cpu"), registry)
    assert {run.params["pac"] for run in cpu} == {1, 2} and len({run.seed for run in cpu}) >= 3
    # the paper's networks and optimiser at a tenth of its length
    assert all(run.steps <= paper[0].steps // 10 for run in cpu)
    assert all({key: run.params[key] for key in ("dcgan_width", "lr_g", "lr_d", "beta1", "latent_dim")} ==
               {key: paper[0].params[key] for key in ("dcgan_width", "lr_g", "lr_d", "beta1", "latent_dim")}
               for run in cpu)
    # The published table's columns are the ones both presets write.
    columns = {column for row in load_reference("pacgan-table2").rows for column in row.figures}
    assert columns == {"stacked_modes26k_covered", "stacked_modes26k_reverse_kl_nats"}
