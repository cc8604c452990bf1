"""``python train.py quickstart``: the whole recipe in one command, image tokenizer -> tokens -> prior -> pipeline.

Each stage writes its own folder under ``output_dir`` and is the same as running its ``train.py`` command:

    vqgan/      train.py vqgan      (the VQ-GAN; checkpoints, sample grids, metrics.jsonl)
    tokens/     train.py tokenize   (parquet shards + tokenized_dataset.json)
    prior/      train.py prior      (the prior run; checkpoints, sample grids, metrics.jsonl)
    captioner/  train.py captioner --pipeline prior/  (the captioner run; the prior's pipeline + captioner/)
    pipeline/   the saved TextToImagePipeline with its captioner (float16 weights by default: the shipped model
                is this folder)
    recipe.json       the recipe it ran (``train.py quickstart --recipe OUTPUT_DIR/recipe.json`` runs it again)
    quickstart.json   the recipe and each stage's wall time

Re-running the same command after an interruption continues: a finished stage is skipped, an interrupted
training stage resumes from its latest checkpoint, an interrupted export resumes at its first missing shard.
A folder that holds another recipe's run (its ``recipe.json`` differs) or something else (a pipeline, an
imagefolder, a dataset) is refused before any work (``FolderInUseError``): continuing there would mix the two.

What runs is a recipe (``pipelines.training.recipe``; the shipped pipelines' are ``recipes/tessera-shapes.json``
and ``recipes/tessera-emoji.json``): each stage's own defaults with the recipe's settings. Any data works (any
data-layer source): on a benchmark world's data (the shapes) the validation prompts and evaluator figures are
the world's, elsewhere the validation prompts default to the first distinct captions of the held-out rows.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tessera.core.folders import FolderInUseError, folder_kind
from tessera.core.io import atomic_write_text
from tessera.core.pretrained import WEIGHTS_NAME
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.tokens import export_tokenized_dataset, load_tokenized_dataset
from tessera.pipelines.tokens.dataset import dict_differences
from tessera.pipelines.training.captioner import train_captioner
from tessera.pipelines.training.prior import train_prior
from tessera.pipelines.training.recipe import Recipe, load_recipe, stage_configs
from tessera.pipelines.training.vqgan import train_tokenizer

logger = logging.getLogger(__name__)

SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RECIPE_NAME = "recipe.json"


@dataclass
class QuickstartResult:
    pipeline_dir: Path
    example_prompt: str  # the first validation prompt (a prompt to try)
    stage_seconds: dict[str, float]  # the wall time of each stage run now (a skipped stage is absent)
    final_metrics: dict[str, float]  # the last validation of the prior (evaluator accuracy on a world's data) and
    # of the captioner (prefixed "captioner/": caption exact match on a world's data)


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


def recorded_prompts(run_dir: Path) -> tuple[str, ...]:
    """The validation prompts a prior run recorded in its ``run_config.json`` (the stage fills in the world's)."""
    path = run_dir / "run_config.json"
    if not path.is_file():
        return ()
    return tuple(json.loads(path.read_text(encoding="utf-8"))["data"]["validation_prompts"])


def refuse_other_run(root: Path, recipe: Recipe) -> None:
    """``FolderInUseError`` when ``root`` holds a run of another recipe or is another kind of folder."""
    saved = root / RECIPE_NAME
    if saved.is_file():
        # read as a recipe, so that fields a newer version added (at their defaults) are no difference
        changes = dict_differences(load_recipe(saved).to_dict(), recipe.to_dict())
        if changes:
            raise FolderInUseError(
                f"{root} holds a quickstart run of another recipe (its recipe.json -> now: {'; '.join(changes)}); "
                f"continuing it with this one would mix the two. Choose another --output_dir, or continue that run "
                f"with --recipe {saved}. Nothing was written.")
    elif root.is_dir() and (kind := folder_kind(root)) is not None:
        raise FolderInUseError(f"{root} already holds {kind}; a quickstart run there would write over it. "
                               f"Choose another --output_dir. Nothing was written.")


def run_quickstart(recipe: Recipe, output_dir: str | Path) -> QuickstartResult:
    """Train ``recipe`` into ``output_dir`` (see the module docstring); a finished stage is skipped."""
    root = Path(output_dir)
    configs = stage_configs(recipe, root)  # checks every stage's settings before anything is written
    refuse_other_run(root, recipe)
    root.mkdir(parents=True, exist_ok=True)
    recipe.save(root / RECIPE_NAME)
    vqgan_dir, prior_dir, pipeline_dir = root / "vqgan", root / "prior", root / "pipeline"
    seconds: dict[str, float] = {}

    def timed(stage: str, work) -> None:
        start = time.perf_counter()
        work()
        seconds[stage] = round(time.perf_counter() - start, 1)
        logger.info("quickstart: %s took %.1f min", stage, seconds[stage] / 60)

    if (vqgan_dir / WEIGHTS_NAME).is_file():
        logger.info("quickstart: %s holds a trained VQ-GAN; skipping the tokenizer stage", vqgan_dir)
    else:
        timed("tokenizer", lambda: train_tokenizer(configs.vqgan))
    timed("tokenize", lambda: export_tokenized_dataset(configs.export))
    first_captions = load_tokenized_dataset(configs.export.output_dir)[:20]["caption"]
    if (prior_dir / "pipeline.json").is_file():
        logger.info("quickstart: %s holds a trained prior; skipping the prior stage", prior_dir)
    else:
        timed("prior", lambda: train_prior(configs.prior))
    final_dir, metrics = prior_dir, last_metrics(prior_dir)
    if configs.captioner is not None:
        captioner_dir = Path(configs.captioner.training.output_dir)
        if (captioner_dir / "pipeline.json").is_file():
            logger.info("quickstart: %s holds a trained captioner; skipping the captioner stage", captioner_dir)
        else:
            timed("captioner", lambda: train_captioner(configs.captioner))
        final_dir = captioner_dir
        metrics.update({f"captioner/{key}": value for key, value in last_metrics(captioner_dir).items()})
    pipeline = TextToImagePipeline.from_pretrained(final_dir)
    pipeline.save_pretrained(pipeline_dir, dtype=SAVE_DTYPES[recipe.save_dtype])
    result = QuickstartResult(pipeline_dir, (recorded_prompts(prior_dir) or first_captions)[0], seconds, metrics)
    record = root / "quickstart.json"
    previous = json.loads(record.read_text(encoding="utf-8")).get("stage_seconds", {}) if record.is_file() else {}
    atomic_write_text(record, json.dumps({"recipe": recipe.to_dict(), "stage_seconds": {**previous, **seconds},
                                          "final_metrics": result.final_metrics}, indent=2) + "\n")
    return result
