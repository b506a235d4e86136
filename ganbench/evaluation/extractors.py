"""Feature extractors behind FID, KID and IS; torch-fidelity runs every one of them.

* ``inception``: torch-fidelity's ``inception-v3-compat`` (the TF Inception port FID papers
  use). Its weights are downloaded on first use; an offline machine gets a copy through
  the ``inception_weights`` setting (``--inception-weights PATH``) or the
  ``GANBENCH_INCEPTION_WEIGHTS`` variable. Either way torch-fidelity only ever loads a
  tensors-only copy that ganbench made (:mod:`ganbench.evaluation.inception_weights`), never the file
  itself, since it unpickles with ``weights_only=False``.
* ``classifier``: a small CNN ganbench trains once on the labelled reference split
  (:mod:`ganbench.evaluation.classifier`), registered into torch-fidelity as
  ``ganbench-classifier``: FID and KID use its penultimate layer, IS its logits, through
  torch-fidelity's own code.
* ``auto`` (the default): inception when its weights are on disk, else the classifier when
  the dataset has labels, saying which and why in the protocol.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from ganbench.errors import UserError
from ganbench.evaluation import inception_weights
from ganbench.evaluation.classifier import (CLASSIFIER_FIDELITY_NAME, CLASSIFIER_RECIPE, cached_classifier,
                                            register_classifier)
from ganbench.evaluation.images import to_uint8_rgb

if TYPE_CHECKING:
    from ganbench.evaluation.context import EvaluationContext

CHOICES = ("auto", "inception", "classifier")
WEIGHTS_VARIABLE = "GANBENCH_INCEPTION_WEIGHTS"
INCEPTION_FIDELITY_NAME = "inception-v3-compat"

logger = logging.getLogger("ganbench")
_announced: set[str] = set()


@dataclass(frozen=True)
class Extractor:
    """A feature extractor chosen for one evaluation: what torch-fidelity runs, and how to report it."""

    name: str
    """``inception`` or ``classifier``: the suffix of every column it produces."""
    fidelity_name: str
    """Its name in torch-fidelity's registry."""
    weights_path: str | None
    """The weights file (the classifier's checkpoint, or Inception weights of which torch-fidelity gets a
    checked copy); None downloads the Inception weights."""
    fid_layer: str
    """Feature layer for FID and KID."""
    is_layer: str
    """Logits layer for IS."""
    identity: str
    """What makes its features what they are (network and weights): part of cache keys."""
    protocol: Mapping[str, str]
    """What a results reader needs to know about it (accuracy, weights, why it was chosen)."""
    batch_size: int = 64
    """Images per forward pass (torch-fidelity's default; larger for the small classifier)."""

    def create(self, layers: list[str], cuda: bool) -> FeatureExtractorBase:
        """Instantiate it through torch-fidelity's ``create_feature_extractor``."""
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
        from torch_fidelity.utils import create_feature_extractor

        if self.fidelity_name != INCEPTION_FIDELITY_NAME:  # ganbench's own checkpoint, loaded weights_only
            return create_feature_extractor(self.fidelity_name, layers, cuda=cuda, verbose=False,
                                            feature_extractor_weights_path=self.weights_path)
        with inception_weights.loadable_copy(self.weights_path, URL_INCEPTION_V3,
                                             self.protocol.get("inception_weights_sha256")) as copy:
            return create_feature_extractor(self.fidelity_name, layers, cuda=cuda, verbose=False,
                                            feature_extractor_weights_path=str(copy))


def resolve_extractor(context: "EvaluationContext") -> Extractor:
    """Return the extractor the ``extractor`` setting names (``auto``, ``inception``, ``classifier``)."""
    choice = str(context.settings.get("extractor", "auto"))
    if choice not in CHOICES:
        raise UserError(f"unknown extractor '{choice}'; choose one of {', '.join(CHOICES)} (--set extractor=...)")
    return context.shared(("extractor", choice), lambda: _choose_extractor(context, choice))


def _choose_extractor(context: "EvaluationContext", choice: str) -> Extractor:
    given = inception_weights_setting(context.settings)
    if choice == "inception":
        extractor = inception_extractor(given, "extractor=inception")
    elif choice == "classifier":
        extractor = classifier_extractor(context, "extractor=classifier")
    else:
        found = given or cached_inception_weights()
        if found:
            extractor = inception_extractor(found, f"auto: Inception weights found at {found}")
        elif context.dataset.num_classes is not None:
            reason = (f"auto: no Inception weights at {default_inception_path()} (give them with "
                      f"--inception-weights or {WEIGHTS_VARIABLE}), so a classifier trained on "
                      f"{context.dataset_name} is used")
            extractor = classifier_extractor(context, reason)
        else:
            extractor = inception_extractor(None, f"auto: {context.dataset_name} has no labels for a classifier, "
                                                  "so torch-fidelity downloads the Inception weights")
    reason = extractor.protocol["extractor_choice"]
    if choice == "auto" and reason not in _announced:
        _announced.add(reason)
        logger.warning("%s", reason)
    return extractor


def inception_weights_setting(settings: Mapping[str, Any]) -> str | None:
    """The Inception weights file the user named (setting, then environment), or None."""
    path = str(settings.get("inception_weights", "") or os.environ.get(WEIGHTS_VARIABLE, ""))
    if not path:
        return None
    if not Path(path).expanduser().is_file():
        raise UserError(f"the Inception weights file {path} does not exist; fix --inception-weights "
                        f"(setting inception_weights) or {WEIGHTS_VARIABLE}")
    return str(Path(path).expanduser())


def default_inception_path() -> Path:
    """Where torch-fidelity's download of the Inception weights lands (torch hub's checkpoints)."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)


def cached_inception_weights() -> str | None:
    """The path of previously downloaded Inception weights, or None."""
    path = default_inception_path()
    return str(path) if path.is_file() else None


def inception_extractor(weights_path: str | None, reason: str) -> Extractor:
    """torch-fidelity's Inception: 2048-d pool features for FID/KID, unbiased logits for IS."""
    protocol = {
        "extractor": "inception",
        "extractor_network": f"torch-fidelity {INCEPTION_FIDELITY_NAME}",
        "extractor_layers": "fid/kid: 2048, is: logits_unbiased",
        "inception_weights": weights_path or "downloaded by ganbench through torch hub (hash-checked)",
        **(inception_weights.describe(weights_path) if weights_path else {}),
        "extractor_choice": reason,
    }
    return Extractor("inception", INCEPTION_FIDELITY_NAME, weights_path, "2048", "logits_unbiased",
                     INCEPTION_FIDELITY_NAME, protocol)


def classifier_extractor(context: "EvaluationContext", reason: str) -> Extractor:
    """The classifier trained on the reference split (trained now unless cached)."""
    split = str(context.settings.get("reference_split", "test"))
    reference = context.reference_data(split)
    if reference.labels is None:
        raise UserError(f"the classifier extractor needs labelled data and {context.dataset_name} has no labels; "
                        f"use --set extractor=inception")
    num_classes = context.dataset.num_classes or int(reference.labels.max()) + 1
    path, checkpoint = cached_classifier(to_uint8_rgb(reference.samples), reference.labels, num_classes,
                                         Path(context.cache_dir))
    register_classifier()
    protocol = {
        "extractor": "classifier",
        "extractor_network": f"ganbench classifier {path.stem[:16]} ({CLASSIFIER_RECIPE['architecture']})",
        "extractor_layers": f"fid/kid: penultimate (128), is: logits ({num_classes})",
        "classifier_test_accuracy": f"{checkpoint['test_accuracy']:.4f}",
        "classifier_data": (f"{context.dataset_name} {reference.split}: {checkpoint['train_samples']} train, "
                            f"{checkpoint['test_samples']} held out"),
        "extractor_choice": reason,
    }
    return Extractor("classifier", CLASSIFIER_FIDELITY_NAME, str(path), "penultimate", "logits",
                     f"{CLASSIFIER_FIDELITY_NAME}-{path.stem}", protocol, batch_size=500)
