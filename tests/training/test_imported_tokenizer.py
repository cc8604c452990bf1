"""A prior on an imported image tokenizer: a (tiny, random) diffusers VQModel with 16,384 codes on a 16x16 grid
-> ``tessera convert`` -> ``train.py tokenize`` -> ``train.py prior`` -> a pipeline that generates."""

from __future__ import annotations

import json

import pytest
import torch

import train
from tessera.pipelines.cli import main as tessera
from tessera.pipelines.text_to_image import TextToImagePipeline
from tests.tokenizer.reference_models import perturb_

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")


def test_prior_trains_on_a_converted_tokenizer(tmp_path, capsys):
    source = diffusers.VQModel(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                               up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                               num_vq_embeddings=16384, vq_embed_dim=4, norm_num_groups=4, sample_size=32)
    perturb_(source, seed=0).save_pretrained(tmp_path / "source")
    assert tessera(["convert", "--from", "diffusers", str(tmp_path / "source"), "-o", str(tmp_path / "vqgan")]) == 0
    printed = capsys.readouterr().out
    assert "16384 codes" in printed and "32x32 images -> 16x16 codes" in printed

    train.main(["tokenize", "--vqgan", str(tmp_path / "vqgan"), "--data", "shapes:num_samples=12",
                "--output_dir", str(tmp_path / "tokens"), "--batch_size", "12"])
    info = json.loads((tmp_path / "tokens" / "tokenized_dataset.json").read_text())
    assert info["code_shape"] == [16, 16]
    train.main(["prior", "--tokens", str(tmp_path / "tokens"), "--vqgan", str(tmp_path / "vqgan"),
                "--preset", "tiny", "--prior", "masked", "--output_dir", str(tmp_path / "run"),
                "--max_train_steps", "2", "--validation_steps", "1000", "--checkpointing_steps", "1000",
                "--train_batch_size", "4", "--num_validation_images", "2", "--num_steps", "2", "--report_to", "none",
                "--set", "text.hidden_size=8", "text.num_layers=1", "text.num_heads=2", "text.intermediate_size=16",
                "text.vocab_size=300", "data.num_evaluation_captions=2"])
    pipe = TextToImagePipeline.from_pretrained(tmp_path / "run")
    assert (pipe.prior.config.codebook_size, pipe.prior.config.grid_size) == (16384, 16)
    images = pipe("a red circle", num_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (1, 3, 32, 32) and images.abs().max() <= 1
