"""PatchGAN discriminator (pix2pix / taming ``NLayerDiscriminator``) that also returns its features.

Features of every hidden layer feed the feature-matching term, our perceptual loss that needs no
downloaded weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tessera.tokenizer.config import DiscriminatorConfig


@dataclass
class DiscriminatorOutput:
    logits: torch.Tensor  # (B, 1, h', w') one real/fake logit per patch
    features: list[torch.Tensor]  # hidden activations, shallow to deep


def init_discriminator_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class PatchDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig, in_channels: int = 3):
        super().__init__()
        width = config.base_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        multiplier = 1
        for index in range(1, config.num_layers + 1):
            previous, multiplier = multiplier, min(2**index, 8)
            stride = 2 if index < config.num_layers else 1
            layers += [
                nn.Conv2d(width * previous, width * multiplier, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width * multiplier),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(width * multiplier, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(init_discriminator_weights)

    def forward(self, images: torch.Tensor) -> DiscriminatorOutput:
        features = []
        h = images
        for layer in self.main:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                features.append(h)
        return DiscriminatorOutput(logits=h, features=features)
