"""Helpers for the equivalence tests of ``tokenizer.convert``: seeded random weights that make every weight count,
and the comparison each test makes against a reference implementation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tessera.tokenizer.model import VQGAN

PIXEL_TOLERANCE = 1e-4


def perturb_(module: nn.Module, seed: int, *, unit_codebook: str | None = None) -> nn.Module:
    """Seeded random weights, not the default init: convolutions and linears ~ N(0, 1/fan_in), every norm's
    scale 1 + N(0, 0.5^2) and every bias N(0, 0.2^2) (so swapping two norms or biases changes the output), the
    codebook ~ N(0, 1). ``unit_codebook`` names a codebook parameter whose rows are then l2-normalised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if name == unit_codebook or "embedding" in name or name.endswith("codebook"):
                value = noise
            elif parameter.ndim >= 2:
                value = noise / parameter[0].numel() ** 0.5
            elif name.endswith("bias"):
                value = noise * 0.2
            else:
                value = 1 + noise * 0.5
            parameter.copy_(value)
            if name == unit_codebook:
                parameter.copy_(F.normalize(parameter, dim=1))
    return module.eval()


def random_images(resolution: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@dataclass
class Agreement:
    codes_equal: float  # fraction of code positions that agree
    max_pixel_difference: float  # decoding the same codes
    max_round_trip_difference: float  # image -> codes -> image

    def check(self) -> None:
        assert self.codes_equal == 1.0, self
        assert self.max_pixel_difference < PIXEL_TOLERANCE, self
        assert self.max_round_trip_difference < PIXEL_TOLERANCE, self


@torch.no_grad()
def agreement(ours: VQGAN, reference_codes: torch.Tensor, reference_decode, images: torch.Tensor) -> Agreement:
    """Compare ``ours`` with a reference: its codes for ``images`` (B, h, w) and ``reference_decode`` (codes ->
    pixels in the caller's [-1, 1] range, not clamped). Tessera's pixels are taken before the clamp of ``decode``
    so that random weights, whose outputs leave [-1, 1], are compared everywhere."""
    codes = ours.encode(images)
    decoded = ours.from_network_range(ours.decoder(ours.codes_to_vectors(codes)))
    reference_pixels = reference_decode(reference_codes)
    round_trip = ours(images).reconstruction
    assert torch.equal(ours.decode(codes), decoded.clamp(-1, 1))
    return Agreement(
        codes_equal=(codes == reference_codes).float().mean().item(),
        max_pixel_difference=(decoded - reference_decode(codes)).abs().max().item(),
        max_round_trip_difference=(round_trip - reference_pixels).abs().max().item(),
    )
