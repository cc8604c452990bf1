"""save_image_grid: the cells in place, and the labelled form (one text per row, scaled up to fit it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.core.io import save_image_grid


def test_each_image_lands_in_its_cell(tmp_path):
    images = torch.stack([torch.full((3, 4, 4), value) for value in (-1.0, 1.0, 0.0)])  # black, white, grey
    pixels = np.asarray(Image.open(save_image_grid(images, tmp_path / "grid.png", nrow=2)))
    assert pixels.shape == (2 * 6 + 2, 2 * 6 + 2, 3)
    assert (pixels[2:6, 2:6] == 0).all() and (pixels[2:6, 8:12] == 255).all() and (pixels[8:12, 2:6] == 128).all()


def test_row_labels_add_a_text_column_and_scale_small_images(tmp_path):
    images = torch.zeros(6, 3, 8, 8)
    plain = Image.open(save_image_grid(images, tmp_path / "plain.png", nrow=3))
    labelled = Image.open(save_image_grid(images, tmp_path / "labelled.png", nrow=3,
                                          row_labels=["a red apple", "a cat"]))
    assert labelled.height == plain.height * 3  # rows of 10 pixels scaled until they are at least 24 tall
    label_column = np.asarray(labelled)[:, : labelled.width - plain.width * 3]
    assert (label_column < 128).any()  # the text is drawn
    with pytest.raises(ValueError, match="2 rows"):
        save_image_grid(images, tmp_path / "bad.png", nrow=3, row_labels=["only one"])
