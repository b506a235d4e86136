"""Content hashes that key ganbench's caches (real-data statistics, classifiers, FID bounds)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def content_hash(*parts: Any) -> str:
    """Hex sha256 of ``parts`` (strings, numbers, bytes or tensors), each length-prefixed."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            tensor = part.detach().cpu().contiguous()
            data = f"{tensor.dtype}{tuple(tensor.shape)}".encode() + tensor.view(torch.uint8).numpy().tobytes()
        elif isinstance(part, bytes):
            data = part
        else:
            data = repr(part).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
