"""A residual MLP generator/discriminator pair for 2D points and small images."""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

from ganbench import Architecture

MAX_VALUES = 3 * 32 * 32
"""Largest sample (values per sample) resmlp accepts: up to CIFAR-sized images."""


class ResidualMLP(Architecture):
    """Fully connected G and D built from pre-activation residual blocks.

    Each block computes ``x + Linear(act(LayerNorm(Linear(act(LayerNorm(x))))))`` at width
    ``resmlp_width``; there are ``resmlp_blocks`` of them between an input and an output
    layer. Generator: ReLU; images end in tanh (pixels in ``[-1, 1]``), points stay
    unbounded. Discriminator: LeakyReLU(0.2), one raw logit per sample. LayerNorm rather
    than BatchNorm keeps every logit a function of its own sample only, which gradient
    penalties assume.
    """

    name = "resmlp"
    description = "Residual MLP with LayerNorm for 2D points and images up to 3x32x32"
    defaults = {"latent_dim": 64, "resmlp_width": 128, "resmlp_blocks": 2}

    def unsupported_reason(self, data_shape, params: Mapping[str, Any]) -> str | None:
        for key in ("latent_dim", "resmlp_width", "resmlp_blocks"):
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return f"resmlp: {key} must be a positive integer, got {value!r}"
        if len(data_shape) not in (1, 3):
            return f"resmlp models points (dim,) or images (channels, height, width), not {tuple(data_shape)}"
        if math.prod(data_shape) > MAX_VALUES:
            return (f"resmlp handles samples of at most {MAX_VALUES} values (3x32x32); "
                    f"{tuple(data_shape)} has {math.prod(data_shape)}: use --archs dcgan")
        return None

    def build(self, data_shape, params: Mapping[str, Any]):
        reason = self.unsupported_reason(data_shape, params)
        if reason:
            raise ValueError(reason)
        from torch import nn

        from ganbench_example_plugin.blocks import ResidualBlock

        values = math.prod(data_shape)
        width, blocks = params["resmlp_width"], params["resmlp_blocks"]
        generator = nn.Sequential(
            nn.Linear(params["latent_dim"], width),
            *(ResidualBlock(width, nn.ReLU) for _ in range(blocks)),
            nn.ReLU(),
            nn.Linear(width, values),
            *([nn.Tanh()] if len(data_shape) == 3 else []),
            nn.Unflatten(1, tuple(data_shape)),
        )
        discriminator = nn.Sequential(
            nn.Flatten(),
            nn.Linear(values, width),
            *(ResidualBlock(width, functools.partial(nn.LeakyReLU, 0.2)) for _ in range(blocks)),
            nn.LeakyReLU(0.2),
            nn.Linear(width, 1),
            nn.Flatten(0),  # [batch, 1] -> [batch]
        )
        return generator, discriminator
