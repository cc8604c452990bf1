"""Vocabulary and scene specification of the built-in synthetic shapes dataset.

A scene is one or two coloured shapes on a black background. ``SceneSpec`` says what is drawn:
one object and its ``position`` in the image, or two objects and the ``relation`` of the first
to the second ("a red circle *above* a blue square"). Everything else (sampling, rendering, the
dataset, captions, the evaluator) is built on these few names; ``pipelines.shapes`` re-exports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# Saturated colours whose pairwise RGB distances are all >= 190 and whose distances to the
# background are all >= 255, so a pixel's nearest palette colour stays right under noise and blur.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (190, 0, 255),
    "cyan": (0, 255, 255),
}
BACKGROUND: tuple[int, int, int] = (0, 0, 0)
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
RELATIONS = ("above", "below", "left of", "right of")
# "a above b" is the same picture as "b below a".
CONVERSE_RELATION = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


def _check(value: str | None, allowed: tuple[str, ...] | dict, what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {tuple(allowed)}")


@dataclass(frozen=True)
class ShapeObject:
    """One shape: its colour (a key of ``COLORS``), shape and size."""

    color: str
    shape: str
    size: str

    def __post_init__(self) -> None:
        _check(self.color, COLORS, "colour")
        _check(self.shape, SHAPES, "shape")
        _check(self.size, SIZES, "size")


@dataclass(frozen=True)
class SceneSpec:
    """What a picture shows.

    One object: ``position`` is set and ``relation`` is None. Two objects: ``relation`` is set
    and reads ``objects[0] <relation> objects[1]``; ``position`` is None.
    """

    objects: tuple[ShapeObject, ...]
    position: str | None = None
    relation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))  # accept a list, store a tuple
        if len(self.objects) == 1:
            _check(self.position, POSITIONS, "position")
            if self.relation is not None:
                raise ValueError("a one-object scene has a position, not a relation")
        elif len(self.objects) == 2:
            _check(self.relation, RELATIONS, "relation")
            if self.position is not None:
                raise ValueError("a two-object scene has a relation, not a position")
        else:
            raise ValueError(f"a scene has one or two objects, got {len(self.objects)}")

    def canonical(self) -> SceneSpec:
        """The same picture written with "above" or "left of" only (objects swapped if needed)."""
        if self.relation in ("below", "right of"):
            first, second = self.objects
            return SceneSpec((second, first), relation=CONVERSE_RELATION[self.relation])
        return self

    def to_dict(self) -> dict:
        return {
            "objects": [{"color": o.color, "shape": o.shape, "size": o.size} for o in self.objects],
            "position": self.position,
            "relation": self.relation,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> SceneSpec:
        unknown = set(data) - {"objects", "position", "relation"}
        if unknown:
            raise ValueError(f"unexpected keys in scene spec: {sorted(unknown)}")
        objects = tuple(ShapeObject(**o) for o in data["objects"])
        return cls(objects, position=data.get("position"), relation=data.get("relation"))

    @classmethod
    def from_json(cls, text: str) -> SceneSpec:
        return cls.from_dict(json.loads(text))
