"""Semantics-preserving caption noise for any data: the same words, typed the way people type them."""

from __future__ import annotations

import random


def _choose(rng: random.Random, options: tuple[str, ...]) -> str:
    return options[rng.randrange(len(options))]


def typed_noise(text: str, rng: random.Random) -> str:
    """The same text as someone might type it: capitalised, title case or upper case, a full stop or an
    exclamation mark, a comma, doubled spaces. The words do not change."""
    words = text.split(" ")
    casing = rng.randrange(4)
    if casing == 1:
        words[0] = words[0][:1].upper() + words[0][1:]
    elif casing == 2:
        words = [word[:1].upper() + word[1:] for word in words]
    elif casing == 3:
        words = [word.upper() for word in words]
    if len(words) > 2 and rng.random() < 0.3:
        cut = rng.randrange(1, len(words) - 1)
        words[cut] += ","
    separator = "  " if rng.random() < 0.2 else " "
    return separator.join(words) + _choose(rng, ("", ".", "!", " .", "..."))
