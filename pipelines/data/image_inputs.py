"""Images given to a pipeline call or a command (captioning, editing): one reader, one pixel limit, clear errors.

``read_image`` takes a PIL image, a path, a uint8 array (H, W) / (H, W, 3|4) or a float tensor (3, H, W) in
[-1, 1] and returns a loaded PIL image (its own mode; ``to_rgb`` converts it). More than ``max_pixels`` pixels
(the data layer's ``DEFAULT_MAX_IMAGE_PIXELS``, 64 megapixels, by default) is refused before any work: a file's
size is read from its header, before decoding. A file that is missing, empty, truncated, not an image, a folder or
a symlink loop is a ``ValueError`` naming it; nothing here writes to or changes the file.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from PIL import Image

from tessera.pipelines.data.images import DEFAULT_MAX_IMAGE_PIXELS, RowSkipped, open_image

__all__ = ["check_pixel_count", "image_list", "read_image", "tensor_to_pil"]


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [-1, 1] -> an RGB PIL image."""
    pixels = image.detach().float().cpu().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())  # (H, W, 3)


def image_list(images) -> list:
    """A call's ``images`` as a non-empty list of single images (PIL, path, array or (3, H, W) tensor)."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 4:
            return list(images)
        if images.ndim == 3:
            return [images]
        raise ValueError(f"image tensors are (3, H, W) or (B, 3, H, W), got shape {tuple(images.shape)}")
    if isinstance(images, (Image.Image, np.ndarray, str, os.PathLike)):
        return [images]
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"images must be an image (PIL, path, uint8 array, tensor) or a list of them, got "
                        f"{type(images).__name__}")
    if not images:
        raise ValueError("images is empty: give at least one image")
    return list(images)


SHRINK_IT = "shrink it first (the model sees it at its own small resolution anyway)"


def check_pixel_count(width: int, height: int, max_pixels: int | None, what: str = "an image",
                      advice: str = SHRINK_IT) -> None:
    """``ValueError`` when ``width`` x ``height`` is more than ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(f"{what} of {width}x{height} = {width * height:,} pixels is larger than max_image_pixels="
                         f"{max_pixels:,}; {advice}")


def read_image(image, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, name: str = "image") -> Image.Image:
    """One input image as a loaded PIL image, or a clear error (wrong type, unreadable, more than
    ``max_pixels`` pixels; the size is checked before decoding a file). ``name`` is the argument's name."""
    article = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(f"{article} tensor is float (3, H, W) in [-1, 1], got {image.dtype} {tuple(image.shape)}")
        check_pixel_count(image.shape[2], image.shape[1], max_pixels, article)
        return tensor_to_pil(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"{article} array is uint8 (H, W) or (H, W, 3|4), got {image.dtype} {image.shape}")
        check_pixel_count(image.shape[1], image.shape[0], max_pixels, article)
        return Image.fromarray(image)
    if isinstance(image, Image.Image):
        check_pixel_count(*image.size, max_pixels, article)
        try:
            return open_image(image)
        except RowSkipped as error:
            raise ValueError(f"cannot use {article}: {error}") from error
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"{article} is a PIL image, a path, a uint8 array or a float tensor, got "
                        f"{type(image).__name__}")
    path = os.fspath(image)
    try:
        with warnings.catch_warnings():  # the pixel limit below is this reader's own
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)  # lazy: the header only
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ValueError(f"cannot read {name} {path!r}: {reason}") from error
    try:
        check_pixel_count(*opened.size, max_pixels, f"{name} {path!r}")
        return open_image(opened)
    except RowSkipped as error:
        opened.close()
        raise ValueError(f"cannot use {name} {path!r}: {error}") from error
    except ValueError:
        opened.close()
        raise
