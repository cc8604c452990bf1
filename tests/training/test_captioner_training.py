"""train.py captioner at tiny size: the loss falls and validation reports exact match on the shapes, the output
loads (alone, or as a pipeline with a captioner added), an interrupted run resumes to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tessera.captioner.model import Captioner, CaptionerConfig
from tessera.pipelines.image_to_text import ImageToTextPipeline
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.training.captioner import (
    GUIDANCE_CANDIDATES,
    CaptionerDataOptions,
    CaptionerRunConfig,
    CaptionerStage,
    code_vectors,
    train_captioner,
)
from tessera.pipelines.training.config import TrainingConfig
from tessera.prior.text import TextConditioner
from tessera.tokenizer.model import VQGAN
from tests.pipelines.tiny_pipelines import CAPTIONS, TEXT, tiny_prior
from tests.training.step_counter import counting_train_steps

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")


def tiny_run(output_dir: Path, vqgan: Path, tokens: Path, pipeline: Path | None = None, **training
             ) -> CaptionerRunConfig:
    defaults = dict(output_dir=str(output_dir), train_batch_size=16, max_train_steps=30, learning_rate=3e-3,
                    lr_warmup_steps=1, checkpointing_steps=1000, validation_steps=30, num_validation_images=16,
                    dataloader_num_workers=0, report_to="none", adam_beta1=0.9, adam_beta2=0.95)
    return CaptionerRunConfig(
        captioner=CaptionerConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32),
        data=CaptionerDataOptions(tokens=str(tokens), vqgan=str(vqgan), pipeline=str(pipeline) if pipeline else None,
                                  num_evaluation_images=4, text_vocab_size=300),
        training=TrainingConfig(**{**defaults, **training}))


def test_training_reduces_loss_and_saves_a_captioning_folder(tokens, tmp_path):
    vqgan, token_dir = tokens
    train_captioner(tiny_run(tmp_path, vqgan, token_dir))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss/train"] for line in lines if "loss/train" in line]
    assert losses[-1] < losses[0]
    validation = [line for line in lines if "val/loss" in line][-1]
    assert {"val/exact_match_test", "val/exact_match_holdout", "val/token_accuracy"} <= set(validation)
    assert list((tmp_path / "samples").glob("captions-*.txt")) and list((tmp_path / "samples").glob("captions-*.png"))
    captioning = ImageToTextPipeline.from_pretrained(tmp_path)
    assert len(captioning(torch.zeros(2, 3, 8, 8)).captions) == 2
    assert torch.equal(captioning.captioner.code_features, code_vectors(captioning.vqgan))  # the VQ-GAN's own
    choice = json.loads((tmp_path / "guidance_choice.json").read_text())  # chosen on the validation scenes
    assert captioning.captioner.config.guidance_scale == choice["guidance_scale"] in GUIDANCE_CANDIDATES
    assert "val/exact_match_holdout_guidance_2" in choice


def test_with_a_pipeline_the_output_is_that_pipeline_with_a_captioner(tokens, tmp_path):
    vqgan_dir, token_dir = tokens
    torch.manual_seed(0)
    source = TextToImagePipeline.from_components(VQGAN.from_pretrained(vqgan_dir),
                                                 TextConditioner.from_captions(CAPTIONS, TEXT), tiny_prior("masked"))
    source.save_pretrained(tmp_path / "source", dtype=torch.float16)
    train_captioner(tiny_run(tmp_path / "run", vqgan_dir, token_dir, pipeline=tmp_path / "source", max_train_steps=5))
    loaded = TextToImagePipeline.from_pretrained(tmp_path / "run")
    assert loaded.captioner is not None
    stored = Captioner.from_pretrained(tmp_path / "run" / "captioner")
    assert stored.config.text_token_ids == loaded.captioner.config.text_token_ids
    for name in ("prior/model.safetensors", "vqgan/model.safetensors", "text_encoder/model.safetensors"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "source" / name).read_bytes(), name
    assert len(loaded("a small red circle", num_candidates=2, output_type="codes").codes) == 1


def test_resume_continues_the_same_run(tokens, tmp_path, monkeypatch):
    vqgan, token_dir = tokens

    def config(name: str, **extra) -> CaptionerRunConfig:
        return tiny_run(tmp_path / name, vqgan, token_dir, max_train_steps=16, checkpointing_steps=8,
                        validation_steps=1000, **extra)

    train_captioner(config("reference"))
    with monkeypatch.context() as patch:
        counting_train_steps(patch, crash_after=8, stage=CaptionerStage)  # after the step-8 checkpoint
        with pytest.raises(KeyboardInterrupt):
            train_captioner(config("resumed"))
    assert not (tmp_path / "resumed" / "captioner").exists()
    train_captioner(config("resumed", resume_from_checkpoint="latest"))
    expected = Captioner.from_pretrained(tmp_path / "reference" / "captioner").state_dict()
    actual = Captioner.from_pretrained(tmp_path / "resumed" / "captioner").state_dict()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
