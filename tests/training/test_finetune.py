"""train.py finetune at tiny size: replay mixing, vocabulary growth, resume, and the refusals."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from tessera.captioner.model import Captioner, CaptionerConfig, caption_vocabulary
from tessera.pipelines.image_to_text import ImageToTextPipeline
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.training.batches import MixedBatchSampler, StepBatchSampler
from tessera.pipelines.training.captioner import add_captioner_to_pipeline
from tessera.pipelines.training.prior import train_prior
from tessera.pipelines.training.prior_options import FinetuneOptions
from tessera.prior.kinds import load_prior
from tessera.prior.text import TextConditioner, TextEncoderConfig
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.model import VQGAN
from tests.training.step_counter import counting_train_steps

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")

TINY_RUN = ["--max_train_steps", "4", "--checkpointing_steps", "2", "--validation_steps", "1000",
            "--train_batch_size", "8", "--num_validation_images", "4", "--report_to", "none",
            "--dataloader_num_workers", "0", "--set", "data.num_evaluation_captions=2"]


@pytest.fixture(scope="module")
def base_pipeline(tokens, tiny_config, tmp_path_factory) -> Path:
    """A tiny trained pipeline folder (English shapes captions), as ``train.py prior`` writes it."""
    vqgan, token_dir = tokens
    output = tmp_path_factory.mktemp("base")
    train_prior(tiny_config(output, vqgan, token_dir, "masked", max_train_steps=4))
    return output


def finetune(base: Path, output: Path, *extra: str) -> Path:
    train.main(["finetune", "--pipeline", str(base), "--data", "shapes:caption_style=fr,num_samples=48",
                "--output_dir", str(output), "--max_replay_samples", "32", *TINY_RUN, *extra])
    return output


def test_mixed_batches_take_the_replay_share_and_resume_exactly():
    def sampler(start: int) -> MixedBatchSampler:
        base = StepBatchSampler(10, 8, seed=3, start_step=start, end_step=6)
        return MixedBatchSampler(base, num_replay_rows=7, fraction=0.25)

    batches = list(sampler(0))
    assert len(batches) == 6
    for rows in batches:
        assert len(rows) == 8
        assert all(row < 10 for row in rows[:6]) and all(10 <= row < 17 for row in rows[6:])
    assert list(sampler(4)) == batches[4:]
    with pytest.raises(ValueError, match="leaves no new rows"):
        MixedBatchSampler(StepBatchSampler(10, 4, seed=0, start_step=0, end_step=1), 5, 0.9)


def test_finetune_grows_the_vocabulary_and_writes_a_pipeline(base_pipeline, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tessera.pipelines.training.loop")
    output = finetune(base_pipeline, tmp_path / "ft")
    assert "masked prior: 1 processes" in caplog.text  # the base pipeline's kind, not the flag's default
    assert "autoregressive prior" not in caplog.text
    pipeline = TextToImagePipeline.from_pretrained(output)
    base = TextConditioner.from_pretrained(base_pipeline)
    assert len(pipeline.text.text_tokenizer) > len(base.text_tokenizer)
    assert pipeline.text.encoder.get_input_embeddings().num_embeddings == len(pipeline.text.text_tokenizer)
    assert "Ġcercle" in pipeline.text.text_tokenizer.tokenize("un cercle")  # one token now
    assert "Ġcercle" not in base.text_tokenizer.tokenize("un cercle")
    english = "a small red circle on the left"
    assert pipeline.text.text_tokenizer(english)["input_ids"] == base.text_tokenizer(english)["input_ids"]
    # the replayed original data is the source recorded in the base pipeline, and stays recorded
    assert pipeline.training_data == "shapes:num_samples=96"
    replay_info = json.loads((output / "replay_tokens" / "tokenized_dataset.json").read_text())
    assert replay_info["num_rows"] == 32
    run = json.loads((output / "run_config.json").read_text())
    assert run["finetune"]["replay_fraction"] == 0.25 and run["finetune"]["new_text_tokens"] == 512
    assert run["data"]["evaluation_caption_styles"] == ["en", "fr"]
    last = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()][-1]
    assert {"val/evaluator_accuracy_test", "val/evaluator_accuracy_test_fr"} <= set(last)
    tuned = load_prior(output / "prior").state_dict()
    before = load_prior(base_pipeline / "prior").state_dict()
    assert any(not torch.equal(tuned[name], before[name]) for name in tuned)

    # data already tokenized with the pipeline's VQ-GAN is taken as is (nothing tokenized again)
    train.main(["finetune", "--pipeline", str(base_pipeline), "--tokens", str(output / "tokens"),
                "--replay_tokens", str(output / "replay_tokens"), "--output_dir", str(tmp_path / "from-tokens"),
                *TINY_RUN])
    assert not (tmp_path / "from-tokens" / "tokens").exists()
    assert TextToImagePipeline.from_pretrained(tmp_path / "from-tokens").text.text_tokenizer.get_vocab() == \
        pipeline.text.text_tokenizer.get_vocab()


def test_finetune_keeps_the_captioner_and_it_captions_and_scores_as_before(base_pipeline, tmp_path):
    """The VQ-GAN is unchanged and the text tokenizer only grows (old ids keep their meaning): the captioner is
    carried over as it is; it writes the same captions and scores old-vocabulary captions the same."""
    with_captioner = tmp_path / "base-with-captioner"
    base = TextToImagePipeline.from_pretrained(base_pipeline)
    torch.manual_seed(0)
    captions = ["a small red circle on the left", "a large blue square at the top"]
    config = CaptionerConfig(codebook_size=base.vqgan.codebook_size, grid_size=base.vqgan.config.latent_size,
                             code_dim=base.vqgan.config.z_channels, hidden_size=16, num_layers=1, num_heads=2,
                             intermediate_size=32, text_token_ids=caption_vocabulary(base.text.text_tokenizer, captions))
    add_captioner_to_pipeline(base_pipeline, Captioner(config).eval(), with_captioner)
    output = finetune(with_captioner, tmp_path / "ft")
    assert (output / "captioner").is_dir()
    tuned, before = TextToImagePipeline.from_pretrained(output), TextToImagePipeline.from_pretrained(with_captioner)
    assert len(tuned.text.text_tokenizer) > len(before.text.text_tokenizer)  # the vocabulary grew
    new, old = ImageToTextPipeline.from_pipe(tuned), ImageToTextPipeline.from_pipe(before)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    assert new(images).captions == old(images).captions
    torch.testing.assert_close(new.score(images, captions[0]), old.score(images, captions[0]))


def test_interrupted_finetune_resumes_to_the_same_weights(base_pipeline, tmp_path, monkeypatch):
    finetune(base_pipeline, tmp_path / "reference")
    with monkeypatch.context() as patch:
        counting_train_steps(patch, crash_after=2)  # after the step-2 checkpoint
        with pytest.raises(KeyboardInterrupt):
            finetune(base_pipeline, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "pipeline.json").exists()
    finetune(base_pipeline, tmp_path / "resumed", "--resume_from_checkpoint", "latest")
    expected = TextToImagePipeline.from_pretrained(tmp_path / "reference")
    actual = TextToImagePipeline.from_pretrained(tmp_path / "resumed")
    for mine, theirs in ((expected.prior, actual.prior), (expected.text, actual.text)):
        theirs_state = theirs.state_dict()
        for name, value in mine.state_dict().items():
            assert torch.equal(value, theirs_state[name]), name


def test_replay_needs_a_recorded_or_given_source(base_pipeline, tmp_path):
    config = json.loads((base_pipeline / "pipeline.json").read_text())
    config["training_data"] = None
    unrecorded = tmp_path / "unrecorded"
    TextToImagePipeline.from_training_output(base_pipeline).save_pretrained(unrecorded)
    (unrecorded / "pipeline.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="--replay_data"):
        finetune(unrecorded, tmp_path / "ft")
    finetune(unrecorded, tmp_path / "no-replay", "--replay_fraction", "0")
    assert not (tmp_path / "no-replay" / "replay_tokens").exists()
    with pytest.raises(ValueError, match="replay_tokens"):
        FinetuneOptions(pipeline="x", replay_fraction=0.5)
    with pytest.raises(SystemExit, match="must differ"):
        finetune(unrecorded, unrecorded)


def test_pipeline_whose_vqgan_does_not_fit_the_prior_is_refused(base_pipeline, tmp_path):
    broken = tmp_path / "broken"
    TextToImagePipeline.from_training_output(base_pipeline).save_pretrained(broken)
    config = vqgan_preset("tiny")
    config.quantizer.codebook_size = 32
    VQGAN(config).save_pretrained(broken / "vqgan")
    with pytest.raises(SystemExit, match="codebook"):  # one line, no traceback: train.py main
        finetune(broken, tmp_path / "ft", "--replay_fraction", "0")


def test_finetune_with_a_frozen_pretrained_encoder_trains_only_the_prior(tokens, tiny_config, minilm, tmp_path):
    vqgan, token_dir = tokens
    config = tiny_config(tmp_path / "base", vqgan, token_dir, "masked", max_train_steps=2)
    config.text = TextEncoderConfig(pretrained=minilm, max_length=16)
    train_prior(config)
    output = finetune(tmp_path / "base", tmp_path / "ft")
    base, tuned = TextToImagePipeline.from_pretrained(tmp_path / "base"), TextToImagePipeline.from_pretrained(output)
    assert json.loads((output / "run_config.json").read_text())["finetune"]["new_text_tokens"] == 0
    assert len(tuned.text.text_tokenizer) == len(base.text.text_tokenizer)
    tuned_text = tuned.text.state_dict()
    assert all(torch.equal(value, tuned_text[name]) for name, value in base.text.state_dict().items())
    tuned_prior = tuned.prior.state_dict()
    assert any(not torch.equal(value, tuned_prior[name]) for name, value in base.prior.state_dict().items())


@pytest.mark.e2e
def test_finetune_under_torchrun_with_two_processes(base_pipeline, tmp_path):
    """The multi-process path on CPU: two processes (gloo), the export split between them, DDP training, one
    save. (``accelerate launch --cpu --num_processes 2`` starts one process: accelerate's multi-CPU launch
    needs MPI; torchrun is the CPU launcher.)"""
    root = Path(__file__).resolve().parents[2]
    output = tmp_path / "launched"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "train.py", "finetune",
               "--pipeline", str(base_pipeline), "--data", "shapes:caption_style=fr,num_samples=48",
               "--output_dir", str(output), "--max_replay_samples", "32", *TINY_RUN]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    launched = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("saved the fine-tuned pipeline") == 1  # the main process only
    assert "2 processes" in launched.stderr  # the run knew it was one of two
    pipeline = TextToImagePipeline.from_pretrained(output)
    assert "Ġcercle" in pipeline.text.text_tokenizer.tokenize("un cercle")
    assert json.loads((output / "checkpoints" / "checkpoint-4" / "training_state.json").read_text())["step"] == 4


def test_finetune_adds_normalisation_to_a_pipeline_saved_without_it(base_pipeline, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(base_pipeline, old)
    text = TextConditioner.from_pretrained(old)
    text.text_tokenizer.backend_tokenizer.normalizer = None  # as text sides were saved before normalisation existed
    text.config.normalize = False
    text.save_pretrained(old)
    before = TextToImagePipeline.from_pretrained(old).text
    assert not torch.equal(before.tokenize(["A Small Red Circle."])["input_ids"],
                           before.tokenize(["a small red circle"])["input_ids"])  # read as typed
    tuned = TextToImagePipeline.from_pretrained(finetune(old, tmp_path / "ft")).text
    assert tuned.config.normalize
    assert torch.equal(tuned.tokenize(["A Small Red Circle."])["input_ids"],
                       tuned.tokenize(["a small red circle"])["input_ids"])
