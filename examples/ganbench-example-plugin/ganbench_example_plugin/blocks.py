"""torch modules of resmlp, in their own module so that importing the plugin does not import torch."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """``x + Linear(act(LayerNorm(Linear(act(LayerNorm(x))))))``, at constant width."""

    def __init__(self, width: int, activation: Callable[[], nn.Module]):
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(width), activation(), nn.Linear(width, width),
                                  nn.LayerNorm(width), activation(), nn.Linear(width, width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)
