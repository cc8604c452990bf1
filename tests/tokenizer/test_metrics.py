import pytest
import torch
import torch.nn.functional as F

from tessera.tokenizer.metrics import high_frequency_energy, sharpness_ratio


def textured(batch: int = 4, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1  # (B, 3, H, W) in [-1, 1]


def test_sharpness_is_one_for_identical_images():
    images = textured()
    assert sharpness_ratio(images, images.clone()) == pytest.approx(1.0)


def test_blur_lowers_and_noise_raises_sharpness():
    images = textured()
    blurred = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    noisy = (images + 0.5 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert sharpness_ratio(images, blurred) < 0.5
    assert sharpness_ratio(blurred, images) > 2.0
    assert sharpness_ratio(blurred, noisy) > 1.0


def test_high_frequency_energy_is_per_image_and_zero_for_flat_images():
    images = torch.cat([textured(1), torch.zeros(1, 3, 32, 32)])
    energy = high_frequency_energy(images)
    assert energy.shape == (2,) and energy[0] > 0 and energy[1] == 0


def test_sharpness_of_flat_originals_is_an_error():
    flat = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match="flat"):
        sharpness_ratio(flat, textured(2, 16))
