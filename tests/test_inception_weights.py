"""Inception weights are never unpickled with code: a planted file is refused, a tensors-only one is copied.

The real weights are not available offline, so the files are made here: a pickle whose
``__reduce__`` would create a marker file (what a planted file does), and a state dict of
tensors whose SHA-256 the test computes and declares published.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ganbench.errors import UserError
from ganbench.evaluation import extractors, inception_weights


class Payload:
    """Unpickling this runs ``os.mkdir(marker)``: code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def planted(path: Path, marker: Path) -> Path:
    torch.save({"conv.weight": torch.zeros(2), "trap": Payload(marker)}, path)
    return path


def honest(path: Path) -> dict[str, torch.Tensor]:
    state = {"conv.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.ones(4)}
    torch.save(state, path)
    return state


def test_a_planted_weights_file_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "code-ran"
    weights = planted(tmp_path / "inception.pth", marker)
    with pytest.raises(UserError, match=f"refused to load the Inception weights {weights}"):
        with inception_weights.loadable_copy(weights, "unused://url"):
            pass
    assert not marker.exists()
    torch.load(weights, weights_only=False)  # the control: the file does run code when unpickled
    assert marker.exists()


def test_a_planted_file_in_torch_hubs_cache_is_refused_before_torch_fidelity_loads_it(tmp_path, monkeypatch):
    """``auto`` finds weights in torch hub's cache: the path the battery planted a file in."""
    marker = tmp_path / "code-ran"
    monkeypatch.delenv(extractors.WEIGHTS_VARIABLE, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = extractors.default_inception_path()
    cached.parent.mkdir(parents=True)
    planted(cached, marker)
    context = SimpleNamespace(settings={"extractor": "auto", "inception_weights": ""},
                              shared=lambda key, compute: compute(),
                              dataset=SimpleNamespace(num_classes=None), dataset_name="toy", cache_dir=tmp_path)
    extractor = extractors.resolve_extractor(context)
    assert extractor.name == "inception"
    with pytest.raises(UserError, match=f"refused to load the Inception weights {cached}"):
        extractor.create(["2048"], cuda=False)
    assert not marker.exists()


def test_a_tensors_only_file_is_handed_over_as_a_private_copy(tmp_path, monkeypatch):
    weights = tmp_path / "inception.pth"
    state = honest(weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert inception_weights.describe(weights)["inception_weights_published"].startswith("no:")
    monkeypatch.setitem(inception_weights.PUBLISHED_SHA256, digest, "the test's weights")
    described = inception_weights.describe(weights)
    assert described["inception_weights_sha256"] == digest
    assert described["inception_weights_published"] == "the test's weights"
    with inception_weights.loadable_copy(weights, "unused://url", digest) as copy:
        assert copy != weights and copy.parent.stat().st_mode & 0o077 == 0  # a directory only we can write
        loaded = torch.load(copy, weights_only=True)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert not copy.exists()


def test_weights_changed_after_they_were_described_are_refused(tmp_path):
    weights = tmp_path / "inception.pth"
    honest(weights)
    digest = inception_weights.describe(weights)["inception_weights_sha256"]
    torch.save({"other": torch.zeros(1)}, weights)
    with pytest.raises(UserError, match="changed while ganbench used them"):
        with inception_weights.loadable_copy(weights, "unused://url", digest):
            pass


def test_the_extractor_passes_torch_fidelity_the_copy_not_the_file(tmp_path, monkeypatch):
    import torch_fidelity.utils

    weights = tmp_path / "inception.pth"
    state = honest(weights)
    seen = {}

    def create_feature_extractor(name, layers, cuda, verbose, feature_extractor_weights_path):
        seen["path"] = feature_extractor_weights_path
        seen["state"] = torch.load(feature_extractor_weights_path, weights_only=False)  # as torch-fidelity does
        return "module"

    monkeypatch.setattr(torch_fidelity.utils, "create_feature_extractor", create_feature_extractor)
    extractor = extractors.inception_extractor(str(weights), "test")
    assert extractor.create(["2048"], cuda=False) == "module"
    assert seen["path"] != str(weights) and seen["state"].keys() == state.keys()
    assert extractor.protocol["inception_weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
