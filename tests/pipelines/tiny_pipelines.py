"""Tiny pipeline components for the pipeline tests: an 8x8 -> 4x4 VQ-GAN, a scratch text encoder, a tiny prior."""

from __future__ import annotations

import numpy as np
import torch

from tessera.captioner.model import Captioner, CaptionerConfig, caption_vocabulary
from tessera.pipelines.shapes.captions import caption
from tessera.pipelines.shapes.dataset import sample_spec
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.training.captioner import code_vectors
from tessera.prior.config import SamplingConfig, prior_preset
from tessera.prior.kinds import build_prior
from tessera.prior.text import TextConditioner, TextEncoderConfig
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.model import VQGAN

KINDS = ["autoregressive", "masked"]
CAPTIONS = [caption(sample_spec(np.random.default_rng(index))) for index in range(200)]
PROMPTS = ["a small red circle on the left", "a large blue square above a small green triangle"]
TEXT = TextEncoderConfig(hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16, max_length=16,
                         vocab_size=300)


def tiny_prior(kind: str):
    """A tiny prior with a random (not zero) head, so samples depend on the context."""
    prior = build_prior(prior_preset("tiny", kind=kind, codebook_size=16, grid_size=4, context_dim=8,
                                     context_length=16))
    torch.nn.init.normal_(prior.backbone.head.weight, std=2.0)
    return prior.eval()


def tiny_pipelines() -> dict[str, TextToImagePipeline]:
    """One pipeline per prior kind, sharing one VQ-GAN and text conditioner; seeded, built on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    text = TextConditioner.from_captions(CAPTIONS, TEXT)
    vqgan = VQGAN(vqgan_preset("tiny")).eval()
    pipes = {kind: TextToImagePipeline.from_components(vqgan, text, tiny_prior(kind), SamplingConfig(num_steps=4))
             for kind in KINDS}
    torch.set_num_threads(threads)
    return pipes


def tiny_pipeline_with_captioner() -> TextToImagePipeline:
    """The masked tiny pipeline with a random tiny captioner over its codes and the captions' text tokens."""
    base = tiny_pipelines()["masked"]
    torch.manual_seed(0)
    config = CaptionerConfig(codebook_size=16, grid_size=4, code_dim=8, hidden_size=16, num_layers=1, num_heads=2,
                             intermediate_size=32, text_token_ids=caption_vocabulary(base.text.text_tokenizer, CAPTIONS))
    captioner = Captioner(config).eval()
    captioner.set_code_features(code_vectors(base.vqgan))
    return TextToImagePipeline.from_components(base.vqgan, base.text, base.prior, base.sampling, captioner=captioner)
