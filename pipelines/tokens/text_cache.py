"""Cached text-encoder outputs in a tokenized dataset (``train.py tokenize --text_encoder DIR``), computed by
the same ``TextConditioner`` that conditions the prior in training and inference: the same loading rules
(encoder-only ``transformers`` models from a local folder), the same tokenization and truncation, padded
positions zeroed. Rows are padded to ``max_text_length`` and stored in float16.

A frozen text encoder's outputs do not change during training, so the prior trainer reads these columns
instead of running the encoder (``pipelines.training.prior``) when ``text_cache_identity`` of its conditioner
equals the one recorded in the dataset: the same weights (hashed as tensors) and the same text length.
"""

from __future__ import annotations

import numpy as np
import torch

from tessera.core.hashing import state_dict_sha256
from tessera.prior.text import TextConditioner, TextEncoderConfig


def text_cache_identity(text: TextConditioner) -> dict:
    """What cached outputs depend on: the encoder's weights (as tensors, so a re-saved copy matches), the text
    tokenizer's vocabulary size and the context length."""
    return {"encoder_state_dict_sha256": state_dict_sha256(text.encoder.state_dict()),
            "vocab_size": len(text.text_tokenizer), "max_text_length": text.config.max_length}


class CaptionEncoder:
    """Captions -> ``(hidden (B, L, D) float16, mask (B, L) bool)`` with a frozen pretrained encoder."""

    def __init__(self, path: str, max_length: int, device: torch.device | str = "cpu"):
        self.text = TextConditioner.from_captions([], TextEncoderConfig(pretrained=path, max_length=max_length))
        self.text.to(device).eval()
        self.max_length, self.hidden_size = max_length, self.text.hidden_size

    @property
    def identity(self) -> dict:
        return text_cache_identity(self.text)

    def __call__(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            context = self.text.encode_ids(**self.text.tokenize(captions, padding="max_length"))  # (B, L, D)
        return context.hidden_states.to(torch.float16).cpu().numpy(), context.mask.cpu().numpy()
