"""Caption variation in prior training (``--caption_variation``), and the frozen text encoder's outputs for
every caption a run can draw, computed once.

- ``none``: the dataset's captions as they are.
- ``noise`` (any data): the same words typed differently (``pipelines.data.captions.typed_noise``).
- ``prompts`` (any data with free-text captions: names, short descriptions): the caption asked for the way
  people type prompts (``pipelines.data.captions.prompt_variant``): lead-ins and tails ("an emoji of ...",
  "... icon"; the ``HELD_OUT_PROMPT_TEMPLATES`` never), "X: Y" names without the colon or reordered ("Japan
  flag"), the image's **alternative captions** appended ("red apple, fruit": a tokenized dataset exported with
  ``--alternative_caption_column``, whose ``alternative_captions`` column the prior stage passes as
  ``alternatives``), typing noise.
- a world's name (``shapes``; ``pipelines.data.worlds``): for that world's captions, other phrasings of the
  scene (the built-in shapes: their phrasings module, training families only), sometimes with typing
  noise; other captions get noise only. With ``omission`` > 0, that share of the phrasings leaves one attribute unsaid, drawn from
  ``omit`` (size, colour, shape name, position or relation: "a small red circle" for a small red circle on the
  left), so that a less specific prompt still gets a scene that fits it rather than one the prior never saw.

``CaptionBank`` holds ``num_variants`` variants of each distinct caption (the caption itself first), made
deterministically from ``(seed, caption, k)``; training draws one per row and epoch. A finite bank is what lets
a frozen text encoder run once per variant (``ContextCache``) instead of once per step.

``variation_share(epoch, warmup_epochs)`` is a curriculum: the first epochs give a growing share of rows a
variant and the rest their own caption, so the prior learns which words go with which object on one phrasing
before it meets many. (Measured on the shapes with the cpu-small prior: with every sentence order from the first
step, two-object scenes stayed wrong through 3,500 steps.)
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from tessera.pipelines.data.captions import prompt_variant, typed_noise
from tessera.pipelines.data.worlds import WORLDS, world_named
from tessera.prior.context import TextContext
from tessera.prior.text import TextConditioner

CAPTION_VARIATIONS = ("none", "noise", "prompts", *WORLDS)  # a world's name: that world's phrasings


def omitted_attributes(variation: str, omit: Sequence[str] | None) -> tuple[str, ...]:
    """``omit``, or with None every attribute the world of ``variation`` may leave unsaid (none elsewhere)."""
    if omit is not None:
        return tuple(omit)
    return tuple(world_named(variation).omittable_attributes) if variation in WORLDS else ()


def vary_caption(caption: str, rng: random.Random, variation: str, omission: float = 0.0,
                 omit: Sequence[str] | None = None, alternatives: Sequence[str] = ()) -> str:
    """One variant of ``caption`` (see the module docstring); ``alternatives``: other texts for the same image,
    used by ``prompts``."""
    if variation == "none":
        return caption
    if variation == "prompts":
        return prompt_variant(caption, rng, alternatives)
    if variation in WORLDS:
        text = world_named(variation).phrase_caption(caption, rng, omission, omitted_attributes(variation, omit))
        if text is not None:
            return typed_noise(text, rng) if rng.random() < 0.3 else text
    return typed_noise(caption, rng)


def check_caption_variation(variation: str, omission: float, omit: Sequence[str] | None = None) -> None:
    if variation not in CAPTION_VARIATIONS:
        raise ValueError(f"unknown caption variation {variation!r}; one of {CAPTION_VARIATIONS}")
    if not 0.0 <= omission <= 1.0:
        raise ValueError(f"caption omission must be in [0, 1], got {omission}")
    if omission and variation not in WORLDS:
        names = " or ".join(repr(name) for name in WORLDS)
        raise ValueError(f"caption omission needs caption variation {names} (a world's phrasings: it leaves out "
                         f"attributes of the world's scene), got {variation!r}")
    if omit is not None and variation in WORLDS:
        allowed = world_named(variation).omittable_attributes
        unknown = set(omit) - set(allowed)
        if unknown:
            raise ValueError(f"cannot omit {sorted(unknown)}; choose from {allowed}")


def variation_share(epoch: int, warmup_epochs: int) -> float:
    """The share of rows given a variant in ``epoch``: ``epoch / warmup_epochs``, then all (0-based epochs)."""
    return 1.0 if epoch >= warmup_epochs else epoch / warmup_epochs


def merged_alternatives(captions: Iterable[str], alternatives: Iterable[Sequence[str]]) -> dict[str, list[str]]:
    """Each distinct caption's alternative captions: those of every row with that caption, in order of first
    appearance, each once (rows of one caption may list different ones, e.g. two art styles)."""
    merged: dict[str, dict[str, None]] = {}
    for caption, texts in zip(captions, alternatives, strict=True):
        merged.setdefault(caption, {}).update(dict.fromkeys(texts or ()))
    return {caption: list(texts) for caption, texts in merged.items() if texts}


class CaptionBank:
    """``num_variants`` variants of each distinct caption; variant k of a caption is made by
    ``random.Random(f"{seed}:{caption}:{k}")``, so a bank is a function of its arguments (and of the order of
    each caption's ``alternatives``)."""

    def __init__(self, captions: Iterable[str], variation: str, num_variants: int, seed: int, omission: float = 0.0,
                 omit: Sequence[str] | None = None, alternatives: Mapping[str, Sequence[str]] | None = None):
        check_caption_variation(variation, omission, omit)
        if num_variants < 1:
            raise ValueError(f"num_variants must be >= 1, got {num_variants}")
        self.variation = variation
        count = num_variants if variation != "none" else 1
        alternatives = alternatives or {}
        self.variants = {caption: [caption] + [vary_caption(caption, random.Random(f"{seed}:{caption}:{k}"), variation,
                                                            omission, omit, alternatives.get(caption, ()))
                                               for k in range(1, count)]
                         for caption in dict.fromkeys(captions)}

    def pick(self, caption: str, rng: random.Random, variant_share: float = 1.0) -> str:
        """One of ``caption``'s variants (the caption itself among them); with ``variant_share`` < 1, the caption
        itself for the other rows."""
        options = self.variants.get(caption)
        if options is None or (variant_share < 1.0 and rng.random() >= variant_share):
            return caption
        return options[rng.randrange(len(options))]

    def captions(self) -> list[str]:
        """Every distinct caption the bank can give."""
        return list(dict.fromkeys(text for options in self.variants.values() for text in options))


class ContextCache:
    """A frozen text encoder's output for each of ``captions``, computed once (float16, real tokens only)."""

    def __init__(self, text: TextConditioner, captions: list[str], batch_size: int = 256, show_progress: bool = True):
        if text.trainable:
            raise ValueError("only a frozen text encoder's outputs can be cached")
        self.entries: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            for start in tqdm(range(0, len(captions), batch_size), desc="encoding captions", unit="batch",
                              disable=not show_progress):
                chunk = captions[start:start + batch_size]
                context = text(chunk)  # (B, L, D), padding zeroed
                lengths = context.mask.sum(1).tolist()
                for caption, states, length in zip(chunk, context.hidden_states, lengths):
                    self.entries[caption] = states[:length].to(torch.float16).cpu().clone()  # (l, D)

    def __contains__(self, caption: str) -> bool:
        return caption in self.entries

    def context(self, captions: list[str], device: torch.device | str) -> TextContext:
        """The cached outputs of ``captions`` as one batch, padded to the longest (mask False, zeros)."""
        rows = [self.entries[caption] for caption in captions]
        length = max(row.shape[0] for row in rows)
        states = torch.zeros(len(rows), length, rows[0].shape[1])  # (B, L, D)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)  # (B, L)
        for index, row in enumerate(rows):
            states[index, :row.shape[0]] = row.float()
            mask[index, :row.shape[0]] = True
        return TextContext(states, mask).to(device)
