"""What a pipeline call hands back (``TextToImageOutput``): chunks of decoded images converted to the output type
and gathered; and the eval-mode guard the calls run their modules under."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

OUTPUT_TYPES = ("pil", "np", "pt", "codes")


@dataclass
class TextToImageOutput:
    images: list[Image.Image] | np.ndarray | torch.Tensor | None  # None for output_type="codes"
    codes: torch.Tensor  # (N, h, w) long, on the CPU
    prompts: list[str]  # the prompt of each image (N = len(prompts) * num_images_per_prompt, prompt-major)


def gather_images(chunks: list, output_type: str) -> list[Image.Image] | np.ndarray | torch.Tensor | None:
    """Postprocessed chunks -> one output: a list of PIL images, one array, one tensor, or None ("codes").
    Called outside inference mode, so the returned tensors are ordinary tensors."""
    if output_type == "pt":
        return torch.cat(chunks)
    if output_type == "np":
        return np.concatenate(chunks)
    if output_type == "pil":
        return [image for chunk in chunks for image in chunk]
    return None


def postprocess_images(images: torch.Tensor, output_type: str):
    """(B, 3, H, W) float32 in [-1, 1] -> the output type, on the CPU."""
    images = images.cpu()
    if output_type == "pt":
        return images.clone()
    if output_type == "np":
        return images.add(1).div(2).permute(0, 2, 3, 1).numpy().copy()  # (B, H, W, 3) in [0, 1]
    pixels = images.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)  # as save_image_grid
    return [Image.fromarray(array) for array in pixels.permute(0, 2, 3, 1).numpy()]  # (H, W, 3) each


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block, then restore each one's mode."""
    modes = [module.training for module in modules]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)
