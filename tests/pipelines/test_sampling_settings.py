"""Sampling settings are one typed ``SamplingConfig`` from the call (or ``tessera generate``, or pipeline.json)
to ``prior.sample``: ``guidance_schedule`` and ``choice_temperature`` reach the sampler from each, are checked
once, and guidance is decided in one place (``uses_guidance``)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tessera.pipelines.cli import command as cli
from tessera.pipelines.text_to_image import PIPELINE_CONFIG_NAME, TextToImagePipeline
from tessera.prior.config import SamplingConfig, uses_guidance
from tests.pipelines.tiny_pipelines import PROMPTS


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["autoregressive", "masked"])
def test_a_call_reaches_the_sampler_with_its_schedule_and_choice_temperature(pipes, kind):
    pipe = pipes[kind]
    extra = {"choice_temperature": 0.0, "num_steps": 3} if kind == "masked" else {}
    output = pipe(PROMPTS, num_images_per_prompt=8, output_type="codes", generator=seeded(2), guidance_schedule="cosine",
                  guidance_scale=5.0, **extra)
    with torch.inference_mode():
        context = pipe.text(PROMPTS).repeat_interleave(8)
    expected = pipe.prior.sample(context, guidance_scale=5.0, guidance_schedule="cosine", generator=seeded(2),
                                 **extra)
    assert torch.equal(output.codes, expected)
    defaults = pipe(PROMPTS, num_images_per_prompt=8, output_type="codes", generator=seeded(2), guidance_scale=5.0,
                    num_steps=extra.get("num_steps"))
    assert not torch.equal(defaults.codes, output.codes)  # the settings changed the draw


def test_the_settings_are_checked_once_with_clear_errors(pipes):
    with pytest.raises(ValueError, match="guidance_schedule must be one of"):
        pipes["masked"]("a red circle", guidance_schedule="steep")
    for wrong in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="choice_temperature must be a finite number >= 0"):
            pipes["masked"]("a red circle", choice_temperature=wrong)
    with pytest.raises(ValueError, match="choice_temperature applies to the masked prior only"):
        pipes["autoregressive"]("a red circle", choice_temperature=1.0)
    settings = pipes["masked"].sampling_options(guidance_scale=1.0, guidance_schedule="linear")
    assert isinstance(settings, SamplingConfig) and not settings.guided and uses_guidance(1.5)
    assert set(settings.sample_kwargs("masked")) == {"guidance_scale", "guidance_schedule", "temperature", "top_k",
                                                     "top_p", "num_steps", "choice_temperature"}
    assert "choice_temperature" not in settings.sample_kwargs("autoregressive")


def test_pipeline_json_carries_them_and_old_files_load_with_the_old_behaviour(pipes, tmp_path):
    pipe = pipes["masked"]
    changed = TextToImagePipeline.from_components(
        pipe.vqgan, pipe.text, pipe.prior, dataclasses.replace(pipe.sampling, guidance_schedule="linear",
                                                               choice_temperature=0.0))
    folder = changed.save_pretrained(tmp_path / "linear")
    saved = json.loads((folder / PIPELINE_CONFIG_NAME).read_text())["sampling"]
    assert saved["guidance_schedule"] == "linear" and saved["choice_temperature"] == 0.0
    loaded = TextToImagePipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    assert loaded("a red circle", output_type="codes", generator=seeded(1)).codes.equal(
        pipe("a red circle", output_type="codes", generator=seeded(1), guidance_schedule="linear",
             choice_temperature=0.0).codes)
    for key in ("guidance_schedule", "choice_temperature"):  # a pipeline.json written before they existed
        del saved[key]
    assert SamplingConfig.from_dict(saved) == dataclasses.replace(pipe.sampling, guidance_scale=saved["guidance_scale"])


def test_tessera_generate_takes_them(pipes, tmp_path):
    folder = pipes["masked"].save_pretrained(tmp_path / "masked")
    out = tmp_path / "out"
    assert cli.main(["generate", "a small red circle", "--pipeline", str(folder), "-o", str(out),
                     "--guidance_schedule", "cosine", "--choice_temperature", "0", "--no_progress"]) == 0
    record = json.loads((out / "generation.json").read_text())
    assert record["sampling"]["guidance_schedule"] == "cosine" and record["sampling"]["choice_temperature"] == 0.0
