"""Emoji names and the train/test split: OpenMoji's ``data/openmoji.json`` read into one ``EmojiName`` per
Unicode emoji (CLDR short name, keywords, groups), keyed by code points, and the base-emoji group each is split
with.

Split (``base_group``): every emoji belongs to the group of its base emoji; a group is in the test split when a
hash of its id falls in the first ``test_fraction`` of 1000 buckets, so both styles and every variant of a test
emoji are in test, and the split does not move when other emoji come or go. The base: OpenMoji's
``skintone_base_hexcode`` where it has one, then variation selectors and skin-tone modifiers (U+1F3FB-U+1F3FF)
dropped; in a ZWJ sequence the parts that only say gender (U+2640, U+2642), hair (U+1F9B0-U+1F9B3) or direction
(U+27A1) dropped; man/woman -> person, boy/girl -> child, old man/old woman -> older person; the gendered
couples, kisses and families to their neutral forms (``NEUTRAL_SEQUENCES``). So "woman running: dark skin tone",
"man running" and "person running" are one group, and so are "woman health worker" and "health worker".
Emoji with their own gendered code point (prince / princess, Santa / Mrs. Claus) stay separate groups.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks.tuxpaint import is_held_out

VARIATION_SELECTORS = {0xFE0E, 0xFE0F}
ZWJ = 0x200D
SKIN_TONES = range(0x1F3FB, 0x1F400)
ZWJ_QUALIFIERS = {0x2640, 0x2642, 0x27A1, 0x1F9B0, 0x1F9B1, 0x1F9B2, 0x1F9B3}  # gender, direction, hair
NEUTRAL_PERSONS = {0x1F468: 0x1F9D1, 0x1F469: 0x1F9D1, 0x1F466: 0x1F9D2, 0x1F467: 0x1F9D2,
                   0x1F474: 0x1F9D3, 0x1F475: 0x1F9D3}
NEUTRAL_SEQUENCES = {  # after the person mapping: gendered pairs and families -> the neutral emoji
    "1F9D1-200D-2764-200D-1F48B-200D-1F9D1": "1F48F",  # kiss
    "1F9D1-200D-2764-200D-1F9D1": "1F491",  # couple with heart
    "1F46B": "1F9D1-200D-1F91D-200D-1F9D1", "1F46C": "1F9D1-200D-1F91D-200D-1F9D1",  # people holding hands
    "1F46D": "1F9D1-200D-1F91D-200D-1F9D1",
    "1F46A": "1F9D1-200D-1F9D1-200D-1F9D2",  # family -> family: adult, adult, child
}


def code_points(hexcode: str) -> list[int]:
    """``"1F3C3-1F3FB-200D-2640-FE0F"`` or a Twemoji file stem ``"1f3c3-1f3fb-200d-2640-fe0f"`` -> code points."""
    return [int(part, 16) for part in hexcode.replace("_", "-").split("-") if part]


def hexcode_of(points: list[int]) -> str:
    return "-".join(f"{point:04X}" for point in points)


def match_key(hexcode: str) -> str:
    """The key two sources' files of one emoji share: code points without variation selectors."""
    return hexcode_of([point for point in code_points(hexcode) if point not in VARIATION_SELECTORS])


def base_group(hexcode: str, skintone_base: str = "") -> str:
    """The id of the base-emoji group ``hexcode`` is split with (the rule is in the module docstring)."""
    points = [point for point in code_points(skintone_base or hexcode) if point not in VARIATION_SELECTORS]
    parts: list[list[int]] = [[]]
    for point in points:
        if point == ZWJ:
            parts.append([])
        else:
            parts[-1].append(point)
    parts = [[point for point in part if point not in SKIN_TONES] or part for part in parts if part]
    if len(parts) > 1:
        parts = [part for part in parts if not (len(part) == 1 and part[0] in ZWJ_QUALIFIERS)] or parts
    parts = [[NEUTRAL_PERSONS.get(part[0], part[0])] if len(part) == 1 else part for part in parts]
    joined = f"-{ZWJ:04X}-".join(hexcode_of(part) for part in parts)
    return NEUTRAL_SEQUENCES.get(joined, joined)


def is_test(base: str, test_fraction: float = 0.1, seed: int = 0) -> bool:
    """Whether the group ``base`` is in the test split (deterministic, by hash; ``seed`` picks another split)."""
    return is_held_out(f"emoji-split-{seed}:{base}", test_fraction)


@dataclass(frozen=True)
class EmojiName:
    emoji: str
    hexcode: str
    text: str
    keywords: tuple[str, ...]
    group: str
    subgroup: str
    base: str


def split_tags(tags: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(tag.strip() for tag in tags.split(",") if tag.strip()))


def read_names(openmoji_json: Path) -> tuple[dict[str, EmojiName], Counter, dict[str, list[str]]]:
    """Unicode emoji of ``openmoji.json`` by ``match_key``, and the entries left out (reason -> count, hexcodes).

    Skin-tone variants have no keywords of their own there: they take their base emoji's."""
    entries = json.loads(openmoji_json.read_text(encoding="utf-8"))
    tags_of = {match_key(entry["hexcode"]): split_tags(entry.get("tags") or "") for entry in entries}
    names: dict[str, EmojiName] = {}
    skipped: Counter = Counter()
    which: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        hexcode, group = entry["hexcode"], entry.get("group") or ""
        reason = ("openmoji_extra" if group.startswith("extras-")
                  else "no_name" if not (entry.get("annotation") or "").strip() else None)
        if reason is not None:
            skipped[reason] += 1
            which[reason].append(hexcode)
            continue
        skintone_base = entry.get("skintone_base_hexcode") or ""
        keywords = tags_of[match_key(hexcode)]
        if not keywords and skintone_base:
            keywords = tags_of.get(match_key(skintone_base), ())
        names[match_key(hexcode)] = EmojiName(
            emoji=entry["emoji"], hexcode=hexcode, text=" ".join(entry["annotation"].split()), keywords=keywords,
            group=group, subgroup=entry.get("subgroups") or "", base=base_group(hexcode, skintone_base))
    return names, skipped, which
