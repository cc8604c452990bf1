"""The prior stage of the training loop (``python train.py prior``, and ``train.py finetune`` through
``pipelines.training.finetune``).

A run reads a tokenized dataset (``train.py tokenize``; or images, which are tokenized first into
``output_dir/tokens``), checks that it was made by the VQ-GAN it is told to use, builds (or loads, when
fine-tuning) the text conditioner and the prior, and trains them together in ``pipelines.training.loop``: the
loss runs through the prepared ``PriorBundle`` (DDP-wrapped under ``accelerate launch``). Validation every N
steps, on the main process from the EMA weights: held-out loss, a grid of samples for the validation prompts,
and, on the data of a benchmark world (``pipelines.data.worlds``: the built-in shapes), its evaluator's accuracy on
captions never seen in training. Samples are drawn by
``TextToImagePipeline``, the code path users get. The final EMA weights are written as a pipeline folder.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from torch import nn
from torch.utils.data import DataLoader

from tessera.core.config import JSONConfig
from tessera.core.io import save_image_grid
from tessera.pipelines.data.worlds import world_of_captions
from tessera.pipelines.pipeline_folder import (
    PipelineConfig,
    check_captioner,
    check_components,
    load_captioner,
)
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.tokens import (
    check_tokenizer_matches,
    collate_tokenized,
    load_tokenized_dataset,
    read_export_info,
)
from tessera.pipelines.tokens.dataset import ALTERNATIVES_COLUMN, TEXT_COLUMNS
from tessera.pipelines.tokens.text_cache import text_cache_identity
from tessera.pipelines.training.batches import EpochDataset, MixedBatchSampler, StepBatchSampler
from tessera.pipelines.training.caption_groups import group_weights
from tessera.pipelines.training.captions import (
    CaptionBank,
    ContextCache,
    merged_alternatives,
    variation_share,
)
from tessera.pipelines.training.config import TrainingConfig
from tessera.pipelines.training.loop import TrainingLoop, TrainingStage
from tessera.pipelines.training.prior_options import FinetuneOptions, PriorDataOptions
from tessera.prior.config import PriorConfig, SamplingConfig, prior_preset
from tessera.prior.context import TextContext
from tessera.prior.kinds import build_prior, load_prior
from tessera.prior.text import TextConditioner, TextEncoderConfig
from tessera.prior.transformer import GridPrior, PriorLossOutput
from tessera.tokenizer.model import VQGAN

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
class PriorRunConfig(JSONConfig):
    prior: PriorConfig = field(default_factory=PriorConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    data: PriorDataOptions = field(default_factory=PriorDataOptions)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)


DEFAULT_PRESET = "cpu-small"
# Fields of the prior's config that a run takes from its components (from scratch), so a run config cannot set them
DERIVED_FIELDS = {
    "prior.codebook_size": "the VQ-GAN (its codebook size)",
    "prior.grid_size": "the VQ-GAN (its latent grid)",
    "prior.context_dim": "the text encoder (its hidden size)",
    "prior.context_length": "text.max_length",
    "prior.vqgan_sha256": "the VQ-GAN (a hash of its codebook, so that the pipeline refuses another VQ-GAN)",
}


def default_run_config(preset: str | None = None) -> PriorRunConfig:
    """The stage's defaults (``train.py prior`` without flags): ``preset``'s prior (None: ``DEFAULT_PRESET``), a
    scratch text encoder, no caption variation, ``PRIOR_TRAINING_DEFAULTS``. Quickstart recipes start from this."""
    return PriorRunConfig(prior=prior_preset(preset or DEFAULT_PRESET),
                          training=copy.deepcopy(PRIOR_TRAINING_DEFAULTS))


class PriorBundle(nn.Module):
    """The trainable part of a text-to-code model: text conditioner + prior, trained, checkpointed and averaged
    together. Its ``forward`` is the training loss, so that the accelerate-prepared (DDP) wrapper runs it."""

    def __init__(self, text: TextConditioner, prior: GridPrior):
        super().__init__()
        self.text = text
        self.prior = prior

    def forward(self, codes: torch.Tensor, captions: list[str], *, text_context: TextContext | None = None,
                drop_context: torch.Tensor | None = None) -> PriorLossOutput:
        """Loss of ``codes`` (B, h, w) given ``captions`` (caption dropout as configured, or ``drop_context``).
        ``text_context``: the captions' cached encoding by a frozen text encoder, used instead of running it."""
        if text_context is None:
            text_context = self.text(captions)
        return self.prior.loss(codes, text_context, drop_context=drop_context)


def first_distinct(captions: list[str], count: int = 16) -> list[str]:
    """The first ``count`` distinct captions (rows of augmented views repeat theirs)."""
    return list(dict.fromkeys(captions))[:count]


class PriorStage(TrainingStage):
    @property
    def name(self) -> str:
        """The prior's kind as trained: fine-tuning takes the base pipeline's (``config.prior`` is replaced)."""
        return f"{self.config.prior.kind} prior"

    def __init__(self, config: PriorRunConfig):
        self.config = config
        self.captioner = None  # fine-tuning: the base pipeline's, carried into the new one
        check_tokenizer_matches(config.data.tokens, config.data.vqgan)
        if config.finetune.replay_fraction > 0:
            check_tokenizer_matches(config.finetune.replay_tokens, config.data.vqgan)
            if config.data.caption_warmup_epochs:  # replay batches index rows, not epochs
                raise ValueError("caption_warmup_epochs cannot be combined with replay (finetune.replay_fraction > 0)")

    def load_data(self) -> None:
        config, data = self.config, self.config.data
        self.vqgan = VQGAN.from_pretrained(data.vqgan).eval()
        self.train_rows, self.validation_rows = self.split_rows(load_tokenized_dataset(data.tokens))
        self.replay_rows = None
        if config.finetune.replay_fraction > 0:
            self.replay_rows = load_tokenized_dataset(config.finetune.replay_tokens)
        tables = [self.train_rows] + ([self.replay_rows] if self.replay_rows is not None else [])
        captions = [caption for table in tables for caption in table["caption"]]
        self.bank = None
        if data.caption_variation != "none":
            self.bank = CaptionBank(captions, data.caption_variation, data.caption_variants, config.training.seed,
                                    data.caption_omission, data.caption_omit, self.alternatives(tables))
        self.distinct_captions = self.bank.captions() if self.bank else list(dict.fromkeys(captions))
        self.world = world_of_captions(self.train_rows["caption"], data.world)
        self.evaluation = None
        if self.world is not None:
            self.evaluation = self.world.evaluation_captions(data.num_evaluation_captions, config.training.seed + 7,
                                                             data.evaluation_caption_styles)
            if not data.validation_prompts:
                data.validation_prompts = tuple(self.world.validation_prompts)

    def alternatives(self, tables: list[datasets.Dataset]) -> dict[str, list[str]]:
        """Each caption's alternative captions, from the tables that were exported with them."""
        with_column = [table for table in tables if ALTERNATIVES_COLUMN in table.column_names]
        if not with_column:
            return {}
        if self.config.data.caption_variation != "prompts":
            logger.info("the tokens hold alternative captions; only --caption_variation prompts uses them")
        return merged_alternatives([caption for table in with_column for caption in table["caption"]],
                                   [texts for table in with_column for texts in table[ALTERNATIVES_COLUMN]])

    def split_rows(self, tokens: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
        data = self.config.data
        if data.validation_tokens:
            check_tokenizer_matches(data.validation_tokens, data.vqgan)
            return tokens, load_tokenized_dataset(data.validation_tokens)
        held_out = min(self.config.training.num_validation_images, max(1, len(tokens) // 10))
        return tokens.select(range(len(tokens) - held_out)), tokens.select(range(len(tokens) - held_out, len(tokens)))

    def build_bundle(self, captions: list[str]) -> PriorBundle:
        config = self.config
        if config.finetune.pipeline:
            source = Path(config.finetune.pipeline)
            text = TextConditioner.from_pretrained(source)
            prior = load_prior(source / "prior")
            check_components(self.vqgan, text, prior, source=str(source))
            prior.config.vqgan_sha256 = self.vqgan.codes_sha256()  # recorded now when the source predates it
            if config.finetune.normalize_text and not text.config.normalize:
                text.enable_normalization()
            if config.finetune.new_text_tokens:
                text.extend_vocabulary(captions, config.finetune.new_text_tokens)
            config.prior, config.text = prior.config, text.config
            self.captioner = self.carried_captioner(source)
            return PriorBundle(text, prior)
        text = TextConditioner.from_captions(self.distinct_captions, config.text)  # the BPE sees every variant
        config.prior.codebook_size = self.vqgan.codebook_size
        config.prior.grid_size = self.vqgan.config.latent_size
        config.prior.context_dim = text.hidden_size
        config.prior.context_length = config.text.max_length
        config.prior.vqgan_sha256 = self.vqgan.codes_sha256()  # the pipeline refuses another VQ-GAN
        return PriorBundle(text, build_prior(config.prior))

    def carried_captioner(self, source: Path):
        """The base pipeline's captioner, kept as it is: fine-tuning leaves the VQ-GAN unchanged and only grows
        the text tokenizer (old token ids keep their meaning), so the captioner writes and scores what it
        could before; words new to the text tokenizer are new to it too (``train.py captioner --pipeline OUT``
        teaches it the new captions)."""
        captioner = load_captioner(source)
        if captioner is not None:
            check_captioner(self.vqgan, captioner, source=str(source))
            logger.info("fine-tuning keeps the captioner of %s in the new pipeline (unchanged)", source)
        return captioner

    def setup(self, accelerator) -> None:
        self.accelerator = accelerator
        with accelerator.main_process_first():  # one process fills the datasets cache, the others read it
            self.load_data()
        self.vqgan.to(accelerator.device)
        bundle = self.build_bundle(self.train_rows["caption"])
        if self.captioner is not None:
            self.captioner.to(accelerator.device).eval()
        self.bundle, self.optimizer = self.prepare_averaged(accelerator, bundle, self.config.training)
        self.use_text_cache = self.bank is None and self.text_cache_matches(bundle.text)
        self.context_cache = None
        if not bundle.text.trainable and not self.use_text_cache:
            logger.info("encoding %d distinct captions once with the frozen text encoder", len(self.distinct_captions))
            self.context_cache = ContextCache(bundle.text, self.distinct_captions,
                                              show_progress=accelerator.is_local_main_process)

    def text_cache_matches(self, text: TextConditioner) -> bool:
        """Whether every training dataset holds cached outputs of this (frozen) text encoder, so that a step
        needs no text-encoder forward."""
        if text.trainable:
            return False
        folders = [self.config.data.tokens]
        if self.replay_rows is not None:
            folders.append(self.config.finetune.replay_tokens)
        wanted = text_cache_identity(text)
        found = {folder: read_export_info(folder).get("text_encoder") for folder in folders}
        if all(identity == wanted for identity in found.values()):
            logger.info("using the text-encoder outputs cached in %s (no text-encoder forward per step)", folders)
            return True
        if any(identity is not None for identity in found.values()):
            logger.warning("the text-encoder outputs cached in %s were made with another encoder or length than "
                           "this run's (%s); they are encoded again, once, in memory", folders, wanted)
        return False

    @property
    def ema_source(self) -> PriorBundle:
        return self.accelerator.unwrap_model(self.bundle)

    def train_data(self):
        if self.replay_rows is None:
            return EpochDataset(self.train_rows, self.varied_row(self.train_rows)), collate_tokenized
        columns = ["codes", "caption", "source_id", *(TEXT_COLUMNS if self.use_text_cache else ())]
        rows = datasets.concatenate_datasets([self.train_rows.select_columns(columns),
                                              self.replay_rows.select_columns(columns)])
        return EpochDataset(rows, self.varied_row(rows)), collate_tokenized

    def varied_row(self, rows: datasets.Dataset):
        """``(row, epoch) -> example`` with the caption drawn from the bank by ``(seed, epoch, row)``, varied for
        the epoch's share of the rows."""
        bank, seed, warmup = self.bank, self.config.training.seed, self.config.data.caption_warmup_epochs
        if bank is None:
            return None

        def get_row(row: int, epoch: int) -> dict:
            example = rows[row]
            caption = bank.pick(example["caption"], random.Random(f"{seed}:{epoch}:{row}"),
                                variant_share=variation_share(epoch, warmup))
            return {**example, "caption": caption}

        return get_row

    def train_sampler(self, sampler: StepBatchSampler) -> StepBatchSampler | MixedBatchSampler:
        if self.config.data.group_pattern is not None:
            sampler.weights = group_weights(self.train_rows["caption"], self.config.data.group_pattern)
            sampler.weights_from_step = self.config.data.group_from_step
            if sampler.weights_from_step >= self.config.training.max_train_steps:
                logger.warning("group_from_step %d is at or past the run's last step (%d): the caption groups are "
                               "never weighted in this run", sampler.weights_from_step,
                               self.config.training.max_train_steps)
            logger.info("%d training rows in %d caption groups (--group_pattern)", len(sampler.weights),
                        round(float(sampler.weights.sum())))
        if self.replay_rows is None:
            return sampler
        sampler.num_rows = len(self.train_rows)  # the new rows come first in the concatenation
        return MixedBatchSampler(sampler, len(self.replay_rows), self.config.finetune.replay_fraction)

    def train_step(self, loop: TrainingLoop, batch: dict, step: int) -> dict[str, torch.Tensor]:
        device = self.accelerator.device
        codes = batch["codes"].to(device)
        cached = None
        if self.use_text_cache:
            cached = TextContext(batch["text_hidden_states"].to(device, torch.float32), batch["text_mask"].to(device))
        elif self.context_cache is not None:
            cached = self.context_cache.context(batch["caption"], device)
        with self.accelerator.autocast():
            output = self.bundle(codes, batch["caption"], text_context=cached)
        loop.optimize(output.loss, self.optimizer, self.bundle.parameters())
        return {"loss/train": output.loss, "train/accuracy": output.accuracy}

    def progress_values(self, logs: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{logs['loss/train']:.3f}", "acc": f"{logs['train/accuracy']:.3f}"}

    def pipeline(self) -> TextToImagePipeline:
        """The EMA weights as the pipeline users get (modules shared, not copied)."""
        bundle = self.ema.model
        pipeline = TextToImagePipeline.from_components(self.vqgan, bundle.text, bundle.prior, self.config.sampling,
                                                       training_data=self.training_data, captioner=self.captioner)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def generate(self, pipeline: TextToImagePipeline, captions: list[str], seed: int) -> torch.Tensor:
        generator = torch.Generator(device=pipeline.device).manual_seed(seed)
        return pipeline(list(captions), generator=generator, output_type="pt").images  # (N, 3, H, W)

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        bundle = self.ema.model
        torch.manual_seed(0)  # the same masks / dropout draws at every validation
        losses, weights = [], []
        for batch in DataLoader(self.validation_rows, batch_size=64, collate_fn=collate_tokenized):
            no_dropout = torch.zeros(len(batch["caption"]), dtype=torch.bool)
            output = bundle(batch["codes"].to(self.accelerator.device), batch["caption"], drop_context=no_dropout)
            losses.append(float(output.loss) * float(output.num_tokens))
            weights.append(float(output.num_tokens))
        metrics = {"val/loss": sum(losses) / max(1.0, sum(weights))}
        pipeline = self.pipeline()
        prompts = list(self.config.data.validation_prompts) or first_distinct(self.validation_rows["caption"])
        save_image_grid(self.generate(pipeline, prompts, seed=0),
                        Path(self.config.training.output_dir) / "samples" / f"samples-{step:07d}.png")
        for split, captions in (self.evaluation or {}).items():
            images = self.generate(pipeline, captions, seed=1)
            metrics[f"val/evaluator_accuracy_{split}"] = self.world.image_accuracy(images, captions)
        return metrics

    def save_final(self, output_dir: Path) -> Path:
        return self.pipeline().save_pretrained(output_dir)

    @property
    def training_data(self) -> str | None:
        """For ``pipeline.json``: the image-caption source of the training tokens (from the export's sidecar); when
        fine-tuning, the base pipeline's own record, so that the next fine-tune replays the original data too."""
        if self.config.finetune.pipeline:
            return PipelineConfig.read(Path(self.config.finetune.pipeline)).training_data
        return read_export_info(self.config.data.tokens).get("source", {}).get("data")


def train_prior(config: PriorRunConfig) -> Path:
    """Train (or fine-tune, with ``config.finetune.pipeline``) a text-conditioned prior; returns the output folder."""
    return TrainingLoop(PriorStage(config), config.training, config).run()
