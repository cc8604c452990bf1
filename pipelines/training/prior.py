"""The prior training loop (``python train.py prior`` and ``python train.py finetune``).

A run reads a tokenized dataset (``train.py tokenize``; or images, which are tokenized first into
``output_dir/tokens``), checks that it was made by the VQ-GAN it is told to use, builds (or loads) the text
conditioner and the prior, and trains them with accelerate: EMA, checkpoints every N steps and
``--resume_from_checkpoint latest``, validation every N steps (held-out loss, a grid of decoded samples for
the validation prompts, and on the built-in shapes the evaluator's accuracy on captions never seen in
training). The final EMA weights are written as a pipeline-shaped folder:
``vqgan/``, ``prior/``, ``text_encoder/``, ``text_tokenizer/``, ``text_config.json``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pipelines.core.config import JSONConfig
from pipelines.tokens.dataset import (
    check_tokenizer_matches,
    collate_tokenized,
    load_tokenized_dataset,
    read_export_info,
)
from pipelines.training.common import (
    EMA,
    CheckpointManager,
    MetricsLog,
    MixedBatchSampler,
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
from prior.config import PriorConfig, SamplingConfig
from prior.context import TextContext
from prior.kinds import build_prior, load_prior
from prior.text import TextConditioner, TextEncoderConfig
from tokenizer.model import VQGAN

logger = logging.getLogger(__name__)


# The defaults of the command line (train.py) and of train.py quickstart: measured on the 2-core CPU.
PRIOR_TRAINING_DEFAULTS = TrainingConfig(
    output_dir="runs/prior",
    train_batch_size=64,
    learning_rate=1e-3,
    adam_beta1=0.9,
    adam_beta2=0.95,
    adam_weight_decay=0.01,
    max_train_steps=2500,
    lr_warmup_steps=100,
    checkpointing_steps=500,
    validation_steps=500,
    ema_decay=0.999,
)
FINETUNE_TRAINING_DEFAULTS = dataclasses.replace(
    PRIOR_TRAINING_DEFAULTS, output_dir="runs/finetune", learning_rate=3e-4, max_train_steps=1000,
    lr_warmup_steps=50, checkpointing_steps=250, validation_steps=500, ema_decay=0.995,
)


@dataclass
class PriorDataOptions(JSONConfig):
    tokens: str = ""  # a tokenized dataset folder (train.py tokenize)
    tokenizer: str = ""  # the VQ-GAN folder the tokens were made with
    validation_tokens: str | None = None  # default: hold out the last rows of --tokens
    validation_prompts: tuple[str, ...] = ()
    num_evaluation_captions: int = 200  # shapes only: held-out captions judged by the evaluator
    evaluation_caption_styles: tuple[str, ...] = ("en",)  # shapes only: the caption styles judged


@dataclass
class FinetuneOptions(JSONConfig):
    """``train.py finetune``: continue a saved pipeline's prior and text side on new captions."""

    pipeline: str | None = None  # a saved pipeline folder (None: train from scratch)
    replay_tokens: str | None = None  # the original data, tokenized, mixed into every batch against forgetting
    replay_fraction: float = 0.0  # share of each batch drawn from replay_tokens
    new_text_tokens: int = 0  # grow the scratch text tokenizer by up to this many tokens for the new captions

    def __post_init__(self) -> None:
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError(f"replay_fraction must lie in [0, 1), got {self.replay_fraction}")
        if self.replay_fraction > 0 and not self.replay_tokens:
            raise ValueError("replay_fraction > 0 needs replay_tokens (the original data, tokenized)")
        if self.new_text_tokens < 0:
            raise ValueError(f"new_text_tokens must be >= 0, got {self.new_text_tokens}")


@dataclass
class PriorRunConfig(JSONConfig):
    prior: PriorConfig = field(default_factory=PriorConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    data: PriorDataOptions = field(default_factory=PriorDataOptions)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)


class PriorBundle(nn.Module):
    """The trainable part of a text-to-code model: text conditioner + prior, checkpointed and averaged together."""

    def __init__(self, text: TextConditioner, prior: nn.Module):
        super().__init__()
        self.text = text
        self.prior = prior

    def context(self, captions: list[str]) -> TextContext:
        return self.text(captions)


def shapes_evaluation_captions(count: int, seed: int, styles: tuple[str, ...] = ("en",)) -> dict[str, list[str]]:
    """Captions never seen in training: the shapes "test" split, and "holdout" (unseen colour-shape pairs), per
    caption style (keys ``test``/``holdout`` for "en", ``test_fr``/``holdout_fr`` for "fr", ...)."""
    from pipelines.shapes.dataset import shapes_dataset

    return {split if style == "en" else f"{split}_{style}":
            shapes_dataset(count, seed=seed, split=split, caption_style=style)["caption"]
            for style in styles for split in ("test", "holdout")}


def captions_are_shapes(captions: list[str]) -> bool:
    from pipelines.shapes.dataset import parse_caption

    try:
        for caption in captions[:20]:
            parse_caption(caption)
    except ValueError:
        return False
    return True


@torch.no_grad()
def generate_codes(bundle: PriorBundle, captions: list[str], sampling: SamplingConfig, *, seed: int,
                   batch_size: int = 64) -> torch.Tensor:
    """Codes (N, h, w) for each caption, sampled with the validation settings and a fixed generator."""
    device = next(bundle.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    prior = bundle.prior
    options = dict(guidance_scale=sampling.guidance_scale, temperature=sampling.temperature,
                   top_k=sampling.top_k, top_p=sampling.top_p, generator=generator)
    if prior.config.kind == "masked":
        options["num_steps"] = sampling.num_steps
    chunks = []
    for start in range(0, len(captions), batch_size):
        context = bundle.context(list(captions[start:start + batch_size]))
        chunks.append(prior.sample(context, **options))
    return torch.cat(chunks)


class PriorTrainer:
    def __init__(self, config: PriorRunConfig):
        self.config = config
        training = config.training
        self.output_dir = Path(training.output_dir)
        self.accelerator = make_accelerator(training)
        self.vqgan = VQGAN.from_pretrained(config.data.tokenizer).to(self.accelerator.device).eval()
        check_tokenizer_matches(config.data.tokens, config.data.tokenizer)
        tokens = load_tokenized_dataset(config.data.tokens)
        self.train_rows, self.validation_rows = self.split_rows(tokens)
        self.replay_rows = None
        if config.finetune.replay_fraction > 0:
            check_tokenizer_matches(config.finetune.replay_tokens, config.data.tokenizer)
            self.replay_rows = load_tokenized_dataset(config.finetune.replay_tokens)
        self.bundle = self.build_bundle(self.train_rows["caption"])
        self.ema = EMA(self.bundle, training.ema_decay)
        parameters = [p for p in self.bundle.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameters, lr=training.learning_rate,
                                           betas=(training.adam_beta1, training.adam_beta2),
                                           weight_decay=training.adam_weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, learning_rate_lambda(training.lr_warmup_steps, training.max_train_steps))
        self.bundle, self.optimizer = self.accelerator.prepare(self.bundle, self.optimizer)
        self.ema.to(self.accelerator.device)
        self.accelerator.register_for_checkpointing(self.scheduler, self.ema)
        self.checkpoints = CheckpointManager(self.output_dir, training.checkpoints_total_limit)
        self.metrics_log = MetricsLog(self.output_dir, self.accelerator.is_main_process)

    def split_rows(self, tokens):
        data = self.config.data
        if data.validation_tokens:
            check_tokenizer_matches(data.validation_tokens, data.tokenizer)
            return tokens, load_tokenized_dataset(data.validation_tokens)
        held_out = min(self.config.training.num_validation_images, max(1, len(tokens) // 10))
        return tokens.select(range(len(tokens) - held_out)), tokens.select(range(len(tokens) - held_out, len(tokens)))

    def build_bundle(self, captions: list[str]) -> PriorBundle:
        config = self.config
        if config.finetune.pipeline:
            from pipelines.pipeline_folder import check_components

            source = Path(config.finetune.pipeline)
            text = TextConditioner.from_pretrained(source)
            prior = load_prior(source / "prior")
            check_components(self.vqgan, text, prior, source=str(source))
            if config.finetune.new_text_tokens:
                text.extend_vocabulary(captions, config.finetune.new_text_tokens)
            config.prior, config.text = prior.config, text.config
            return PriorBundle(text, prior)
        text = TextConditioner.from_captions(captions, config.text)
        config.prior.codebook_size = self.vqgan.codebook_size
        config.prior.grid_size = self.vqgan.config.latent_size
        config.prior.context_dim = text.hidden_size
        config.prior.context_length = config.text.max_length
        return PriorBundle(text, build_prior(config.prior))

    @property
    def unwrapped(self) -> PriorBundle:
        return self.accelerator.unwrap_model(self.bundle)

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        codes = batch["codes"].to(self.accelerator.device)
        with self.accelerator.autocast():
            context = self.unwrapped.context(batch["caption"])
            output = self.unwrapped.prior.loss(codes, context)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(output.loss)
        if self.config.training.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.bundle.parameters(), self.config.training.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.unwrapped)
        return {"loss/train": output.loss, "train/accuracy": output.accuracy}

    @torch.no_grad()
    def validate(self, done: int, evaluation: dict[str, list[str]] | None) -> dict[str, float]:
        bundle = self.ema.model
        metrics: dict[str, float] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same masks / dropout draws at every validation
            losses, weights = [], []
            loader = DataLoader(self.validation_rows, batch_size=64, collate_fn=collate_tokenized)
            for batch in loader:
                output = bundle.prior.loss(batch["codes"].to(self.accelerator.device),
                                           bundle.context(batch["caption"]),
                                           drop_context=torch.zeros(len(batch["caption"]), dtype=torch.bool))
                losses.append(float(output.loss) * float(output.num_tokens))
                weights.append(float(output.num_tokens))
            metrics["val/loss"] = sum(losses) / max(1.0, sum(weights))
            prompts = list(self.config.data.validation_prompts) or self.validation_rows["caption"][:16]
            codes = generate_codes(bundle, prompts, self.config.sampling, seed=0)
            save_image_grid(self.vqgan.decode(codes), self.output_dir / "samples" / f"samples-{done:07d}.png")
            if evaluation:
                from pipelines.shapes.evaluate import evaluate

                for split, captions in evaluation.items():
                    images = self.vqgan.decode(generate_codes(bundle, captions, self.config.sampling, seed=1))
                    metrics[f"val/evaluator_accuracy_{split}"] = evaluate(images.cpu(), captions).accuracy["all_correct"]
        return metrics

    def save_final(self) -> Path:
        """The EMA weights as a text-to-image pipeline folder (``pipeline.json`` + one subfolder per component)."""
        from pipelines.text_to_image import TextToImagePipeline

        bundle = self.ema.model
        pipeline = TextToImagePipeline.from_components(self.vqgan, bundle.text, bundle.prior, self.config.sampling,
                                                       training_data=self.training_data)
        return pipeline.save_pretrained(self.output_dir)

    @property
    def training_data(self) -> str | None:
        """For ``pipeline.json``: the image-caption source of the training tokens (from the export's sidecar); when
        fine-tuning, the base pipeline's own record, so that the next fine-tune replays the original data too."""
        if self.config.finetune.pipeline:
            from pipelines.pipeline_folder import PipelineConfig

            return PipelineConfig.read(Path(self.config.finetune.pipeline)).training_data
        return read_export_info(self.config.data.tokens).get("source", {}).get("data")

    def train(self) -> Path:
        config, training, accelerator = self.config, self.config.training, self.accelerator
        start_step = start_run(accelerator, self.checkpoints, self.metrics_log, config, training, "prior")
        evaluation = None
        if captions_are_shapes(self.train_rows["caption"]):
            evaluation = shapes_evaluation_captions(config.data.num_evaluation_captions, training.seed + 7,
                                                    config.data.evaluation_caption_styles)
        rows, sampler = self.train_rows, StepBatchSampler(
            len(self.train_rows), training.train_batch_size, seed=training.seed, start_step=start_step,
            end_step=training.max_train_steps, process_index=accelerator.process_index,
            num_processes=accelerator.num_processes)
        if self.replay_rows is not None:
            columns = ["codes", "caption", "source_id"]
            rows = datasets.concatenate_datasets([self.train_rows.select_columns(columns),
                                                  self.replay_rows.select_columns(columns)])
            sampler = MixedBatchSampler(sampler, len(self.replay_rows), config.finetune.replay_fraction)
        loader = step_loader(rows, sampler, collate_tokenized, training.dataloader_num_workers)
        progress = tqdm(total=training.max_train_steps, initial=start_step, desc=f"{config.prior.kind} prior",
                        disable=not accelerator.is_local_main_process)
        self.bundle.train()
        for step, batch in zip(range(start_step, training.max_train_steps), loader):
            logs = self.train_step(batch)
            check_finite(logs, step, self.checkpoints)
            done = step + 1
            progress.update(1)
            if is_due(done, 10, training.max_train_steps):
                values = log_step(accelerator, self.metrics_log, done, {**logs, "lr": self.scheduler.get_last_lr()[0]})
                progress.set_postfix(loss=f"{values['loss/train']:.3f}", acc=f"{values['train/accuracy']:.3f}")
            if is_due(done, training.checkpointing_steps, training.max_train_steps):
                self.checkpoints.save(accelerator, done)
            if is_due(done, training.validation_steps, training.max_train_steps) and accelerator.is_main_process:
                metrics = self.validate(done, evaluation)
                log_step(accelerator, self.metrics_log, done, metrics)
                progress.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        progress.close()
        if accelerator.is_main_process:
            self.save_final()
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return self.output_dir


def train_prior(config: PriorRunConfig) -> Path:
    """Train (or fine-tune, with ``config.finetune.pipeline``) a text-conditioned prior; returns the output folder."""
    return PriorTrainer(config).train()


