"""Many ways to say one scene, as people type them: for caption variation in prior training
(``--caption_variation shapes``) and for measuring robustness to prompts (``benchmarks/prompt_robustness.py``).

Every phrasing is made from a ``SceneSpec``, never by editing a caption, so it always says the same scene. Two
disjoint vocabularies and template sets:

- ``TRAINING``: optional articles and lead-ins ("a picture of ..."), many clause orders ("on the left, a
  small red circle"; "there is ..."; "a red circle is above a blue square"; the reference object first and
  the other referred back to: "a blue square has a red circle above it"), synonyms for every attribute
  ("little", "big", "disc", "box", "in the middle", "over", "under" ...), and both object orders of a
  relation with the relation flipped ("a blue square below a red circle" for "a red circle above a blue
  square").
- ``HELD_OUT``: never used in training, only to measure generalisation: other lead-ins ("please draw ..."),
  other orders ("a blue square with a red circle above it"), and other synonyms ("tiny", "huge", "violet",
  "beneath", "in the centre" ...). ``phrase(spec, rng, family=...)`` makes one of a family.

Any phrasing may also leave attributes unsaid (``omit``: "a red circle on the left" for a small one, "a small
red circle" without its position, "a red circle and a blue square" without their relation, "a small red shape"):
a less specific prompt that is still true of the scene, as people often type them.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Collection
from dataclasses import dataclass

from tessera.pipelines.shapes.scene import CONVERSE_RELATION, SceneSpec, ShapeObject


@dataclass(frozen=True)
class Words:
    """The words for each attribute value."""

    sizes: dict[str, tuple[str, ...]]
    colors: dict[str, tuple[str, ...]]
    shapes: dict[str, tuple[str, ...]]
    positions: dict[str, tuple[str, ...]]
    relations: dict[str, tuple[str, ...]]


TRAINING_WORDS = Words(
    sizes={"small": ("small", "little"), "large": ("large", "big")},
    colors={"red": ("red",), "green": ("green",), "blue": ("blue",), "yellow": ("yellow",),
            "purple": ("purple",), "cyan": ("cyan", "turquoise")},
    shapes={"circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle",)},
    positions={"left": ("on the left", "to the left", "on the left side", "at the left"),
               "right": ("on the right", "to the right", "on the right side", "at the right"),
               "top": ("at the top", "near the top", "at the top of the image", "up top"),
               "bottom": ("at the bottom", "near the bottom", "at the bottom of the image", "down below"),
               "center": ("in the center", "in the middle", "at the center", "in the middle of the image")},
    relations={"above": ("above", "over"), "below": ("below", "under"),
               "left of": ("to the left of", "left of"), "right of": ("to the right of", "right of")},
)
HELD_OUT_WORDS = Words(
    sizes={"small": ("tiny",), "large": ("huge",)},
    colors={"purple": ("violet",), "cyan": ("aqua",)},
    shapes={"circle": ("dot",), "square": ("block",)},
    positions={"left": ("on the left-hand side",), "right": ("on the right-hand side",),
               "top": ("in the upper part",), "bottom": ("in the lower part",), "center": ("in the centre",)},
    relations={"above": ("on top of",), "below": ("beneath",), "left of": ("on the left of",),
               "right of": ("on the right of",)},
)

TRAINING_LEAD_INS = ("a picture of", "an image of", "a photo of", "draw", "show", "a drawing of", "an image with")
HELD_OUT_LEAD_INS = ("please draw", "can you draw", "i would like to see", "generate an image of")

# Sentence orders. Single object: {obj} {pos}. Pair: {obj0} {rel} {obj1}, with {conv} the flipped relation.
TRAINING_SINGLE = ("{obj} {pos}", "{pos}, {obj}", "{pos} there is {obj}", "there is {obj} {pos}", "{obj} is {pos}",
                   "{obj} sitting {pos}", "{obj} located {pos}", "{obj} that is {pos}", "{pos} is {obj}",
                   "{pos} you can see {obj}", "{obj}, {pos}", "{obj} positioned {pos}")
TRAINING_PAIR = ("{obj0} {rel} {obj1}", "{obj1} {conv} {obj0}", "{rel} {obj1} there is {obj0}",
                 "there is {obj0} {rel} {obj1}", "{obj0} is {rel} {obj1}", "{obj0} sits {rel} {obj1}",
                 "{obj1} is {conv} {obj0}", "{obj0} located {rel} {obj1}", "{rel} {obj1}, {obj0}",
                 "{obj1} has {obj0} {rel} it", "{obj1}, {rel} it is {obj0}", "{obj1}; {rel} it there is {obj0}",
                 "{obj1}, {obj0} is {rel} it")
HELD_OUT_SINGLE = ("{obj} placed {pos}", "{pos} we see {obj}")
HELD_OUT_PAIR = ("{obj1} with {obj0} {rel} it", "{obj1} and {obj0} {rel} it")
ARTICLES = ("a", "one", "")
OBJECT_ORDERS = ("{size} {color} {shape}", "{size} {shape} in {color}")
# What a less specific phrasing says in place of what it omits: no position, no relation (not with "and" or
# "with": the held-out orders' words), no shape name.
UNPLACED_SINGLE = ("{obj}", "there is {obj}", "you can see {obj}")
UNRELATED_PAIR = ("{obj0}, {obj1}", "{obj0} as well as {obj1}", "{obj0} plus {obj1}")
GENERIC_SHAPE_WORDS = ("shape", "object")

FAMILIES = ("training", "held_out_lead_in", "held_out_order", "held_out_synonyms")
ATTRIBUTES = tuple(field.name for field in dataclasses.fields(Words))  # sizes, colors, shapes, positions, relations


def _choose(rng: random.Random, options: tuple[str, ...]) -> str:
    return options[rng.randrange(len(options))]


def _words(attribute: str, value: str, rng: random.Random, held_out: Collection[str]) -> str:
    """A word for ``value``: from the held-out synonyms when ``attribute`` is in ``held_out`` and there are
    some, else a training word."""
    held = getattr(HELD_OUT_WORDS, attribute).get(value, ()) if attribute in held_out else ()
    return _choose(rng, held) if held else _choose(rng, getattr(TRAINING_WORDS, attribute)[value])


def omittable(spec: SceneSpec) -> tuple[str, ...]:
    """The attributes a phrasing of ``spec`` may leave unsaid (names of ``evaluate.Judgement`` fields)."""
    return ("size", "color", "shape", "position" if len(spec.objects) == 1 else "relation")


def describe(obj: ShapeObject, rng: random.Random, *, held_out_words: Collection[str] = (),
             omit: Collection[str] = ()) -> str:
    """One object: an optional article, then size, colour and shape words in one of ``OBJECT_ORDERS``; the
    attributes named in ``held_out_words`` use held-out synonyms where they have some; those in ``omit``
    ("size", "color", "shape") are left out (a generic word stands for the shape)."""
    words = {"size": _words("sizes", obj.size, rng, held_out_words),
             "color": _words("colors", obj.color, rng, held_out_words),
             "shape": _words("shapes", obj.shape, rng, held_out_words)}
    article = _choose(rng, ARTICLES)
    if not omit:
        return " ".join(part for part in (article, _choose(rng, OBJECT_ORDERS).format(**words)) if part)
    if "shape" in omit:
        words["shape"] = _choose(rng, GENERIC_SHAPE_WORDS)
    words.update({attribute: "" for attribute in ("size", "color") if attribute in omit})
    order = OBJECT_ORDERS[0] if "color" in omit else _choose(rng, OBJECT_ORDERS)
    return " ".join(f"{article} {order.format(**words)}".split())


def has_held_out_synonym(spec: SceneSpec, attribute: str) -> bool:
    """Whether a ``held_out_synonyms`` phrasing of ``spec`` uses a held-out word for ``attribute``."""
    table = getattr(HELD_OUT_WORDS, attribute)
    if attribute == "positions":
        return spec.position in table
    if attribute == "relations":
        return spec.relation in table
    return any(getattr(obj, attribute[:-1]) in table for obj in spec.objects)


def phrase(spec: SceneSpec, rng: random.Random, family: str = "training", *,
           synonym_attributes: Collection[str] = ATTRIBUTES, omit: Collection[str] = ()) -> str:
    """One phrasing of ``spec`` from ``family`` (one of ``FAMILIES``). ``training`` draws from the training
    sets only, with a lead-in a third of the time; each held-out family changes one thing: the lead-in (always
    a held-out one), the sentence order, or the words (each attribute of ``synonym_attributes`` that has
    held-out synonyms uses one). The attributes in ``omit`` (some of ``omittable(spec)``) are left unsaid, of
    every object; without a position or relation the sentence is one of ``UNPLACED_SINGLE`` / ``UNRELATED_PAIR``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown phrasing family {family!r}; one of {FAMILIES}")
    unknown = set(synonym_attributes) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown attributes {sorted(unknown)}; choose from {ATTRIBUTES}")
    if not set(omit) <= set(omittable(spec)):
        raise ValueError(f"cannot omit {sorted(set(omit) - set(omittable(spec)))} from a "
                         f"{len(spec.objects)}-object scene; choose from {omittable(spec)}")
    held_words = tuple(synonym_attributes) if family == "held_out_synonyms" else ()
    held_order = family == "held_out_order"
    if len(spec.objects) == 1:
        templates = UNPLACED_SINGLE if "position" in omit else HELD_OUT_SINGLE if held_order else TRAINING_SINGLE
        template = _choose(rng, templates)  # an unplaced template has no {pos}: format ignores it
        text = template.format(obj=describe(spec.objects[0], rng, held_out_words=held_words, omit=omit),
                               pos=_words("positions", spec.position, rng, held_words))
    else:
        templates = UNRELATED_PAIR if "relation" in omit else HELD_OUT_PAIR if held_order else TRAINING_PAIR
        template = _choose(rng, templates)  # an unrelated template has no {rel} or {conv}
        first, second = (describe(obj, rng, held_out_words=held_words, omit=omit) for obj in spec.objects)
        text = template.format(obj0=first, obj1=second, rel=_words("relations", spec.relation, rng, held_words),
                               conv=_words("relations", CONVERSE_RELATION[spec.relation], rng, held_words))
    if family == "held_out_lead_in":
        return f"{_choose(rng, HELD_OUT_LEAD_INS)} {text}"
    if rng.random() < 1 / 3:
        return f"{_choose(rng, TRAINING_LEAD_INS)} {text}"
    return text
