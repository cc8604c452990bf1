"""Inpainting and outpainting: regenerate the masked part of an image from a prompt, keep the rest exactly.

```python
import torch
from tessera.pipelines.editing import InpaintPipeline

pipe = InpaintPipeline.from_pretrained("models/tessera-shapes")      # or InpaintPipeline.from_pipe(t2i_pipe)
out = pipe("a small green square above a large red circle", image, mask_image,
           generator=torch.Generator().manual_seed(0))
out.images[0]            # PIL, the input's size; outside the mask, the input's own pixels
out.regenerated[0]       # (h, w) bool: the code cells that were sampled
grown = pipe.outpaint("a small red circle to the left of a large blue square", image, left=16)
```

How a mask becomes a token mask, and how the result is put together: ``pipelines.editing.masks``. In short,
white = regenerate; a code cell is regenerated when at least ``cell_threshold`` of its pixels are masked (then
grown by ``dilation`` cells); every other code is the input's own; the decoded image replaces the input where
the pixel mask and the regenerated cells overlap, nowhere else (``feather_radius``: a blended seam inside).

Both prior kinds. The masked prior fills the regenerated cells in ``num_steps`` parallel steps, each cell
conditioned on the text and on every kept code around it. The autoregressive prior generates in raster order
and *forces* the kept codes when their turn comes: a regenerated cell is conditioned on the text and on the
codes before it (the rows above, the cells to its left), never on kept codes below it or to its right, so the
lower and right edges of a hole are not steered by what lies beyond them.

Unusual input:

- an image of another size than the model's: converted and cut like training data (``pipelines.editing.inputs``):
  the model sees the largest square as near the mask's centre as it fits, resized; the result has the input's
  size, and masked pixels outside that square (a mask wider than the short side) stay as they were, with a
  warning;
- ``mask_image`` of another size than the image: ``ValueError``; a soft (non-binary) mask is thresholded at half
  way (``masks.PIXEL_THRESHOLD``);
- an empty mask: the input is returned (its pixels exactly, its codes), nothing is sampled;
- a mask that covers every code cell: text-to-image (the same codes as ``TextToImagePipeline`` for the same
  seed and settings);
- a mask that covers no cell at ``cell_threshold``: a warning naming its largest cell coverage, and the input
  is returned;
- grayscale, RGBA and other modes: converted to RGB like training data (transparency onto white); a 16-bit mask
  is scaled to 8 bits, never clipped;
- images and masks given as paths are read as captioning reads them (``pipelines.data.image_inputs``): more than
  ``max_image_pixels`` pixels (64 megapixels; read from the header, before decoding), an unreadable, truncated or
  missing file: ``ValueError`` naming it. ``outpaint`` refuses a canvas over that limit before allocating it.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from PIL import Image

from tessera.pipelines.editing.base import EditingPipeline, EditOutput
from tessera.pipelines.editing.inputs import extend_canvas, per_prompt_list, prepare_image
from tessera.pipelines.editing.masks import (
    binary_mask,
    cell_coverage,
    cell_pixels,
    mask_center,
    paste_weights,
    token_mask,
)

logger = logging.getLogger(__name__)

CELL_THRESHOLD = 0.5  # default share of a code cell's pixels that must be masked for it to be regenerated
DILATION = 0  # default growth of the token mask, in cells


class InpaintPipeline(EditingPipeline):
    """Prompt + image + mask -> the image with the masked part regenerated (see the module docstring)."""

    def __call__(self, prompt: str | list[str], image, mask_image, negative_prompt: str | list[str] | None = None,
                 num_images_per_prompt: int = 1, *, cell_threshold: float = CELL_THRESHOLD,
                 dilation: int = DILATION, feather_radius: float = 0.0, guidance_scale: float | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 num_steps: int | None = None, generator: torch.Generator | None = None,
                 output_type: str = "pil", batch_size: int = 64, guidance_schedule: str | None = None,
                 choice_temperature: float | None = None) -> EditOutput:
        """``image`` and ``mask_image``: one each (for every prompt) or a list of one per prompt. The sampling
        arguments and ``output_type`` are ``TextToImagePipeline``'s; images come back at the input's size."""
        request = self.pipe.request(
            prompt, negative_prompt, num_images_per_prompt, guidance_scale=guidance_scale, temperature=temperature,
            top_k=top_k, top_p=top_p, num_steps=num_steps, generator=generator, output_type=output_type,
            batch_size=batch_size, guidance_schedule=guidance_schedule, choice_temperature=choice_temperature)
        images = [self.read_image(item) for item in per_prompt_list(image, len(request.prompts), "image")]
        masks = [self.read_image(item, "mask_image") if isinstance(item, (Image.Image, str, os.PathLike)) else item
                 for item in per_prompt_list(mask_image, len(request.prompts), "mask_image")]
        count = max(len(images), len(masks))
        inputs, cells, weights = [], [], []
        for source, mask_source in zip(images * (count // len(images)), masks * (count // len(masks))):
            prepared, mask = self._prepare(source, mask_source)
            coverage = cell_coverage(mask, prepared.box, self.prior.config.grid_size)  # (h, w)
            chosen = token_mask(coverage, cell_threshold, dilation)
            _warn_about(mask, prepared.box, coverage, chosen, cell_threshold)
            inputs.append(prepared)
            cells.append(chosen)
            weights.append(paste_weights(mask & cell_pixels(chosen, prepared.box, prepared.size), feather_radius))
        cells = torch.stack(cells)  # (P, h, w)

        return self.edit(request, inputs, lambda given, context, negative, index: cells[index], weights,
                         desc="inpainting")

    def outpaint(self, prompt: str | list[str], image, *, left: int = 0, right: int = 0, top: int = 0,
                 bottom: int = 0, fill: str | tuple[int, int, int] = "edge", **kwargs) -> EditOutput:
        """``image`` on a canvas grown by ``left``/``right``/``top``/``bottom`` pixels, the new area generated
        (``inputs.extend_canvas``; ``fill``: what the new pixels hold before, "edge" or a colour). The model sees
        a square of the canvas (near the new area's centre), so keep the canvas square to generate all of it.
        Other keyword arguments are ``__call__``'s."""
        def grown(item):
            return extend_canvas(self.read_image(item), left, right, top, bottom, fill, self.max_image_pixels)

        if isinstance(image, list):
            canvases = [grown(item) for item in image]
            return self(prompt, [c for c, _ in canvases], [m for _, m in canvases], **kwargs)
        canvas, mask = grown(image)
        return self(prompt, canvas, mask, **kwargs)

    def _prepare(self, image, mask_image):
        mask = binary_mask(mask_image, image.size)  # (H, W) bool
        return prepare_image(image, self.resolution, center=mask_center(mask)), mask


def _warn_about(mask: np.ndarray, box, coverage: np.ndarray, chosen: torch.Tensor, cell_threshold: float) -> None:
    if not mask.any():
        return
    if not chosen.any():
        logger.warning(f"the mask covers no code cell at cell_threshold={cell_threshold:g} (at most "
                       f"{coverage.max():.0%} of a cell is masked): nothing is regenerated and the input is "
                       f"returned; lower cell_threshold or grow the mask")
    left, top, side = box
    outside = int(mask.sum() - mask[top:top + side, left:left + side].sum())
    if outside:
        logger.warning(f"{outside} masked pixels lie outside the {side}x{side} square at ({left}, {top}) that the "
                       f"model sees (the mask is wider than the image's short side); they keep their pixels")
