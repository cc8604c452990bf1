"""Image-to-image and denoising: re-mask some of an image's codes and let the prior regenerate them for a prompt.

```python
import torch
from tessera.pipelines.editing import ImageToImagePipeline

pipe = ImageToImagePipeline.from_pretrained("models/tessera-shapes")   # or .from_pipe(t2i_pipe)
out = pipe("a small blue circle on the left", image, strength=0.6, generator=torch.Generator().manual_seed(0))
clean = pipe.denoise(noisy_image)                                        # optionally with a prompt
```

``strength`` in [0, 1] is the share of the code grid regenerated: ``round(strength * h * w)`` codes per image.
Which ones (``remask``):

- ``"likelihood"`` (default): the codes the prior finds least likely for the prompt, scored by
  ``prior.code_log_probs`` with the call's guidance (and negative prompt). With guidance the score is the
  guided distribution's, so it singles out the codes the prompt argues against (the object whose colour the
  prompt changes) rather than those that are merely rare. The masked prior scores a code with its
  ``group_stride`` group masked (see ``MaskedPrior.code_log_probs``); the autoregressive prior given the codes
  before it in raster order. Deterministic: it uses no random numbers.
- ``"random"``: a uniformly random set, drawn from ``generator`` (as aMUSEd's image-to-image does).

``strength=0`` regenerates nothing: the codes are the input's and the image is their decoding (the VQ-GAN's
reconstruction). ``strength=1`` regenerates everything: text-to-image, the same codes as
``TextToImagePipeline`` for the same seed and settings. The whole square the model sees is decoded from the
(partly new) codes; an input of another size is cut and resized like training data and the result pasted back
at the input's size (``pipelines.editing.inputs``).

``denoise`` regenerates the codes the prior finds unlikely: every code whose probability is below ``threshold``
(scored as above, each code given the text and its neighbours, ``group_stride`` 2; without a prompt,
unconditionally, with the prior's null context), capped at ``max_strength`` of the grid, least likely first,
and replaces them greedily (``temperature=0``). A noisy image encodes partly to codes clean images never
produce; those are the ones replaced. The VQ-GAN alone (encode -> decode, ``strength=0``) already removes most
noise, since its codebook holds clean patches; ``benchmarks/editing.py`` measures both. The defaults
(``threshold`` 1e-4, greedy) were chosen on scenes apart from the benchmark's: looser thresholds replace codes
that decode well enough, and an unconditional prior then erodes objects' edges.
"""

from __future__ import annotations

import math

import torch

from tessera.pipelines.call_checks import GenerationRequest
from tessera.pipelines.editing.base import EditingPipeline, EditOutput
from tessera.pipelines.editing.inputs import per_prompt_list, prepare_image

REMASK_MODES = ("likelihood", "random")
GROUP_STRIDE = 1  # masked prior, image-to-image: each code scored given the text alone
DENOISE_GROUP_STRIDE = 2  # masked prior, denoising: each code scored given the text and its neighbours
DENOISE_THRESHOLD = 1e-4
DENOISE_MAX_STRENGTH = 0.5


def lowest(scores: torch.Tensor, count: torch.Tensor | int) -> torch.Tensor:
    """(B, h, w) bool: the ``count`` (per row, or one for all) lowest of ``scores`` (B, h, w) in each row."""
    ranks = scores.flatten(1).argsort(dim=1).argsort(dim=1)  # (B, N): 0 = lowest
    count = torch.as_tensor(count, device=ranks.device).reshape(-1, 1)  # (B or 1, 1)
    return (ranks < count).view(scores.shape)


class ImageToImagePipeline(EditingPipeline):
    """Prompt + image -> the image with a ``strength`` share of its codes regenerated (module docstring)."""

    def __call__(self, prompt: str | list[str], image, strength: float = 0.6,
                 negative_prompt: str | list[str] | None = None, num_images_per_prompt: int = 1, *,
                 remask: str = "likelihood", group_stride: int | None = None,
                 guidance_scale: float | None = None, temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, num_steps: int | None = None,
                 generator: torch.Generator | None = None, output_type: str = "pil",
                 batch_size: int = 64, guidance_schedule: str | None = None,
                 choice_temperature: float | None = None) -> EditOutput:
        """``image``: one (for every prompt) or a list of one per prompt. The sampling arguments and
        ``output_type`` are ``TextToImagePipeline``'s; images come back at the input's size."""
        if not 0 <= strength <= 1:
            raise ValueError(f"strength must lie in [0, 1], got {strength}")
        if remask not in REMASK_MODES:
            raise ValueError(f"remask must be one of {REMASK_MODES}, got {remask!r}")
        request = self.pipe.request(
            prompt, negative_prompt, num_images_per_prompt, guidance_scale=guidance_scale, temperature=temperature,
            top_k=top_k, top_p=top_p, num_steps=num_steps, generator=generator, output_type=output_type,
            batch_size=batch_size, guidance_schedule=guidance_schedule, choice_temperature=choice_temperature)
        score = self.scorer(request, group_stride, GROUP_STRIDE)
        count = round(strength * self.prior.config.num_codes)

        def choose(given, context, negative, index):  # (B, h, w) -> (B, h, w) bool
            if count in (0, self.prior.config.num_codes):  # nothing to choose (and no random numbers drawn)
                return torch.full_like(given, count > 0, dtype=torch.bool)
            if remask == "random":
                scores = torch.rand(given.shape, generator=request.generator, device=self.device)
            else:
                scores = score(given, context, negative, index)
            return lowest(scores, count)

        return self._run(request, image, choose, desc="image to image")

    def denoise(self, image, prompt: str | list[str] | None = None, *, threshold: float = DENOISE_THRESHOLD,
                max_strength: float = DENOISE_MAX_STRENGTH, group_stride: int | None = None,
                negative_prompt: str | list[str] | None = None, num_images_per_prompt: int = 1,
                guidance_scale: float | None = None, temperature: float | None = 0.0, top_k: int | None = None,
                top_p: float | None = None, num_steps: int | None = None,
                generator: torch.Generator | None = None, output_type: str = "pil",
                batch_size: int = 64, guidance_schedule: str | None = None,
                choice_temperature: float | None = None) -> EditOutput:
        """``image`` with the codes the prior finds less likely than ``threshold`` regenerated (at most
        ``max_strength`` of the grid, the least likely first); ``prompt`` None is unconditional. Greedy by
        default (``temperature=0``: each replaced code is the most likely one, not a random draw)."""
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        if not 0 <= max_strength <= 1:
            raise ValueError(f"max_strength must lie in [0, 1], got {max_strength}")
        request = self.pipe.request(
            "" if prompt is None else prompt, negative_prompt, num_images_per_prompt,
            guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p, num_steps=num_steps,
            generator=generator, output_type=output_type, batch_size=batch_size, guidance_schedule=guidance_schedule,
            choice_temperature=choice_temperature)
        score = self.scorer(request, group_stride, DENOISE_GROUP_STRIDE)
        cap = round(max_strength * self.prior.config.num_codes)

        def choose(given, context, negative, index):
            scores = score(given, context, negative, index)
            unlikely = (scores < math.log(threshold)).flatten(1).sum(dim=1).clamp(max=cap)  # (B,)
            return lowest(scores, unlikely)

        return self._run(request, image, choose, desc="denoising")

    def _run(self, request: GenerationRequest, image, choose, desc: str) -> EditOutput:
        inputs = [prepare_image(self.read_image(item), self.resolution)
                  for item in per_prompt_list(image, len(request.prompts), "image")]
        weights = []
        for prepared in inputs:  # the model's square is replaced; outside it (a non-square input) is kept
            left, top, side = prepared.box
            weight = torch.zeros(prepared.size[::-1])  # (H, W)
            weight[top:top + side, left:left + side] = 1
            weights.append(weight)
        return self.edit(request, inputs, choose, weights, desc=desc)
