"""Built-in architectures: ``mlp`` for points and small images, ``dcgan`` for images,
``pacgan`` for PacGAN's 2D experiments.

Both build plain ``nn.Sequential`` models, so ``print(generator)`` shows the whole
network. Their discriminators end in one raw logit per sample, shape ``[batch]``.

Hyperparameters (``--set key=value``) are prefixed with the architecture's name, except
``latent_dim``, which every architecture shares on purpose so one flag sets it for all.
torch is imported inside the functions that build models, so listing plugins stays quick.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Mapping

from ganbench import Architecture, hookimpl
from ganbench.api import DataShape

if TYPE_CHECKING:
    from torch import nn

MLP_MAX_VALUES = 3 * 64 * 64
"""Largest sample (values per sample) the mlp accepts; beyond that use a convolutional model."""

DCGAN_SEED_SIZES = range(4, 8)
"""Side lengths of the first feature map the dcgan generator may start from."""
DCGAN_MIN_DOUBLINGS = 2
"""At least two stride-2 steps, so images are at least 16x16."""
DCGAN_MAX_WIDTH_MULTIPLIER = 8
"""Channels double per halving of resolution, up to this many times ``dcgan_width``."""


@hookimpl
def register_architectures(register):
    """Register ``mlp``, ``dcgan`` and ``pacgan``."""
    register(MLP())
    register(DCGAN())
    register(PacGANToy())


class MLP(Architecture):
    """Fully connected generator and discriminator, for points ``(dim,)`` and small images.

    Generator: ``mlp_depth`` hidden layers of ``mlp_width`` units with ReLU, then a linear
    layer to every value of the sample. Images get a tanh, so pixels are in ``[-1, 1]``;
    points stay unbounded, because 2D benchmarks place modes outside ``[-1, 1]`` (the
    modes of a 5x5 grid sit at -4..4). Discriminator: the same stack with LeakyReLU(0.2),
    ending in one logit. Weights keep PyTorch's default initialisation.

    ``latent_dim`` defaults to 64: far more than two points need, harmless, and enough
    for MNIST-sized images.
    """

    name = "mlp"
    description = "Fully connected G and D for 2D points and small images (up to 3x64x64)"
    defaults = {"latent_dim": 64, "mlp_width": 256, "mlp_depth": 3}

    def unsupported_reason(self, data_shape: DataShape, params: Mapping[str, Any]) -> str | None:
        problem = _non_positive(params, ("latent_dim", "mlp_width", "mlp_depth"))
        if problem:
            return f"mlp: {problem}"
        if len(data_shape) not in (1, 3):
            return (f"mlp models points (dim,) or images (channels, height, width); "
                    f"data shape {tuple(data_shape)} is neither")
        values = math.prod(data_shape)
        if values > MLP_MAX_VALUES:
            return (f"mlp handles samples of at most {MLP_MAX_VALUES} values (3x64x64); data shape "
                    f"{tuple(data_shape)} has {values}: use --archs dcgan")
        return None

    def build(self, data_shape: DataShape, params: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
        _raise_if_unsupported(self, data_shape, params)
        from torch import nn

        values = math.prod(data_shape)
        width, depth = params["mlp_width"], params["mlp_depth"]
        generator_layers = _mlp_stack(params["latent_dim"], width, depth, values, nn.ReLU)
        if _is_image(data_shape):
            generator_layers.append(nn.Tanh())
        generator = nn.Sequential(*generator_layers, nn.Unflatten(1, tuple(data_shape)))
        discriminator = nn.Sequential(
            nn.Flatten(),
            *_mlp_stack(values, width, depth, 1, functools.partial(nn.LeakyReLU, 0.2)),
            nn.Flatten(0),  # [batch, 1] -> [batch]
        )
        return generator, discriminator


class DCGAN(Architecture):
    """Deep convolutional GAN (Radford, Metz and Chintala, ICLR 2016), sized to the images.

    Generator: ``z`` is projected to a small ``s x s`` feature map (a transposed
    convolution over a 1x1 input, i.e. a fully connected layer), then each
    ConvTranspose2d(kernel 4, stride 2, padding 1) + BatchNorm + ReLU block doubles the
    resolution; the last one outputs the image channels through tanh. Discriminator: the
    mirror image, Conv2d(kernel 4, stride 2, padding 1) + BatchNorm + LeakyReLU(0.2)
    blocks (no BatchNorm after the first), then an ``s x s`` convolution to one logit.

    Resolution: ``s`` is the image side halved until it is odd or would drop below 4, so
    it is between 4 and 7: 64 and 32 start from 4x4 (as in the paper), MNIST's 28 from
    7x7. Nothing is cropped or padded. Sides that are not 4 to 7 times a power of two, at
    least 16 (16, 20, 24, 28, 32, 40, 48, 56, 64, 80...), and non-square images are rejected.

    Width: the last generator block (and the first discriminator block) has
    ``dcgan_width`` channels, doubling each time the resolution halves, capped at 8x.
    At width 64 on 3x64x64 that is the familiar 512-256-128-64 generator (~3.6M
    parameters); any number of image channels works.

    Initialisation as in the paper: conv weights N(0, 0.02), BatchNorm scales N(1, 0.02),
    biases 0. Convolutions followed by BatchNorm have no bias.

    ``dcgan_spectral_norm = true`` puts spectral normalisation (Miyato et al. 2018) on every
    discriminator convolution and removes its BatchNorm. Use it with gradient-penalty
    losses such as WGAN-GP: BatchNorm makes each logit depend on the whole batch, which
    the per-sample gradient penalty assumes it does not.
    """

    name = "dcgan"
    description = "DCGAN (Radford et al. 2016) for square images of 16x16 pixels and up (28, 32, 64...)"
    defaults = {"latent_dim": 100, "dcgan_width": 64, "dcgan_spectral_norm": False}

    def unsupported_reason(self, data_shape: DataShape, params: Mapping[str, Any]) -> str | None:
        problem = _non_positive(params, ("latent_dim", "dcgan_width"))
        if problem:
            return f"dcgan: {problem}"
        shape = tuple(data_shape)
        if len(shape) != 3:
            return (f"dcgan models images (channels, height, width); data shape {shape} "
                    f"is points: use --archs mlp")
        _, height, width = shape
        if height != width:
            return f"dcgan needs square images; data shape {shape} is {height}x{width}: use --archs mlp"
        if height < 4 * 2 ** DCGAN_MIN_DOUBLINGS:
            return (f"dcgan needs images of at least 16x16 pixels; data shape {shape} is "
                    f"{height}x{width}: use --archs mlp")
        if _dcgan_plan(height) is None:
            return (f"dcgan builds images by doubling a 4x4 to 7x7 map, so the side must be 4 to 7 "
                    f"times a power of two (16, 28, 32, 48, 64...); {height}x{width} is not: "
                    f"resize the images to such a size or use --archs mlp")
        return None

    def build(self, data_shape: DataShape, params: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
        _raise_if_unsupported(self, data_shape, params)
        channels, side, _ = data_shape
        seed_size, doublings = _dcgan_plan(side)
        base = params["dcgan_width"]
        # Channels of the generator's feature maps, from the seed map up to side / 2.
        widths = [base * min(2 ** (doublings - 1 - level), DCGAN_MAX_WIDTH_MULTIPLIER)
                  for level in range(doublings)]
        generator = _dcgan_generator(params["latent_dim"], widths, seed_size, channels)
        discriminator = _dcgan_discriminator(channels, widths[::-1], seed_size,
                                             spectral_norm=params["dcgan_spectral_norm"])
        return generator, discriminator


class PacGANToy(Architecture):
    """The networks of PacGAN's 2D mode-collapse experiments (Lin, Khetan, Fanti and Oh, NeurIPS 2018).

    Exactly the networks of the authors' code release
    (``synthetic_data_experiments/2DRing_GAN&PacGAN/config.py`` and ``2DGrid_GAN&PacGAN``,
    ``pacgan_task.py``), which follow VEEGAN's (Srivastava et al. 2017):

    * generator: ``z`` in R^2 (``latent_dim`` 2, standard normal) -> 4 blocks of
      Linear(400, no bias) + BatchNorm + ReLU -> Linear(2, with bias); no output
      nonlinearity. BatchNorm with epsilon 1e-4 and running statistics updated with
      momentum 0.05, as their Blocks code did.
    * discriminator: 3 maxout layers of 200 units with 5 pieces each, then Linear(1): one
      raw logit. With ``pac`` = m its input is the m points of a pack side by side
      (``2 * m`` values), as in PacGAN.
    * initialisation: every weight N(0, 0.02), every bias 0 (BatchNorm scale 1, shift 0).

    Parameters: generator 484,802 (4 x 400 BatchNorm scales and shifts included);
    discriminator 405,201 at pac 1, plus 2,000 per extra packed point.

    Their optimiser (Blocks' Adam, learning rate 1e-4, "beta1 0.8" in Blocks' notation,
    which is torch's ``beta1 = 0.2``), update order and batch (100 packs) belong to the
    run, not the architecture: the ``pacgan-table1`` preset sets them. Points only.
    """

    name = "pacgan"
    description = "PacGAN's 2D networks (Lin et al. 2018): 4x400 BatchNorm G, 3x200 maxout(5) D; points only"
    defaults = {"latent_dim": 2, "pacgan_width_g": 400, "pacgan_depth_g": 4, "pacgan_width_d": 200,
                "pacgan_depth_d": 3, "pacgan_maxout_pieces": 5, "pacgan_init_std": 0.02}

    def unsupported_reason(self, data_shape: DataShape, params: Mapping[str, Any]) -> str | None:
        problem = _non_positive(params, ("latent_dim", "pacgan_width_g", "pacgan_depth_g", "pacgan_width_d",
                                         "pacgan_depth_d", "pacgan_maxout_pieces"))
        if problem:
            return f"pacgan: {problem}"
        if not params["pacgan_init_std"] > 0:
            return f"pacgan: pacgan_init_std must be positive, got {params['pacgan_init_std']!r}"
        if len(data_shape) != 1:
            return (f"pacgan models points (dim,); data shape {tuple(data_shape)} is an image: "
                    f"use --archs dcgan or mlp")
        return None

    def build(self, data_shape: DataShape, params: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
        _raise_if_unsupported(self, data_shape, params)
        from ganbench_plugins import pacgan_networks

        generator = pacgan_networks.generator(params["latent_dim"], params["pacgan_width_g"],
                                              params["pacgan_depth_g"], data_shape[0], params["pacgan_init_std"])
        discriminator = pacgan_networks.discriminator(data_shape[0], params["pacgan_width_d"],
                                                      params["pacgan_depth_d"], params["pacgan_maxout_pieces"],
                                                      params["pacgan_init_std"])
        return generator, discriminator


# --- mlp ---------------------------------------------------------------------------

def _mlp_stack(inputs: int, width: int, depth: int, outputs: int, activation) -> list[nn.Module]:
    """``depth`` hidden Linear + activation layers of ``width`` units, then a Linear to ``outputs``."""
    from torch import nn

    layers: list[nn.Module] = []
    for size_in in [inputs] + [width] * (depth - 1):
        layers += [nn.Linear(size_in, width), activation()]
    layers.append(nn.Linear(width, outputs))
    return layers


# --- dcgan -------------------------------------------------------------------------

def _dcgan_plan(side: int) -> tuple[int, int] | None:
    """``(seed_size, doublings)`` with ``side == seed_size * 2**doublings``, or None if unsupported."""
    seed_size, doublings = side, 0
    while seed_size % 2 == 0 and seed_size // 2 >= DCGAN_SEED_SIZES.start:
        seed_size //= 2
        doublings += 1
    if seed_size not in DCGAN_SEED_SIZES or doublings < DCGAN_MIN_DOUBLINGS:
        return None
    return seed_size, doublings


def _dcgan_generator(latent_dim: int, widths: list[int], seed_size: int, channels: int) -> nn.Module:
    """z -> seed map -> stride-2 upsampling blocks through ``widths`` -> tanh image."""
    from torch import nn

    layers: list[nn.Module] = [
        nn.Unflatten(1, (latent_dim, 1, 1)),
        nn.ConvTranspose2d(latent_dim, widths[0], kernel_size=seed_size, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    ]
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(width_out),
                   nn.ReLU()]
    layers += [nn.ConvTranspose2d(widths[-1], channels, 4, stride=2, padding=1), nn.Tanh()]
    generator = nn.Sequential(*layers)
    generator.apply(_dcgan_init)
    return generator


def _dcgan_discriminator(channels: int, widths: list[int], seed_size: int, spectral_norm: bool) -> nn.Module:
    """Image -> stride-2 downsampling blocks through ``widths`` -> one logit per sample."""
    from torch import nn
    from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

    batch_norm = not spectral_norm
    layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
    for width_in, width_out in zip(widths, widths[1:]):
        layers.append(nn.Conv2d(width_in, width_out, 4, stride=2, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width_out))
        layers.append(nn.LeakyReLU(0.2))
    layers += [nn.Conv2d(widths[-1], 1, kernel_size=seed_size), nn.Flatten(0)]  # [batch,1,1,1] -> [batch]
    discriminator = nn.Sequential(*layers)
    discriminator.apply(_dcgan_init)
    if spectral_norm:  # after initialising, so the normalised weights start from N(0, 0.02)
        for module in discriminator:
            if isinstance(module, nn.Conv2d):
                apply_spectral_norm(module)
    return discriminator


def _dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: conv weights N(0, 0.02), BatchNorm scales N(1, 0.02), biases 0."""
    from torch import nn

    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
    else:
        return
    if module.bias is not None:
        nn.init.zeros_(module.bias)


# --- shared ------------------------------------------------------------------------

def _is_image(data_shape: DataShape) -> bool:
    return len(data_shape) == 3


def _non_positive(params: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """Say which of ``keys`` is not a positive integer, or None when all are."""
    for key in keys:
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{key} must be a positive integer, got {value!r}"
    return None


def _raise_if_unsupported(architecture: Architecture, data_shape: DataShape, params: Mapping[str, Any]) -> None:
    """Guard ``build`` for callers that skipped ``unsupported_reason``."""
    reason = architecture.unsupported_reason(data_shape, params)
    if reason:
        raise ValueError(reason)
