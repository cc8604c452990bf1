"""Pixel masks -> token masks, and pixels pasted back: the two rules every edit follows.

**Pixel mask.** ``mask_image`` has the input image's size; white (or True, or 1) marks what to regenerate, black
what to keep, as in diffusers. A PIL mask of any mode is read as grey levels (``convert("L")``, so an RGB(A)
mask counts by its luminance; alpha is ignored; a 16-bit or 32-bit grey mask is scaled to 8 bits as images are,
``pipelines.data.images.to_rgb``, never clipped); arrays and tensors may be bool, uint8 (0..255), uint16
(0..65535) or float (0..1), (H, W) or with a single channel. A pixel is masked when its level is at least half way
(``PIXEL_THRESHOLD`` = 0.5, i.e. 128 of 255): a soft or anti-aliased mask is thresholded, never blended.

**Token mask.** The model sees one square of the image (``box``: left, top, side), resized to its resolution
and cut into ``grid_size`` x ``grid_size`` code cells. A cell is regenerated when the share of its pixels that
are masked (``cell_coverage``) is at least ``cell_threshold``, e.g. 0.5: at least half of the cell; 1.0: only
wholly masked cells; a small value such as 0.01: every cell the mask touches. The cells are then grown by
``dilation`` cells in every direction (a square neighbourhood), which lets the regenerated area meet the kept
one at a seam of fresh codes. Every other code is the input's own and is kept exactly.

**Paste-back.** The decoded image replaces the input only where the pixel mask and the regenerated cells
overlap; every pixel outside the mask, and every masked pixel of a cell that was kept, is the input's own,
exactly (so an edit never degrades what it did not regenerate, and a mask under the threshold changes nothing). With ``feather_radius`` > 0 the seam is blended *inwards*: the weight of the generated
pixels rises from 0 at the mask's edge to 1 about ``feather_radius`` pixels inside it, and stays 0 outside.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tessera.pipelines.data.images import to_rgb

PIXEL_THRESHOLD = 0.5
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # read by the data layer's scaling rules

Box = tuple[int, int, int]  # (left, top, side): the square of the input the model sees


def binary_mask(mask_image, size: tuple[int, int]) -> np.ndarray:
    """``mask_image`` (PIL, array or tensor) as a bool (H, W) array, True = regenerate; ``size`` is the image's
    (width, height), and another size is a ``ValueError``."""
    if isinstance(mask_image, Image.Image):
        if mask_image.mode in HIGH_DEPTH_MODES:  # scaled to 8 bits as images are (65535 -> 255), never clipped
            mask_image, _ = to_rgb(mask_image)
        levels = np.asarray(mask_image.convert("L"), dtype=np.float32) / 255.0  # (H, W)
    else:
        array = (mask_image.detach().cpu().numpy() if isinstance(mask_image, torch.Tensor)
                 else np.asarray(mask_image))
        if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
            array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:-1])  # (H, W)
        if array.ndim != 2:
            raise ValueError(f"mask_image must be (H, W) or single-channel, got shape {array.shape}")
        if array.dtype == np.bool_:
            levels = array.astype(np.float32)
        elif array.dtype == np.uint8:
            levels = array.astype(np.float32) / 255.0
        elif array.dtype == np.uint16:
            levels = array.astype(np.float32) / 65535.0
        elif np.issubdtype(array.dtype, np.floating):
            levels = array.astype(np.float32)
        else:
            raise TypeError(f"mask_image arrays must be bool, uint8 (0..255), uint16 (0..65535) or float (0..1), "
                            f"got {array.dtype}")
    height, width = levels.shape
    if (width, height) != tuple(size):
        raise ValueError(f"mask_image is {width}x{height} but the image is {size[0]}x{size[1]}; "
                         "give a mask of the image's size")
    return levels >= PIXEL_THRESHOLD


def mask_center(mask: np.ndarray) -> tuple[float, float] | None:
    """The centre (x, y) in pixels of the masked pixels' bounding box; None for an empty mask."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return None
    return (cols[0] + cols[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2


def cell_coverage(mask: np.ndarray, box: Box, grid_size: int) -> np.ndarray:
    """The share of each code cell's pixels that are masked, (grid_size, grid_size) float32 in [0, 1]: the
    ``box`` square of ``mask`` area-averaged down to the grid."""
    left, top, side = box
    square = Image.fromarray(mask[top:top + side, left:left + side].astype(np.float32), mode="F")
    return np.asarray(square.resize((grid_size, grid_size), Image.Resampling.BOX), dtype=np.float32)


def token_mask(coverage: np.ndarray, cell_threshold: float, dilation: int = 0) -> torch.Tensor:
    """Cells to regenerate (h, w) bool: coverage >= ``cell_threshold`` (in (0, 1]), grown by ``dilation`` cells."""
    if not 0 < cell_threshold <= 1:
        raise ValueError(f"cell_threshold must lie in (0, 1], got {cell_threshold}")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 0:
        raise ValueError(f"dilation must be an integer >= 0 (cells), got {dilation!r}")
    cells = torch.from_numpy(coverage >= cell_threshold - 1e-6)  # (h, w); BOX averages are not exact
    if dilation and cells.any():
        grown = F.max_pool2d(cells[None, None].float(), 2 * dilation + 1, stride=1, padding=dilation)
        cells = grown[0, 0].bool()  # (h, w)
    return cells


def cell_pixels(cells: torch.Tensor, box: Box, size: tuple[int, int]) -> np.ndarray:
    """The input pixels (H, W) bool that lie in the code cells ``cells`` (h, w) of the ``box`` square; ``size`` is
    the input's (width, height)."""
    left, top, side = box
    grid = cells.shape[0]
    index = np.arange(side) * grid // side  # (side,): pixel -> cell
    pixels = np.zeros(size[::-1], dtype=bool)  # (H, W)
    pixels[top:top + side, left:left + side] = cells.cpu().numpy()[index[:, None], index[None, :]]
    return pixels


def paste_weights(mask: np.ndarray, feather_radius: float = 0.0) -> torch.Tensor:
    """Weights (H, W) float32 of the generated pixels: 0 outside the mask (the input's pixels, exactly), 1 inside,
    ramped over about ``feather_radius`` pixels inside the mask's edge."""
    if not 0 <= feather_radius < math.inf:  # also NaN
        raise ValueError(f"feather_radius must be a finite number >= 0 (pixels), got {feather_radius}")
    weights = torch.from_numpy(mask.astype(np.float32))  # (H, W)
    if feather_radius > 0 and mask.any():
        sigma = feather_radius / 2
        offsets = torch.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1, dtype=torch.float32)
        kernel = torch.exp(-offsets**2 / (2 * sigma**2))
        kernel = kernel / kernel.sum()  # (K,)
        half = len(offsets) // 2
        blurred = F.pad(weights[None, None], (half, half, half, half), mode="replicate")  # the image's edge is no seam
        blurred = F.conv2d(blurred, kernel.view(1, 1, 1, -1))  # along rows
        blurred = F.conv2d(blurred, kernel.view(1, 1, -1, 1))[0, 0]  # along columns: (H, W)
        weights = (2 * blurred - 1).clamp(0, 1) * weights  # 0.5 at the mask's edge -> 0; 0 outside
    return weights


def paste_back(generated: torch.Tensor, canvas: torch.Tensor, box: Box, weights: torch.Tensor) -> torch.Tensor:
    """The generated square (3, R, R) resized to ``box`` and blended into ``canvas`` (3, H, W) by ``weights``
    (H, W); both in [-1, 1]. Where a weight is 0 the canvas pixel is returned unchanged, bit for bit."""
    left, top, side = box
    if generated.shape[-1] != side:
        generated = F.interpolate(generated[None].float(), size=(side, side), mode="bicubic",
                                  antialias=True, align_corners=False)[0].clamp(-1, 1)  # (3, side, side)
    out = canvas.clone()
    region = out[:, top:top + side, left:left + side]  # (3, side, side), a view
    weight = weights[top:top + side, left:left + side].to(region)[None]  # (1, side, side)
    region.copy_(torch.where(weight > 0, weight * generated.to(region) + (1 - weight) * region, region))
    return out
