"""Benchmark worlds: synthetic data that comes with its own judge. Training asks the world of its data (by the
data source, by the captions, or by name in a recipe) for validation prompts, caption phrasings, held-out
captions and evaluator figures, and never imports a world itself; a new world is one entry in ``WORLDS``.

A world offers (see ``pipelines.shapes.world.ShapesWorld``, the built-in one): ``name``,
``validation_prompts``, ``omittable_attributes``, ``owns_source(source)``, ``validation_source(n, seed)``,
``owns_captions(captions)``, ``caption_styles(captions)``, ``phrase_caption(text, rng, omission, omit)``,
``evaluation_captions(count, seed, styles)``, ``judge_images(images, captions)``, ``image_accuracy(images,
captions)``, ``captioning_scenes(count, resolution, seed)`` and ``same_caption(generated, truth)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tessera.pipelines.shapes.world import SHAPES_WORLD

WORLDS: dict[str, Any] = {SHAPES_WORLD.name: SHAPES_WORLD}
AUTO, NONE = "auto", "none"  # a stage's ``world`` setting: found from the data, or none


def world_named(name: str) -> Any:
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; known: {sorted(WORLDS)}")
    return WORLDS[name]


def check_world_choice(choice: str) -> None:
    """``choice``: "auto", "none" or a registered world's name."""
    if choice not in (AUTO, NONE):
        world_named(choice)


def world_of_captions(captions: Sequence[str], choice: str = AUTO) -> Any | None:
    """The world ``choice`` names; with "auto", the world whose captions these are (None: no world's)."""
    if choice == NONE:
        return None
    if choice != AUTO:
        return world_named(choice)
    return next((world for world in WORLDS.values() if world.owns_captions(captions)), None)


def world_of_source(source: str, choice: str = AUTO) -> Any | None:
    """The world ``choice`` names; with "auto", the world whose data the source string names (None: none)."""
    if choice == NONE:
        return None
    if choice != AUTO:
        return world_named(choice)
    return next((world for world in WORLDS.values() if world.owns_source(source)), None)
