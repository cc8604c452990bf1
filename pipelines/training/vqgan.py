"""The VQ-GAN training loop (``python train.py tokenizer``): accelerate, EMA, GAN schedule, resumable checkpoints.

One code path for one CPU, one GPU or many (``accelerate launch``). A run writes into ``output_dir``:
``checkpoints/checkpoint-<step>/`` (resumable), ``samples/reconstructions-<step>.png``, ``metrics.jsonl``
(and tensorboard logs when installed), and at the end the EMA weights as ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pipelines.core.config import JSONConfig
from pipelines.data.dataset import collate_image_captions, load_image_caption_data
from pipelines.training.common import (
    EMA,
    CheckpointManager,
    MetricsLog,
    StepBatchSampler,
    TrainingConfig,
    check_finite,
    is_due,
    learning_rate_lambda,
    log_step,
    make_accelerator,
    save_image_grid,
    start_run,
    step_loader,
)
from tokenizer.config import DiscriminatorConfig, VQGANConfig
from tokenizer.discriminator import PatchDiscriminator
from tokenizer.losses import (
    LeCamRegularizer,
    LossConfig,
    adaptive_generator_weight,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from tokenizer.metrics import CodeHistogram, psnr, ssim
from tokenizer.model import VQGAN

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
    validation_data: str | None = None  # default: the shapes "test" split, or the last rows of --data
    image_column: str | None = None
    caption_column: str | None = None
    random_flip: bool = False


@dataclass
class TokenizerRunConfig(JSONConfig):
    model: VQGANConfig = field(default_factory=VQGANConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataOptions = field(default_factory=DataOptions)
    training: TrainingConfig = field(default_factory=TrainingConfig)


def build_datasets(options: DataOptions, resolution: int, num_validation: int, seed: int):
    """(train dataset, validation dataset, whether captions are synthetic-shape captions)."""
    common = dict(resolution=resolution, image_column=options.image_column,
                  caption_column=options.caption_column, seed=seed, allow_empty_captions=True)
    train = load_image_caption_data(options.data, random_flip=options.random_flip, **common)
    is_shapes = options.data.startswith("shapes")
    if options.validation_data:
        validation = load_image_caption_data(options.validation_data, max_samples=num_validation, **common).dataset
    elif is_shapes:
        validation = load_image_caption_data(
            f"shapes:split=test,num_samples={num_validation},seed={seed + 1}", **common).dataset
    else:  # hold out the last rows of the training source
        rows = len(train.dataset)
        if rows < 2 * num_validation:
            num_validation = max(1, rows // 10)
        validation = train.dataset.select(range(rows - num_validation, rows))
        train.dataset = train.dataset.select(range(rows - num_validation))
    return train, validation, is_shapes


@torch.no_grad()
def evaluate_reconstructions(model: VQGAN, loader: DataLoader, device: torch.device,
                             judge_captions: bool) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Held-out PSNR, SSIM, codebook usage/perplexity (and evaluator accuracy on synthetic shapes)."""
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
        if judge_captions:
            from pipelines.shapes.evaluate import evaluate

            report = evaluate(reconstructions.cpu(), batch["caption"])
            correct += [judgement.all_correct for judgement in report.judgements]
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


class TokenizerTrainer:
    def __init__(self, config: TokenizerRunConfig):
        self.config = config
        training = config.training
        self.output_dir = Path(training.output_dir)
        self.accelerator = make_accelerator(training)
        self.model = VQGAN(config.model)
        self.discriminator = PatchDiscriminator(config.discriminator, config.model.in_channels)
        self.lecam = LeCamRegularizer(config.loss.lecam_decay)
        self.ema = EMA(self.model, training.ema_decay)
        betas = (training.adam_beta1, training.adam_beta2)
        self.optimizer_g = torch.optim.AdamW(self.model.parameters(), lr=training.learning_rate, betas=betas,
                                             weight_decay=training.adam_weight_decay)
        self.optimizer_d = torch.optim.AdamW(self.discriminator.parameters(), lr=training.learning_rate, betas=betas,
                                             weight_decay=training.adam_weight_decay)
        schedule = learning_rate_lambda(training.lr_warmup_steps, training.max_train_steps)
        self.scheduler_g = torch.optim.lr_scheduler.LambdaLR(self.optimizer_g, schedule)
        self.scheduler_d = torch.optim.lr_scheduler.LambdaLR(self.optimizer_d, schedule)
        self.model, self.discriminator, self.optimizer_g, self.optimizer_d = self.accelerator.prepare(
            self.model, self.discriminator, self.optimizer_g, self.optimizer_d)
        self.ema.to(self.accelerator.device)
        self.lecam.to(self.accelerator.device)
        self.accelerator.register_for_checkpointing(self.scheduler_g, self.scheduler_d, self.ema, self.lecam)
        self.checkpoints = CheckpointManager(self.output_dir, training.checkpoints_total_limit)
        self.metrics_log = MetricsLog(self.output_dir, self.accelerator.is_main_process)

    @property
    def unwrapped(self) -> VQGAN:
        return self.accelerator.unwrap_model(self.model)

    def generator_step(self, images: torch.Tensor, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        loss_config = self.config.loss
        with self.accelerator.autocast():
            output = self.model(images)
        rec = reconstruction_loss(images, output.reconstruction, loss_config)
        total = rec + loss_config.quantizer_weight * output.quantizer_loss
        logs = {"loss/reconstruction": rec, "loss/quantizer": output.quantizer_loss,
                "loss/commitment": output.commitment_loss, "train/codebook_usage": output.usage,
                "train/perplexity": output.perplexity}
        if step >= loss_config.disc_start:
            with self.accelerator.autocast():
                fake = self.discriminator(output.reconstruction)
                with torch.no_grad():
                    real = self.discriminator(images)
            matching = feature_matching_loss(real.features, fake.features)
            generator = hinge_generator_loss(fake.logits)
            anchor = rec + loss_config.feature_matching_weight * matching
            weight = loss_config.disc_weight
            if loss_config.adaptive_disc_weight:
                weight = weight * adaptive_generator_weight(anchor, generator, self.unwrapped.last_layer_weight)
            total = anchor + loss_config.quantizer_weight * output.quantizer_loss + weight * generator
            logs.update({"loss/feature_matching": matching, "loss/generator": generator,
                         "train/disc_weight": torch.as_tensor(weight)})
        logs["loss/total"] = total
        self.optimizer_g.zero_grad(set_to_none=True)
        self.accelerator.backward(total)
        if self.config.training.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.training.max_grad_norm)
        self.optimizer_g.step()
        self.scheduler_g.step()
        self.ema.update(self.unwrapped)
        return logs, output.reconstruction.detach()

    def discriminator_step(self, images: torch.Tensor, reconstructions: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.accelerator.autocast():
            real = self.discriminator(images)
            fake = self.discriminator(reconstructions)
        loss = hinge_discriminator_loss(real.logits.float(), fake.logits.float())
        logs = {"loss/discriminator": loss}
        if self.config.loss.lecam_weight > 0:
            lecam = self.lecam(real.logits.float(), fake.logits.float())
            loss = loss + self.config.loss.lecam_weight * lecam
            logs["loss/lecam"] = lecam
        self.optimizer_d.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.config.training.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.discriminator.parameters(), self.config.training.max_grad_norm)
        self.optimizer_d.step()
        self.scheduler_d.step()
        return logs

    def validate(self, loader: DataLoader, step: int, judge_captions: bool) -> dict[str, float]:
        with torch.random.fork_rng(devices=[]):
            metrics, images, reconstructions = evaluate_reconstructions(
                self.ema.model, loader, self.accelerator.device, judge_captions)
        if self.accelerator.is_main_process:
            pairs = torch.stack([images, reconstructions], dim=1).flatten(0, 1)  # (2B, 3, H, W) original, recon, ...
            save_image_grid(pairs, self.output_dir / "samples" / f"reconstructions-{step:07d}.png", nrow=16)
        return metrics

    def train(self) -> Path:
        config, training, accelerator = self.config, self.config.training, self.accelerator
        start_step = start_run(accelerator, self.checkpoints, self.metrics_log, config, training, "tokenizer")
        train_data, validation, judge_captions = build_datasets(
            config.data, config.model.resolution, training.num_validation_images, training.seed)
        logger.info("training data: %s", train_data.report.summary())
        sampler = StepBatchSampler(len(train_data.dataset), training.train_batch_size, seed=training.seed,
                                   start_step=start_step, end_step=training.max_train_steps,
                                   process_index=accelerator.process_index, num_processes=accelerator.num_processes)
        loader = step_loader(train_data.dataset, sampler, collate_image_captions, training.dataloader_num_workers)
        validation_loader = DataLoader(validation, batch_size=64, collate_fn=collate_image_captions)
        progress = tqdm(total=training.max_train_steps, initial=start_step, desc="tokenizer",
                        disable=not accelerator.is_local_main_process)
        self.model.train()
        self.discriminator.train()
        for step, batch in zip(range(start_step, training.max_train_steps), loader):
            images = batch["pixel_values"].to(accelerator.device)
            logs, reconstructions = self.generator_step(images, step)
            if step >= config.loss.disc_start:
                logs.update(self.discriminator_step(images, reconstructions))
            check_finite(logs, step, self.checkpoints)
            done = step + 1
            progress.update(1)
            if is_due(done, 10, training.max_train_steps):
                values = log_step(accelerator, self.metrics_log, done,
                                  {**logs, "lr": self.scheduler_g.get_last_lr()[0]})
                progress.set_postfix(rec=f"{values['loss/reconstruction']:.4f}",
                                     usage=f"{values['train/codebook_usage']:.2f}")
            if is_due(done, training.checkpointing_steps, training.max_train_steps):
                self.checkpoints.save(accelerator, done)
            if is_due(done, training.validation_steps, training.max_train_steps):
                metrics = self.validate(validation_loader, done, judge_captions)
                log_step(accelerator, self.metrics_log, done, metrics)
                progress.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        progress.close()
        if accelerator.is_main_process:
            self.ema.model.save_pretrained(self.output_dir)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return self.output_dir


def train_tokenizer(config: TokenizerRunConfig) -> Path:
    """Train a VQ-GAN as configured; returns the folder holding the final (EMA) weights."""
    return TokenizerTrainer(config).train()
