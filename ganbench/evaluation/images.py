"""Generated and real images as the uint8 RGB batches feature extractors take.

Samples never touch the disk on their way to an extractor: they are converted in memory
(:func:`to_uint8_rgb`) and handed over as a ``torch.utils.data.Dataset`` (:class:`UInt8Images`).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset as TorchDataset

PREPROCESSING = "uint8 RGB: round((x + 1) * 127.5) clamped to [0, 255], grayscale tiled to 3 channels"
"""How samples in [-1, 1] become torch-fidelity's input. Part of every cache key and protocol."""


def to_uint8_rgb(samples: torch.Tensor) -> torch.Tensor:
    """Return ``[n, 3, h, w]`` uint8 images from ``[n, c, h, w]`` floats in [-1, 1] (c = 1 or 3)."""
    if samples.dim() != 4 or samples.shape[1] not in (1, 3):
        raise ValueError(f"expected images [n, 1 or 3, h, w], got shape {tuple(samples.shape)}")
    images = ((samples.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images


def is_image_shape(data_shape: tuple[int, ...]) -> bool:
    """True when ``data_shape`` is ``(1 or 3, h, w)``, the images torch-fidelity can score."""
    return len(data_shape) == 3 and data_shape[0] in (1, 3)


class UInt8Images(TorchDataset):
    """In-memory uint8 images as the ``torch.utils.data.Dataset`` torch-fidelity iterates."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]
