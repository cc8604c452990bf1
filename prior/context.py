"""The text context a prior is conditioned on: encoder hidden states and their padding mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextContext:
    hidden_states: torch.Tensor  # (B, L, D) text-encoder outputs (projected by the prior to its width)
    mask: torch.Tensor  # (B, L) bool, True where a real token is (padding is False)

    def __post_init__(self) -> None:
        if self.hidden_states.ndim != 3 or self.mask.shape != self.hidden_states.shape[:2]:
            raise ValueError(
                f"TextContext expects hidden_states (B, L, D) and mask (B, L); got {tuple(self.hidden_states.shape)} "
                f"and {tuple(self.mask.shape)}"
            )
        self.mask = self.mask.bool()

    @property
    def batch_size(self) -> int:
        return self.hidden_states.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextContext:
        return TextContext(self.hidden_states.to(device=device, dtype=dtype or self.hidden_states.dtype),
                           self.mask.to(device))

    def repeat_interleave(self, repeats: int) -> TextContext:
        return TextContext(self.hidden_states.repeat_interleave(repeats, 0), self.mask.repeat_interleave(repeats, 0))

    @staticmethod
    def cat(contexts: list[TextContext]) -> TextContext:
        """Concatenate along the batch, padding shorter contexts (mask False) to the longest."""
        length = max(c.hidden_states.shape[1] for c in contexts)
        states, masks = [], []
        for c in contexts:
            pad = length - c.hidden_states.shape[1]
            states.append(torch.nn.functional.pad(c.hidden_states, (0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(c.mask, (0, pad), value=False))
        return TextContext(torch.cat(states), torch.cat(masks))
