"""Codebook statistics: usage (fraction of codes used) and perplexity (exp of the code entropy).

Plain functions over histograms, so validation can sum the histograms of many batches.
"""

from __future__ import annotations

import torch


def code_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of each code, (codebook_size,) long. Histograms of several batches can be summed."""
    flat = codes.reshape(-1).long()  # (N,)
    hist = torch.zeros(codebook_size, dtype=torch.long, device=codes.device)
    return hist.index_add_(0, flat, torch.ones_like(flat))  # out-of-range codes raise


def stats_from_histogram(histogram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(usage fraction, perplexity) of a code histogram. An empty histogram gives (0, 1)."""
    counts = histogram.float()  # (K,)
    usage = (counts > 0).float().mean()
    probs = counts / counts.sum().clamp_min(1.0)
    perplexity = torch.exp(-torch.special.xlogy(probs, probs).sum())
    return usage, perplexity


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(usage fraction, perplexity) of a tensor of codes of any shape."""
    return stats_from_histogram(code_histogram(codes, codebook_size))
