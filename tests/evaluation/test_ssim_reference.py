"""Our SSIM (``tokenizer.metrics.ssim``) against the standard definition (Wang et al. 2004, the authors'
``ssim_index.m``): an 11x11 Gaussian window with sigma 1.5, statistics at the "valid" positions only (no
padding), K1 = 0.01, K2 = 0.03 for a dynamic range L = 1, the mean of the SSIM map. The reference is computed
here with scipy from that definition, independently of our code.

How ours differs from what other tools report:
- it is computed on each RGB channel and averaged (the reference code works on one grey channel; skimage's
  ``channel_axis`` and torchmetrics do the same per-channel mean as ours);
- on images smaller than the window (under 11 px a side) the window shrinks to the image, renormalised, with
  the same sigma; the standard SSIM is undefined there;
- torchmetrics' ``structural_similarity_index_measure`` pads and then crops the border, i.e. also averages
  valid positions; skimage's default is a 7x7 uniform window: numbers from skimage's defaults are not comparable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d

from tessera.tokenizer.metrics import ssim


def reference_ssim(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Wang et al.'s SSIM of two grey images in [0, 1] (valid positions, Gaussian window)."""
    coords = np.arange(size) - (size - 1) / 2
    g = np.exp(-(coords**2) / (2 * sigma**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def filt(image: np.ndarray) -> np.ndarray:
        return correlate2d(image, window, mode="valid")

    mu_x, mu_y = filt(x), filt(y)
    var_x, var_y = filt(x * x) - mu_x**2, filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    return float((((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))).mean())


@pytest.mark.parametrize("size", [11, 32, 45])
def test_ssim_is_wang_et_al_per_channel(size):
    generator = torch.Generator().manual_seed(size)
    images = torch.rand(2, 3, size, size, generator=generator, dtype=torch.float64) * 2 - 1  # [-1, 1]
    noisy = (images + 0.3 * torch.randn(images.shape, generator=generator, dtype=torch.float64)).clamp(-1, 1)
    ours = ssim(images, noisy)
    x, y = ((images + 1) / 2).numpy(), ((noisy + 1) / 2).numpy()
    expected = [np.mean([reference_ssim(x[b, c], y[b, c]) for c in range(3)]) for b in range(2)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5)


def test_small_images_use_a_window_shrunk_to_the_image():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 8, 8, generator=generator) * 2 - 1
    noisy = (images + 0.2 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
    x, y = ((images + 1) / 2).double().numpy(), ((noisy + 1) / 2).double().numpy()
    expected = np.mean([reference_ssim(x[0, c], y[0, c], size=8) for c in range(3)])
    assert float(ssim(images, noisy)[0]) == pytest.approx(expected, rel=1e-4)
    assert float(ssim(images, images)[0]) == pytest.approx(1.0, abs=1e-6)
