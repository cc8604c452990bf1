"""Checks of the arguments every pipeline call shares (prompts, counts, sampling settings, the generator), with
errors that say what was expected, and ``GenerationRequest``: a call's arguments once checked."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from tessera.core.config import CheckpointMismatchError
from tessera.prior.config import GUIDANCE_SCHEDULES, SamplingConfig


def prompt_list(prompt: str | list[str], name: str) -> list[str]:
    if prompt is None or isinstance(prompt, bytes) or not isinstance(prompt, (str, Iterable)):
        hint = ' (use "" for an unconditional image)' if prompt is None else ""
        raise TypeError(f"{name} must be a string or a list of strings, got {type(prompt).__name__}{hint}")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError(f"{name} must be a string or a non-empty list of strings")
    wrong = sorted({type(p).__name__ for p in prompts if not isinstance(p, str)})
    if wrong:
        raise TypeError(f"{name} must be a string or a list of strings, got items of type {wrong}")
    return prompts


def positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def checked_sampling_options(defaults: SamplingConfig, prior_kind: str, *, guidance_scale: float | None = None,
                             temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                             num_steps: int | None = None, guidance_schedule: str | None = None,
                             choice_temperature: float | None = None) -> SamplingConfig:
    """The call's settings over ``defaults`` (those left at None), checked: the one check of sampling settings on
    the way from a call to ``prior.sample`` (``SamplingConfig.sample_kwargs``)."""
    guidance_scale = float(defaults.guidance_scale if guidance_scale is None else guidance_scale)
    temperature = float(defaults.temperature if temperature is None else temperature)
    top_k = defaults.top_k if top_k is None else top_k
    top_p = defaults.top_p if top_p is None else top_p
    if not 0 <= guidance_scale < math.inf:  # also NaN
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {guidance_scale}")
    if not 0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] (1 = off), got {top_p}")
    guidance_schedule = defaults.guidance_schedule if guidance_schedule is None else guidance_schedule
    if guidance_schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}, got {guidance_schedule!r}")
    if prior_kind != "masked":
        for name, value in (("num_steps", num_steps), ("choice_temperature", choice_temperature)):
            if value is not None:
                raise ValueError(f"{name} applies to the masked prior only; this pipeline's prior is {prior_kind} "
                                 "(one step per code).")
    choice_temperature = float(defaults.choice_temperature if choice_temperature is None else choice_temperature)
    if not 0 <= choice_temperature < math.inf:
        raise ValueError("choice_temperature must be a finite number >= 0 (0 = reveal by confidence alone), "
                         f"got {choice_temperature}")
    num_steps = positive_int(defaults.num_steps if num_steps is None else num_steps, "num_steps")
    return SamplingConfig(guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p,
                          num_steps=num_steps, guidance_schedule=guidance_schedule,
                          choice_temperature=choice_temperature)


def check_saved_sampling(sampling: SamplingConfig, prior_kind: str, path: Path) -> None:
    """The sampling defaults saved in ``path`` (``pipeline.json``), checked as a call's are; an error names the
    file, since every call would otherwise fail on them."""
    try:
        checked_sampling_options(sampling, prior_kind)
    except ValueError as error:
        raise CheckpointMismatchError(f"{path}: the saved sampling settings are invalid: {error}. Fix the "
                                      "\"sampling\" entry of that file.") from None


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """``generator``: None, or one ``torch.Generator`` on the pipeline's device type."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be one torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"the generator is on {generator.device} but the pipeline on {device}; "
                         f"pass torch.Generator(device={device.type!r})")


@dataclass
class GenerationRequest:
    """A call's checked arguments (``TextToImagePipeline.request``): what ``generate`` runs."""

    prompts: list[str]
    negatives: list[str] | None  # one per prompt; None without a negative prompt or without guidance
    num_images_per_prompt: int
    batch_size: int
    output_type: str
    sampling: SamplingConfig  # the call's sampling settings over the pipeline's defaults, checked
    generator: torch.Generator | None
    num_candidates: int = 1  # candidates drawn per image, the one the captioner scores best kept

    @property
    def num_images(self) -> int:
        return len(self.prompts) * self.num_images_per_prompt
