"""Near-copies weighted down: rows whose captions name variants of one thing ("waving hand: dark skin tone",
"waving hand: light skin tone", ... beside "waving hand") form a group, and each group is drawn as often as one
row would be (``--group_pattern``; ``batches.StepBatchSampler`` draws its epochs by these weights).

A row's group is its caption with every match of the pattern removed (then stripped of spaces and of a trailing
":" or ","), so the pattern names what makes a variant. For CLDR emoji names, skin tones and hair:

    (:|,)? ?(light|medium-light|medium|medium-dark|dark) skin tone|(:|,)? ?(red|curly|white|blond) hair|(:|,)? ?bald

Without it, a drawing with five skin tones and two genders is seen ten times as often as an apple, and the prior
spends its capacity on the copies.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import torch


def check_group_pattern(pattern: str | None) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"group_pattern {pattern!r} is not a regular expression: {error}") from None


def caption_group(caption: str, pattern: re.Pattern) -> str:
    """The group a caption belongs to: the caption without the pattern's matches."""
    return pattern.sub("", caption).strip().rstrip(":,").strip()


def group_weights(captions: Sequence[str], pattern: str) -> torch.Tensor:
    """(N,) float64: 1 / the size of each row's group, so that every group weighs as much as one row."""
    compiled = re.compile(pattern)
    groups = [caption_group(caption, compiled) for caption in captions]
    sizes = Counter(groups)
    return torch.tensor([1.0 / sizes[group] for group in groups], dtype=torch.float64)
