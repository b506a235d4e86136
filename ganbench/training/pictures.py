"""Pictures of generated samples: an image grid, or points over the real data for 2D sets."""

from __future__ import annotations

from pathlib import Path

import torch

from ganbench.ledger.storage import atomic_write


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


SCATTER_PIXELS = 400
"""Side of a scatter picture's plotting area, in pixels."""
REAL_COLOUR, FAKE_COLOUR = (175, 175, 175), (214, 39, 40)


def _save_scatter(path: Path, fake: torch.Tensor, real: torch.Tensor, title: str) -> None:
    if fake.shape[1] == 1:
        _save_histogram(path, fake, real, title)
        return
    import numpy
    from PIL import Image, ImageDraw

    # One scale for both axes (circles stay circles), framing the real data with a margin.
    real_xy, fake_xy = real[:, :2].double(), fake[:, :2].double()
    low, high = real_xy.min(dim=0).values, real_xy.max(dim=0).values
    centre, half = (low + high) / 2, float((high - low).max()) * 0.6 + 1e-6
    header = 28
    image = Image.new("RGB", (SCATTER_PIXELS, SCATTER_PIXELS + header), "white")
    pixels = torch.from_numpy(numpy.asarray(image).copy())

    def draw(points: torch.Tensor, colour: tuple[int, int, int], dot: int) -> int:
        scaled = (points - centre) / half  # [-1, 1] inside the frame
        inside = (scaled.abs() <= 1).all(dim=1)
        column = ((scaled[inside, 0] + 1) / 2 * (SCATTER_PIXELS - 3)).long()
        row = header + ((1 - scaled[inside, 1]) / 2 * (SCATTER_PIXELS - 3)).long()
        for dx in range(dot):
            for dy in range(dot):
                pixels[row + dy, column + dx] = torch.tensor(colour, dtype=torch.uint8)
        return int((~inside).sum())

    draw(real_xy, REAL_COLOUR, 3)  # underneath, wide: where the data is
    outside = draw(fake_xy, FAKE_COLOUR, 1)  # on top, small: every generated sample stays visible
    image = Image.fromarray(pixels.numpy())
    canvas = ImageDraw.Draw(image)
    canvas.rectangle((0, header, SCATTER_PIXELS - 1, SCATTER_PIXELS + header - 1), outline=(120, 120, 120))
    canvas.text((4, 2), title, fill=(0, 0, 0))
    note = f"grey: real, red: {len(fake_xy)} generated" + (f" ({outside} outside the frame)" if outside else "")
    canvas.text((4, 14), note, fill=FAKE_COLOUR)
    atomic_write(path, lambda handle: image.save(handle, format="png"))


def _save_histogram(path: Path, fake: torch.Tensor, real: torch.Tensor, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4, 4), dpi=100)
    axes.hist(real[:, 0].numpy(), bins=60, color="#bbbbbb", label="real", density=True)
    axes.hist(fake[:, 0].numpy(), bins=60, color="#d62728", alpha=0.6, label="generated", density=True)
    axes.set_title(title, fontsize=9)
    axes.legend(loc="upper right", fontsize=7, markerscale=2)
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png"))
    plt.close(figure)
