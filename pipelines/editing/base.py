"""What the editing pipelines share: the components of a ``TextToImagePipeline`` (the same modules, not copies),
its argument checks, sampling options, decoding and output types, and the one edit loop.

An edit is: input images -> their codes (the VQ-GAN encoder) -> per output row, a bool grid of the codes to
regenerate -> ``prior.sample`` with every other code given (kept exactly) -> decoded -> pasted into the input at
its own size -> the output type. ``InpaintPipeline`` chooses the codes from a mask, ``ImageToImagePipeline``
from ``strength`` (or, denoising, from how unlikely the prior finds them).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from tessera.pipelines.call_checks import GenerationRequest
from tessera.pipelines.data.image_inputs import read_image
from tessera.pipelines.data.images import DEFAULT_MAX_IMAGE_PIXELS
from tessera.pipelines.editing.inputs import EditImage
from tessera.pipelines.editing.masks import paste_back
from tessera.pipelines.text_to_image import TextToImageOutput, TextToImagePipeline
from tessera.prior.context import TextContext
from tessera.prior.text import TextConditioner
from tessera.prior.transformer import GridPrior
from tessera.tokenizer.model import VQGAN

# (input codes (B, h, w), context, negative context or None, input index (B,)) -> codes to regenerate (B, h, w)
ChooseCodes = Callable[[torch.Tensor, TextContext, "TextContext | None", torch.Tensor], torch.Tensor]


@dataclass
class EditOutput(TextToImageOutput):
    """``TextToImageOutput`` (images at the input's size, codes, prompts) and which codes were regenerated."""

    regenerated: torch.Tensor | None = None  # (N, h, w) bool, on the CPU: True = sampled, False = the input's


class EditingPipeline:
    """The base of the editing pipelines: a ``TextToImagePipeline``'s components and settings."""

    # Input images (and the outpainting canvas) above this many pixels are refused before any work, as captioning
    # refuses them (``pipelines.data.image_inputs``); set it on a pipeline to change it (None: no limit).
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS

    def __init__(self, pipe: TextToImagePipeline) -> None:
        if not isinstance(pipe, TextToImagePipeline):
            raise TypeError(f"expected a TextToImagePipeline, got {type(pipe).__name__}")
        self.pipe = pipe

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, allow_vqgan_mismatch: bool = False):
        """Load a saved pipeline folder (``TextToImagePipeline.from_pretrained``, strictly)."""
        return cls(TextToImagePipeline.from_pretrained(directory, device=device, dtype=dtype,
                                                       allow_vqgan_mismatch=allow_vqgan_mismatch))

    @classmethod
    def from_pipe(cls, pipe: TextToImagePipeline | EditingPipeline):
        """A pipeline on the same modules as ``pipe`` (a text-to-image or another editing pipeline), every
        component kept (the captioner too): nothing is copied but the sampling defaults, so moving one moves
        both."""
        return cls(TextToImagePipeline.from_pipe(pipe))

    @property
    def components(self) -> dict:
        return self.pipe.components

    @property
    def vqgan(self) -> VQGAN:
        return self.pipe.vqgan

    @property
    def text(self) -> TextConditioner:
        return self.pipe.text

    @property
    def prior(self) -> GridPrior:
        return self.pipe.prior

    @property
    def captioner(self):
        return self.pipe.captioner

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.dtype

    def to(self, device: str | torch.device | torch.dtype | None = None, dtype: torch.dtype | None = None):
        self.pipe.to(device, dtype)
        return self

    def save_pretrained(self, directory: str | os.PathLike, *, dtype: torch.dtype | None = None,
                        remove_missing_components: bool = False):
        """``TextToImagePipeline.save_pretrained``: the same folder, every component kept."""
        return self.pipe.save_pretrained(directory, dtype=dtype, remove_missing_components=remove_missing_components)

    def set_progress_bar_config(self, **kwargs) -> None:
        self.pipe.set_progress_bar_config(**kwargs)

    def read_image(self, image, name: str = "image") -> Image.Image:
        """One input image (PIL, path, uint8 array, float tensor) loaded, or a clear error: unreadable files and
        more than ``max_image_pixels`` pixels (read from a file's header, before decoding) are refused."""
        return read_image(image, self.max_image_pixels, name)

    @property
    def resolution(self) -> int:
        return self.vqgan.config.resolution

    def scorer(self, request: GenerationRequest, group_stride: int | None, default: int) -> ChooseCodes:
        """``(codes, context, negative, index) -> prior.code_log_probs`` (B, h, w), guided as the request samples;
        ``group_stride`` (default ``default``) is the masked prior's only."""
        options = {}
        if self.prior.config.kind == "masked":
            options["group_stride"] = default if group_stride is None else group_stride
        elif group_stride is not None:
            raise ValueError(f"group_stride applies to the masked prior only; this pipeline's prior is "
                             f"{self.prior.config.kind} (it scores each code given the codes before it)")

        def score(given: torch.Tensor, context: TextContext, negative: TextContext | None,
                  index: torch.Tensor) -> torch.Tensor:
            return self.prior.code_log_probs(given, context, negative_context=negative,
                                             guidance_scale=request.sampling.guidance_scale, **options)

        return score

    def edit(self, request: GenerationRequest, inputs: list[EditImage], choose: ChooseCodes,
             weights: list[torch.Tensor], desc: str) -> EditOutput:
        """Run ``request`` on ``inputs`` (one, or one per prompt; all of one size): output row ``r`` edits input
        ``r // num_images_per_prompt`` (or the only one). ``choose`` picks the codes to regenerate; the decoded
        image is pasted into the input by ``weights`` (H, W) (``masks.paste_back``)."""
        sizes = {image.size for image in inputs}
        if len(sizes) > 1:
            raise ValueError(f"the images of one call must share one size, got {sorted(sizes)}")
        codes = self.pipe.encode(torch.stack([image.model_input for image in inputs]))  # (P, h, w)
        regenerated = []

        def input_index(rows: torch.Tensor) -> torch.Tensor:  # (B,) output rows -> (B,) inputs
            return rows // request.num_images_per_prompt if len(inputs) > 1 else torch.zeros_like(rows)

        def sample_chunk(context: TextContext, negative: TextContext | None, rows: torch.Tensor) -> torch.Tensor:
            index = input_index(rows)
            given = codes[index.to(codes.device)]  # (B, h, w)
            cells = choose(given, context, negative, index).to(given.device)  # (B, h, w) bool
            regenerated.append(cells.cpu())
            return self.prior.sample(context, negative_context=negative, generator=request.generator,
                                     initial_codes=given, initial_mask=~cells,
                                     **request.sampling.sample_kwargs(self.prior.config.kind))

        def finish_chunk(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # (B, 3, R, R) -> (B, 3, H, W)
            return torch.stack([paste_back(image, inputs[i].canvas, inputs[i].box, weights[i])
                                for image, i in zip(images.cpu(), input_index(rows).tolist())])

        output = self.pipe.generate(request, sample_chunk, finish_chunk, desc=desc)
        return EditOutput(images=output.images, codes=output.codes, prompts=output.prompts,
                          regenerated=torch.cat(regenerated))
