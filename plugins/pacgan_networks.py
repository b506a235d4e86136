"""The networks of PacGAN's 2D experiments (Lin et al., NeurIPS 2018), in PyTorch.

Imported by the ``pacgan`` architecture only when it builds models, so listing plugins
does not import torch. The layer sizes, initialisation and BatchNorm settings follow the
authors' configuration files (``synthetic_data_experiments/2DRing_GAN&PacGAN/config.py``
and ``2DGrid_GAN&PacGAN/config.py`` with ``pacgan_task.py`` of their code release).
"""

from __future__ import annotations

import torch
from torch import nn

BATCH_NORM_EPSILON = 1e-4
"""Blocks' BatchNormalization default epsilon, which their networks used (PyTorch's is 1e-5)."""
BATCH_NORM_MOMENTUM = 0.05
"""Their population statistics were updated as ``0.95 * old + 0.05 * batch``."""


class Maxout(nn.Module):
    """A linear layer to ``outputs * pieces`` units, then the maximum of each group of ``pieces``.

    Goodfellow et al. 2013. Units ``k * pieces`` to ``k * pieces + pieces - 1`` of the linear
    layer form output ``k``, as in Blocks' ``LinearMaxout``.

    The maximum is ``max(dim).values``, whose backward hands each output's gradient to the
    piece that won (one scatter), rather than ``amax``, whose backward rebuilds a mask
    (a comparison, a sum and a division over all pieces): the same outputs and the same
    gradients bit for bit, 1.2x faster for the discriminator's forward and backward on a
    CPU (docs/performance.md). They differ only when pieces tie exactly, which float32
    weights do not produce in practice: ``amax`` splits the gradient between the tied
    pieces, ``max`` gives all of it to one; both are subgradients of the maximum.
    """

    def __init__(self, inputs: int, outputs: int, pieces: int) -> None:
        super().__init__()
        self.outputs, self.pieces = outputs, pieces
        self.linear = nn.Linear(inputs, outputs * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).unflatten(-1, (self.outputs, self.pieces)).max(dim=-1).values

    def extra_repr(self) -> str:
        return f"outputs={self.outputs}, pieces={self.pieces}"


def generator(latent_dim: int, width: int, depth: int, outputs: int, init_std: float) -> nn.Sequential:
    """``depth`` blocks of Linear (no bias) + BatchNorm + ReLU, then a Linear (with bias) to ``outputs``."""
    layers: list[nn.Module] = []
    for size_in in [latent_dim] + [width] * (depth - 1):
        layers += [nn.Linear(size_in, width, bias=False),
                   nn.BatchNorm1d(width, eps=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM),
                   nn.ReLU()]
    layers.append(nn.Linear(width, outputs))
    model = nn.Sequential(*layers)
    _initialise(model, init_std)
    return model


def discriminator(inputs: int, width: int, depth: int, pieces: int, init_std: float) -> nn.Sequential:
    """``depth`` maxout layers of ``width`` units with ``pieces`` pieces, then a Linear to one logit."""
    layers: list[nn.Module] = [Maxout(size_in, width, pieces) for size_in in [inputs] + [width] * (depth - 1)]
    layers += [nn.Linear(width, 1), nn.Flatten(0)]  # [batch, 1] -> [batch]
    model = nn.Sequential(*layers)
    _initialise(model, init_std)
    return model


def _initialise(model: nn.Module, init_std: float) -> None:
    """Linear weights N(0, init_std), biases 0; BatchNorm keeps scale 1 and shift 0."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
