"""Reconstruction metrics: PSNR, SSIM and high-frequency energy on images in [-1, 1], and a running codebook
histogram."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tessera.tokenizer.codebook_stats import code_histogram, stats_from_histogram


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    return images.float().clamp(-1, 1).add(1).div(2)


def psnr(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, (B,), on the [0, 1] scale (peak 1)."""
    mse = (to_unit_range(images) - to_unit_range(reconstructions)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return kernel[:, None] * kernel[None, :]  # (size, size)


def ssim(images: torch.Tensor, reconstructions: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004), (B,), Gaussian window, computed per channel and averaged."""
    x, y = to_unit_range(images), to_unit_range(reconstructions)
    channels = x.shape[1]
    size = min(window_size, x.shape[-1], x.shape[-2])
    window = gaussian_window(size, sigma).to(x.device).expand(channels, 1, size, size)  # (C, 1, k, k) depthwise

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def high_frequency_energy(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared response to the 3x3 Laplacian, (B,), on the [0, 1] scale, per channel and
    averaged (valid positions only: no padding edge). Blur lowers it; noise and ringing raise it."""
    x = to_unit_range(images)
    channels = x.shape[1]
    kernel = LAPLACIAN.to(x.device).expand(channels, 1, 3, 3)  # (C, 1, 3, 3) depthwise
    return F.conv2d(x, kernel, groups=channels).pow(2).flatten(1).mean(1)


def sharpness_ratio(images: torch.Tensor, reconstructions: torch.Tensor) -> float:
    """High-frequency energy of the reconstructions over that of the originals, summed over the batch before
    dividing (flat images do not dominate): 1.0 = as sharp as the originals, below = blurrier."""
    original = high_frequency_energy(images).sum()
    if original <= 0:
        raise ValueError("the original images have no high-frequency energy (all flat): the ratio is undefined")
    return float(high_frequency_energy(reconstructions).sum() / original)


class CodeHistogram:
    """Counts codes over many batches; usage = fraction of the codebook seen, perplexity = exp(entropy)."""

    def __init__(self, codebook_size: int):
        self.codebook_size = codebook_size
        self.counts = torch.zeros(codebook_size, dtype=torch.long)

    def update(self, codes: torch.Tensor) -> None:
        self.counts += code_histogram(codes.cpu(), self.codebook_size)

    @property
    def usage(self) -> float:
        return float(stats_from_histogram(self.counts)[0])

    @property
    def perplexity(self) -> float:
        return float(stats_from_histogram(self.counts)[1])
