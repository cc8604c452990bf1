"""Losses of VQ-GAN training: reconstruction, quantizer, feature matching, hinge GAN with adaptive weight, LeCam.

Nothing here downloads weights: the perceptual term is discriminator feature matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.core.config import JSONConfig


@dataclass
class LossConfig(JSONConfig):
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    quantizer_weight: float = 1.0
    feature_matching_weight: float = 0.1
    disc_weight: float = 0.1
    disc_start: int = 1200  # the GAN terms switch on at this step (CPU default run: 2000 steps)
    adaptive_disc_weight: bool = True
    lecam_weight: float = 0.0  # 0 disables LeCam regularisation (Tseng et al. 2021); 0.001 is typical
    lecam_decay: float = 0.999


def reconstruction_loss(images: torch.Tensor, reconstruction: torch.Tensor, config: LossConfig) -> torch.Tensor:
    error = reconstruction.float() - images.float()
    return config.l1_weight * error.abs().mean() + config.l2_weight * error.pow(2).mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def feature_matching_loss(real_features: list[torch.Tensor], fake_features: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 distance between the discriminator's hidden features of real and reconstructed images."""
    terms = [(fake - real.detach()).abs().mean() for real, fake in zip(real_features, fake_features, strict=True)]
    return torch.stack(terms).mean()


def adaptive_generator_weight(
    reconstruction_term: torch.Tensor, generator_term: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """taming's balance: ||dL_rec/dW_last|| / ||dL_gan/dW_last||, so neither gradient swamps the other."""
    (rec_grad,) = torch.autograd.grad(reconstruction_term, last_layer, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(generator_term, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (gan_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


class LeCamRegularizer(nn.Module):
    """Keeps discriminator outputs near EMAs of their own past values (LeCam, Tseng et al. 2021)."""

    def __init__(self, decay: float):
        super().__init__()
        self.decay = decay
        self.register_buffer("real_ema", torch.zeros(()))
        self.register_buffer("fake_ema", torch.zeros(()))

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.real_ema.lerp_(real_logits.float().mean(), 1 - self.decay)
            self.fake_ema.lerp_(fake_logits.float().mean(), 1 - self.decay)
        return F.relu(real_logits - self.fake_ema).pow(2).mean() + F.relu(self.real_ema - fake_logits).pow(2).mean()
