"""Cached text-encoder outputs for tokenized datasets (``train.py tokenize --text_encoder DIR``)."""

from __future__ import annotations

import numpy as np
import torch

from pipelines.tokens.dataset import folder_weights_sha256


class CaptionEncoder:
    """A frozen ``transformers`` text encoder from a local folder: captions -> last hidden states
    (float16, padded to ``max_length``) and their mask. Encoder-decoder models use their encoder."""

    def __init__(self, path: str, max_length: int, device: torch.device):
        from transformers import AutoModel, AutoTokenizer

        self.path, self.max_length, self.device = path, max_length, device
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.to(device).eval().requires_grad_(False)
        self.hidden_size = int(model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model)

    @staticmethod
    def identity(path: str, max_length: int) -> dict:
        """What a cache depends on: the weights (hashed) and the padding length."""
        return {"weights_sha256": folder_weights_sha256(path), "max_text_length": max_length}

    def __call__(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(hidden (B, L, D) float16, mask (B, L) bool)``."""
        inputs = self.tokenizer(captions, padding="max_length", truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state  # (B, L, D)
        return hidden.to(torch.float16).cpu().numpy(), inputs["attention_mask"].bool().cpu().numpy()
