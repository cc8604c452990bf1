"""The captioner stage of the training loop (``python train.py captioner``): codes -> captions.

A run reads a tokenized dataset (``train.py tokenize``; or images, tokenized first into ``output_dir/tokens``)
made by the VQ-GAN it captions with, and trains a ``captioner.model.Captioner`` on (codes, caption) rows with
the text tokenizer of an existing pipeline (``--pipeline``: its VQ-GAN and text tokenizer) or, without one, a
byte-level BPE trained on the captions (as the prior's scratch text side is). It runs in
``pipelines.training.loop`` (resume, EMA, gradient accumulation, several processes). Validation, on the main
process from the EMA weights: held-out caption loss and token accuracy, a grid of held-out images with their
generated captions (``samples/``), and on a benchmark world's data (``pipelines.data.worlds``: the built-in
shapes) the exact-match accuracy of greedy captions (compared as scenes) on its held-out ``test`` and ``holdout``
scenes, through ``ImageToTextPipeline``.

The output folder is what ``ImageToTextPipeline.from_pretrained`` loads: with ``--pipeline``, a copy of that
pipeline with the ``captioner/`` component added (so text-to-image can rerank with it); without, ``vqgan/``,
``text_tokenizer/`` and ``captioner/``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tessera.captioner.model import (
    CAPTIONER_PRESETS,
    Captioner,
    CaptionerConfig,
    caption_vocabulary,
    tokenize_captions,
)
from tessera.core.config import JSONConfig
from tessera.core.io import atomic_write_text, save_image_grid
from tessera.core.pretrained import WEIGHTS_NAME, load_safetensors
from tessera.models import resolve_pipeline_folder
from tessera.pipelines.data.worlds import AUTO, check_world_choice, world_of_captions
from tessera.pipelines.image_to_text import ImageToTextPipeline
from tessera.pipelines.pipeline_folder import (
    CAPTIONER_FOLDER,
    COMPONENTS,
    OPTIONAL_COMPONENTS,
    PIPELINE_CONFIG_NAME,
    PipelineConfig,
)
from tessera.pipelines.tokens import check_tokenizer_matches, collate_tokenized, load_tokenized_dataset
from tessera.pipelines.training.batches import EpochDataset
from tessera.pipelines.training.config import TrainingConfig
from tessera.pipelines.training.loop import TrainingLoop, TrainingStage
from tessera.pipelines.training.prior import PRIOR_TRAINING_DEFAULTS
from tessera.prior.prompt_text import prompt_texts
from tessera.prior.text import TEXT_CONFIG_NAME, TOKENIZER_FOLDER, load_text_tokenizer, swap_in_saved
from tessera.prior.text_tokenizer import train_text_tokenizer
from tessera.tokenizer.model import VQGAN

logger = logging.getLogger(__name__)

# The defaults of the command line and of train.py quickstart: the prior's, with a faster EMA. Measured on the
# 2-core CPU (cpu-small captioner, 8x8 grids, batch 64): about 0.3 s per step alone.
CAPTIONER_TRAINING_DEFAULTS = dataclasses.replace(PRIOR_TRAINING_DEFAULTS, output_dir="runs/captioner",
                                                  max_train_steps=3500, num_validation_images=256, ema_decay=0.995)


@dataclass
class CaptionerDataOptions(JSONConfig):
    tokens: str = ""  # a tokenized dataset folder (train.py tokenize)
    vqgan: str = ""  # the VQ-GAN folder the tokens were made with (default with --pipeline: its vqgan/)
    # caption with this pipeline's VQ-GAN and text tokenizer (a folder or a shipped name, e.g. tessera-shapes);
    # the output adds to it
    pipeline: str | None = None
    validation_tokens: str | None = None  # default: hold out the last rows of --tokens
    text_vocab_size: int = 2048  # without a pipeline: the BPE vocabulary trained on the captions
    # the benchmark world whose scenes judge the captions: "auto" (the world whose captions these are), "none",
    # or a world's name (pipelines.data.worlds)
    world: str = AUTO
    num_evaluation_images: int = 200  # a world's data only: held-out scenes captioned and judged per split
    # share of the caption tokens the captioner reads (not those it predicts) replaced by random ones in training:
    # it must read each word from the image, which helps on word combinations never seen together
    input_noise: float = 0.3
    # share of grids replaced by the null image in training, which image guidance at decoding needs
    image_dropout: float = 0.1

    def __post_init__(self) -> None:
        check_world_choice(self.world)


@dataclass
class CaptionerRunConfig(JSONConfig):
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    data: CaptionerDataOptions = field(default_factory=CaptionerDataOptions)
    training: TrainingConfig = field(default_factory=TrainingConfig)


DEFAULT_PRESET = "cpu-small"
# Fields of the captioner's config that a run takes from the VQ-GAN and the captions, so a run config cannot set them
DERIVED_FIELDS = {
    "captioner.codebook_size": "the VQ-GAN (its codebook size)",
    "captioner.grid_size": "the VQ-GAN (its latent grid)",
    "captioner.code_dim": "the VQ-GAN (its code vectors)",
    "captioner.text_token_ids": "the training captions",
}


def default_run_config(preset: str | None = None) -> CaptionerRunConfig:
    """The stage's defaults (``train.py captioner`` without flags): ``preset``'s captioner (None:
    ``DEFAULT_PRESET``) and ``CAPTIONER_TRAINING_DEFAULTS``. Quickstart recipes start from this."""
    name = preset or DEFAULT_PRESET
    if name not in CAPTIONER_PRESETS:
        raise ValueError(f"unknown captioner preset {name!r}; choose one of {sorted(CAPTIONER_PRESETS)}")
    return CaptionerRunConfig(captioner=dataclasses.replace(CAPTIONER_PRESETS[name]),
                              training=copy.deepcopy(CAPTIONER_TRAINING_DEFAULTS))


def caption_accuracy(world, pipe: ImageToTextPipeline, count: int, seed: int, guidance_scale: float | None = None
                     ) -> dict[str, float]:
    """Exact-match accuracy of greedy captions on ``count`` held-out scenes of ``world`` per split (``test``,
    ``holdout``): the caption states the scene drawn (``world.same_caption``)."""
    accuracy = {}
    for split, scenes in world.captioning_scenes(count, pipe.vqgan.config.resolution, seed).items():
        scenes = scenes[:]
        captions = pipe(scenes["image"], guidance_scale=guidance_scale).captions
        accuracy[split] = sum(world.same_caption(text, truth)
                              for text, truth in zip(captions, scenes["caption"])) / len(captions)
    return accuracy


def choose_guidance_scale(world, pipe: ImageToTextPipeline, count: int, seed: int) -> tuple[float, dict[str, float]]:
    """On ``world``'s validation scenes (not the benchmark's): the image-guidance scale among
    ``GUIDANCE_CANDIDATES`` with the best mean exact match over the splits, and the accuracy of each."""
    found = {scale: caption_accuracy(world, pipe, count, seed, scale) for scale in GUIDANCE_CANDIDATES}
    best = max(GUIDANCE_CANDIDATES, key=lambda scale: (sum(found[scale].values()), -scale))
    metrics = {f"val/exact_match_{split}_guidance_{scale:g}": value
               for scale, accuracy in found.items() for split, value in accuracy.items()}
    return best, metrics


@torch.no_grad()
def code_vectors(vqgan: VQGAN) -> torch.Tensor:
    """The VQ-GAN's vector of every code, (codebook_size, z_channels), float32 on the CPU."""
    codes = torch.arange(vqgan.codebook_size, device=vqgan.last_layer_weight.device)[:, None, None]  # (K, 1, 1)
    return vqgan.codes_to_vectors(codes)[:, :, 0, 0].float().cpu()  # (K, z)


GUIDANCE_CANDIDATES = (1.0, 1.5, 2.0, 3.0)  # image-guidance scales tried at the end of a run on the shapes


class CaptionerStage(TrainingStage):
    name = "captioner"

    def __init__(self, config: CaptionerRunConfig):
        self.config = config
        data = config.data
        if data.pipeline:  # a folder, or a shipped pipeline's name
            data.pipeline = str(resolve_pipeline_folder(data.pipeline))
        if data.pipeline and not data.vqgan:
            data.vqgan = str(Path(data.pipeline) / "vqgan")
        if not data.vqgan:
            raise ValueError("the captioner needs the VQ-GAN the tokens were made with: --vqgan or --pipeline")
        check_tokenizer_matches(data.tokens, data.vqgan)

    def load_data(self) -> None:
        data = self.config.data
        self.vqgan = VQGAN.from_pretrained(data.vqgan).eval()
        rows = load_tokenized_dataset(data.tokens)
        if data.validation_tokens:
            check_tokenizer_matches(data.validation_tokens, data.vqgan)
            self.train_rows, self.validation_rows = rows, load_tokenized_dataset(data.validation_tokens)
        else:
            held_out = min(self.config.training.num_validation_images, max(1, len(rows) // 10))
            self.train_rows = rows.select(range(len(rows) - held_out))
            self.validation_rows = rows.select(range(len(rows) - held_out, len(rows)))
        captions = prompt_texts(list(self.train_rows["caption"]), "caption")  # emoji as names, as scoring reads them
        if data.pipeline:
            self.text_tokenizer = load_text_tokenizer(data.pipeline)
        else:
            self.text_tokenizer = train_text_tokenizer(captions, data.text_vocab_size,
                                                       max_length=self.config.captioner.max_caption_tokens)
        self.world = world_of_captions(captions, data.world)
        self.vocabulary = caption_vocabulary(self.text_tokenizer, captions)

    def build_captioner(self) -> Captioner:
        config = self.config
        config.captioner = dataclasses.replace(
            config.captioner, codebook_size=self.vqgan.codebook_size, grid_size=self.vqgan.config.latent_size,
            code_dim=self.vqgan.config.z_channels, text_token_ids=self.vocabulary)
        logger.info("captioner vocabulary: %d text tokens of the text tokenizer's %d", len(self.vocabulary),
                    len(self.text_tokenizer))
        captioner = Captioner(config.captioner)
        captioner.set_code_features(code_vectors(self.vqgan))
        return captioner

    def setup(self, accelerator) -> None:
        self.accelerator = accelerator
        with accelerator.main_process_first():  # one process fills the datasets cache, the others read it
            self.load_data()
        self.vqgan.to(accelerator.device)
        self.model, self.optimizer = self.prepare_averaged(accelerator, self.build_captioner(),
                                                           self.config.training)

    @property
    def ema_source(self) -> Captioner:
        return self.accelerator.unwrap_model(self.model)

    def train_data(self):
        return EpochDataset(self.train_rows), collate_tokenized

    def caption_batch(self, captions: list[str]):
        return self.ema_source.caption_batch(tokenize_captions(self.text_tokenizer, prompt_texts(captions, "caption")))

    def train_step(self, loop: TrainingLoop, batch: dict, step: int) -> dict[str, torch.Tensor]:
        codes = batch["codes"].to(self.accelerator.device)
        with self.accelerator.autocast():
            output = self.model(codes, self.caption_batch(batch["caption"]), input_noise=self.config.data.input_noise,
                                image_dropout=self.config.data.image_dropout)
        loop.optimize(output.loss, self.optimizer, self.model.parameters())
        return {"loss/train": output.loss, "train/accuracy": output.accuracy}

    def progress_values(self, logs: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{logs['loss/train']:.3f}", "acc": f"{logs['train/accuracy']:.3f}"}

    def pipeline(self) -> ImageToTextPipeline:
        """The EMA weights as the pipeline users get (modules shared, not copied)."""
        pipe = ImageToTextPipeline(self.vqgan, self.text_tokenizer, self.ema.model)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        captioner = self.ema.model.eval()
        total, tokens, correct = 0.0, 0.0, 0.0
        for batch in DataLoader(self.validation_rows, batch_size=64, collate_fn=collate_tokenized):
            captions = captioner.caption_batch(tokenize_captions(self.text_tokenizer, prompt_texts(batch["caption"], "caption")))
            output = captioner(batch["codes"].to(self.accelerator.device), captions)
            count = float(captions.mask.sum())
            total, tokens, correct = total + float(output.loss) * count, tokens + count, correct + float(
                output.accuracy) * count
        metrics = {"val/loss": total / max(tokens, 1.0), "val/token_accuracy": correct / max(tokens, 1.0)}
        pipe = self.pipeline()
        shown = self.validation_rows.select(range(min(16, len(self.validation_rows))))
        codes = collate_tokenized([shown[i] for i in range(len(shown))])["codes"]  # (16, h, w)
        generated = self.ema.model.text_token_ids(captioner.generate(codes.to(self.accelerator.device)).cpu())
        samples = Path(self.config.training.output_dir) / "samples"
        with torch.inference_mode():
            save_image_grid(self.vqgan.decode(codes.to(self.accelerator.device)).cpu(),
                            samples / f"captions-{step:07d}.png")
        lines = [f"{i}: {text.strip()}  (true: {truth})" for i, (text, truth) in enumerate(zip(
            self.text_tokenizer.batch_decode(generated, skip_special_tokens=True), shown["caption"]))]
        atomic_write_text(samples / f"captions-{step:07d}.txt", "\n".join(lines) + "\n")
        if self.world is not None:
            accuracy = caption_accuracy(self.world, pipe, self.config.data.num_evaluation_images,
                                               self.config.training.seed + 7)
            metrics.update({f"val/exact_match_{split}": value for split, value in accuracy.items()})
        return metrics

    def save_final(self, output_dir: Path) -> Path:
        """The output folder ``ImageToTextPipeline.from_pretrained`` loads (see the module docstring). On a
        benchmark world's data, the saved decoding default ``guidance_scale`` is the one ``choose_guidance_scale``
        finds best on the validation scenes (and ``metrics.jsonl`` gets each candidate's accuracy); elsewhere it
        stays as set."""
        captioner = self.ema.model
        if self.world is not None and self.config.data.image_dropout > 0:
            scale, metrics = choose_guidance_scale(self.world, self.pipeline(), self.config.data.num_evaluation_images,
                                                   self.config.training.seed + 7)
            captioner.config = dataclasses.replace(captioner.config, guidance_scale=scale)
            self.config.captioner = captioner.config
            logger.info("image guidance %g chose on the validation scenes: %s", scale, metrics)
            atomic_write_text(output_dir / "guidance_choice.json", json.dumps(
                {"guidance_scale": scale, **metrics}, indent=2) + "\n")
        if self.config.data.pipeline:
            return add_captioner_to_pipeline(Path(self.config.data.pipeline), captioner, output_dir)
        self.vqgan.save_pretrained(output_dir / "vqgan")
        swap_in_saved(self.text_tokenizer, output_dir / TOKENIZER_FOLDER)
        captioner.save_pretrained(output_dir / CAPTIONER_FOLDER)
        return output_dir


def add_captioner_to_pipeline(source: Path, captioner: Captioner, output_dir: Path) -> Path:
    """``output_dir`` = the pipeline folder ``source`` (copied as it is, unless it is ``output_dir`` itself) with
    ``captioner`` added in the dtype of the source's prior weights; ``pipeline.json`` written last."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / PIPELINE_CONFIG_NAME).unlink(missing_ok=True)
    if source.resolve() != output_dir.resolve():
        for name in [*COMPONENTS.values(), TEXT_CONFIG_NAME]:
            entry = source / name
            if not entry.exists():  # text_encoder/ of a frozen encoder an installed package ships
                continue
            target = output_dir / name
            shutil.rmtree(target, ignore_errors=True)
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target)
    prior_weights = load_safetensors(source / COMPONENTS["prior"] / WEIGHTS_NAME, component="prior")
    dtype = next(iter(prior_weights.values())).dtype
    copy.deepcopy(captioner).to(dtype=dtype).save_pretrained(output_dir / CAPTIONER_FOLDER)
    config = PipelineConfig.read(source)
    config.components = {**COMPONENTS, **OPTIONAL_COMPONENTS}
    config.save(output_dir / PIPELINE_CONFIG_NAME)
    return output_dir


def train_captioner(config: CaptionerRunConfig) -> Path:
    """Train a captioner on a tokenized dataset; returns the output folder (see the module docstring)."""
    return TrainingLoop(CaptionerStage(config), config.training, config).run()
