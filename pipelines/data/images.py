"""Decode, check, convert and preprocess one image; the per-image half of ``pipelines.data``.

Everything here works on a single image and knows nothing about datasets:

- ``open_image``: bytes / path / ``{"bytes", "path"}`` dict / PIL image -> a loaded PIL image, or
  ``RowSkipped`` with a reason ("missing_file", "unreadable", "too_large", "too_small"). Sizes are
  checked from the header before anything is decoded: more than ``max_pixels`` (default
  ``DEFAULT_MAX_IMAGE_PIXELS``, 64 megapixels) is "too_large", like Pillow's decompression bombs. JPEGs
  are decoded at a reduced scale (``Image.draft``) when the target resolution allows it, and EXIF
  orientation is applied (as ``datasets.Image`` does).
- ``to_rgb``: any PIL mode -> RGB plus a label such as ``"I;16->RGB"`` (``None`` when already RGB).
- ``preprocess_image``: RGB crop + resize (+ optional flip) -> float tensor (3, R, R) in [-1, 1];
  ``square_box`` is the square it cuts out.

Conversions (``to_rgb``):
    transparency (RGBA, LA, PA, P with a transparent colour, ...) is composited onto **white**
    (``BACKGROUND``): transparent web images are mostly logos, icons and product shots drawn for a
    white page, while dropping the alpha channel shows whatever colour hides under it (often black).
    16-bit ("I;16*") is scaled to 8 bits (x / 257, so 65535 -> 255), never clipped. "I" (32-bit int)
    is taken as 16-bit data when its values exceed 255, as 8-bit data otherwise, and min-max scaled
    when outside 0..65535; "F" likewise ([0, 1] -> x 255). CMYK, YCbCr, LAB, HSV, "1" and "L" go
    through Pillow's ``convert("RGB")`` (ICC profiles are not applied).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["BACKGROUND", "DEFAULT_MAX_IMAGE_PIXELS", "RowSkipped", "check_image_size", "open_image", "preprocess_image",
           "square_box", "to_rgb"]

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # e.g. 8000x8000; bigger images are skipped unread ("too_large")
BACKGROUND = (255, 255, 255)  # what transparent pixels become
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_RESIZE_REDUCING_GAP = 3.0  # let Pillow shrink big images by integer factors first (fast, still antialiased)


@dataclass
class RowSkipped(Exception):
    """A row cannot be used; ``reason`` is the key it is counted under in the data report."""

    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


# ---------------------------------------------------------------------------------------------
# Decoding


def _image_source(value: Any) -> tuple[Any, str]:
    """What ``Image.open`` should read for a column value, and a printable name for errors."""
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value), "<bytes>"
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value), os.fspath(value)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return io.BytesIO(value["bytes"]), value.get("path") or "<bytes>"
        if value.get("path"):
            return value["path"], value["path"]
    raise RowSkipped("missing_image", f"no image bytes or path in {type(value).__name__} value")


@contextlib.contextmanager
def _classify_errors(name: str) -> Iterator[None]:
    """Turn whatever opening or decoding raises into ``RowSkipped`` with the reason it counts as."""
    try:
        yield
    except RowSkipped:
        raise
    except FileNotFoundError as error:
        raise RowSkipped("missing_file", str(error)) from error
    except Image.DecompressionBombError as error:
        raise RowSkipped("too_large", f"{name}: {error}") from error
    except Exception as error:  # UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        raise RowSkipped("unreadable", f"{name}: {type(error).__name__}: {error}") from error


def _open(value: Any) -> Image.Image:
    """``Image.open`` (lazy: header only) on a column value; remote paths are fetched by ``datasets``."""
    source, name = _image_source(value)
    with _classify_errors(name):
        if isinstance(source, str) and "://" in source:  # hub streaming: datasets adds authentication
            import datasets

            return datasets.Image().decode_example(value if isinstance(value, dict) else {"path": source, "bytes": None})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source)


def check_image_size(image: Image.Image, min_size: int = 0, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """``RowSkipped`` when ``image`` (its header suffices) has more than ``max_pixels`` pixels ("too_large")
    or a shorter side below ``min_size`` ("too_small"); ``max_pixels=None`` sets no limit of ours."""
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise RowSkipped("too_large", f"{width}x{height} = {width * height} pixels > max_image_pixels={max_pixels} "
                                      "(read from the header; not decoded)")
    if min(width, height) < min_size:
        raise RowSkipped("too_small", f"{width}x{height} < {min_size} px on the short side")


def open_image(value: Any, draft_size: int | None = None, min_size: int = 0,
               max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """A fully loaded PIL image from a column value, or ``RowSkipped`` saying why not.

    ``value`` may be a PIL image, bytes, a path, or a ``datasets.Image(decode=False)`` dict. The size
    is checked from the header, before any pixel is decoded (``check_image_size``): more than
    ``max_pixels`` is "too_large", a shorter side (before any draft) below ``min_size`` "too_small".
    Pillow's own decompression-bomb error (over twice ``PIL.Image.MAX_IMAGE_PIXELS``, raised while
    reading the header) is "too_large" too; its warning (over ``MAX_IMAGE_PIXELS``) is silenced, since
    ``max_pixels`` decides. With ``draft_size`` a JPEG is decoded at the smallest DCT scale whose
    shorter side is still >= it. PIL images are checked and loaded but otherwise left alone (they
    were decoded by the dataset).
    """
    given = isinstance(value, Image.Image)
    image = value if given else _open(value)
    try:
        check_image_size(image, min_size, max_pixels)
        with _classify_errors(getattr(image, "filename", "") or "<image>"):
            if not given and draft_size and image.format == "JPEG":
                image.draft(image.mode, (draft_size, draft_size))  # keeps the mode; only the scale changes
            image.load()  # truncated or corrupt data shows up only here
            if not given:
                ImageOps.exif_transpose(image, in_place=True)
    except RowSkipped:
        if not given:
            image.close()
        raise
    return image


# ---------------------------------------------------------------------------------------------
# Mode conversion


def _composite(image: Image.Image) -> Image.Image:
    """RGBA onto ``BACKGROUND``."""
    background = Image.new("RGB", image.size, BACKGROUND)
    background.paste(image, mask=image.getchannel("A"))
    return background


def _to_uint8(array: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Scale a high-depth array to 0..255: by ``full_scale`` when given, else min-max."""
    array = array.astype(np.float64)
    if full_scale is None:
        low, high = float(array.min()), float(array.max())
        array = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
    else:
        array = array * (255.0 / full_scale)
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit int and float grey images -> RGB, scaled rather than clipped."""
    array = np.asarray(image)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if image.mode in _SIXTEEN_BIT_MODES:
        full_scale = 65535.0
    elif image.mode == "F" and 0.0 <= low and high <= 1.0:
        full_scale = 1.0
    elif 0.0 <= low and high <= 255.0:
        full_scale = 255.0
    elif image.mode == "I" and 0.0 <= low and high <= 65535.0:
        full_scale = 65535.0
    else:
        full_scale = None
    return Image.fromarray(_to_uint8(array, full_scale)).convert("RGB")


def to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    """``image`` as RGB and a label naming the conversion (``None`` if it was RGB already).

    See the module docstring for how each mode is handled; the label is ``f"{mode}->RGB"``.
    """
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        converted = _high_depth_to_rgb(image)
    elif mode == "P" and "transparency" not in image.info:
        converted = image.convert("RGB")
    elif "A" in image.getbands() or "a" in image.getbands() or mode == "P":
        converted = _composite(image.convert("RGBA"))
    else:
        converted = image.convert("RGB")
    return converted, f"{mode}->RGB"


# ---------------------------------------------------------------------------------------------
# Preprocessing


Rng = random.Random | np.random.Generator | torch.Generator


def _uniform(rng: Rng | None) -> float:
    """One draw in [0, 1) from any of the generator types we accept (``None``: module ``random``)."""
    if rng is None:
        return random.random()
    if isinstance(rng, torch.Generator):
        return float(torch.rand((), generator=rng))
    return float(rng.random())


def square_box(width: int, height: int, center: tuple[float, float] | None = None) -> tuple[int, int, int]:
    """The largest square inside a ``width`` x ``height`` image, as ``(left, top, side)``: centred on the image
    (what ``preprocess_image`` cuts out by default), or as near ``center`` (x, y in pixels) as it fits."""
    side = min(width, height)
    if center is None:
        return (width - side) // 2, (height - side) // 2, side
    left = min(max(round(center[0] - side / 2), 0), width - side)
    top = min(max(round(center[1] - side / 2), 0), height - side)
    return left, top, side


def preprocess_image(image: Image.Image, resolution: int, *, center_crop: bool = True,
                     random_flip: bool = False, rng: Rng | None = None,
                     box: tuple[int, int, int] | None = None) -> torch.Tensor:
    """An image of any mode -> float tensor (3, R, R) in [-1, 1].

    The largest square is cut out (centred, or at a random offset when ``center_crop=False``, like
    diffusers' ``RandomCrop``; or the square ``box`` = (left, top, side) when given) and resized to
    ``resolution`` (bicubic, antialiased when shrinking, integer pre-reduction for big images); with
    ``random_flip`` it is mirrored left-right with probability 1/2. Random choices come from ``rng``
    (``random.Random``, ``numpy.random.Generator`` or ``torch.Generator``), crop offset first, then flip, so a
    seeded generator gives reproducible results.
    """
    image, _ = to_rgb(image)
    width, height = image.size
    if box is not None:
        left, top, side = box
        if side < 1 or left < 0 or top < 0 or left + side > width or top + side > height:
            raise ValueError(f"box {box} (left, top, side) does not fit in a {width}x{height} image")
    elif center_crop:
        left, top, side = square_box(width, height)
    else:
        side = min(width, height)
        left = min(int(_uniform(rng) * (width - side + 1)), width - side)
        top = min(int(_uniform(rng) * (height - side + 1)), height - side)
    if side != width or side != height:  # crop first: pixels outside the square must not bleed in
        image = image.crop((left, top, left + side, top + side))
    image = image.resize((resolution, resolution), Image.Resampling.BICUBIC, reducing_gap=_RESIZE_REDUCING_GAP)
    if random_flip and _uniform(rng) < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))  # (R, R, 3)
    return pixels.permute(2, 0, 1).float().div(127.5).sub(1.0)  # (3, R, R)
