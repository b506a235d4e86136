"""A run's checkpoint: written atomically beside the previous one, read back with a damaged one set aside."""

from __future__ import annotations

import torch

from ganbench.ledger.runs import RunDirectory
from ganbench.ledger.storage import atomic_write


def load_checkpoint(directory: RunDirectory) -> dict | None:
    """The newest readable checkpoint, or None; a damaged file is reported, never used.

    A damaged file is renamed to ``*.damaged``, so the next checkpoint never rotates it
    over the good previous one.
    """
    for path in (directory.checkpoint, directory.previous_checkpoint):
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated or corrupted: fall back to the previous one
            path.replace(path.with_name(path.name + ".damaged"))
            directory.warn(f"checkpoint {path.name} is damaged ({type(error).__name__}); kept it as "
                           f"{path.name}.damaged and tried an older one")
    return None


def save_checkpoint(directory: RunDirectory, state: dict) -> None:
    """Write ``checkpoint.pt`` atomically, keeping the previous one as ``checkpoint.prev.pt``."""
    atomic_write(directory.checkpoint, lambda handle: torch.save(state, handle),
                 keep_previous=directory.previous_checkpoint)
