"""LlamaGen ``VQModel`` -> Tessera VQ-GAN, checked against transformers' ``JanusVQVAE`` (LlamaGen's network
under taming-like names) with seeded random weights.

Janus's quantizer skips LlamaGen's l2 normalisation of the encoder output; with unit-length codebook rows the
nearest row is the same either way, so the reference runs with such a codebook. The checkpoint is written in
LlamaGen's own layout (``conv_blocks``/``res``, ``mid.0/1/2``, decoder levels coarsest first, a usage buffer)
and format (weights under "model", flags as an ``argparse.Namespace``).
"""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from tessera.tokenizer.convert import convert_checkpoint
from tessera.tokenizer.model import VQGAN
from tests.tokenizer.reference_models import agreement, perturb_, random_images

janus = pytest.importorskip("transformers.models.janus.modeling_janus")
from transformers import JanusVQVAEConfig  # noqa: E402

RESOLUTION, GRID = 16, 8


@pytest.fixture(scope="module")
def reference():
    config = JanusVQVAEConfig(embed_dim=8, num_embeddings=64, double_latent=False, latent_channels=32, in_channels=3,
                              out_channels=3, base_channels=32, channel_multiplier=[1, 2], num_res_blocks=1,
                              dropout=0.0, num_patches=GRID)
    torch.manual_seed(0)
    return perturb_(janus.JanusVQVAE(config), seed=0, unit_codebook="quantize.embedding.weight")


def llamagen_name(key: str) -> str:
    """A Janus key -> the same weight's name in LlamaGen's ``vq_model.py`` (both store decoder levels coarsest
    first, so level numbers stay)."""
    key = re.sub(r"^(encoder)\.down\.|^(decoder)\.up\.", lambda m: f"{m.group(1) or m.group(2)}.conv_blocks.", key)
    key = re.sub(r"^(\w+\.conv_blocks\.\d+)\.block\.", r"\1.res.", key)
    return re.sub(r"\.mid\.(block_1|attn_1|block_2)\.",
                  lambda m: f".mid.{('block_1', 'attn_1', 'block_2').index(m.group(1))}.", key)


def janus_codes(model, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode(images).image_tokens.reshape(images.shape[0], GRID, GRID)  # (B, h, w)


def janus_decode(model):
    def decode(codes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.decode(codes.reshape(codes.shape[0], -1))
    return decode


def test_llamagen_checkpoint_gives_the_same_codes_and_pixels(tmp_path, reference):
    state = {llamagen_name(key): tensor for key, tensor in reference.state_dict().items()}
    assert "decoder.conv_blocks.0.upsample.conv.weight" in state and "encoder.mid.1.q.weight" in state
    state["quantize.codebook_used"] = torch.zeros(65536)
    checkpoint = {"model": state, "steps": 1000, "args": argparse.Namespace(vq_model="VQ-16", lr=1e-4)}
    torch.save(checkpoint, tmp_path / "vq_ds16.pt")
    report = convert_checkpoint("llamagen", tmp_path / "vq_ds16.pt", tmp_path / "tessera", resolution=RESOLUTION)
    assert report.dropped == {"codebook usage history (training only)": 1}
    ours = VQGAN.from_pretrained(tmp_path / "tessera")
    assert ours.config.quantizer.l2_normalize and ours.config.attn_resolutions == (GRID,)
    images = random_images(RESOLUTION)
    agreement(ours, janus_codes(reference, images), janus_decode(reference), images).check()
    assert len(ours.encode(images).unique()) > 8
