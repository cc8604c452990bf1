"""Losses of VQ-GAN training: reconstruction, quantizer, feature matching, hinge GAN with adaptive weight, LeCam.

Nothing here downloads weights: the perceptual term is discriminator feature matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tessera.core.config import JSONConfig


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


def adaptive_adversarial_loss(anchor: torch.Tensor, generator: torch.Tensor, reconstruction: torch.Tensor,
                              last_layer: torch.Tensor, disc_weight: float, max_weight: float = 1e4
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """taming's balance of the generator's terms, and a loss to backward for ``anchor + weight * generator``.

    ``weight = disc_weight * ||dA/dW|| / ||dG/dW||`` at the decoder's last layer ``W`` (clamped to
    ``[0, max_weight]``), so neither gradient swamps the other. Both terms reach the generator only through
    ``reconstruction``, so each is differentiated once, through the discriminator, as far as
    ``reconstruction``; the gradients at ``W`` follow through the last layer alone, and the returned loss
    ``sum(reconstruction * (dA/dx + weight * dG/dx))`` (its value means nothing) has the gradient of
    ``anchor + weight * generator`` with respect to every generator parameter without a third pass through the
    discriminator. The graph is kept (``retain_graph``): the discriminator's own backward follows.
    """
    anchor_grad, generator_grad = (
        torch.autograd.grad(term, reconstruction, retain_graph=True)[0] for term in (anchor, generator))
    at_last_layer = [torch.autograd.grad(reconstruction, last_layer, grad_outputs=grad, retain_graph=True)[0]
                     for grad in (anchor_grad, generator_grad)]
    balance = at_last_layer[0].norm() / (at_last_layer[1].norm() + 1e-4)
    weight = disc_weight * balance.clamp(0.0, max_weight)
    gradient = anchor_grad + weight * generator_grad  # d(anchor + weight * generator) / d reconstruction
    return (reconstruction.float() * gradient.detach().float()).sum(), weight.detach()


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
