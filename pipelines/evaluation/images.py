"""Image sets for evaluation: a folder of image files, an imagefolder or a saved ``datasets`` folder -> uint8 RGB
tensors ``(3, H, W)`` at each image's own size, in a fixed order.

- a folder holding no ``metadata.jsonl`` / ``metadata.csv`` and no ``save_to_disk`` dataset: every file with an
  image suffix (``IMAGE_SUFFIXES``) below it, sorted by relative path;
- anything else ``pipelines.data.sources`` reads (an imagefolder, a saved dataset, parquet files), ``split``
  ``"train"`` by default: its image column, in row order.

Every image is decoded and converted like training data (``pipelines.data.images.open_image`` and ``to_rgb``):
EXIF orientation applied, transparency composited on **white**, 16-bit scaled to 8 bits, other modes through
Pillow's ``convert("RGB")``. Nothing is resized or cropped here; each feature network resizes the whole image
to its own square input (``pipelines.evaluation.features``). An image that cannot be read is an error naming it
(a benchmark figure over silently fewer images is not comparable), as is a set without images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tessera.core.hashing import file_sha256
from tessera.pipelines.data.images import RowSkipped, open_image, to_rgb
from tessera.pipelines.data.sources import METADATA_FILES, DataSourceError, open_source

__all__ = ["IMAGE_SUFFIXES", "ImageSet", "model_range_to_uint8", "open_image_set", "to_uint8_tensor"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_DATASET_FILES = ("dataset_dict.json", "state.json", "dataset_info.json")


@dataclass
class ImageSet:
    """Images to evaluate: ``values`` are anything ``open_image`` reads (paths, bytes, PIL images), ``names``
    say which image is which in errors; ``where`` is the source as given."""

    where: str
    values: list[Any]
    names: list[str]

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for value, name in zip(self.values, self.names):
            yield load_uint8(value, name)

    def sha256(self) -> str:
        """A hash of the set: each image's name and bytes (a file's contents, encoded bytes, or a decoded image's
        mode, size and pixels), in order. Statistics cached for one set are not reused for another."""
        digest = hashlib.sha256()
        for value, name in zip(self.values, self.names):
            digest.update(f"{name}|".encode())
            digest.update(_image_bytes(value))
        return digest.hexdigest()


def _image_bytes(value: Any) -> bytes:
    """The bytes that identify one image value: a file's sha256, raw bytes, or a PIL image's pixels."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (str, os.PathLike)):
        return file_sha256(value).encode()
    if isinstance(value, (bytes, bytearray)):
        return hashlib.sha256(value).hexdigest().encode()
    if isinstance(value, Image.Image):
        return f"{value.mode}|{value.size}|".encode() + hashlib.sha256(value.tobytes()).hexdigest().encode()
    raise TypeError(f"cannot hash an image given as {type(value).__name__}")


def to_uint8_tensor(image) -> torch.Tensor:
    """A PIL image (any mode) -> uint8 ``(3, H, W)``, converted as the module docstring says."""
    rgb, _ = to_rgb(image)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def model_range_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Model outputs ``(B, 3, H, W)`` in [-1, 1] -> uint8, rounded as saved PNGs are (``save_image_grid``), so
    features of tensors equal features of the files a pipeline writes."""
    return images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


def load_uint8(value: Any, name: str) -> torch.Tensor:
    try:
        image = open_image(value)
    except RowSkipped as error:
        raise ValueError(f"cannot read image {name}: {error}") from None
    with image:
        return to_uint8_tensor(image)


def _plain_folder(path: Path) -> bool:
    return path.is_dir() and not any((path / name).is_file() for name in (*METADATA_FILES, *_DATASET_FILES))


def open_image_set(source: str | Path, *, split: str = "train", image_column: str | None = None,
                   max_images: int | None = None) -> ImageSet:
    """The images of ``source`` (see the module docstring), at most the first ``max_images``."""
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file or folder of images")
    if _plain_folder(path) and not any(sub.name in METADATA_FILES for sub in path.glob("*/metadata.*")):
        files = sorted(file for file in path.rglob("*") if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES)
        files = files[:max_images] if max_images is not None else files
        image_set = ImageSet(str(source), [str(file) for file in files],
                             [str(file.relative_to(path)) for file in files])
    else:
        try:
            raw = open_source(str(path), split=split, image_column=image_column, caption_column=None,
                              streaming=False, resolution=0, max_rows=max_images)
        except DataSourceError as error:
            raise ValueError(f"{source}: {error}") from None
        rows = raw.layout.batch(raw.dataset[:], 0) if len(raw.dataset) else []
        rows = rows[:max_images] if max_images is not None else rows
        image_set = ImageSet(str(source), [row.image for row in rows], [row.source_id for row in rows])
    if not len(image_set):
        raise ValueError(f"{source}: no images found (a folder is searched for {', '.join(IMAGE_SUFFIXES)} files)")
    return image_set
