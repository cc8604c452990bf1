"""Captions of shapes scenes, in several styles, and the parser that reads them back.

A style is data: word tables for every attribute plus three templates (one object, a one-object
scene, a two-object scene). ``caption`` fills the templates; ``parse_caption`` turns the same
templates into regular expressions, so the two cannot drift apart.

    en      a small red circle on the left
            a large blue square above a small green triangle
    en_alt  on the left side there is a tiny disk in red
            above a tiny triangle in green there is a big block in blue
    fr      un petit cercle rouge à gauche
            un grand carré bleu au-dessus d'un petit triangle vert

(French: every shape noun is masculine, so the masculine colour adjectives agree.)
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass

from tessera.pipelines.shapes.scene import SceneSpec, ShapeObject


@dataclass(frozen=True)
class CaptionStyle:
    """Word tables (attribute value -> words) and templates of one caption style."""

    sizes: dict[str, str]
    colors: dict[str, str]
    shapes: dict[str, str]
    positions: dict[str, str]
    relations: dict[str, str]
    obj: str  # fields: {size} {color} {shape}
    single: str  # fields: {obj} {position}
    pair: str  # fields: {obj0} {relation} {obj1}


_EN_COLORS = {c: c for c in ("red", "green", "blue", "yellow", "purple", "cyan")}

STYLES: dict[str, CaptionStyle] = {
    "en": CaptionStyle(
        sizes={"small": "small", "large": "large"},
        colors=_EN_COLORS,
        shapes={"circle": "circle", "square": "square", "triangle": "triangle"},
        positions={"left": "on the left", "right": "on the right", "top": "at the top",
                   "bottom": "at the bottom", "center": "in the center"},
        relations={"above": "above", "below": "below", "left of": "to the left of",
                   "right of": "to the right of"},
        obj="a {size} {color} {shape}",
        single="{obj} {position}",
        pair="{obj0} {relation} {obj1}",
    ),
    "en_alt": CaptionStyle(
        sizes={"small": "tiny", "large": "big"},
        colors=_EN_COLORS,
        shapes={"circle": "disk", "square": "block", "triangle": "triangle"},
        positions={"left": "on the left side", "right": "on the right side", "top": "near the top",
                   "bottom": "near the bottom", "center": "in the middle"},
        relations={"above": "above", "below": "below", "left of": "to the left of",
                   "right of": "to the right of"},
        obj="a {size} {shape} in {color}",
        single="{position} there is {obj}",
        pair="{relation} {obj1} there is {obj0}",
    ),
    "fr": CaptionStyle(
        sizes={"small": "petit", "large": "grand"},
        colors={"red": "rouge", "green": "vert", "blue": "bleu", "yellow": "jaune", "purple": "violet",
                "cyan": "cyan"},
        shapes={"circle": "cercle", "square": "carré", "triangle": "triangle"},
        positions={"left": "à gauche", "right": "à droite", "top": "en haut", "bottom": "en bas",
                   "center": "au centre"},
        relations={"above": "au-dessus d'", "below": "en dessous d'", "left of": "à gauche d'",
                   "right of": "à droite d'"},
        obj="un {size} {shape} {color}",
        single="{obj} {position}",
        pair="{obj0} {relation}{obj1}",  # "au-dessus d'" + "un ..." -> "au-dessus d'un ..."
    ),
}
CAPTION_STYLES = tuple(STYLES)


def _style(style: str) -> CaptionStyle:
    if style not in STYLES:
        raise ValueError(f"unknown caption style {style!r}; expected one of {CAPTION_STYLES}")
    return STYLES[style]


def _describe(obj: ShapeObject, style: CaptionStyle) -> str:
    return style.obj.format(size=style.sizes[obj.size], color=style.colors[obj.color],
                            shape=style.shapes[obj.shape])


def caption(spec: SceneSpec, style: str = "en") -> str:
    """The caption of ``spec`` in ``style`` (one of ``CAPTION_STYLES``)."""
    st = _style(style)
    if len(spec.objects) == 1:
        return st.single.format(obj=_describe(spec.objects[0], st), position=st.positions[spec.position])
    first, second = spec.objects
    return st.pair.format(obj0=_describe(first, st), relation=st.relations[spec.relation],
                          obj1=_describe(second, st))


# ---------------------------------------------------------------------------------------------
# Parsing: each template becomes a regular expression whose named groups hold the words.


def _alternatives(group: str, table: dict[str, str]) -> str:
    words = sorted(table.values(), key=len, reverse=True)  # longest first: "to the left of" before "left"
    return f"(?P<{group}>" + "|".join(re.escape(w) for w in words) + ")"


def _template_regex(template: str, fields: dict[str, str]) -> str:
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append(fields[field])
    return "".join(parts)


def _object_regex(st: CaptionStyle, k: int) -> str:
    return _template_regex(st.obj, {"size": _alternatives(f"size{k}", st.sizes),
                                    "color": _alternatives(f"color{k}", st.colors),
                                    "shape": _alternatives(f"shape{k}", st.shapes)})


def _compile(st: CaptionStyle) -> tuple[re.Pattern, re.Pattern]:
    single = _template_regex(st.single, {"obj": _object_regex(st, 0),
                                         "position": _alternatives("position", st.positions)})
    pair = _template_regex(st.pair, {"obj0": _object_regex(st, 0), "obj1": _object_regex(st, 1),
                                     "relation": _alternatives("relation", st.relations)})
    return re.compile(single), re.compile(pair)


_PATTERNS = {name: _compile(st) for name, st in STYLES.items()}


def _lookup(table: dict[str, str], word: str) -> str:
    return next(key for key, value in table.items() if value == word)


def _spec_from_match(match: re.Match, st: CaptionStyle, num_objects: int) -> SceneSpec:
    g = match.groupdict()
    objects = tuple(
        ShapeObject(color=_lookup(st.colors, g[f"color{k}"]), shape=_lookup(st.shapes, g[f"shape{k}"]),
                    size=_lookup(st.sizes, g[f"size{k}"]))
        for k in range(num_objects)
    )
    if num_objects == 1:
        return SceneSpec(objects, position=_lookup(st.positions, g["position"]))
    return SceneSpec(objects, relation=_lookup(st.relations, g["relation"]))


def normalize_caption(text: str) -> str:
    """Lower case, NFC accents, straight apostrophes, single spaces, no final full stop."""
    text = unicodedata.normalize("NFC", text).replace("\u2019", "'").lower()
    return " ".join(text.split()).rstrip(".").strip()


def _match(text: str) -> tuple[str, SceneSpec] | None:
    normalized = normalize_caption(text)
    for name, patterns in _PATTERNS.items():
        for num_objects, pattern in enumerate(patterns, start=1):
            match = pattern.fullmatch(normalized)
            if match:
                return name, _spec_from_match(match, STYLES[name], num_objects)
    return None


def parse_caption(text: str) -> SceneSpec:
    """The scene a caption of any style in ``CAPTION_STYLES`` describes.

    Raises ``ValueError`` naming the caption and showing one example per style when it does not
    follow any style's grammar.
    """
    found = _match(text)
    if found is not None:
        return found[1]
    example = SceneSpec((ShapeObject("red", "circle", "small"),), position="left")
    examples = "; ".join(f"{name}: {caption(example, name)!r}" for name in CAPTION_STYLES)
    raise ValueError(f"cannot parse shapes caption {text!r}; captions look like {examples}")


def caption_style(text: str) -> str | None:
    """The name of the style (in ``CAPTION_STYLES``) whose grammar ``text`` follows, or None."""
    found = _match(text)
    return None if found is None else found[0]


def same_scene(text: str, reference: str | SceneSpec) -> bool:
    """Whether caption ``text`` describes the scene ``reference`` (a caption or a spec), the two compared in
    canonical form ("b below a" is "a above b"); False when ``text`` does not parse."""
    found = _match(text)
    if found is None:
        return False
    expected = parse_caption(reference) if isinstance(reference, str) else reference
    return found[1].canonical() == expected.canonical()
