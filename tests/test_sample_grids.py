"""Sample pictures of points: generated samples are drawn where they are, over the real data."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ganbench.training.pictures import FAKE_COLOUR, save_sample_picture


def test_a_points_picture_shows_generated_samples_at_their_place_and_counts_those_off_the_frame(tmp_path):
    angles = torch.arange(8).repeat(50).double() * math.pi / 4
    real = torch.stack([angles.cos(), angles.sin()], dim=1).float()
    fake = torch.cat([torch.tensor([[1.0, 0.0]]).repeat(100, 1), torch.tensor([[9.0, 9.0]])])  # mode 0, one far off
    path = tmp_path / "points.png"
    save_sample_picture(path, fake, real, title="collapsed on mode 0")
    pixels = np.asarray(Image.open(path).convert("RGB"))
    red = np.argwhere((pixels == FAKE_COLOUR).all(axis=2))
    plot = red[red[:, 0] > 28]  # below the header's text
    assert len(plot) > 0
    rows, columns = plot[:, 0], plot[:, 1]
    width = pixels.shape[1]
    assert columns.min() > 0.8 * width and abs(rows.mean() - (28 + (pixels.shape[0] - 28) / 2)) < 10  # (1, 0): right, middle
    assert pixels.shape[:2] == (428, 400)


def test_points_of_three_and_one_coordinates_are_drawn(tmp_path):
    save_sample_picture(tmp_path / "three.png", torch.randn(50, 3), torch.randn(50, 3), title="3D")
    save_sample_picture(tmp_path / "one.png", torch.randn(50, 1), torch.randn(50, 1), title="1D")
    assert Image.open(tmp_path / "three.png").size == (400, 428)
    assert Image.open(tmp_path / "one.png").size[0] > 100
