"""The adversarial phase's shortcuts give the gradients of the plain formulation (taming's)."""

from __future__ import annotations

import torch

from tessera.tokenizer.config import DiscriminatorConfig, vqgan_preset
from tessera.tokenizer.discriminator import PatchDiscriminator
from tessera.tokenizer.losses import (
    LossConfig,
    adaptive_adversarial_loss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from tessera.tokenizer.model import VQGAN


def _players():
    torch.manual_seed(0)
    model = VQGAN(vqgan_preset("tiny")).train()
    discriminator = PatchDiscriminator(DiscriminatorConfig(base_channels=8, num_layers=1)).train()
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    return model, discriminator, images


def _generator_terms(model, discriminator, images):
    output = model(images)
    real, fake = discriminator(images), discriminator(output.reconstruction)
    config = LossConfig()
    anchor = reconstruction_loss(images, output.reconstruction, config) + config.feature_matching_weight * (
        feature_matching_loss(real.features, fake.features))
    return output, real, fake, anchor, hinge_generator_loss(fake.logits)


def test_adaptive_adversarial_loss_has_the_gradient_of_the_weighted_sum():
    model, discriminator, images = _players()
    parameters = [p for p in model.parameters() if p.requires_grad]
    output, _, _, anchor, generator = _generator_terms(model, discriminator, images)
    last = model.last_layer_weight
    # taming: the weight from the gradients of each term at the last layer, then one backward of the sum
    rec_grad = torch.autograd.grad(anchor, last, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(generator, last, retain_graph=True)[0]
    expected_weight = 0.1 * (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0, 1e4)
    expected = torch.autograd.grad(anchor + output.quantizer_loss + expected_weight * generator, parameters,
                                   retain_graph=True, allow_unused=True)

    loss, weight = adaptive_adversarial_loss(anchor, generator, output.reconstruction, last, disc_weight=0.1)
    got = torch.autograd.grad(loss + output.quantizer_loss, parameters, allow_unused=True)

    torch.testing.assert_close(weight, expected_weight.detach())
    assert sum(g is not None for g in got) == sum(g is not None for g in expected) > 0
    for mine, theirs in zip(got, expected, strict=True):
        if theirs is not None:
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-7)


def test_discriminator_gradient_from_the_shared_forward_equals_a_fresh_one_on_detached_images():
    model, discriminator, images = _players()
    d_parameters = list(discriminator.parameters())
    output, real, fake, _, _ = _generator_terms(model, discriminator, images)
    shared = torch.autograd.grad(hinge_discriminator_loss(real.logits, fake.logits), d_parameters)
    fresh_real, fresh_fake = discriminator(images), discriminator(output.reconstruction.detach())
    fresh = torch.autograd.grad(hinge_discriminator_loss(fresh_real.logits, fresh_fake.logits), d_parameters)
    for mine, theirs in zip(shared, fresh, strict=True):
        torch.testing.assert_close(mine, theirs)
