"""Training the VQ-GAN: the loss falls, the GAN switches on at its start step, resume continues the same run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tessera.pipelines.training.checkpoints import TrainingDivergedError
from tessera.pipelines.training.config import TrainingConfig, apply_overrides
from tessera.pipelines.training.vqgan import DataOptions, TokenizerRunConfig, VQGANStage, train_tokenizer
from tessera.tokenizer.config import vqgan_preset

ROOT = Path(__file__).resolve().parents[2]
TINY_DATA = "shapes:num_samples=256"


def tiny_run(output_dir: Path, **overrides) -> TokenizerRunConfig:
    training = dict(output_dir=str(output_dir), train_batch_size=8, max_train_steps=30, learning_rate=2e-3,
                    lr_warmup_steps=1, checkpointing_steps=1000, validation_steps=1000, num_validation_images=16,
                    dataloader_num_workers=0, report_to="none")
    config = TokenizerRunConfig(
        model=vqgan_preset("tiny"),
        data=DataOptions(data=TINY_DATA),
        training=TrainingConfig(**{**training, **overrides}),
    )
    config.discriminator.base_channels = 8
    config.discriminator.num_layers = 1
    return config


def metric_lines(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_few_steps_reduce_reconstruction_loss(tmp_path):
    config = tiny_run(tmp_path, max_train_steps=60)
    config.loss.disc_start = 40
    train_tokenizer(config)
    lines = [line for line in metric_lines(tmp_path) if "loss/reconstruction" in line]
    assert lines[-1]["loss/reconstruction"] < 0.7 * lines[0]["loss/reconstruction"]
    # the GAN terms appear only from disc_start on
    assert all("loss/discriminator" not in line for line in lines if line["step"] <= 40)
    assert all("loss/discriminator" in line for line in lines if line["step"] > 40)
    validation = [line for line in metric_lines(tmp_path) if "val/psnr" in line]
    assert validation and {"val/ssim", "val/codebook_usage", "val/perplexity"} <= set(validation[-1])
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    assert list((tmp_path / "samples").glob("reconstructions-*.png"))


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, monkeypatch):
    config = tiny_run(tmp_path, max_train_steps=10, checkpointing_steps=4)
    original = VQGANStage.train_step

    def poisoned(self, loop, batch, step):
        logs = original(self, loop, batch, step)
        if step == 6:
            logs["loss/total"] = torch.tensor(float("nan"))
        return logs

    monkeypatch.setattr(VQGANStage, "train_step", poisoned)
    with pytest.raises(TrainingDivergedError, match="checkpoint-4"):
        train_tokenizer(config)
    assert (tmp_path / "checkpoints" / "checkpoint-4" / "training_state.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()


def launch(output_dir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "train.py", "tokenizer", "--preset", "tiny", "--data", TINY_DATA,
               "--output_dir", str(output_dir), "--train_batch_size", "8", "--max_train_steps", "40",
               "--learning_rate", "0.002", "--lr_warmup_steps", "1", "--checkpointing_steps", "4",
               "--validation_steps", "1000", "--num_validation_images", "16", "--dataloader_num_workers", "0",
               "--report_to", "none", "--set", "loss.disc_start=10", "discriminator.base_channels=8",
               "discriminator.num_layers=1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.e2e
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    reference = launch(tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-3000:]

    interrupted_dir = tmp_path / "interrupted"
    interrupted = launch(interrupted_dir)
    deadline = time.time() + 300
    while not (interrupted_dir / "checkpoints" / "checkpoint-16").exists():
        assert interrupted.poll() is None, interrupted.stderr.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    interrupted.send_signal(signal.SIGKILL)
    interrupted.wait()
    assert not (interrupted_dir / "model.safetensors").exists(), "the run finished before it was killed"

    resumed = launch(interrupted_dir, "--resume_from_checkpoint", "latest")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-3000:]

    expected = load_file(tmp_path / "reference" / "model.safetensors")
    actual = load_file(interrupted_dir / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    # the metrics log has one line per logged step, as an uninterrupted run's does
    steps = [line["step"] for line in metric_lines(interrupted_dir) if "loss/total" in line]
    assert steps == sorted(set(steps)) and steps[-1] == 40


def test_cli_set_overrides_are_checked():
    config = {"model": {"ch": 8, "quantizer": {"kind": "vq"}}, "loss": {"disc_start": 1}}
    apply_overrides(config, ["model.quantizer.kind=fsq", "loss.disc_start=5"])
    assert config["model"]["quantizer"]["kind"] == "fsq" and config["loss"]["disc_start"] == 5
    with pytest.raises(SystemExit, match="unknown field"):
        apply_overrides(config, ["loss.not_a_field=1"])
