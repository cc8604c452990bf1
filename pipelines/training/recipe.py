"""A recipe: everything ``train.py quickstart`` trains, as one JSON file (``recipes/*.json``).

A recipe names the data and, per stage, the model preset and the settings that differ from the stage's own
defaults (``default_run_config`` of ``training.vqgan`` / ``training.prior`` / ``training.captioner``, the same
defaults ``train.py vqgan`` / ``prior`` / ``captioner`` start from), nested as in the stage's ``run_config.json``:

    {"data": "shapes:num_samples=50000",
     "vqgan": {"preset": "cpu-32", "settings": {"training": {"max_train_steps": 2000}}},
     "prior": {"preset": "cpu-small", "settings": {"prior": {"kind": "masked"}, ...}},
     "captioner": {"preset": "cpu-small", "settings": {"training": {"max_train_steps": 3500}}}}

So a setting has one default, in its stage's config; where a recipe differs, the recipe file says so.
``stage_configs`` composes the run configs a quickstart trains; a quickstart writes the recipe it ran as
``recipe.json`` in its output folder, and ``train.py quickstart --recipe that/recipe.json`` runs it again.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessera.core.config import JSONConfig
from tessera.pipelines.tokens import ExportConfig
from tessera.pipelines.training import captioner, prior, vqgan
from tessera.pipelines.training.config import TrainingConfig, assign, with_settings

STAGES = ("vqgan", "prior", "captioner")
SAVE_DTYPES = ("fp32", "fp16", "bf16")


@dataclass
class StageRecipe(JSONConfig):
    preset: str | None = None  # the model size preset (None: the stage's default preset)
    # the stage's run-config fields that differ from its defaults, nested as in its run_config.json
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe(JSONConfig):
    data: str = "shapes:num_samples=50000"  # images + captions, any data-layer source
    caption_column: str | None = None  # default: guessed ("text", "caption", ...)
    alternative_caption_column: str | None = None  # other texts per image (a list, e.g. keywords), for "prompts"
    seed: int | None = None  # every stage's and the export's seed (None: theirs, 0)
    mixed_precision: str | None = None  # every stage's (None: theirs, "no")
    save_dtype: str = "fp16"  # weights of the final pipeline folder
    vqgan: StageRecipe = field(default_factory=StageRecipe)
    prior: StageRecipe = field(default_factory=StageRecipe)
    captioner: StageRecipe | None = field(default_factory=StageRecipe)  # None: no captioner

    def __post_init__(self) -> None:
        if isinstance(self.captioner, dict):
            self.captioner = StageRecipe.from_dict(self.captioner)
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save_dtype must be one of {list(SAVE_DTYPES)}, got {self.save_dtype!r}")


@dataclass
class StageConfigs:
    """The configs a quickstart runs, in order; ``captioner`` None without one."""

    vqgan: vqgan.TokenizerRunConfig
    export: ExportConfig
    prior: prior.PriorRunConfig
    captioner: captioner.CaptionerRunConfig | None


def load_recipe(path: str | Path) -> Recipe:
    try:
        return Recipe.load(path)
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"cannot read the recipe {path}: {error}") from error


def with_assignments(recipe: Recipe, assignments: dict[str, Any]) -> Recipe:
    """A copy of ``recipe`` with ``{"key.path": value}`` applied: a recipe field (``seed``), a stage's
    ``preset`` (``prior.preset``), or a stage setting (``prior.training.max_train_steps``); ``captioner`` None
    removes the captioner stage."""
    data = copy.deepcopy(recipe.to_dict())
    for key, value in assignments.items():
        stage, _, rest = key.partition(".")
        if stage in STAGES and rest and rest != "preset":
            if data[stage] is None:
                raise ValueError(f"{key}: the recipe has no {stage} stage")
            node = data[stage]["settings"]
            *parents, leaf = rest.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value  # checked against the stage's config when composed
        else:
            assign(data, key, value)
    return Recipe.from_dict(data)


def _stage_config(stage: str, module, recipe: StageRecipe):
    """``module.default_run_config(preset)`` with the stage's recipe settings; errors name the stage."""
    try:
        return with_settings(module.default_run_config(recipe.preset), recipe.settings,
                             getattr(module, "DERIVED_FIELDS", None))
    except (TypeError, ValueError) as error:
        raise ValueError(f"recipe, {stage} stage: {error}") from error


def _stage_training(training: TrainingConfig, recipe: Recipe, output_dir: Path) -> TrainingConfig:
    changes = {"output_dir": str(output_dir), "resume_from_checkpoint": "latest"}
    if recipe.seed is not None:
        changes["seed"] = recipe.seed
    if recipe.mixed_precision is not None:
        changes["mixed_precision"] = recipe.mixed_precision
    return dataclasses.replace(training, **changes)


def stage_configs(recipe: Recipe, root: Path) -> StageConfigs:
    """Each stage's defaults with the recipe's settings, then the run's folders under ``root`` and the
    recipe's data, seed and precision (every stage resumes from its latest checkpoint)."""
    vqgan_dir, tokens_dir, prior_dir = root / "vqgan", root / "tokens", root / "prior"
    tokenizer = _stage_config("vqgan", vqgan, recipe.vqgan)
    tokenizer.data = dataclasses.replace(tokenizer.data, data=recipe.data, caption_column=recipe.caption_column)
    tokenizer.training = _stage_training(tokenizer.training, recipe, vqgan_dir)
    export = ExportConfig(vqgan=str(vqgan_dir), data=recipe.data, output_dir=str(tokens_dir),
                          caption_column=recipe.caption_column,
                          alternative_caption_column=recipe.alternative_caption_column)
    if recipe.seed is not None:
        export.seed = recipe.seed
    prior_run = _stage_config("prior", prior, recipe.prior)
    prior_run.data = dataclasses.replace(prior_run.data, tokens=str(tokens_dir), vqgan=str(vqgan_dir))
    prior_run.training = _stage_training(prior_run.training, recipe, prior_dir)
    captioner_run = None
    if recipe.captioner is not None:
        captioner_run = _stage_config("captioner", captioner, recipe.captioner)
        captioner_run.data = dataclasses.replace(captioner_run.data, tokens=str(tokens_dir), vqgan=str(vqgan_dir),
                                                 pipeline=str(prior_dir))
        captioner_run.training = _stage_training(captioner_run.training, recipe, root / "captioner")
    return StageConfigs(tokenizer, export, prior_run, captioner_run)
