"""The built-in ``mlp`` and ``dcgan`` architectures, fetched through the real plugin registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ganbench import Architecture
from ganbench.registry import get_registry

BATCH = 4
SMALL = {"dcgan_width": 8, "mlp_width": 32}
"""Narrow models keep the shape and gradient tests fast; the scale tests use the defaults."""

DCGAN_SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 32, 32)]
MLP_SHAPES = [(2,), (1, 28, 28)]


def architecture(name: str) -> Architecture:
    return get_registry().get("architecture", name)


def resolved(name: str, **overrides) -> dict:
    """The fully resolved params ganbench would pass: defaults plus the overrides this arch reads."""
    defaults = dict(architecture(name).defaults)
    return {**defaults, **{k: v for k, v in overrides.items() if k in defaults}}


def build(name: str, data_shape, seed: int = 0, **overrides):
    params = resolved(name, **overrides)
    torch.manual_seed(seed)
    generator, discriminator = architecture(name).build(data_shape, params)
    return generator, discriminator, params


def cases():
    return ([("dcgan", shape) for shape in DCGAN_SHAPES]
            + [("mlp", shape) for shape in MLP_SHAPES])


def test_both_architectures_register_through_the_entry_point():
    registry = get_registry()
    assert {"mlp", "dcgan"} <= set(registry.names("architecture"))
    for name in ("mlp", "dcgan"):
        entry = registry.entry("architecture", name)
        assert entry.plugin.name == "ganbench:ganbench.architectures"
        assert isinstance(entry.obj, Architecture)
        assert "latent_dim" in entry.obj.defaults
        assert all(key == "latent_dim" or key.startswith(f"{name}_") for key in entry.obj.defaults)


@pytest.mark.parametrize("name, data_shape", cases())
def test_generator_makes_samples_and_discriminator_one_logit_each(name, data_shape):
    generator, discriminator, params = build(name, data_shape, **SMALL)
    assert architecture(name).unsupported_reason(data_shape, params) is None
    samples = generator(torch.randn(BATCH, params["latent_dim"]))
    assert samples.shape == (BATCH, *data_shape)
    assert samples.dtype == torch.float32
    logits = discriminator(samples)
    assert logits.shape == (BATCH,)
    assert discriminator(torch.rand(BATCH, *data_shape) * 2 - 1).shape == (BATCH,)


@pytest.mark.parametrize("name, data_shape", [(n, s) for n, s in cases() if len(s) == 3])
def test_generated_images_are_in_minus_one_to_one(name, data_shape):
    generator, _, params = build(name, data_shape, **SMALL)
    with torch.no_grad():
        last = [m for m in generator.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d))][-1]
        last.weight.mul_(1000)  # push the outputs far out, where only tanh keeps them in range
        images = generator(torch.randn(BATCH, params["latent_dim"]))
    assert images.min() >= -1 and images.max() <= 1
    assert images.abs().max() > 0.9


def test_mlp_points_are_not_squashed_to_minus_one_to_one():
    # 2D benchmarks put modes at +-4 (grid of 25 Gaussians): the output must reach them.
    generator, _, params = build("mlp", (2,), **SMALL)
    last = [m for m in generator.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias.fill_(4.0)
        points = generator(torch.randn(BATCH, params["latent_dim"]))
    assert points.min() > 2


def test_latent_dim_override_changes_the_generator_input():
    for name, data_shape in (("dcgan", (1, 28, 28)), ("mlp", (2,))):
        generator, _, _ = build(name, data_shape, latent_dim=7, **SMALL)
        assert generator(torch.randn(BATCH, 7)).shape == (BATCH, *data_shape)


@pytest.mark.parametrize("name, data_shape, spectral_norm",
                         [("dcgan", (3, 32, 32), False), ("dcgan", (1, 28, 28), True),
                          ("mlp", (2,), False), ("mlp", (1, 28, 28), False)])
def test_gradients_reach_every_parameter(name, data_shape, spectral_norm):
    generator, discriminator, params = build(name, data_shape, dcgan_spectral_norm=spectral_norm, **SMALL)
    real = torch.rand(BATCH, *data_shape) * 2 - 1
    fake = generator(torch.randn(BATCH, params["latent_dim"]))
    loss = nn.functional.softplus(-discriminator(real)).mean() + nn.functional.softplus(discriminator(fake)).mean()
    loss.backward()
    for model_name, model in (("generator", generator), ("discriminator", discriminator)):
        for parameter_name, parameter in model.named_parameters():
            assert parameter.grad is not None, f"{model_name}.{parameter_name} got no gradient"
            assert parameter.grad.abs().sum() > 0, f"{model_name}.{parameter_name} got a zero gradient"


@pytest.mark.parametrize("name, data_shape", [("dcgan", (1, 28, 28)), ("mlp", (2,))])
def test_same_seed_builds_identical_weights(name, data_shape):
    first = build(name, data_shape, seed=3, **SMALL)
    second = build(name, data_shape, seed=3, **SMALL)
    other = build(name, data_shape, seed=4, **SMALL)
    for index in (0, 1):
        a, b, c = (models[index].state_dict() for models in (first, second, other))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert not all(torch.equal(a[key], c[key]) for key in a)


def test_dcgan_initialisation_follows_the_paper():
    generator, discriminator, _ = build("dcgan", (3, 64, 64))
    convolutions = [m for model in (generator, discriminator) for m in model.modules()
                    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    norms = [m for model in (generator, discriminator) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    biggest = max(convolutions, key=lambda m: m.weight.numel())
    assert biggest.weight.numel() > 1_000_000
    assert biggest.weight.std().item() == pytest.approx(0.02, rel=0.01)
    assert abs(biggest.weight.mean().item()) < 1e-3
    for conv in convolutions:
        if conv.weight.numel() > 10_000:
            assert conv.weight.std().item() == pytest.approx(0.02, rel=0.05)
        if conv.bias is not None:
            assert torch.all(conv.bias == 0)
    scales = torch.cat([norm.weight.detach() for norm in norms])
    assert scales.mean().item() == pytest.approx(1.0, abs=0.005)
    assert scales.std().item() == pytest.approx(0.02, rel=0.1)
    assert all(torch.all(norm.bias == 0) for norm in norms)


def test_dcgan_spectral_norm_normalises_every_discriminator_layer_and_drops_batchnorm():
    generator, discriminator, _ = build("dcgan", (3, 32, 32), dcgan_spectral_norm=True, dcgan_width=16)
    convolutions = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert convolutions and all(parametrize.is_parametrized(m, "weight") for m in convolutions)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in discriminator.modules())
    assert not any(parametrize.is_parametrized(m) for m in generator.modules())

    discriminator.train()  # each training-mode forward runs one power iteration
    with torch.no_grad():
        for _ in range(20):
            discriminator(torch.randn(2, 3, 32, 32))
        discriminator.eval()
        for conv in convolutions:
            largest_singular_value = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item()
            assert largest_singular_value == pytest.approx(1.0, abs=0.02)


def test_dcgan_without_spectral_norm_has_batchnorm_after_every_discriminator_conv_but_the_first():
    _, discriminator, _ = build("dcgan", (3, 64, 64), **SMALL)
    layers = list(discriminator)
    convolutions = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    hidden = convolutions[1:-1]  # not the first, not the final logit layer
    assert hidden and all(isinstance(layers[i + 1], nn.BatchNorm2d) for i in hidden)
    assert not isinstance(layers[convolutions[0] + 1], nn.BatchNorm2d)
    assert not any(parametrize.is_parametrized(m) for m in discriminator.modules())


def test_dcgan_generator_at_width_64_has_the_reference_dcgan_size():
    # The 64x64 DCGAN generator: z(100) -> 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64x3,
    # 4x4 kernels, BatchNorm (scale and shift) after every layer but the last, bias only on the last.
    widths = [512, 256, 128, 64]
    expected = 100 * widths[0] * 4 * 4 + 2 * widths[0]
    for width_in, width_out in zip(widths, widths[1:]):
        expected += width_in * width_out * 4 * 4 + 2 * width_out
    expected += widths[-1] * 3 * 4 * 4 + 3
    generator, _, _ = build("dcgan", (3, 64, 64))
    parameters = sum(p.numel() for p in generator.parameters())
    assert parameters == expected
    assert 3.4e6 < parameters < 3.7e6  # ~3.5M, the usual figure for this generator


@pytest.mark.parametrize("name, data_shape, hint", [
    ("dcgan", (2,), "--archs mlp"),
    ("dcgan", (1, 8, 8), "--archs mlp"),
    ("dcgan", (3, 36, 36), "resize"),
    ("dcgan", (3, 32, 48), "--archs mlp"),
    ("mlp", (3, 128, 128), "--archs dcgan"),
])
def test_unsupported_shapes_say_why_and_what_to_do(name, data_shape, hint):
    arch = architecture(name)
    params = resolved(name)
    reason = arch.unsupported_reason(data_shape, params)
    assert isinstance(reason, str) and hint in reason and str(tuple(data_shape)[-1]) in reason
    with pytest.raises(ValueError, match="use --archs"):
        arch.build(data_shape, params)


@pytest.mark.parametrize("name, key", [("dcgan", "dcgan_width"), ("mlp", "mlp_depth"), ("mlp", "latent_dim")])
def test_non_positive_sizes_are_rejected_by_name(name, key):
    params = {**resolved(name), key: 0}
    shape = (1, 28, 28)
    assert key in architecture(name).unsupported_reason(shape, params)
