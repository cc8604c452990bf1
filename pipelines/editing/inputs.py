"""Input images of an edit: converted, cropped and resized like training data for the model, and kept at their
own size for the result.

An input of any mode is converted to RGB by the data layer (``pipelines.data.images.to_rgb``: grayscale to
grey RGB, transparency composited onto white, 16-bit scaled), and the result of an edit is that RGB image with
the edit pasted in, at the input's own size. The model sees one square of it (``box``), cut out and resized by
``preprocess_image`` as training images are: the largest square, centred on the image, or as near the centre
of the mask as it fits (for a square image: the whole image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from tessera.pipelines.data.image_inputs import check_pixel_count, read_image
from tessera.pipelines.data.images import DEFAULT_MAX_IMAGE_PIXELS, preprocess_image, square_box, to_rgb
from tessera.pipelines.editing.masks import Box

FILL_MODES = ("edge",)  # or an (r, g, b) colour


@dataclass
class EditImage:
    """One input image, ready for an edit."""

    canvas: torch.Tensor  # (3, H, W) float32 in [-1, 1]: the input as RGB at its own size
    model_input: torch.Tensor  # (3, R, R) float32 in [-1, 1]: the ``box`` square, preprocessed like training data
    box: Box  # (left, top, side) in the input's pixels
    conversion: str | None  # e.g. "RGBA->RGB"; None when the input was RGB

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.canvas.shape[2], self.canvas.shape[1]


def per_prompt_list(value, count: int, name: str) -> list:
    """``value`` as a list: one item (used for every prompt) or a list of one per prompt (``count``)."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(items) not in (1, count):
        raise ValueError(f"{name} has {len(items)} entries; give one, or one per prompt ({count})")
    return items


def prepare_image(image: Image.Image, resolution: int, center: tuple[float, float] | None = None) -> EditImage:
    """Convert ``image`` (read by ``pipelines.data.image_inputs.read_image``) to RGB and cut out the square the
    model sees: centred, or near ``center`` (x, y)."""
    rgb, conversion = to_rgb(image)
    box = square_box(*rgb.size, center=center)
    pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8))  # (H, W, 3)
    canvas = pixels.permute(2, 0, 1).float().div(127.5).sub(1.0)  # (3, H, W), as preprocess_image scales
    return EditImage(canvas, preprocess_image(rgb, resolution, box=box), box, conversion)


def extend_canvas(image, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0,
                  fill: str | tuple[int, int, int] = "edge", max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
                  ) -> tuple[Image.Image, np.ndarray]:
    """For outpainting: ``image`` (as RGB) on a canvas grown by that many pixels on each side, and the bool mask
    (H', W') of the new area. ``fill`` is what the new pixels hold before they are regenerated: "edge" repeats
    the nearest input pixel; an (r, g, b) colour fills them flat. A canvas of more than ``max_pixels`` pixels is
    refused before anything is allocated."""
    amounts = {"left": left, "right": right, "top": top, "bottom": bottom}
    for side, amount in amounts.items():
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ValueError(f"{side} must be an integer >= 0 (pixels), got {amount!r}")
    image = read_image(image, max_pixels)
    check_pixel_count(image.width + left + right, image.height + top + bottom, max_pixels,
                      f"the outpainting canvas ({image.width}x{image.height} grown by left={left}, right={right}, "
                      f"top={top}, bottom={bottom})", "grow it by fewer pixels")
    rgb, _ = to_rgb(image)
    pixels = np.asarray(rgb, dtype=np.uint8)  # (H, W, 3)
    pad = ((top, bottom), (left, right), (0, 0))
    if fill == "edge":
        grown = np.pad(pixels, pad, mode="edge")
    elif isinstance(fill, (tuple, list)) and len(fill) == 3:
        grown = np.stack([np.pad(pixels[..., c], pad[:2], constant_values=fill[c]) for c in range(3)], axis=-1)
    else:
        raise ValueError(f"fill must be one of {FILL_MODES} or an (r, g, b) colour, got {fill!r}")
    mask = np.ones(grown.shape[:2], dtype=bool)  # (H', W')
    mask[top:top + pixels.shape[0], left:left + pixels.shape[1]] = False
    return Image.fromarray(np.ascontiguousarray(grown)), mask
