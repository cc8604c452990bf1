"""Finite scalar quantization (FSQ, Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

Each of the d = len(levels) channels is squashed into a bounded range and rounded to one of
`levels[i]` integer values; a code is the mixed-radix number formed by the d digits, so the implicit
codebook has prod(levels) entries and there is nothing to learn but the two 1x1 projections.
"""

import math
from collections.abc import Sequence

import torch

from tessera.tokenizer.codebook_stats import codebook_stats
from tessera.tokenizer.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    from_tokens,
    project_fp32,
    projection,
    to_tokens,
)


class FiniteScalarQuantizer(Quantizer):
    """FSQ: (B, C, h, w) -> 1x1 conv to d channels -> bound -> round (straight-through) -> 1x1 conv back.

    The grid values of channel i are the integers -(L//2) .. L-1-L//2 (L = levels[i]), divided by
    L//2 so they lie in [-1, 1]. There is no auxiliary loss; the output's losses are zero.
    """

    def __init__(self, in_channels: int, levels: Sequence[int] = (8, 5, 5, 5), eps: float = 1e-3, *,
                 always_project: bool = False):
        super().__init__()
        levels = tuple(int(level) for level in levels)
        if not levels or min(levels) < 2:
            raise ValueError(f"levels must be a non-empty sequence of integers >= 2, got {levels}")
        self.in_channels = in_channels
        self.levels = levels
        self.eps = eps
        self.codebook_size = math.prod(levels)
        basis = torch.cumprod(torch.tensor((1,) + levels[:-1]), dim=0)  # (d,) mixed-radix place values
        # Integer buffers: not in the state dict, and untouched by module.to(dtype).
        self.register_buffer("_levels", torch.tensor(levels), persistent=False)  # (d,)
        self.register_buffer("_basis", basis, persistent=False)  # (d,)
        self.in_proj = projection(in_channels, len(levels), always=always_project)
        self.out_proj = projection(len(levels), in_channels, always=always_project)

    def _half_width(self) -> torch.Tensor:
        return (self._levels // 2).float()  # (d,)

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d) in (-(L//2) - 0.5, L-1-L//2 + 0.5), so rounding gives exactly L values.

        tanh scaled to +-(L-1)/2 (shrunk by eps) covers L integers when L is odd; when L is even the
        range is shifted down by 1/2, and the input is shifted by atanh(1/2 / half) so that 0 still
        maps to 0 (for L == 2 that is impossible and 0 lies on the rounding boundary).
        """
        half = (self._levels - 1).float() * (1 - self.eps) / 2  # (d,)
        offset = (self._levels % 2 == 0).float() * 0.5  # (d,)
        ratio = offset / half
        # (the clamp only keeps the discarded L == 2 branch finite)
        shift = torch.where(ratio < 1, torch.atanh(ratio.clamp(max=0.99)), torch.zeros_like(ratio))
        return torch.tanh(x + shift) * half - offset

    def codes_to_grid(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes (...) -> normalised grid vectors (..., d) in [-1, 1]."""
        digits = (codes.long().unsqueeze(-1) // self._basis) % self._levels  # (..., d) in [0, L)
        return (digits - self._levels // 2).float() / self._half_width()

    def grid_to_codes(self, grid: torch.Tensor) -> torch.Tensor:
        """Normalised grid vectors (..., d) -> integer codes (...) in [0, codebook_size)."""
        digits = torch.round(grid * self._half_width()).long() + self._levels // 2  # (..., d)
        return (digits * self._basis).sum(-1)

    def _quantize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) float32 -> (B*h*w, d) normalised grid vectors, straight-through gradient."""
        bounded = self.bound(to_tokens(project_fp32(self.in_proj, z)))  # (N, d)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / self._half_width()

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        self._check_vectors(z)
        batch, _, height, width = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            grid = self._quantize(z.float())  # (N, d)
            codes = self.grid_to_codes(grid.detach())  # (N,)
            quantized = project_fp32(self.out_proj, from_tokens(grid, batch, height, width))  # (B, C, h, w)
            usage, perplexity = codebook_stats(codes, self.codebook_size)
        zero = quantized.new_zeros(())
        return QuantizerOutput(
            quantized=quantized.to(z.dtype),
            codes=codes.reshape(batch, height, width),  # (B, h, w)
            loss=zero,
            commitment_loss=zero,
            codebook_loss=zero,
            usage=usage,
            perplexity=perplexity,
        )

    @torch.no_grad()
    def vectors_to_codes(self, z: torch.Tensor) -> torch.Tensor:
        self._check_vectors(z)
        batch, _, height, width = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            codes = self.grid_to_codes(self._quantize(z.float()))  # (N,)
        return codes.reshape(batch, height, width)  # (B, h, w)

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        self._check_codes(codes)
        batch, height, width = codes.shape
        with torch.autocast(device_type=codes.device.type, enabled=False):
            grid = self.codes_to_grid(codes.reshape(-1))  # (N, d)
            vectors = project_fp32(self.out_proj, from_tokens(grid, batch, height, width))  # (B, C, h, w)
        dtype = self.out_proj.weight.dtype if isinstance(self.out_proj, torch.nn.Conv2d) else torch.float32
        return vectors.to(dtype)
