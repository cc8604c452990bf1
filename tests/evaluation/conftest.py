"""Image folders for the evaluation tests, written at test time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_images(folder: Path, count: int, *, size: int = 32, seed: int = 0, smooth: bool = True) -> Path:
    """``count`` PNGs of blobs (``smooth``) or noise, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        if smooth:
            coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
        else:
            image = Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))
        image.save(folder / f"{index:05d}.png")
    return folder


@pytest.fixture
def image_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two folders of 12 different 32x32 images each."""
    return write_images(tmp_path / "generated", 12, seed=1), write_images(tmp_path / "reference", 12, seed=2)
