"""PacGAN's packing: the discriminator judges ``pac`` samples at once.

Lin, Khetan, Fanti and Oh, "PacGAN: The power of two samples in generative adversarial
networks" (NeurIPS 2018). With ``--set pac=m`` (an integer, default 1) the discriminator
sees *packs* of m samples concatenated along their first axis: m points of ``(dim,)``
become one input of ``(m * dim,)``; m images of ``(c, h, w)`` become one ``(m * c, h, w)``
image. A real pack holds only real samples and a fake pack only generated ones, so a
discriminator that notices a lack of variety within a pack penalises mode collapse.

``batch_size`` counts packs, as in PacGAN's code: each discriminator step draws
``batch_size * pac`` real samples and as many generated ones (100 packs of m points per
step in the paper's 2D experiments). The generator is unchanged; it is called once on
``batch_size * pac`` noise vectors.

ganbench packs for every architecture: it builds the models as usual for the data shape,
then calls the architecture's ``build`` again with the packed shape (:func:`packed_shape`)
and keeps that call's discriminator. An architecture supports ``pac`` when its
``build`` accepts the packed shape; when it cannot, its ``unsupported_reason`` for that
shape is shown before anything trains. This is not ``--pack``, which trains several runs
as one stacked model (:mod:`ganbench.training.packing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ganbench.api import DataShape

if TYPE_CHECKING:
    import torch

PARAMETER = "pac"
"""The hyperparameter's name: ``--set pac=2``."""


def packed_shape(data_shape: DataShape, pac: int) -> DataShape:
    """The shape the discriminator sees: ``pac`` samples of ``data_shape`` concatenated along the first axis."""
    first, *rest = data_shape
    return (first * pac, *rest)


def pack_samples(samples: "torch.Tensor", pac: int, sample_dims: int) -> "torch.Tensor":
    """``[..., n * pac, *shape]`` -> ``[..., n, pac * shape[0], *shape[1:]]``.

    Consecutive samples form a pack, so a batch of real samples packs into real packs
    only, and a batch of generated ones into generated packs only. ``sample_dims`` is
    ``len(shape)`` (1 for points, 3 for images); leading dimensions (stacked runs) stay.
    """
    if pac == 1:
        return samples
    split = samples.dim() - sample_dims
    *lead, count = samples.shape[:split]
    if count % pac:
        raise ValueError(f"{count} samples do not split into packs of {pac}")
    first, *rest = samples.shape[split:]
    return samples.reshape(*lead, count // pac, pac * first, *rest)
