"""Strict key mapping: every source weight is used or dropped for a stated reason, every Tessera weight is filled.

A converter turns the source's key names into a ``KeyPlan`` (source key -> Tessera key, or dropped with a reason);
``assemble`` then builds the Tessera state dict and refuses, listing the keys, when a source key is covered by no
rule, a Tessera weight gets no value or two, or a shape differs. The only Tessera entries not taken from the
source are the quantizer's training bookkeeping in ``DEFAULTED``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from tessera.core.config import CheckpointMismatchError
from tessera.core.pretrained import list_head

# Tessera buffers no foreign checkpoint has; the freshly built model's values are the right ones.
DEFAULTED: dict[str, str] = {
    "quantizer.initialized": "k-means initialisation is not pending",
    "quantizer.usage_ema": "codebook usage statistics start at zero",
    "quantizer.steps": "training steps of the quantizer start at zero",
}


class ConversionError(CheckpointMismatchError):
    """The source weights do not map one-to-one onto the Tessera model."""


@dataclass(frozen=True)
class Rule:
    """Source keys matching ``pattern`` (a full match) become ``rename`` (a ``re`` template or a function of the
    match), or are dropped when ``rename`` is None, for ``reason``."""

    pattern: str
    rename: str | Callable[[re.Match], str] | None
    reason: str = ""


@dataclass
class KeyPlan:
    targets: dict[str, str] = field(default_factory=dict)  # source key -> Tessera key
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> why Tessera does not need it
    unmapped: list[str] = field(default_factory=list)  # source keys no rule covers

    def dropped_summary(self) -> dict[str, int]:
        """How many keys were dropped for each reason."""
        summary: dict[str, int] = {}
        for reason in self.dropped.values():
            summary[reason] = summary.get(reason, 0) + 1
        return summary


def plan_with_rules(keys: Iterable[str], rules: list[Rule]) -> KeyPlan:
    """Apply the first matching rule to each key."""
    plan = KeyPlan()
    for key in keys:
        for rule in rules:
            match = re.fullmatch(rule.pattern, key)
            if match is None:
                continue
            if rule.rename is None:
                plan.dropped[key] = rule.reason
            elif callable(rule.rename):
                plan.targets[key] = rule.rename(match)
            else:
                plan.targets[key] = match.expand(rule.rename)
            break
        else:
            plan.unmapped.append(key)
    return plan


def plan_from_names(keys: Iterable[str], names: dict[str, str]) -> KeyPlan:
    """A plan from an exact source-name -> Tessera-name table."""
    plan = KeyPlan()
    for key in keys:
        if key in names:
            plan.targets[key] = names[key]
        else:
            plan.unmapped.append(key)
    return plan


def assemble(source: dict[str, torch.Tensor], plan: KeyPlan, model: nn.Module, *,
             origin: str) -> dict[str, torch.Tensor]:
    """The Tessera state dict for ``model`` from ``source`` renamed by ``plan``; ``ConversionError`` listing
    every key that does not fit."""
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    duplicates, unknown, wrong_shape = [], [], []
    for key, target in plan.targets.items():
        if target not in expected:
            unknown.append(f"{key} -> {target}")
        elif target in state:
            duplicates.append(f"{key} -> {target}")
        elif tuple(source[key].shape) != tuple(expected[target].shape):
            wrong_shape.append(f"{key} {tuple(source[key].shape)} -> {target} {tuple(expected[target].shape)}")
        else:
            state[target] = source[key].to(expected[target].dtype)
    for key in DEFAULTED:
        if key in expected and key not in state:
            state[key] = expected[key]
    missing = sorted(set(expected) - set(state))
    problems = [
        f"source keys no rule covers: {list_head(sorted(plan.unmapped))}" if plan.unmapped else "",
        f"source keys mapped to no Tessera weight: {list_head(unknown)}" if unknown else "",
        f"Tessera weights given twice: {list_head(duplicates)}" if duplicates else "",
        f"wrong shapes: {list_head(wrong_shape)}" if wrong_shape else "",
        f"Tessera weights the source does not fill: {list_head(missing)}" if missing else "",
    ]
    if any(problems):
        raise ConversionError(f"{origin} does not convert one-to-one: " + "; ".join(p for p in problems if p))
    return state
