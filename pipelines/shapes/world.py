"""The shapes world as a training plug-in: what the training stages ask of a benchmark world (is this data
yours? prompts for sample grids, phrasings for caption variation, held-out captions and the evaluator's
verdict on generated images, scenes for judging captions). Registered in ``pipelines.data.worlds``; training
reaches it only through that registry, so a new world plugs in the same way."""

from __future__ import annotations

import random
from collections.abc import Sequence

import datasets
import torch

from tessera.pipelines.shapes.captions import caption_style, parse_caption, same_scene
from tessera.pipelines.shapes.dataset import shapes_dataset
from tessera.pipelines.shapes.evaluate import STATED_ATTRIBUTES, evaluate
from tessera.pipelines.shapes.phrasings import omittable, phrase

# The prompts of the sample grids in validation (train.py quickstart's shapes default).
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
PHRASED_STYLES = ("en", "en_alt")  # the caption styles the English phrasings may replace


class ShapesWorld:
    """The built-in synthetic scenes (``pipelines.shapes``) seen by training."""

    name = "shapes"
    validation_prompts = VALIDATION_PROMPTS
    omittable_attributes = STATED_ATTRIBUTES  # what a varied caption may leave unsaid

    def owns_source(self, source: str) -> bool:
        """Whether a data-layer source string names this world's data (``shapes`` / ``shapes:k=v,...``)."""
        return source == "shapes" or source.startswith("shapes:")

    def validation_source(self, num_samples: int, seed: int) -> str:
        """A data-layer source of held-out images (the ``test`` split)."""
        return f"shapes:split=test,num_samples={num_samples},seed={seed}"

    def owns_captions(self, captions: Sequence[str]) -> bool:
        """Whether the first captions all parse as shapes scenes."""
        try:
            for text in captions[:20]:
                parse_caption(text)
        except ValueError:
            return False
        return True

    def caption_styles(self, captions: Sequence[str]) -> tuple[str, ...]:
        """"en" plus the caption styles of ``captions`` (those that parse), in first-seen order."""
        styles = ["en"]
        for text in captions[:200]:
            style = caption_style(text)
            if style is not None and style not in styles:
                styles.append(style)
        return tuple(styles)

    def phrase_caption(self, text: str, rng: random.Random, omission: float = 0.0,
                       omit: Sequence[str] = STATED_ATTRIBUTES) -> str | None:
        """Another phrasing of a scene's English caption, leaving one of ``omit`` unsaid for a share
        ``omission`` of the draws; None for a caption this world does not phrase (another style, not a scene)."""
        if caption_style(text) not in PHRASED_STYLES:
            return None
        spec = parse_caption(text)
        choices = [attribute for attribute in omittable(spec) if attribute in omit]
        unsaid = (rng.choice(choices),) if omission and choices and rng.random() < omission else ()
        return phrase(spec, rng, omit=unsaid)

    def evaluation_captions(self, count: int, seed: int, styles: Sequence[str] = ("en",)) -> dict[str, list[str]]:
        """Captions never seen in training: the ``test`` split, and ``holdout`` (unseen colour-shape pairs), per
        caption style (keys ``test``/``holdout`` for "en", ``test_fr``/``holdout_fr`` for "fr", ...)."""
        return {split if style == "en" else f"{split}_{style}":
                shapes_dataset(count, seed=seed, split=split, caption_style=style)["caption"]
                for style in styles for split in ("test", "holdout")}

    def judge_images(self, images: torch.Tensor, captions: Sequence[str]) -> list[bool]:
        """Per image (N, 3, H, W) in [-1, 1]: whether the evaluator finds every stated attribute right."""
        return [judgement.all_correct for judgement in evaluate(images, list(captions)).judgements]

    def image_accuracy(self, images: torch.Tensor, captions: Sequence[str]) -> float:
        """The share of ``images`` that fit their captions in every stated attribute."""
        return evaluate(images, list(captions)).accuracy["all_correct"]

    def captioning_scenes(self, count: int, resolution: int, seed: int) -> dict[str, datasets.Dataset]:
        """Held-out scenes (``image``, ``caption``) per split (``test``, ``holdout``) for judging captions."""
        return {split: shapes_dataset(count, resolution=resolution, seed=seed, split=split)
                for split in ("test", "holdout")}

    def same_caption(self, generated: str, truth: str) -> bool:
        """Whether a generated caption states the same scene as the true one."""
        return same_scene(generated, truth)


SHAPES_WORLD = ShapesWorld()
