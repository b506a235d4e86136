"""PacGAN: the ``pacgan`` networks are the paper's, and ``pac`` packs what the discriminator sees.

A spy architecture records every input its discriminator receives; its generator outputs
a constant far from every real sample, so each recorded pack shows whether it held real
samples, generated ones, or (a bug) both.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch
from torch import nn

from ganbench.api import Architecture, Dataset, LoadedData
from ganbench.errors import UserError
from ganbench.execution.recording import execute_pack, execute_run
from ganbench.ledger.storage import read_json
from ganbench.planning.grid import GridSpec, expand
from ganbench.planning.pac import pack_samples, packed_shape
from ganbench.registry import build_registry

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")
FAKE_POINT, FAKE_PIXEL = 50.0, 1.0
"""What the spy generator outputs: no real ring8 point is near 50, and the test images lie in [-1, 1)."""


@pytest.fixture(scope="module")
def registry():
    return build_registry()


# --- the pacgan networks ---------------------------------------------------------------

def test_pacgan_networks_have_the_papers_layers_and_parameter_counts(registry):
    architecture = registry.get("architecture", "pacgan")
    params = dict(architecture.defaults)
    torch.manual_seed(0)
    generator, discriminator = architecture.build((2,), params)

    linears = [m for m in generator if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features, m.bias is not None) for m in linears] == [
        (2, 400, False), (400, 400, False), (400, 400, False), (400, 400, False), (400, 2, True)]
    norms = [m for m in generator if isinstance(m, nn.BatchNorm1d)]
    assert [(m.num_features, m.eps, m.momentum) for m in norms] == [(400, 1e-4, 0.05)] * 4
    assert sum(isinstance(m, nn.ReLU) for m in generator) == 4
    # 2*400 + 3*400*400 + 400*2 + 2 weights and bias, 4 BatchNorms of 400 scales and 400 shifts
    assert sum(p.numel() for p in generator.parameters()) == 800 + 480_000 + 802 + 3_200 == 484_802

    maxouts = [m for m in discriminator.modules() if type(m).__name__ == "Maxout"]
    assert [(m.linear.in_features, m.linear.out_features, m.outputs, m.pieces) for m in maxouts] == [
        (2, 1000, 200, 5), (200, 1000, 200, 5), (200, 1000, 200, 5)]
    assert sum(p.numel() for p in discriminator.parameters()) == 3_000 + 2 * 201_000 + 201 == 405_201
    _, packed = architecture.build(packed_shape((2,), 4), params)
    assert sum(p.numel() for p in packed.parameters()) == 405_201 + 3 * 2 * 1000  # 2 inputs x 1000 per extra point

    weights = torch.cat([m.weight.flatten() for m in [*linears, *(m.linear for m in maxouts)]])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    biases = [m.bias for m in [linears[-1], *(m.linear for m in maxouts)]]
    assert all(torch.count_nonzero(b) == 0 for b in biases)
    assert discriminator(torch.zeros(7, 2)).shape == (7,)


def test_maxout_is_the_maximum_of_each_consecutive_group_of_pieces():
    from ganbench_plugins.pacgan_networks import Maxout

    torch.manual_seed(0)
    layer = Maxout(3, 4, 5)
    x = torch.randn(6, 3)
    linear = x @ layer.linear.weight.T + layer.linear.bias
    expected = torch.stack([linear[:, 5 * k:5 * k + 5].max(dim=1).values for k in range(4)], dim=1)
    torch.testing.assert_close(layer(x), expected)


def test_pacgan_rejects_images_in_one_line(registry):
    grid = GridSpec(archs=["pacgan"], datasets=["mnist"], steps=10, metrics=["none"])
    with pytest.raises(UserError, match="pacgan models points"):
        expand(grid, registry)


# --- packing samples ---------------------------------------------------------------------

def test_pack_samples_puts_each_group_of_consecutive_samples_side_by_side():
    points = torch.arange(24.0).reshape(12, 2)
    packed = pack_samples(points, 3, sample_dims=1)
    assert packed.shape == (4, 6)
    for i in range(4):
        torch.testing.assert_close(packed[i], torch.cat([points[3 * i], points[3 * i + 1], points[3 * i + 2]]))

    images = torch.randn(6, 3, 4, 4)
    packed = pack_samples(images, 2, sample_dims=3)
    assert packed.shape == (3, 6, 4, 4)
    torch.testing.assert_close(packed[1], torch.cat([images[2], images[3]], dim=0))

    stacked = torch.randn(5, 8, 2)  # five packed runs' batches
    torch.testing.assert_close(pack_samples(stacked, 4, sample_dims=1)[3], pack_samples(stacked[3], 4, 1))
    assert pack_samples(points, 1, sample_dims=1) is points


# --- what the discriminator sees -----------------------------------------------------------

class SpyArchitecture(Architecture):
    """A generator that outputs FAKE_POINT (points) or FAKE_PIXEL (images) everywhere and a discriminator that records its inputs."""

    name = "spy"
    description = "test architecture that records the discriminator's inputs"
    defaults = {"latent_dim": 3}
    seen: ClassVar[list[torch.Tensor]] = []

    def build(self, data_shape, params):
        seen = self.seen

        class Generator(nn.Module):
            def __init__(self):
                super().__init__()
                self.unused = nn.Parameter(torch.zeros(()))  # its gradient is 0, so Adam never moves it

            def forward(self, z):
                fake = FAKE_PIXEL if len(data_shape) == 3 else FAKE_POINT
                return (fake + 0 * self.unused).expand(len(z), *data_shape) + 0 * z.sum()

        class Discriminator(nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = nn.Parameter(torch.full((), 0.01))

            def forward(self, x):
                seen.append(x.detach().clone())
                return x.flatten(1).mean(1) * self.weight

        return Generator(), Discriminator()


class SmallImages(Dataset):
    """64 random 1x16x16 images in [-1, 1]."""

    name = "small-images"
    description = "test images"
    source = "random"

    def data_shape(self, params):
        return (1, 16, 16)

    def load(self, request):
        return LoadedData(torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1, None,
                          request.split)


@pytest.mark.parametrize("dataset, sample_shape", [("ring8", (2,)), ("small-images", (1, 16, 16))])
@pytest.mark.parametrize("pac", [1, 3])
def test_the_discriminator_gets_packs_of_pac_samples_never_mixing_real_and_generated(
        tmp_path, cache_dir, registry_with, dataset, sample_shape, pac):
    registry = registry_with(("architecture", SpyArchitecture()), ("dataset", SmallImages()))
    grid = GridSpec(archs=["spy"], losses=["ns"], datasets=[dataset], steps=4, batch_size=5, metrics=["none"],
                    sample_every=1000, sets={"pac": [pac]} | ({"num_points": [500]} if dataset == "ring8" else {}))
    spec, = expand(grid, registry)
    SpyArchitecture.seen.clear()
    outcome = execute_run(spec, tmp_path, registry=registry, device=CPU, data_dir=None, cache_dir=cache_dir)
    assert outcome.status == "done", outcome.error

    expected = (5, pac * sample_shape[0], *sample_shape[1:])
    probe, *training = SpyArchitecture.seen  # the shape check before training reads 4 made-up samples
    assert tuple(probe.shape) == (4, *expected[1:])
    assert len(training) == 4 * 3  # per step: D(real), D(fake), then D(fake) for the generator
    kinds = []
    for batch in training:
        assert tuple(batch.shape) == expected
        for pack in batch:
            generated = pack == (FAKE_PIXEL if len(sample_shape) == 3 else FAKE_POINT)
            assert generated.all() or not generated.any(), "a pack mixed real and generated samples"
            kinds.append(bool(generated.all()))
    assert kinds.count(False) == 4 * 5 and kinds.count(True) == 2 * 4 * 5
    status = read_json(tmp_path / "runs" / spec.run_id / "status.json")
    if pac > 1:
        assert "packs of 3" in status["protocol"]["training_pac"]


@pytest.mark.parametrize("architecture, loss", [("mlp", "wgan-gp"), ("pacgan", "ns"), ("mlp", "hinge")])
def test_every_builtin_architecture_and_a_penalty_train_with_pac(tmp_path, cache_dir, registry, architecture, loss):
    small = {"mlp": {"mlp_width": [16], "mlp_depth": [1]},
             "pacgan": {"pacgan_width_g": [16], "pacgan_width_d": [8]}}[architecture]
    grid = GridSpec(archs=[architecture], losses=[loss], datasets=["ring8"], steps=6, batch_size=8,
                    metrics=["modes"], sample_every=1000, sets={"pac": [2], "num_points": [400], **small,
                                                                "modes_samples": [200]})
    spec, = expand(grid, registry)
    outcome = execute_run(spec, tmp_path, registry=registry, device=CPU, data_dir=None, cache_dir=cache_dir)
    assert outcome.status == "done", outcome.error
    first_layer = next(m for m in torch.load(tmp_path / "runs" / spec.run_id / "checkpoint.pt",
                                             weights_only=True)["discriminator"].values())
    assert first_layer.shape[-1] == 4  # two 2D points per pack


def test_dcgan_judges_packs_of_images(tmp_path, cache_dir, registry_with):
    registry = registry_with(("dataset", SmallImages()))
    grid = GridSpec(archs=["dcgan"], losses=["ns"], datasets=["small-images"], steps=2, batch_size=4,
                    metrics=["none"], sample_every=1000, sets={"pac": [2], "dcgan_width": [4]})
    spec, = expand(grid, registry)
    outcome = execute_run(spec, tmp_path, registry=registry, device=CPU, data_dir=None, cache_dir=cache_dir)
    assert outcome.status == "done", outcome.error
    weights = torch.load(tmp_path / "runs" / spec.run_id / "checkpoint.pt", weights_only=True)["discriminator"]
    assert weights["0.weight"].shape[1] == 2  # the first convolution reads 2 packed 1-channel images


def test_packed_runs_with_pac_train_what_they_train_alone(tmp_path, cache_dir, registry):
    grid = GridSpec(archs=["mlp"], losses=["ns"], datasets=["ring8"], seeds=[0, 1], steps=5, batch_size=8,
                    metrics=["none"], sample_every=1000, checkpoint_every=5,
                    sets={"pac": [2], "num_points": [400], "mlp_width": [16], "mlp_depth": [1]})
    specs = expand(grid, registry)
    for spec in specs:
        execute_run(spec, tmp_path / "alone", registry=registry, device=CPU, data_dir=None, cache_dir=cache_dir)
    outcomes = execute_pack(specs, tmp_path / "packed", registry=registry, device=CPU, data_dir=None,
                            cache_dir=cache_dir)
    assert all(o.status == "done" for o in outcomes.values())
    for spec in specs:
        alone, packed = (torch.load(tmp_path / where / "runs" / spec.run_id / "checkpoint.pt", weights_only=True)
                         for where in ("alone", "packed"))
        for name, value in alone["discriminator"].items():
            torch.testing.assert_close(packed["discriminator"][name], value, rtol=1e-4, atol=1e-6)


def test_pac_below_one_or_unsupported_by_the_architecture_is_one_line(registry):
    with pytest.raises(UserError, match="pac=0"):
        expand(GridSpec(archs=["mlp"], datasets=["ring8"], metrics=["none"], sets={"pac": [0]}), registry)
    big = dataclasses.replace(GridSpec(archs=["mlp"], datasets=["cifar10"], metrics=["none"]), sets={"pac": [5]})
    with pytest.raises(UserError, match="cannot judge packs of 5"):
        expand(big, registry)  # 5 x 3x32x32 = 15,360 values, more than the mlp accepts
