"""Pictures of generated samples: an image grid, or points over the real data for 2D sets."""

from __future__ import annotations

from pathlib import Path

import torch

from ganbench.storage import atomic_write


def save_sample_picture(path: Path, fake: torch.Tensor, real: torch.Tensor, title: str = "") -> None:
    """Write a PNG of ``fake`` samples: an 8-wide image grid, or a scatter over ``real`` points.

    Points of more than two coordinates are drawn by their first two; one-coordinate
    points as histograms.
    """
    fake = fake.detach().float().cpu()
    if fake.dim() == 4:
        import torchvision.utils

        grid = torchvision.utils.make_grid((fake.clamp(-1, 1) + 1) / 2, nrow=8, padding=2)
        atomic_write(path, lambda handle: torchvision.utils.save_image(grid, handle, format="png"))
    elif fake.dim() == 2:
        real = real.detach().float().cpu()
        if fake.shape[1] > 2:
            title = f"{title} (coordinates 1-2 of {fake.shape[1]})"
        _save_scatter(path, fake, real, title)
    else:
        raise ValueError(f"cannot draw samples of shape {tuple(fake.shape[1:])}")


def _save_scatter(path: Path, fake: torch.Tensor, real: torch.Tensor, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4, 4), dpi=100)
    if fake.shape[1] == 1:
        axes.hist(real[:, 0].numpy(), bins=60, color="#bbbbbb", label="real", density=True)
        axes.hist(fake[:, 0].numpy(), bins=60, color="#d62728", alpha=0.6, label="generated", density=True)
    else:
        axes.scatter(real[:, 0], real[:, 1], s=4, c="#bbbbbb", label="real")
        axes.scatter(fake[:, 0], fake[:, 1], s=4, c="#d62728", alpha=0.6, label="generated")
        axes.set_aspect("equal")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="upper right", fontsize=7, markerscale=2)
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png"))
    plt.close(figure)
