"""Stacked MNIST, the 1,000-mode image benchmark of mode collapse, and its metric ``stacked-modes``.

Each sample is three MNIST digits drawn independently and stacked as the three channels of
a 3x28x28 image (Metz et al. 2017, "Unrolled GANs"; VEEGAN, Srivastava et al. 2017; PacGAN,
Lin et al. 2018), so the data has 1,000 modes, one per digit triple 000-999. A generated
sample falls in mode ``100*a + 10*b + c`` when the MNIST classifier labels its channels
``a``, ``b`` and ``c``; a mode is covered when at least one sample falls in it.

The dataset reads the same IDX files as ``mnist`` (through :class:`MnistDataset`, so the
same folders, split fallback and messages). The metric labels channels with the classifier
the ``classifier`` feature extractor trains and caches (:mod:`ganbench.evaluation.classifier`), trained
on the MNIST digits the stacked data was drawn from: on the same files that is the very
classifier ``mnist``'s FID uses, one cache entry. Registered from the built-in
``datasets`` and ``metrics`` plugins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ganbench import DataRequest, Dataset, LoadedData, Metric, MetricResult

from .datasets import MnistDataset, _check_split, _int_param, _split_seed

if TYPE_CHECKING:
    import torch

    from ganbench.evaluation.context import EvaluationContext

DIGITS_PER_SAMPLE = 3
MODES = 10 ** DIGITS_PER_SAMPLE
PLACE_VALUES = (100, 10, 1)
"""Channel k's digit is multiplied by ``PLACE_VALUES[k]`` in a sample's label (channel 0 is the hundreds)."""
PUBLISHED_SIZE = 128_000
"""VEEGAN's and PacGAN's training set: 128,000 stacked images."""
PUBLISHED_GENERATED_SAMPLES = 26_000
"""VEEGAN's and PacGAN's number of generated samples that are classified."""
RECOGNISED_PROBABILITY = 0.9
"""A channel is a recognised digit when the classifier gives its label at least this probability."""
MEANINGFUL_RECOGNISED_PERCENT = 50.0
"""Below this share of samples with all three digits recognised, coverage and KL are marked not meaningful."""
MEANINGFUL_RECOGNISED_SAMPLES = 4_600
"""Below this many recognised samples, the coverage counted from them alone is marked not meaningful.

A generator spread evenly over the 1,000 modes covers ``1000 * (1 - (1 - 1/1000)**n)`` modes
with ``n`` samples on average: 990 at 4,600. With fewer, a low count says more about ``n``
than about the generator."""

REAL_LABELS_FORMAT = "stacked-real-labels/1"
"""Version of the real data's cached labels (``<cache_dir>/stacked-labels/``); part of their key."""


@dataclass(frozen=True)
class StackedData(LoadedData):
    """Stacked MNIST as loaded: the stacked samples and labels, plus the MNIST digits they came from."""

    digits: "torch.Tensor | None" = None
    """float32 ``[m, 1, 28, 28]`` in [-1, 1]: the MNIST split the channels were drawn from."""
    digit_labels: "torch.Tensor | None" = None
    """int64 ``[m]``: the digit (0-9) of each image in ``digits``."""


def stacked_labels(digit_labels: "torch.Tensor") -> "torch.Tensor":
    """Mode labels ``100*a + 10*b + c`` (int64 ``[n]``) from per-channel digits ``[n, 3]``."""
    import torch

    return (digit_labels.to(torch.int64) * torch.tensor(PLACE_VALUES)).sum(dim=1)


class StackedMnistDataset(Dataset):
    """Stacked MNIST: three independently drawn MNIST digits as the channels of one 3x28x28 image.

    ``stacked_images`` samples (default 128,000, as VEEGAN and PacGAN) are drawn with
    replacement from the requested MNIST split, with a generator seeded from the run's seed
    and the split, so a seed always gives the same data. Labels are ``100*a + 10*b + c``
    for the digits ``a``, ``b``, ``c`` of channels 0, 1, 2. Memory: about 9.4 KB per sample
    as float32 (1.2 GB at 128,000).
    """

    name = "stacked-mnist"
    description = "Stacked MNIST: 3 MNIST digits as the channels of a 3x28x28 image, 1,000 modes (VEEGAN/PacGAN)"
    source = "built from MNIST (torchvision download, or IDX files in --data-dir)"
    defaults: ClassVar[Mapping[str, Any]] = {"stacked_images": PUBLISHED_SIZE}
    num_classes = MODES

    def data_shape(self, params: Mapping[str, Any]) -> tuple[int, ...]:
        return (DIGITS_PER_SAMPLE, 28, 28)

    def load(self, request: DataRequest) -> LoadedData:
        import torch

        _check_split(self.name, request.split)
        size = _int_param(request.params, "stacked_images", PUBLISHED_SIZE)
        mnist = MnistDataset().load(request)
        # Seeded by the requested split, so the train and test stacks differ even when both
        # fall back to the one MNIST split on disk.
        generator = torch.Generator().manual_seed(_split_seed(request.seed, request.split))
        picks = torch.randint(len(mnist.samples), (size, DIGITS_PER_SAMPLE), generator=generator)
        samples = mnist.samples[picks.reshape(-1)].reshape(size, DIGITS_PER_SAMPLE, 28, 28)
        note = f"stacked from {mnist.note}" if mnist.note else ""
        return StackedData(samples, stacked_labels(mnist.labels[picks]), mnist.split, note,
                           digits=mnist.samples, digit_labels=mnist.labels)


class StackedModesMetric(Metric):
    """Modes of Stacked MNIST covered by the generator, and the reverse KL to the uniform mode distribution.

    ``stacked_modes_samples`` generated samples (default 26,000, as VEEGAN and PacGAN) are
    labelled channel by channel by the MNIST classifier of the ``classifier`` extractor.
    Columns (``26k`` is the sample count):

    * ``stacked_modes26k_covered``: modes (of 1,000) with at least one sample; higher is better.
    * ``stacked_modes26k_reverse_kl_nats``: KL(generated mode histogram || uniform over
      1,000), in nats; 0 for a perfectly even generator, ln(1000) = 6.91 for one mode.
      Lower is better. (26,000 real samples score about 0.02 from sampling noise alone.)
    * ``stacked_modes26k_recognised_percent``: % of the samples whose three channels the
      classifier all labels with probability >= 0.9 (not in the papers; the protocol gives the
      same figure for as many real stacked samples). The classifier puts every image in some
      mode, noise included, so coverage from samples that are mostly not digits says nothing:
      below 50% recognised, coverage and KL are marked not meaningful in every report.
    * ``stacked_modes26k_recognised_covered`` and ``stacked_modes26k_recognised_reverse_kl_nats``:
      the same two figures from the recognised samples alone (not in the papers), as PacGAN's 2D
      metric counts a mode covered by one high-quality sample; ``stacked_modes26k_recognised_samples``
      says how many there were. They mean something as soon as there are enough recognised
      samples for an even generator to find nearly every mode (marked not meaningful below
      4,600, where it would find fewer than 990 on average), long before half the samples are
      recognised. Their KL also carries the classifier's uneven confidence over digits: the
      protocol gives both figures for the real data, also from as many recognised real samples
      as the generator has (an ideal generator's score at that count).
    """

    name = "stacked-modes"
    description = "Stacked MNIST: modes covered (of 1,000) and reverse KL to uniform, by the MNIST classifier"
    defaults: ClassVar[Mapping[str, Any]] = {"stacked_modes_samples": PUBLISHED_GENERATED_SAMPLES}

    def unsupported_reason(self, dataset: Dataset, data_shape: tuple[int, ...]) -> str | None:
        if not isinstance(dataset, StackedMnistDataset):
            return f"stacked-modes counts the 1,000 digit triples of stacked-mnist; {dataset.name} is not stacked-mnist"
        return None

    def evaluate(self, context: "EvaluationContext") -> MetricResult:
        from ganbench.errors import UserError
        from ganbench.evaluation.features import count_label

        count = int(context.settings["stacked_modes_samples"])
        if count < 1:
            raise UserError(f"stacked_modes_samples must be at least 1, got {count}; "
                            f"set it with --set stacked_modes_samples={PUBLISHED_GENERATED_SAMPLES}.")
        classifier, protocol = digit_classifier(context)
        labels, recognised = classify_stacked(classifier, context.generate(count), context.device,
                                              with_recognised=True)
        real_count = min(count, len(context.real.samples))
        real_modes, real_recognised = real_labels(classifier, context.real.samples[:real_count],
                                                  protocol["classifier"], context)
        real = RecognisedFigures.of(real_modes, real_recognised)
        covered, reverse_kl = mode_coverage(labels, MODES)
        ours = RecognisedFigures.of(labels, recognised)
        # The same figures from as many recognised real samples as the generator has: what an
        # ideal generator scores at that count, the classifier's uneven confidence included.
        matched_modes = real_modes[real_recognised][:ours.samples]
        matched_covered, matched_kl = mode_coverage(matched_modes, MODES)
        prefix = f"stacked_modes{count_label(count)}"
        protocol.update(generated_samples=str(count), modes_total=str(MODES),
                        labelling="each channel classified on its own; mode = 100*channel0 + 10*channel1 + channel2",
                        reverse_kl="KL(generated mode histogram || uniform over 1000 modes) in nats, "
                                   "empty modes contribute 0",
                        recognised=(f"% of samples whose 3 channels all get their label with probability >= "
                                    f"{RECOGNISED_PROBABILITY:g} (not in the papers); real stacked data: "
                                    f"{real.percent:.1f}% of {real_count}; "
                                    f"below {MEANINGFUL_RECOGNISED_PERCENT:g}% coverage and KL are not meaningful"),
                        recognised_only=(f"{prefix}_recognised_covered and _recognised_reverse_kl_nats count only the "
                                         f"{ours.samples} recognised samples (not in the papers; a mode is covered by "
                                         f"one recognised sample, as a 2D mode by one high-quality sample); an even "
                                         f"generator covers {expected_even_coverage(ours.samples):.0f} modes with "
                                         f"that many on average; real stacked data: {real.covered:.0f} modes, KL "
                                         f"{real.reverse_kl:.3f} from its {real.samples} recognised samples, "
                                         f"{matched_covered:.0f} modes, KL {matched_kl:.3f} from the first "
                                         f"{len(matched_modes)} of them; below "
                                         f"{MEANINGFUL_RECOGNISED_SAMPLES} recognised samples they are not meaningful"))
        return MetricResult({f"{prefix}_covered": covered, f"{prefix}_reverse_kl_nats": reverse_kl,
                             f"{prefix}_recognised_percent": ours.percent,
                             f"{prefix}_recognised_samples": float(ours.samples),
                             f"{prefix}_recognised_covered": ours.covered,
                             f"{prefix}_recognised_reverse_kl_nats": ours.reverse_kl}, protocol)

    def not_meaningful(self, values: Mapping[str, float]) -> Mapping[str, str]:
        reasons = {}
        for column, value in values.items():
            if not column.startswith("stacked_modes") or value is None or not math.isfinite(value):
                continue
            if column.endswith("_recognised_percent") and value < MEANINGFUL_RECOGNISED_PERCENT:
                prefix = column.removesuffix("_recognised_percent")
                reason = (f"only {value:.1f}% of samples have all three digits recognised (below "
                          f"{MEANINGFUL_RECOGNISED_PERCENT:g}%): the classifier's modes of non-digits say nothing")
                reasons.update({f"{prefix}_covered": reason, f"{prefix}_reverse_kl_nats": reason})
            if column.endswith("_recognised_samples") and value < MEANINGFUL_RECOGNISED_SAMPLES:
                prefix = column.removesuffix("_samples")
                reason = (f"only {value:.0f} recognised samples (below {MEANINGFUL_RECOGNISED_SAMPLES}): an even "
                          f"generator would cover {expected_even_coverage(int(value)):.0f} of 1000 modes with so few")
                reasons.update({f"{prefix}_covered": reason, f"{prefix}_reverse_kl_nats": reason})
        return reasons


def digit_classifier(context: "EvaluationContext") -> tuple[Any, dict[str, str]]:
    """The cached MNIST classifier for the run's digits (trained on a cache miss) and its protocol.

    Returns the classifier as torch-fidelity's extractor module (uint8 RGB in, logits out),
    the same code FID's ``classifier`` extractor runs.
    """
    from ganbench.errors import UserError
    from ganbench.evaluation.classifier import (CLASSIFIER_FIDELITY_NAME, CLASSIFIER_RECIPE,
                                                ClassifierFeatureExtractor, cached_classifier)
    from ganbench.evaluation.features import to_uint8_rgb

    real = context.real
    if not isinstance(real, StackedData) or real.digits is None or real.digit_labels is None:
        raise UserError(f"stacked-modes needs the MNIST digits stacked-mnist loads, and {context.dataset_name}'s "
                        f"data has none; use it with --datasets stacked-mnist.")
    path, checkpoint = cached_classifier(to_uint8_rgb(real.digits), real.digit_labels, 10, Path(context.cache_dir))
    classifier = ClassifierFeatureExtractor(CLASSIFIER_FIDELITY_NAME, ["logits"],
                                            feature_extractor_weights_path=str(path))
    protocol = {
        "classifier": f"ganbench classifier {path.stem[:16]} ({CLASSIFIER_RECIPE['architecture']})",
        "classifier_test_accuracy": f"{checkpoint['test_accuracy']:.4f}",
        "classifier_data": (f"MNIST {real.split} digits: {checkpoint['train_samples']} train, "
                            f"{checkpoint['test_samples']} held out"),
    }
    return classifier, protocol


@dataclass(frozen=True)
class RecognisedFigures:
    """What the samples whose three digits are all recognised say: their share, and the modes they cover."""

    percent: float
    """% of the samples with all three channels recognised."""
    samples: int
    """How many samples that is."""
    covered: float
    """Modes (of 1,000) with at least one recognised sample."""
    reverse_kl: float
    """KL(histogram of the recognised samples' modes || uniform), nats; NaN when none is recognised."""

    @classmethod
    def of(cls, labels: "torch.Tensor", recognised: "torch.Tensor") -> "RecognisedFigures":
        covered, reverse_kl = mode_coverage(labels[recognised], MODES)
        return cls(100 * float(recognised.double().mean()), int(recognised.sum()), covered, reverse_kl)


def expected_even_coverage(samples: int, modes: int = MODES) -> float:
    """Modes an even generator covers on average with ``samples`` samples: ``modes * (1 - (1 - 1/modes)**samples)``."""
    return modes * (1 - (1 - 1 / modes) ** samples)


def real_labels(classifier: Any, real_samples: "torch.Tensor", classifier_name: str, context: "EvaluationContext"
                ) -> tuple["torch.Tensor", "torch.Tensor"]:
    """:func:`classify_stacked`'s ``(labels, recognised)`` of ``real_samples``, cached on disk.

    The real samples and the classifier do not change between a run's evaluations (and are
    shared by runs of the same seed), so like FID's real-data statistics the labels are kept
    under ``<cache_dir>/stacked-labels/``, named by a content hash of the samples and the
    classifier: labelling them took as long as labelling the generated samples.
    """
    import numpy as np
    import torch

    from ganbench.evaluation.hashing import content_hash
    from ganbench.ledger.storage import atomic_write

    key = content_hash(REAL_LABELS_FORMAT, real_samples, classifier_name, RECOGNISED_PROBABILITY)
    path = Path(context.cache_dir) / "stacked-labels" / f"{key[:32]}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            return torch.from_numpy(stored["labels"]), torch.from_numpy(stored["recognised"])
    labels, recognised = classify_stacked(classifier, real_samples, context.device, with_recognised=True)
    atomic_write(path, lambda file: np.savez(file, labels=labels.numpy(), recognised=recognised.numpy()))
    return labels, recognised


def classify_stacked(classifier: Any, samples: "torch.Tensor", device: "torch.device",
                     batch_size: int = 3000, *, with_recognised: bool = False):
    """Mode labels (int64 ``[n]``) of stacked samples ``[n, 3, 28, 28]`` in [-1, 1], channel by channel.

    Each channel is quantised to uint8 exactly as FID's inputs are, then classified. With
    ``with_recognised``, returns ``(labels, recognised)``, where ``recognised`` (bool ``[n]``)
    says whether the classifier gave all three channels' labels probability >=
    :data:`RECOGNISED_PROBABILITY`.
    """
    import torch

    from ganbench.evaluation.features import to_uint8_rgb

    channels = samples.reshape(-1, 1, *samples.shape[2:])
    classifier = classifier.to(device)
    digits, probabilities = [], []
    with torch.no_grad():
        for start in range(0, len(channels), batch_size):
            images = to_uint8_rgb(channels[start:start + batch_size]).to(device)
            top = classifier(images)[0].float().softmax(dim=1).max(dim=1)
            digits.append(top.indices.cpu())
            probabilities.append(top.values.cpu())
    predicted = torch.cat(digits) if digits else torch.empty(0, dtype=torch.int64)
    labels = stacked_labels(predicted.reshape(-1, DIGITS_PER_SAMPLE))
    if not with_recognised:
        return labels
    probability = torch.cat(probabilities) if probabilities else torch.empty(0)
    recognised = (probability >= RECOGNISED_PROBABILITY).reshape(-1, DIGITS_PER_SAMPLE).all(dim=1)
    return labels, recognised


def mode_coverage(labels: "torch.Tensor", modes: int) -> tuple[float, float]:
    """Return ``(modes covered, reverse KL in nats)`` of mode ``labels`` over ``modes`` equally likely modes.

    The reverse KL is ``sum_k p_k ln(p_k * modes)`` over the modes with ``p_k > 0``, where
    ``p`` is the histogram of ``labels``; NaN when there are no labels.
    """
    import torch

    counts = torch.bincount(labels.to(torch.int64), minlength=modes).double()
    covered = float((counts > 0).sum())
    if counts.sum() == 0:
        return covered, math.nan
    histogram = counts[counts > 0] / counts.sum()
    return covered, float((histogram * torch.log(histogram * modes)).sum())
