"""The text-to-image pipeline: text tokenizer + text encoder + prior + VQ-GAN image tokenizer, inference only.

```python
import torch
from tessera.pipelines.text_to_image import TextToImagePipeline

pipe = TextToImagePipeline.from_pretrained("models/tessera-shapes")        # CPU, float32
pipe = pipe.to("cuda", torch.bfloat16)                                      # optional
out = pipe(["a small red circle on the left", ""], num_images_per_prompt=4,
           generator=torch.Generator("cuda").manual_seed(0))
out.images[0].save("out.png")                                               # 8 PIL images, prompt-major
out.codes                                                                   # (8, h, w) long, on the CPU
```

A saved pipeline is one folder, safetensors + JSON only (``save_pretrained`` / ``from_pretrained``)::

    pipeline.json       format_version, tessera_version, prior_kind, sampling defaults, component folders,
                        training_data (the image-caption source of the prior's training data, when known)
    vqgan/              config.json + model.safetensors: the VQ-GAN image tokenizer
    prior/              config.json + model.safetensors
    text_encoder/       the transformers text encoder (config.json + model.safetensors)
    text_tokenizer/     the text tokenizer (tokenizer.json ...)
    text_config.json    TextEncoderConfig (the text side is saved by ``TextConditioner.save_pretrained``)

Loading is strict (``pipelines.pipeline_folder``): a missing component or file is a ``FileNotFoundError`` naming
it; components that do not fit together (codebook size, grid, context width, kind; a VQ-GAN other than the one
the prior records, ``vqgan_sha256`` in ``prior/config.json``) and damaged files are a ``CheckpointMismatchError``
naming them. ``save_pretrained`` writes beside the folder and swaps the components in, ``pipeline.json`` last;
``from_training_output`` loads a folder of components without ``pipeline.json`` (``.save_pretrained`` adds it).

Behaviour on unusual input:

- An empty (or whitespace-only) prompt is unconditional: its row gets the prior's learned null context, the one
  used for caption dropout in training, not the encoding of "". The same holds for an empty negative prompt.
- A prompt longer than the text context is truncated at ``max_length`` text tokens; ``prior.text`` logs a warning.
- The ``len(prompts) * num_images_per_prompt`` images (prompt-major: prompt 0's images first) are made in chunks
  of ``batch_size``: text encoding, sampling and decoding run per chunk and the results are gathered on the CPU,
  so the working memory depends on ``batch_size``, not on the number of prompts (the outputs themselves grow
  with N: use ``output_type="codes"`` for the smallest).
- ``negative_prompt``: one string (for every prompt) or a list of one per prompt; another length is a
  ``ValueError``. It replaces the null context in classifier-free guidance, so it has no effect (and a warning
  is logged) at ``guidance_scale=1``.
- Sampling settings left at ``None`` take the pipeline's defaults (``pipeline.json``); ``top_k=0`` turns top-k
  off and ``top_p=1`` turns top-p off. A negative ``guidance_scale`` or ``temperature``, ``top_p`` outside
  (0, 1], ``num_images_per_prompt`` or ``batch_size`` below 1, and ``num_steps`` for an autoregressive prior
  (which takes one step per code) raise ``ValueError`` before any work is done.
- ``generator``: one ``torch.Generator`` on the pipeline's device, consumed chunk by chunk in order. The same
  seed, inputs and ``batch_size`` give the same codes (also in another process, on the CPU); another
  ``batch_size`` gives other (equally valid) samples. ``None`` uses torch's global RNG.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tessera.captioner.model import Captioner
from tessera.core.version import tessera_version
from tessera.models import resolve_pipeline_folder
from tessera.pipelines.call_checks import (
    GenerationRequest,
    check_generator,
    check_saved_sampling,
    checked_sampling_options,
    positive_int,
    prompt_list,
)
from tessera.pipelines.outputs import (
    OUTPUT_TYPES,
    TextToImageOutput,
    eval_mode,
    gather_images,
    postprocess_images,
)
from tessera.pipelines.pipeline_folder import (
    CAPTIONER_FOLDER,
    COMPONENTS,
    OPTIONAL_COMPONENTS,
    PIPELINE_CONFIG_NAME,
    PipelineConfig,
    check_captioner,
    check_components,
    check_save_target,
    load_captioner,
    load_components,
    write_pipeline_folder,
)
from tessera.pipelines.reranking import SampleChunk, best_of_candidates
from tessera.prior.config import SamplingConfig
from tessera.prior.context import TextContext
from tessera.prior.text import TextConditioner
from tessera.prior.transformer import GridPrior
from tessera.tokenizer.model import VQGAN

logger = logging.getLogger(__name__)

FinishChunk = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def select_rows(context: TextContext, index: torch.Tensor) -> TextContext:
    index = index.to(context.mask.device)
    return TextContext(context.hidden_states[index], context.mask[index])  # (len(index), L, D)


class TextToImagePipeline:
    """Prompts -> text context -> ``prior.sample`` -> codes -> ``vqgan`` decoder -> images."""

    def __init__(self, vqgan: VQGAN, text: TextConditioner, prior: GridPrior,
                 sampling: SamplingConfig | None = None, training_data: str | None = None,
                 captioner: Captioner | None = None, *, allow_vqgan_mismatch: bool = False) -> None:
        check_components(vqgan, text, prior, allow_vqgan_mismatch=allow_vqgan_mismatch)
        if captioner is not None:
            check_captioner(vqgan, captioner)
        self.vqgan, self.text, self.prior, self.captioner = vqgan, text, prior, captioner
        self.sampling = copy.deepcopy(sampling) if sampling is not None else SamplingConfig()
        self.training_data = training_data
        self._progress_bar_config: dict = {}

    @classmethod
    def from_components(cls, vqgan: VQGAN, text: TextConditioner, prior: GridPrior,
                        sampling: SamplingConfig | None = None, training_data: str | None = None,
                        captioner: Captioner | None = None, *, allow_vqgan_mismatch: bool = False
                        ) -> TextToImagePipeline:
        """A pipeline of modules already in memory (e.g. the prior trainer's EMA weights); modules are shared,
        not copied, and their training mode is restored after each call. A VQ-GAN other than the one the prior
        recorded (``PriorConfig.vqgan_sha256``) is refused unless ``allow_vqgan_mismatch=True``."""
        return cls(vqgan, text, prior, sampling, training_data, captioner, allow_vqgan_mismatch=allow_vqgan_mismatch)

    @property
    def components(self) -> dict[str, torch.nn.Module | None]:
        """Every component by name (``captioner`` None when there is none): ``from_components(**components)``
        rebuilds the pipeline, and every path that makes a pipeline from another keeps them all."""
        return {"vqgan": self.vqgan, "text": self.text, "prior": self.prior, "captioner": self.captioner}

    @classmethod
    def from_pipe(cls, pipe, *, allow_vqgan_mismatch: bool = False, **replacements) -> TextToImagePipeline:
        """A pipeline on the modules of ``pipe`` (a text-to-image or editing pipeline): every component is
        shared, not copied, except those given in ``replacements`` (e.g. ``prior=other_prior``,
        ``captioner=None`` to leave it out); the sampling defaults are copied."""
        source = getattr(pipe, "pipe", pipe)  # an editing pipeline wraps a text-to-image one
        unknown = sorted(set(replacements) - set(source.components))
        if unknown:
            raise TypeError(f"from_pipe got unknown components {unknown}; components are {sorted(source.components)}")
        return cls.from_components(**{**source.components, **replacements}, sampling=source.sampling,
                                   training_data=source.training_data, allow_vqgan_mismatch=allow_vqgan_mismatch)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, allow_vqgan_mismatch: bool = False
                        ) -> TextToImagePipeline:
        """Load a folder written by ``save_pretrained`` (local only), strictly; then ``.to(device, dtype)``.
        ``directory`` may also name a shipped pipeline (``tessera.models``, e.g. ``"tessera-shapes"``).
        ``allow_vqgan_mismatch=True`` accepts a ``vqgan/`` other than the one the prior was trained with."""
        directory = resolve_pipeline_folder(directory)
        if directory.is_dir() and not (directory / PIPELINE_CONFIG_NAME).is_file():
            hint = (" It holds a prior-training output: load it with TextToImagePipeline.from_training_output, "
                    "and save_pretrained writes the missing file." if (directory / COMPONENTS["prior"]).is_dir()
                    else "")
            raise FileNotFoundError(f"{directory} has no {PIPELINE_CONFIG_NAME}, so it is not a saved pipeline "
                                    f"(or its save was interrupted).{hint}")
        vqgan, text, prior = load_components(directory)
        config = PipelineConfig.read(directory)
        check_saved_sampling(config.sampling, config.prior_kind, directory / PIPELINE_CONFIG_NAME)
        check_components(vqgan, text, prior, prior_kind=config.prior_kind, source=str(directory),
                         allow_vqgan_mismatch=allow_vqgan_mismatch)
        captioner = None
        if "captioner" in config.components:
            captioner = load_captioner(directory)
            if captioner is None:
                raise FileNotFoundError(f"{directory / PIPELINE_CONFIG_NAME} lists a captioner but the folder has no "
                                        f"{CAPTIONER_FOLDER}/")
            check_captioner(vqgan, captioner, source=str(directory))
        return cls(vqgan, text, prior, config.sampling, config.training_data, captioner,
                   allow_vqgan_mismatch=allow_vqgan_mismatch).to(device, dtype)

    @classmethod
    def from_training_output(cls, directory: str | os.PathLike, *, sampling: SamplingConfig | None = None,
                             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
                             ) -> TextToImagePipeline:
        """Load a folder of pipeline components without ``pipeline.json``. Sampling defaults:
        ``sampling``, else the run's validation settings from ``run_config.json``, else ``SamplingConfig()``."""
        directory = Path(directory)
        vqgan, text, prior = load_components(directory)
        run_config = directory / "run_config.json"
        if sampling is None and run_config.is_file():
            recorded = json.loads(run_config.read_text(encoding="utf-8")).get("sampling")
            sampling = SamplingConfig.from_dict(recorded) if recorded is not None else None
        return cls(vqgan, text, prior, sampling).to(device, dtype)

    @property
    def config(self) -> PipelineConfig:
        components = {**COMPONENTS, **(OPTIONAL_COMPONENTS if self.captioner is not None else {})}
        return PipelineConfig(prior_kind=self.prior.config.kind, sampling=copy.deepcopy(self.sampling),
                              components=components, tessera_version=tessera_version(),
                              training_data=self.training_data)

    def save_pretrained(self, directory: str | os.PathLike, *, dtype: torch.dtype | None = None,
                        remove_missing_components: bool = False, overwrite: bool = False) -> Path:
        """Write the pipeline folder; weights in their current dtype, or cast to ``dtype`` (e.g.
        ``torch.float16`` halves the folder; ``from_pretrained`` loads into float32 unless told otherwise).

        Nothing is lost (``pipelines.pipeline_folder.check_save_target``): a folder holding something else (an
        imagefolder, a dataset) is refused (``FolderInUseError``) unless ``overwrite=True``; a folder holding an
        optional component this pipeline lacks (a ``captioner/``) unless ``remove_missing_components=True``.
        The save is atomic as a whole: written beside the folder, then swapped in, so a failure leaves the
        folder's old pipeline loadable (the error says so); other files in the folder are left alone."""
        if dtype is not None and dtype != self.dtype:
            return copy.deepcopy(self).to(dtype=dtype).save_pretrained(
                directory, remove_missing_components=remove_missing_components, overwrite=overwrite)
        directory = Path(directory)
        check_save_target(directory, has_captioner=self.captioner is not None,
                          remove_missing_components=remove_missing_components, overwrite=overwrite)

        def write(staging: Path) -> None:
            self.vqgan.save_pretrained(staging / COMPONENTS["vqgan"])
            self.prior.save_pretrained(staging / COMPONENTS["prior"])
            self.text.save_pretrained(staging)
            if self.captioner is not None:
                self.captioner.save_pretrained(staging / CAPTIONER_FOLDER)
            self.config.save(staging / PIPELINE_CONFIG_NAME)

        return write_pipeline_folder(directory, write)

    def to(self, device: str | torch.device | torch.dtype | None = None,
           dtype: torch.dtype | None = None) -> TextToImagePipeline:
        """Move every module to ``device``; ``dtype`` (e.g. ``torch.bfloat16`` on CUDA) applies to the prior,
        the text encoder and the VQ-GAN's encoder and decoder. The quantizer stays in float32."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        moves = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
        self.prior.to(**moves)
        self.text.to(**moves)
        if self.captioner is not None:
            self.captioner.to(**moves)
        if device is not None:
            self.vqgan.to(device)
        if dtype is not None:
            self.vqgan.encoder.to(dtype)
            self.vqgan.decoder.to(dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.prior.null_hidden_states.device

    @property
    def dtype(self) -> torch.dtype:
        return self.prior.null_hidden_states.dtype

    def set_progress_bar_config(self, **kwargs) -> None:
        """Options for the tqdm bar of each call, e.g. ``disable=True`` (as in diffusers)."""
        self._progress_bar_config = dict(kwargs)

    def encode_prompts(self, prompts: list[str]) -> TextContext:
        """One context row per prompt: the text encoder's output, or the prior's null context for an empty
        (or whitespace-only) prompt."""
        real = [i for i, prompt in enumerate(prompts) if prompt.strip()]
        if not real:
            return self.prior.null_context(len(prompts))
        encoded = self.text([prompts[i] for i in real])  # (R, L, D)
        if len(real) == len(prompts):
            return encoded
        null = self.prior.null_context(1).to(encoded.mask.device, encoded.hidden_states.dtype)
        both = TextContext.cat([encoded, null])  # (R + 1, L', D): the null row last
        source = torch.full((len(prompts),), len(real), dtype=torch.long)
        source[real] = torch.arange(len(real))
        return select_rows(both, source)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> codes (B, h, w) long, on the pipeline's device; the inverse of
        ``decode``. The encoder runs in its own dtype, the quantizer in float32."""
        weight = self.vqgan.encoder.conv_in.weight
        self.vqgan.check_images(images)
        with torch.inference_mode(), eval_mode(self.vqgan):
            latents = self.vqgan.encoder(self.vqgan.to_network_range(images).to(weight.device, weight.dtype))
            codes = self.vqgan.vectors_to_codes(latents.float())  # (B, h, w)
        return codes.clone()  # an ordinary tensor

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) -> images (B, 3, H, W), float32 in [-1, 1]; the decoder runs in its own dtype."""
        vectors = self.vqgan.codes_to_vectors(codes.to(self.vqgan.decoder.conv_out.weight.device))  # float32
        images = self.vqgan.decoder(vectors.to(self.vqgan.decoder.conv_out.weight.dtype))  # (B, 3, H, W)
        return self.vqgan.from_network_range(images.float()).clamp(-1, 1)

    def sampling_options(self, guidance_scale: float | None = None, temperature: float | None = None,
                         top_k: int | None = None, top_p: float | None = None, num_steps: int | None = None,
                         guidance_schedule: str | None = None,
                         choice_temperature: float | None = None) -> SamplingConfig:
        """The call's sampling settings over the pipeline's defaults (``self.sampling``), checked."""
        return checked_sampling_options(self.sampling, self.prior.config.kind, guidance_scale=guidance_scale,
                                        temperature=temperature, top_k=top_k, top_p=top_p, num_steps=num_steps,
                                        guidance_schedule=guidance_schedule, choice_temperature=choice_temperature)

    def request(self, prompt: str | list[str], negative_prompt: str | list[str] | None = None,
                num_images_per_prompt: int = 1, *, guidance_scale: float | None = None,
                temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                num_steps: int | None = None, generator: torch.Generator | None = None,
                output_type: str = "pil", batch_size: int = 64, num_candidates: int = 1,
                guidance_schedule: str | None = None, choice_temperature: float | None = None) -> GenerationRequest:
        """The arguments of a call, checked (see the module docstring), as a ``GenerationRequest``; every
        pipeline built on this one (``pipelines.editing``) checks its prompts and settings here."""
        prompts = prompt_list(prompt, "prompt")
        negatives = None if negative_prompt is None else prompt_list(negative_prompt, "negative_prompt")
        if negatives is not None and len(negatives) not in (1, len(prompts)):
            raise ValueError(f"negative_prompt has {len(negatives)} entries; give one, or one per prompt "
                             f"({len(prompts)})")
        per_prompt = positive_int(num_images_per_prompt, "num_images_per_prompt")
        batch_size = positive_int(batch_size, "batch_size")
        if positive_int(num_candidates, "num_candidates") > 1 and self.captioner is None:
            raise ValueError("num_candidates > 1 reranks candidates with the captioner, and this pipeline has none; "
                             "add one with `python train.py captioner --pipeline DIR`")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        sampling = self.sampling_options(guidance_scale, temperature, top_k, top_p, num_steps,
                                         guidance_schedule, choice_temperature)
        check_generator(generator, self.device)
        if negatives is not None and not sampling.guided:
            logger.warning("negative_prompt has no effect at guidance_scale=1 (no classifier-free guidance).")
            negatives = None
        if negatives is not None and len(negatives) == 1:
            negatives = negatives * len(prompts)
        return GenerationRequest(prompts, negatives, per_prompt, batch_size, output_type, sampling, generator,
                                 num_candidates)

    def __call__(self, prompt: str | list[str], negative_prompt: str | list[str] | None = None,
                 num_images_per_prompt: int = 1, *, guidance_scale: float | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 num_steps: int | None = None, generator: torch.Generator | None = None,
                 output_type: str = "pil", batch_size: int = 64, num_candidates: int = 1,
                 guidance_schedule: str | None = None, choice_temperature: float | None = None) -> TextToImageOutput:
        """Images for ``prompt`` (a string or a list): see the module docstring for the behaviour on unusual
        input. ``output_type``: "pil" (list of RGB images), "np" (float32 (N, H, W, 3) in [0, 1]), "pt"
        (float32 (N, 3, H, W) in [-1, 1]) or "codes" (no decoding; ``images`` is None). ``num_candidates`` > 1
        (a folder with a captioner): draw that many candidates per image and keep the one whose prompt the
        captioner finds most likely. ``guidance_schedule``, ``choice_temperature``: see ``SamplingConfig``."""
        return self.generate(self.request(
            prompt, negative_prompt, num_images_per_prompt, guidance_scale=guidance_scale, temperature=temperature,
            top_k=top_k, top_p=top_p, num_steps=num_steps, generator=generator, output_type=output_type,
            batch_size=batch_size, num_candidates=num_candidates, guidance_schedule=guidance_schedule,
            choice_temperature=choice_temperature))

    def generate(self, request: GenerationRequest, sample_chunk: SampleChunk | None = None,
                 finish_chunk: FinishChunk | None = None, desc: str = "generating") -> TextToImageOutput:
        """Run a checked request in chunks of ``request.batch_size`` rows (prompt-major): encode the chunk's
        prompts (and negative prompts), ``sample_chunk(context, negative_context, rows)`` -> codes (B, h, w)
        (default: ``prior.sample`` with the request's options and generator), decode, ``finish_chunk(images,
        rows)`` (images (B, 3, H, W) in [-1, 1] -> the same, e.g. pasted into a larger canvas), postprocess.
        ``rows`` (B,) are the chunk's output row indices."""
        if sample_chunk is None:
            def sample_chunk(context: TextContext, negative: TextContext | None, rows: torch.Tensor) -> torch.Tensor:
                return self.prior.sample(context, negative_context=negative, generator=request.generator,
                                         **request.sampling.sample_kwargs(self.prior.config.kind))
        if request.num_candidates > 1:
            sample_chunk = best_of_candidates(
                sample_chunk, request.num_candidates, lambda row: request.prompts[row // request.num_images_per_prompt],
                self.captioner,
                self.text.text_tokenizer)

        prompts, negatives, per_prompt = request.prompts, request.negatives, request.num_images_per_prompt
        total = request.num_images
        codes, images = [], []
        scorers = [self.captioner] if self.captioner is not None else []
        with torch.inference_mode(), eval_mode(self.text, self.vqgan, *scorers), \
                tqdm(total=total, desc=desc, unit="img", **self._progress_bar_config) as progress:
            for start in range(0, total, request.batch_size):
                stop = min(start + request.batch_size, total)
                first, last = start // per_prompt, (stop - 1) // per_prompt + 1  # prompts of this chunk
                rows = torch.arange(start, stop)  # (B,) output rows
                in_chunk = rows // per_prompt - first  # (B,) row -> prompt in the chunk
                context = select_rows(self.encode_prompts(prompts[first:last]), in_chunk)
                negative = (None if negatives is None
                            else select_rows(self.encode_prompts(negatives[first:last]), in_chunk))
                chunk = sample_chunk(context, negative, rows)
                codes.append(chunk.cpu())  # (B, h, w)
                if request.output_type != "codes":
                    decoded = self.decode(chunk)  # (B, 3, H, W)
                    if finish_chunk is not None:
                        decoded = finish_chunk(decoded, rows)
                    images.append(postprocess_images(decoded, request.output_type))
                progress.update(stop - start)
        return TextToImageOutput(images=gather_images(images, request.output_type), codes=torch.cat(codes),
                                 prompts=[p for p in prompts for _ in range(per_prompt)])

    postprocess = staticmethod(postprocess_images)  # (B, 3, H, W) in [-1, 1] -> the output type
