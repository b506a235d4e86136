"""Generated samples saved for other tools (``--save-samples``): one ``.npz`` per run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganbench.evaluation.images import is_image_shape, to_uint8_rgb
from ganbench.ledger.storage import atomic_write


def save_samples(samples: torch.Tensor, path: str | Path) -> Path:
    """Write ``samples`` to an ``.npz`` other tools can score; return its path.

    Arrays: ``samples``, the float32 tensor as given (``[n, c, h, w]`` in [-1, 1], or
    ``[n, dim]`` points); for images also ``arr_0``, uint8 ``[n, h, w, 3]`` RGB (grayscale
    tiled), the layout of the OpenAI/ADM evaluation suite, made by the same conversion
    ganbench feeds torch-fidelity. Points get ``arr_0`` = ``samples``.
    """
    path = Path(path)
    floats = samples.detach().float().cpu()
    if is_image_shape(tuple(floats.shape[1:])):
        arr_0 = to_uint8_rgb(floats).permute(0, 2, 3, 1).numpy()
    else:
        arr_0 = floats.numpy()
    atomic_write(path, lambda file: np.savez_compressed(file, samples=floats.numpy(), arr_0=arr_0))
    return path
