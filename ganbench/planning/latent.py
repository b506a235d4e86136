"""The generator's input distribution: every latent vector ganbench draws comes from here.

The hyperparameter ``latent`` chooses it (default ``"normal"``). Training noise, the sample
pictures' fixed noise and the samples every metric scores are drawn the same way, so a
generator is always evaluated on the distribution it was trained on.
"""

from __future__ import annotations

import torch

from ganbench.planning.defaults import LATENT_DISTRIBUTIONS


def draw_latent(count: int, dim: int, distribution: str, generator: torch.Generator,
                device: torch.device | str | None = None) -> torch.Tensor:
    """``count`` latent vectors of ``dim`` coordinates from ``distribution``, drawn from ``generator``.

    ``normal`` is N(0, I); ``uniform`` is U(-1, 1) in every coordinate, as DCGAN-tensorflow (and
    PacGAN's and VEEGAN's Stacked MNIST code derived from it) draws z.
    """
    if distribution == "normal":
        return torch.randn(count, dim, generator=generator, device=device)
    if distribution == "uniform":
        return torch.rand(count, dim, generator=generator, device=device) * 2 - 1
    raise ValueError(f"unknown latent distribution {distribution!r}; choose one of {', '.join(LATENT_DISTRIBUTIONS)}")
