"""The Inception weights file torch-fidelity loads, made safe to load first.

torch-fidelity loads a weights file with ``torch.load(..., weights_only=False)``, which
unpickles arbitrary objects: a file planted where ganbench looks (``--inception-weights``,
``GANBENCH_INCEPTION_WEIGHTS`` or torch hub's checkpoint cache) would run its code. So
ganbench never hands torch-fidelity a file it did not write itself: :func:`loadable_copy`
reads the file once, checks that its SHA-256 is still the one recorded in the protocol,
loads those bytes with ``weights_only=True`` (tensors and plain containers only; anything
else is refused with one line naming the file) and writes the tensors to a private
temporary directory, whose copy torch-fidelity then loads.

Without a file, ganbench downloads torch-fidelity's weights itself through torch hub
(hash-checked against the prefix in their file name, loaded with ``weights_only=True``).
:func:`describe` compares a file's SHA-256 with :data:`PUBLISHED_SHA256` for the FID/KID/IS
protocol: features from other weights are not comparable with published FIDs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import torch

from ganbench.errors import UserError

PUBLISHED_SHA256: dict[str, str] = {
    "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2":
        "torch-fidelity v0.2.0 weights-inception-2015-12-05-6726825d.pth (the TF FID Inception, 2015-12-05)",
}
"""SHA-256 of published Inception weights files -> what they are."""

logger = logging.getLogger("ganbench")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe(path: str | Path) -> dict[str, str]:
    """Protocol entries of the weights file at ``path``: its SHA-256 and whether it is a published file."""
    digest = sha256_of(_read(path))
    published = PUBLISHED_SHA256.get(digest)
    if published is None:
        logger.warning("the Inception weights %s (sha256 %s) are not a published file; FIDs computed with "
                       "them are not comparable with published ones", path, digest)
    return {"inception_weights": str(path), "inception_weights_sha256": digest,
            "inception_weights_published": published or "no: not a published Inception weights file, so FIDs "
                                                         "are not comparable with papers"}


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UserError(f"cannot read the Inception weights {path} ({error.strerror}); fix "
                        f"--inception-weights or GANBENCH_INCEPTION_WEIGHTS") from None


def tensors_only(data: bytes, source: str) -> dict[str, torch.Tensor]:
    """The state dict in ``data`` (a torch file's bytes), loaded without running code; a UserError otherwise."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # pickled code, a damaged file, not a torch file at all
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise UserError(f"refused to load the Inception weights {source}: it is not a plain file of tensors "
                        f"({first_line}); loading it could run code. Delete it and pass torch-fidelity's "
                        f"weights-inception-2015-12-05-6726825d.pth with --inception-weights, or use "
                        f"--set extractor=classifier") from None
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise UserError(f"refused to load the Inception weights {source}: it holds no state dict of tensors; "
                        f"pass torch-fidelity's weights-inception-2015-12-05-6726825d.pth with --inception-weights")
    return dict(state)


def download(url: str) -> dict[str, torch.Tensor]:
    """The weights at ``url``, through torch hub's cache: hash prefix checked, tensors only."""
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True,
                                                   weights_only=True)
    except OSError as error:  # urllib's URLError is an OSError
        raise UserError(f"could not download the Inception weights ({error}); on an offline machine pass a "
                        f"copy with --inception-weights PATH or GANBENCH_INCEPTION_WEIGHTS, or use "
                        f"--set extractor=classifier") from None
    except Exception as error:  # a planted or damaged file in torch hub's cache
        raise UserError(f"refused to load the Inception weights torch hub cached for {url} "
                        f"({str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__}); "
                        f"delete the file in {Path(torch.hub.get_dir()) / 'checkpoints'} and try again") from None
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return tensors_only(buffer.getvalue(), url)


@contextlib.contextmanager
def loadable_copy(path: str | Path | None, url: str, expected_sha256: str | None = None) -> Iterator[Path]:
    """Yield a private file of the weights at ``path`` (``url`` when None) that torch-fidelity may load.

    With ``expected_sha256`` the file must still have that hash (the one its protocol records).
    """
    if path is None:
        state = download(url)
    else:
        data = _read(path)
        if expected_sha256 and sha256_of(data) != expected_sha256:
            raise UserError(f"the Inception weights {path} changed while ganbench used them (sha256 "
                            f"{sha256_of(data)[:16]}..., was {expected_sha256[:16]}...); run the command again")
        state = tensors_only(data, str(path))
    with tempfile.TemporaryDirectory(prefix="ganbench-inception-") as private:  # mode 0700: only we write there
        copy = Path(private) / "inception.pt"
        torch.save(state, copy)
        yield copy
