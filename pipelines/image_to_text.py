"""The image-to-text pipeline: images -> VQ-GAN codes -> captioner -> captions, and image-caption scores.

```python
from tessera.pipelines.image_to_text import ImageToTextPipeline

pipe = ImageToTextPipeline.from_pretrained("models/tessera-shapes")     # a folder with a captioner/ component
pipe(["scene.png", Image.open("other.jpg")]).captions                   # greedy captions, one per image
pipe(images, num_beams=4, num_return_sequences=2).captions              # image-major: 2 per image
pipe(images, do_sample=True, top_k=10, generator=torch.Generator().manual_seed(0))
pipe.score(images, ["a small red circle on the left", ...])             # (N,) log-likelihood per pair
pipe = ImageToTextPipeline.from_pipe(text_to_image_pipe)                # shares its modules
```

Images: PIL images, paths, uint8 arrays (H, W) / (H, W, 3|4), or float tensors (3, H, W) / (B, 3, H, W) in
[-1, 1]; any size and mode, read by ``pipelines.data.image_inputs``. They are converted and cut like training data (``pipelines.data.images``: RGB,
transparency onto white, the largest centred square, resized to the VQ-GAN's resolution). An image of more than
``max_image_pixels`` pixels (the data layer's limit, 64 megapixels, by default) is refused before any work; a file's
size is read from its header, before decoding.

``score`` is the captioner's length-normalised log-likelihood: the mean log-probability per caption token (the
pipeline's text tokenizer, its end token included), natural log, <= 0; higher fits better. Captions are read
as prompts are (emoji spelled out as their names, ``prior.prompt_text``; the same text normaliser). A word the
captioner never saw in training makes a caption unlikely.

Decoding settings are ``transformers``' ``generate`` options (``num_beams``, ``do_sample``, ``temperature``,
``top_k``, ``top_p``, ``num_return_sequences``, ``max_new_tokens``), plus ``guidance_scale``: image guidance
(``captioner.model``; 1 = none; default: the captioner's saved setting). Sampling draws from torch's global RNG, or,
with ``generator``, from a seed drawn from it (the same generator state gives the same captions).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tessera.captioner.model import Captioner, tokenize_captions
from tessera.core.folders import check_output_folder, replace_entries
from tessera.models import resolve_pipeline_folder
from tessera.pipelines.call_checks import positive_int, prompt_list
from tessera.pipelines.data.image_inputs import image_list, read_image
from tessera.pipelines.data.images import DEFAULT_MAX_IMAGE_PIXELS, preprocess_image
from tessera.pipelines.outputs import eval_mode
from tessera.pipelines.pipeline_folder import (
    CAPTIONER_FOLDER,
    COMPONENTS,
    PIPELINE_CONFIG_NAME,
    check_captioner,
)
from tessera.prior.prompt_text import prompt_texts
from tessera.prior.text import TEXT_CONFIG_NAME, TextEncoderConfig, load_text_tokenizer, swap_in_saved
from tessera.tokenizer.model import VQGAN


@dataclass
class ImageToTextOutput:
    captions: list[str]  # image-major: num_return_sequences per image
    codes: torch.Tensor  # (N, h, w) long, on the CPU: the images' codes


@contextlib.contextmanager
def seeded_from(generator: torch.Generator | None, device: torch.device):
    """Inside the block, torch's RNG on ``device`` is seeded from ``generator`` (and restored after); a no-op
    without one. ``transformers``' sampling draws from the global RNG."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2 ** 62, (), generator=generator, device=generator.device))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class ImageToTextPipeline:
    """Images -> ``vqgan`` encoder -> codes -> ``captioner`` -> text-tokenizer ids -> captions."""

    def __init__(self, vqgan: VQGAN, text_tokenizer, captioner: Captioner,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, text_config: TextEncoderConfig | None = None
                 ) -> None:
        check_captioner(vqgan, captioner)
        self.vqgan, self.text_tokenizer, self.captioner = vqgan, text_tokenizer, captioner
        self.text_config = text_config  # how the text tokenizer reads text (normalisation), saved beside it
        self.max_image_pixels = max_image_pixels
        self._progress_bar_config: dict = {}

    def set_progress_bar_config(self, **kwargs) -> None:
        """Options for the tqdm bar of each call, e.g. ``disable=True`` (as in diffusers)."""
        self._progress_bar_config = dict(kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> ImageToTextPipeline:
        """A folder with ``vqgan/``, ``text_tokenizer/`` and ``captioner/`` (a pipeline folder with a captioner,
        or the output of ``train.py captioner`` or ``save_pretrained``), loaded strictly and offline; or the
        name of a shipped pipeline (``tessera.models``)."""
        directory = resolve_pipeline_folder(directory)
        if not (directory / CAPTIONER_FOLDER).is_dir():
            raise FileNotFoundError(f"{directory} has no {CAPTIONER_FOLDER}/ component; train one with "
                                    f"`python train.py captioner --pipeline {directory} --output_dir DIR`")
        vqgan = VQGAN.from_pretrained(directory / COMPONENTS["vqgan"])
        captioner = Captioner.from_pretrained(directory / CAPTIONER_FOLDER)
        text_config = TextEncoderConfig.load(directory / TEXT_CONFIG_NAME) if (directory / TEXT_CONFIG_NAME).is_file() \
            else None
        return cls(vqgan, load_text_tokenizer(directory, text_config), captioner,
                   text_config=text_config).to(device, dtype)

    @classmethod
    def from_pipe(cls, pipe) -> ImageToTextPipeline:
        """The captioning side of a text-to-image or editing pipeline that has a captioner (modules shared, not
        copied)."""
        if getattr(pipe, "captioner", None) is None:
            raise ValueError("this pipeline has no captioner; load a folder with a captioner/ component, or train "
                             "one with `python train.py captioner --pipeline DIR`")
        return cls(pipe.vqgan, pipe.text.text_tokenizer, pipe.captioner, text_config=pipe.text.config)

    @property
    def components(self) -> dict:
        return {"vqgan": self.vqgan, "text_tokenizer": self.text_tokenizer, "captioner": self.captioner}

    def save_pretrained(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write a captioning folder that ``from_pretrained`` loads: ``vqgan/``, ``text_tokenizer/`` (with
        ``text_config.json`` when the pipeline has one) and ``captioner/``. A folder that holds a text-to-image
        pipeline (``pipeline.json``, ``prior/``) is refused, nothing written: its prior needs the VQ-GAN and
        text side it has, so save that pipeline with ``TextToImagePipeline.save_pretrained`` instead. A folder
        holding a dataset or an imagefolder is refused unless ``overwrite=True``. Written beside the folder,
        then swapped in as a whole (``tessera.core.folders.replace_entries``)."""
        directory = Path(directory)
        other = [name for name in (PIPELINE_CONFIG_NAME, COMPONENTS["prior"]) if (directory / name).exists()]
        if other:
            raise FileExistsError(f"{directory} holds a text-to-image pipeline ({', '.join(other)}); writing a "
                                  "captioning folder over it would leave its prior with other components. Save to "
                                  "a new folder, or save the text-to-image pipeline itself.")
        check_output_folder(directory, what="a captioning folder", override="overwrite=True", overwrite=overwrite)

        def write(staging: Path) -> None:
            self.vqgan.save_pretrained(staging / COMPONENTS["vqgan"])
            swap_in_saved(self.text_tokenizer, staging / COMPONENTS["text_tokenizer"])
            if self.text_config is not None:
                self.text_config.save(staging / TEXT_CONFIG_NAME)
            self.captioner.save_pretrained(staging / CAPTIONER_FOLDER)

        entries = [COMPONENTS["vqgan"], COMPONENTS["text_tokenizer"], TEXT_CONFIG_NAME, CAPTIONER_FOLDER]
        return replace_entries(directory, entries, write)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> ImageToTextPipeline:
        """Move the modules; ``dtype`` applies to the captioner and the VQ-GAN's encoder (the quantizer stays
        float32)."""
        if device is not None:
            self.vqgan.to(device)
            self.captioner.to(device)
        if dtype is not None:
            self.vqgan.encoder.to(dtype)
            self.captioner.to(dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.captioner.device

    def encode(self, images) -> torch.Tensor:
        """Images (see the module docstring) -> codes (N, h, w) long, on the pipeline's device."""
        resolution = self.vqgan.config.resolution
        pixels = torch.stack([preprocess_image(read_image(image, self.max_image_pixels), resolution)
                              for image in image_list(images)])  # (N, 3, R, R) in [-1, 1]
        weight = self.vqgan.encoder.conv_in.weight
        with torch.inference_mode(), eval_mode(self.vqgan):
            latents = self.vqgan.encoder(self.vqgan.to_network_range(pixels).to(weight.device, weight.dtype))
            codes = self.vqgan.vectors_to_codes(latents.float())  # (N, h, w)
        return codes.clone()

    def __call__(self, images, *, num_beams: int = 1, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, num_return_sequences: int = 1,
                 max_new_tokens: int | None = None, guidance_scale: float | None = None,
                 generator: torch.Generator | None = None, batch_size: int = 64) -> ImageToTextOutput:
        """Captions for ``images``: greedy by default; ``num_beams`` > 1 for beam search, ``do_sample=True``
        for sampling (``temperature``, ``top_k``, ``top_p``)."""
        num_beams = positive_int(num_beams, "num_beams")
        num_return_sequences = positive_int(num_return_sequences, "num_return_sequences")
        batch_size = positive_int(batch_size, "batch_size")
        if max_new_tokens is not None:
            positive_int(max_new_tokens, "max_new_tokens")
        if not do_sample and num_return_sequences > num_beams:
            raise ValueError(f"num_return_sequences={num_return_sequences} needs do_sample=True or num_beams >= "
                             f"{num_return_sequences}")
        if not 0 < temperature < math.inf:  # also NaN
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if guidance_scale is not None and not 0 <= guidance_scale < math.inf:
            raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no image guidance), got {guidance_scale}")
        options = {"num_beams": num_beams, "do_sample": do_sample, "num_return_sequences": num_return_sequences,
                   "guidance_scale": guidance_scale}
        if do_sample:
            options.update(temperature=float(temperature), top_k=top_k or 0, top_p=1.0 if top_p is None else top_p)
        codes = self.encode(images)
        captions: list[str] = []
        with eval_mode(self.captioner, self.vqgan), seeded_from(generator, self.device), \
                tqdm(total=len(codes), desc="captioning", unit="img", **self._progress_bar_config) as progress:
            for start in range(0, len(codes), batch_size):
                sequences = self.captioner.generate(codes[start:start + batch_size], max_new_tokens=max_new_tokens,
                                                    **options)  # (B * num_return_sequences, T)
                ids = self.captioner.text_token_ids(sequences.cpu())
                captions += [text.strip() for text in self.text_tokenizer.batch_decode(ids, skip_special_tokens=True)]
                progress.update(min(batch_size, len(codes) - start))
        return ImageToTextOutput(captions=captions, codes=codes.cpu())

    def score(self, images, captions: str | list[str], batch_size: int = 64) -> torch.Tensor:
        """(N,) float32 on the CPU: the log-likelihood of caption i given image i (see the module docstring);
        one caption for all images, or one per image."""
        codes = self.encode(images)
        texts = prompt_list(captions, "captions")
        if len(texts) not in (1, len(codes)):
            raise ValueError(f"{len(texts)} captions for {len(codes)} images: give one, or one per image")
        return self.score_codes(codes, texts * len(codes) if len(texts) == 1 else texts, batch_size)

    def score_codes(self, codes: torch.Tensor, captions: list[str], batch_size: int = 64) -> torch.Tensor:
        """Like ``score`` for code grids (N, h, w) already made, e.g. a text-to-image pipeline's candidates."""
        captions = prompt_texts(captions, "caption")  # emoji spelled out, as the text conditioner reads prompts
        with eval_mode(self.captioner):
            scores = [self.captioner.log_likelihood(
                codes[start:start + batch_size], tokenize_captions(self.text_tokenizer, captions[start:start + batch_size]))
                for start in range(0, len(codes), batch_size)]
        return torch.cat(scores).cpu()
