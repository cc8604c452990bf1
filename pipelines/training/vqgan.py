"""The VQ-GAN stage of the training loop (``python train.py vqgan``): reconstruction, codebook and adversarial
(PatchGAN) losses with the GAN schedule; validation on held-out images.

It runs in ``pipelines.training.loop`` (one CPU, one GPU or many under ``accelerate launch``). A run writes into
``output_dir``:
``checkpoints/checkpoint-<step>/`` (resumable), ``samples/reconstructions-<step>.png``, ``metrics.jsonl``
(and tensorboard logs when installed), and at the end the EMA weights as ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from torch.utils.data import DataLoader

from tessera.core.config import JSONConfig
from tessera.core.io import save_image_grid
from tessera.pipelines.data import ImageCaptionData, collate_image_captions, load_image_caption_data
from tessera.pipelines.data.worlds import AUTO, check_world_choice, world_of_source
from tessera.pipelines.training.batches import EpochDataset
from tessera.pipelines.training.config import TrainingConfig
from tessera.pipelines.training.ema import EMA
from tessera.pipelines.training.loop import TrainingLoop, TrainingStage, make_optimizer, make_scheduler
from tessera.tokenizer.config import DiscriminatorConfig, VQGANConfig, vqgan_preset
from tessera.tokenizer.discriminator import DiscriminatorOutput, PatchDiscriminator
from tessera.tokenizer.losses import (
    LeCamRegularizer,
    LossConfig,
    adaptive_adversarial_loss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from tessera.tokenizer.metrics import CodeHistogram, psnr, ssim
from tessera.tokenizer.model import VQGAN

logger = logging.getLogger(__name__)


# The defaults of the command line (train.py) and of train.py quickstart: measured on the 2-core CPU.
TOKENIZER_TRAINING_DEFAULTS = TrainingConfig(
    output_dir="runs/vqgan",
    train_batch_size=32,
    learning_rate=4e-4,
    max_train_steps=2000,
    lr_warmup_steps=100,
    checkpointing_steps=500,
    validation_steps=500,
)


@dataclass
class DataOptions(JSONConfig):
    data: str = "shapes:num_samples=50000"
    validation_data: str | None = None  # default: the world's held-out split (shapes: "test"), else the last rows
    image_column: str | None = None
    caption_column: str | None = None
    random_flip: bool = False
    # the benchmark world whose evaluator judges reconstructions: "auto" (the one whose source --data names),
    # "none", or a world's name (pipelines.data.worlds)
    world: str = AUTO

    def __post_init__(self) -> None:
        check_world_choice(self.world)


@dataclass
class TokenizerRunConfig(JSONConfig):
    model: VQGANConfig = field(default_factory=VQGANConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataOptions = field(default_factory=DataOptions)
    training: TrainingConfig = field(default_factory=TrainingConfig)


DEFAULT_PRESET = "cpu-32"


def default_run_config(preset: str | None = None) -> TokenizerRunConfig:
    """The stage's defaults (``train.py vqgan`` without flags): ``preset``'s model (None: ``DEFAULT_PRESET``)
    and ``TOKENIZER_TRAINING_DEFAULTS``. Quickstart recipes start from this too."""
    return TokenizerRunConfig(model=vqgan_preset(preset or DEFAULT_PRESET),
                              training=copy.deepcopy(TOKENIZER_TRAINING_DEFAULTS))


def build_datasets(options: DataOptions, resolution: int, num_validation: int, seed: int
                   ) -> tuple[ImageCaptionData, datasets.Dataset, Any]:
    """(training data, validation dataset, the benchmark world of the data or None)."""
    common = dict(resolution=resolution, image_column=options.image_column,
                  caption_column=options.caption_column, seed=seed, allow_empty_captions=True)
    train = load_image_caption_data(options.data, random_flip=options.random_flip, **common)
    world = world_of_source(options.data, options.world)
    if options.validation_data:
        validation = load_image_caption_data(options.validation_data, max_samples=num_validation, **common).dataset
    elif world is not None:
        validation = load_image_caption_data(world.validation_source(num_validation, seed + 1), **common).dataset
    else:  # hold out the last rows of the training source
        rows = len(train.dataset)
        if rows < 2 * num_validation:
            num_validation = max(1, rows // 10)
        validation = train.dataset.select(range(rows - num_validation, rows))
        train = train.select(range(rows - num_validation))
    return train, validation, world


@torch.no_grad()
def evaluate_reconstructions(model: VQGAN, loader: DataLoader, device: torch.device,
                             world: Any = None) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Held-out PSNR, SSIM, codebook usage/perplexity (and the evaluator accuracy of a benchmark ``world``)."""
    histogram = CodeHistogram(model.codebook_size)
    psnrs, ssims, correct = [], [], []
    first_images = first_reconstructions = None
    for batch in loader:
        images = batch["pixel_values"].to(device)
        output = model(images)
        reconstructions = output.reconstruction.float().clamp(-1, 1)
        histogram.update(output.codes)
        psnrs.append(psnr(images, reconstructions).cpu())
        ssims.append(ssim(images, reconstructions).cpu())
        if world is not None:
            correct += world.judge_images(reconstructions.cpu(), batch["caption"])
        if first_images is None:
            first_images, first_reconstructions = images[:32].cpu(), reconstructions[:32].cpu()
    metrics = {
        "val/psnr": float(torch.cat(psnrs).mean()),
        "val/ssim": float(torch.cat(ssims).mean()),
        "val/codebook_usage": histogram.usage,
        "val/perplexity": histogram.perplexity,
    }
    if correct:
        metrics["val/evaluator_accuracy"] = sum(correct) / len(correct)
    return metrics, first_images, first_reconstructions


class VQGANStage(TrainingStage):
    """Generator (the VQ-GAN) and PatchGAN discriminator, each with its optimizer; the discriminator trains from
    ``loss.disc_start`` on, from the same discriminator forwards as the generator's adversarial loss."""

    name = "tokenizer"

    def __init__(self, config: TokenizerRunConfig):
        self.config = config

    def setup(self, accelerator) -> None:
        config, training = self.config, self.config.training
        self.accelerator = accelerator
        with accelerator.main_process_first():  # one process fills the datasets cache, the others read it
            self.train, self.validation, self.world = build_datasets(
                config.data, config.model.resolution, training.num_validation_images, training.seed)
        logger.info("training data: %s", self.train.report.summary())
        model = VQGAN(config.model)
        discriminator = PatchDiscriminator(config.discriminator, config.model.in_channels)
        self.lecam = LeCamRegularizer(config.loss.lecam_decay).to(accelerator.device)
        self.ema = EMA(model, training.ema_decay)
        optimizer_g, optimizer_d = make_optimizer(model.parameters(), training), make_optimizer(
            discriminator.parameters(), training)
        self.schedulers = [make_scheduler(optimizer_g, training), make_scheduler(optimizer_d, training)]
        self.model, self.discriminator, self.optimizer_g, self.optimizer_d = accelerator.prepare(
            model, discriminator, optimizer_g, optimizer_d)
        self.models = [self.model, self.discriminator]
        accelerator.register_for_checkpointing(self.lecam)

    @property
    def ema_source(self) -> VQGAN:
        return self.accelerator.unwrap_model(self.model)

    def train_data(self):
        return EpochDataset(self.train, self.train.example), collate_image_captions

    def train_step(self, loop: TrainingLoop, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """Before ``loss.disc_start``: the generator alone. From it on: one discriminator forward of the real and
        one of the reconstructed images, shared by both players; the generator's backward reaches only its own
        parameters and keeps the graph, then the discriminator's backward reaches only the discriminator's (its
        forwards saw the reconstructions as they were before the generator's optimizer step, as a detached
        copy would)."""
        images = batch["pixel_values"].to(self.accelerator.device)
        loss_config = self.config.loss
        with self.accelerator.autocast():
            output = self.model(images)
        rec = reconstruction_loss(images, output.reconstruction, loss_config)
        quantizer = loss_config.quantizer_weight * output.quantizer_loss
        logs = {"loss/reconstruction": rec, "loss/quantizer": output.quantizer_loss,
                "loss/commitment": output.commitment_loss, "train/codebook_usage": output.usage,
                "train/perplexity": output.perplexity}
        if step < loss_config.disc_start:
            logs["loss/total"] = rec + quantizer
            loop.optimize(logs["loss/total"], self.optimizer_g, self.model.parameters())
            return logs
        with self.accelerator.autocast():
            real = self.discriminator(images)
            fake = self.discriminator(output.reconstruction)
        logs.update(self.generator_update(loop, output.reconstruction, rec, quantizer, real, fake))
        logs.update(self.discriminator_update(loop, real, fake))
        return logs

    def generator_update(self, loop: TrainingLoop, reconstruction: torch.Tensor, rec: torch.Tensor,
                         quantizer: torch.Tensor, real: DiscriminatorOutput, fake: DiscriminatorOutput
                         ) -> dict[str, torch.Tensor]:
        """The generator's adversarial-phase step: reconstruction + feature matching + weighted hinge GAN loss."""
        loss_config = self.config.loss
        matching = feature_matching_loss(real.features, fake.features)
        generator = hinge_generator_loss(fake.logits)
        anchor = rec + loss_config.feature_matching_weight * matching
        if loss_config.adaptive_disc_weight:
            to_backward, weight = adaptive_adversarial_loss(anchor, generator, reconstruction,
                                                            self.ema_source.last_layer_weight, loss_config.disc_weight)
            to_backward = to_backward + quantizer
        else:
            weight = torch.as_tensor(loss_config.disc_weight)
            to_backward = anchor + quantizer + weight * generator
        total = (anchor + quantizer + weight * generator).detach()
        loop.optimize(to_backward, self.optimizer_g, self.model.parameters(), shared_graph=True)
        return {"loss/feature_matching": matching, "loss/generator": generator, "train/disc_weight": weight,
                "loss/total": total}

    def discriminator_update(self, loop: TrainingLoop, real: DiscriminatorOutput, fake: DiscriminatorOutput
                             ) -> dict[str, torch.Tensor]:
        loss = hinge_discriminator_loss(real.logits.float(), fake.logits.float())
        logs = {"loss/discriminator": loss}
        if self.config.loss.lecam_weight > 0:
            lecam = self.lecam(real.logits.float(), fake.logits.float())
            loss = loss + self.config.loss.lecam_weight * lecam
            logs["loss/lecam"] = lecam
        loop.optimize(loss, self.optimizer_d, self.discriminator.parameters(), shared_graph=True, last_use=True)
        return logs

    def schedulers_to_step(self, step: int) -> list[torch.optim.lr_scheduler.LRScheduler]:
        """The discriminator's schedule starts with its training, at ``loss.disc_start``."""
        return self.schedulers if step >= self.config.loss.disc_start else self.schedulers[:1]

    def progress_values(self, logs: dict[str, float]) -> dict[str, str]:
        return {"rec": f"{logs['loss/reconstruction']:.4f}", "usage": f"{logs['train/codebook_usage']:.2f}"}

    def validate(self, step: int) -> dict[str, float]:
        loader = DataLoader(self.validation, batch_size=64, collate_fn=collate_image_captions)
        metrics, images, reconstructions = evaluate_reconstructions(
            self.ema.model, loader, self.accelerator.device, self.world)
        pairs = torch.stack([images, reconstructions], dim=1).flatten(0, 1)  # (2B, 3, H, W) original, recon, ...
        save_image_grid(pairs, Path(self.config.training.output_dir) / "samples" / f"reconstructions-{step:07d}.png",
                        nrow=16)
        return metrics

    def save_final(self, output_dir: Path) -> Path:
        return self.ema.model.save_pretrained(output_dir)


def train_tokenizer(config: TokenizerRunConfig) -> Path:
    """Train a VQ-GAN as configured; returns the folder holding the final (EMA) weights."""
    return TrainingLoop(VQGANStage(config), config.training, config).run()
