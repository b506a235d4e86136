"""Models that break the architecture contract fail before the first step, in one sentence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganbench.api import Architecture
from ganbench.execution.recording import execute_run
from ganbench.planning.grid import GridSpec, expand

pytestmark = pytest.mark.usefixtures("single_thread")


class WrongShape(Architecture):
    """A generator that makes 3 values per point for a 2D dataset."""

    name = "wrong-shape"
    description = "test architecture with a generator of the wrong output shape"
    defaults = {"latent_dim": 4}

    def build(self, data_shape, params):
        return nn.Linear(4, 3), nn.Sequential(nn.Linear(2, 1), nn.Flatten(0))


class WrongLogits(WrongShape):
    """A discriminator that returns two logits per sample."""

    name = "wrong-logits"

    def build(self, data_shape, params):
        return nn.Linear(4, 2), nn.Linear(2, 2)


@pytest.mark.parametrize("architecture, expected", [
    (WrongShape(), "the generator maps noise [4, 4] to shape (4, 3); expected [batch, *data_shape] = (4, 2)"),
    (WrongLogits(), "the discriminator maps a batch of 4 samples to shape (4, 2); expected one raw logit per sample"),
])
def test_a_model_of_the_wrong_shape_fails_in_one_line_before_training(tmp_path, cache_dir, registry_with,
                                                                     architecture, expected):
    registry = registry_with(("architecture", architecture))
    spec, = expand(GridSpec(archs=[architecture.name], datasets=["ring8"], steps=5, metrics=["none"],
                            sets={"num_points": [100]}), registry)
    outcome = execute_run(spec, tmp_path, registry=registry, device=torch.device("cpu"), data_dir=None,
                          cache_dir=cache_dir)
    assert outcome.status == "failed" and outcome.step == 0
    assert expected in outcome.error and "\n" not in outcome.error
    assert f"architecture '{architecture.name}' does not fit dataset 'ring8'" in outcome.error
    assert "mat1 and mat2" not in outcome.error
