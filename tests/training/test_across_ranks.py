"""Multi-process training trains one model: for every stage, two processes under ``torchrun`` on the CPU
(accelerate's multi-CPU mode, gloo) end with every trainable parameter identical on both ranks, and equal (to float tolerance) to one
process that accumulates the same global batch in two micro-batches. A forward that goes around the DDP wrapper
leaves the ranks' gradients unsynchronised, and the ranks apart.

The runs are deterministic so that the comparison is exact: an autoregressive prior without caption dropout,
no LeCam EMA, no dead-code reseeding, no random flips.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tessera.core.config import JSONConfig
from tessera.pipelines.training.config import TrainingConfig
from tessera.pipelines.training.prior import train_prior
from tessera.pipelines.training.prior_options import FinetuneOptions
from tessera.pipelines.training.vqgan import DataOptions, TokenizerRunConfig
from tessera.tokenizer.config import vqgan_preset
from tests.training.ranks_worker import train_and_save_parameters

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("isolated_datasets_cache")]

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ranks_worker.py")
STEPS = 3


def launch_two_processes(stage: str, config: JSONConfig, folder: Path) -> list[dict[str, torch.Tensor]]:
    config_path = folder / "run.json"
    config.save(config_path)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), stage, str(config_path), str(folder / "parameters")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    launched = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in launched.stderr.splitlines() if "Error" in line or "error" in line]
    assert launched.returncode == 0, "\n".join(errors[-20:]) + "\n" + launched.stderr[-3000:]
    return [load_file(str(folder / "parameters" / f"rank{rank}.safetensors")) for rank in (0, 1)]


def one_process_accumulating(stage: str, config: JSONConfig, folder: Path) -> dict[str, torch.Tensor]:
    """The same global batch in one process: two micro-batches of the same size per optimizer step."""
    config.training = dataclasses.replace(config.training, gradient_accumulation_steps=2,
                                          output_dir=str(folder / "run"))
    config_path = folder / "run.json"
    config.save(config_path)
    return load_file(str(train_and_save_parameters(stage, config_path, folder / "parameters")))


def assert_one_model(stage: str, make_config, tmp_path: Path) -> None:
    rank0, rank1 = launch_two_processes(stage, make_config(tmp_path / "two" / "run"), tmp_path / "two")
    reference = one_process_accumulating(stage, make_config(tmp_path / "one" / "run"), tmp_path / "one")
    assert rank0.keys() == rank1.keys() == reference.keys()
    apart = [name for name in rank0 if not torch.equal(rank0[name], rank1[name])]
    assert not apart, f"parameters differ between the ranks: {apart[:5]} ({len(apart)} in all)"
    for name in rank0:
        torch.testing.assert_close(rank0[name], reference[name], atol=2e-5, rtol=1e-4, msg=name)


def training(output_dir: Path, **changes) -> TrainingConfig:
    return TrainingConfig(**{**dict(output_dir=str(output_dir), train_batch_size=4, max_train_steps=STEPS,
                                    learning_rate=3e-3, lr_warmup_steps=1, checkpointing_steps=1000,
                                    validation_steps=1000, num_validation_images=4, dataloader_num_workers=0,
                                    report_to="none", seed=3), **changes})


def test_tokenizer_training_across_ranks_is_one_model(tmp_path):
    def make_config(output_dir: Path) -> TokenizerRunConfig:
        config = TokenizerRunConfig(model=vqgan_preset("tiny"), data=DataOptions(data="shapes:num_samples=48,resolution=8",
                                    validation_data="shapes:num_samples=4,resolution=8"),
                                    training=training(output_dir))
        config.discriminator.base_channels, config.discriminator.num_layers = 8, 1
        config.loss.disc_start = 1  # generator-only first, then both networks
        config.loss.lecam_weight = 0.0
        return config

    assert_one_model("tokenizer", make_config, tmp_path)


def prior_config(tiny_config, tokens, output_dir: Path, **finetune):
    vqgan, token_dir = tokens
    config = tiny_config(output_dir, vqgan, token_dir, "autoregressive", max_train_steps=STEPS,
                         train_batch_size=4, validation_steps=1000, seed=3)
    config.prior.caption_dropout = 0.0
    config.finetune = FinetuneOptions(**finetune)
    return config


def test_prior_training_across_ranks_is_one_model(tokens, tiny_config, tmp_path):
    assert_one_model("prior", lambda output_dir: prior_config(tiny_config, tokens, output_dir), tmp_path)


def test_finetune_across_ranks_is_one_model(tokens, tiny_config, tmp_path):
    base = tmp_path / "base"
    train_prior(prior_config(tiny_config, tokens, base))
    _, token_dir = tokens

    def make_config(output_dir: Path):
        return prior_config(tiny_config, tokens, output_dir, pipeline=str(base), replay_tokens=str(token_dir),
                            replay_fraction=0.25, new_text_tokens=8)

    assert_one_model("prior", make_config, tmp_path)
