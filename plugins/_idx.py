"""IDX files (the format MNIST and Fashion-MNIST ship in): finding them and reading them.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in row-major order.
Files may be gzipped. Every check here ends in a :class:`UserError` naming the file,
because a half-downloaded or mislabelled file is something the user fixes, not a bug.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ganbench.errors import UserError

# IDX type code -> big-endian numpy dtype (from the format's definition on the MNIST page).
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

SPLIT_PREFIXES = {"train": "train", "test": "t10k"}
"""The file-name prefix each split has in the MNIST and Fashion-MNIST distributions."""


def idx_file(folder: Path, split: str, what: str) -> Path | None:
    """Return the IDX file of ``split`` (``what`` is ``images`` or ``labels``) in ``folder``, if any.

    Accepts the published names (``t10k-images-idx3-ubyte``), their ``.gz`` form and the
    ``t10k-images.idx3-ubyte`` spelling some mirrors use.
    """
    rank = 3 if what == "images" else 1
    prefix = SPLIT_PREFIXES[split]
    for stem in (f"{prefix}-{what}-idx{rank}-ubyte", f"{prefix}-{what}.idx{rank}-ubyte"):
        for name in (stem, f"{stem}.gz"):
            path = folder / name
            if path.is_file():
                return path
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into an array of its declared type and shape."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                content = handle.read()
        else:
            content = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise UserError(f"{path} is not a complete gzip file ({error}); delete it and "
                        f"download it again.") from None
    if len(content) < 4:
        raise UserError(f"{path} is truncated ({len(content)} bytes, shorter than an IDX header); "
                        f"delete it and download it again.")
    if content[0] != 0 or content[1] != 0 or content[2] not in IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (it starts with bytes {content[:4].hex()}, not an "
                        f"IDX magic number); replace it with the original file.")
    dtype = np.dtype(IDX_DTYPES[content[2]])
    rank = content[3]
    header_bytes = 4 + 4 * rank
    if len(content) < header_bytes:
        raise UserError(f"{path} is truncated (its header ends after {len(content)} bytes); "
                        f"delete it and download it again.")
    shape = tuple(int(size) for size in np.frombuffer(content, dtype=">u4", count=rank, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(content) - header_bytes
    if found < expected:
        raise UserError(f"{path} is truncated ({found:,} of {expected:,} data bytes for shape {shape}); "
                        f"delete it and download it again.")
    if found > expected:
        raise UserError(f"{path} has {found - expected:,} bytes more than its header declares "
                        f"(shape {shape}); replace it with the original file.")
    return np.frombuffer(content, dtype=dtype, offset=header_bytes).reshape(shape)


def read_idx_split(folder: Path, split: str, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [n, h, w], labels int64 [n])`` of ``split`` from ``folder``."""
    images_path = idx_file(folder, split, "images")
    labels_path = idx_file(folder, split, "labels")
    if images_path is None or labels_path is None:
        present, missing_what = (images_path, "labels") if images_path else (labels_path, "images")
        prefix = SPLIT_PREFIXES[split]
        rank = 3 if missing_what == "images" else 1
        raise UserError(f"{folder} has {present.name} but not {prefix}-{missing_what}-idx{rank}-ubyte[.gz]; "
                        f"add the missing file.")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != image_size:
        raise UserError(f"{images_path} holds {images.dtype} values of shape {images.shape}, not "
                        f"uint8 images of {image_size[0]}x{image_size[1]} pixels; is it the right file?")
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError(f"{labels_path} holds labels of shape {labels.shape} for {len(images):,} images "
                        f"in {images_path.name}; the two files do not belong together.")
    return images, labels.astype(np.int64)
