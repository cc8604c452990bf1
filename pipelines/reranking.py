"""Best-of-K sampling judged by the captioner: the ``num_candidates`` option of ``TextToImagePipeline``.

``best_of_candidates`` wraps a pipeline's per-chunk sampler: each chunk of B rows samples B x K candidate grids in
one batch (K times the work and memory), the captioner scores each candidate's prompt given the grid
(``Captioner.log_likelihood``), and per row the best-scoring candidate is kept. A row with an empty prompt keeps
its first candidate (there is nothing to judge it by).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tessera.captioner.model import Captioner, tokenize_captions
from tessera.prior.context import TextContext
from tessera.prior.prompt_text import prompt_texts

SampleChunk = Callable[[TextContext, "TextContext | None", torch.Tensor], torch.Tensor]


def best_of_candidates(sample_chunk: SampleChunk, count: int, prompt_of_row: Callable[[int], str],
                       captioner: Captioner, text_tokenizer) -> SampleChunk:
    """``sample_chunk(context, negative, rows) -> codes (B, h, w)`` drawing ``count`` candidates per row and
    keeping the best by the captioner; ``prompt_of_row(row)`` is the prompt of output row ``row``."""

    def best_of(context: TextContext, negative: TextContext | None, rows: torch.Tensor) -> torch.Tensor:
        candidates = sample_chunk(context.repeat_interleave(count),
                                  None if negative is None else negative.repeat_interleave(count),
                                  rows.repeat_interleave(count))  # (B * K, h, w), row-major
        prompts = [prompt_of_row(row) for row in rows.repeat_interleave(count).tolist()]
        scores = captioner.log_likelihood(candidates, tokenize_captions(text_tokenizer, prompt_texts(prompts)))  # (B * K,)
        scores = scores.masked_fill(torch.tensor([not p.strip() for p in prompts], device=scores.device), 0.0)
        best = scores.view(len(rows), count).argmax(1).to(candidates.device)  # (B,)
        picked = torch.arange(len(rows), device=candidates.device)
        return candidates.view(len(rows), count, *candidates.shape[1:])[picked, best]  # (B, h, w)

    return best_of
