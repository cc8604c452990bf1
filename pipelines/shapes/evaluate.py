"""Analytic evaluator of shapes images (our "GenEval"): does an image show what its prompt says?

For each image the shapes are found (``pipelines.shapes.detect``) and matched to the objects of
the scene spec; then each attribute is judged:

    color, shape, size  every spec object has a matched shape with that attribute
    position            one-object scenes: the shape stands where the spec says (N/A, True, for two)
    relation            two-object scenes: first object <relation> second object (N/A, True, for one)
    count               exactly as many shapes as spec objects
    all_correct         all of the above

Two-object scenes try both assignments of shapes to spec objects and keep the one that matches
most attributes (the relation breaks ties). A missing object fails every attribute it takes part
in; an extra object fails ``count``.

Python::

    report = evaluate(images, captions)          # images: list of PIL / arrays, or a batch tensor
    report.accuracy["all_correct"]

Command line (an imagefolder whose ``metadata.jsonl`` lines are ``{"file_name": ..., "text": ...}``)::

    python -m tessera.pipelines.shapes.evaluate samples/ --json samples/evaluation.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tessera.core.io import atomic_write_text
from tessera.pipelines.shapes.dataset import SceneSpec, parse_caption
from tessera.pipelines.shapes.detect import DetectedObject, detect_objects

STATED_ATTRIBUTES = ("color", "shape", "size", "position", "relation")  # what a prompt states
ATTRIBUTES = (*STATED_ATTRIBUTES, "count", "all_correct")
# Positions: offsets of the shape's centre from the image centre, in fractions of the side.
# Ground truth sits at 0 or 0.25 from the centre, +- JITTER, +- a pixel of measurement.
CENTER_TOLERANCE = 0.1  # both offsets at most this: "center"; the other offset of left/right/top/bottom
MIN_OFFSET = 0.15  # the offset along the named direction is at least this
# Relations: the second object's centre relative to the first one's.
MIN_SEPARATION = 0.2  # ground truth: 0.5
MAX_CROSS_RATIO = 0.5  # the cross-axis offset is at most this share of the main one
MAX_MATCHED_DETECTIONS = 8  # only the largest shapes are matched to spec objects


@dataclass
class Judgement:
    """The verdict on one image; attributes that do not apply to the scene are True."""

    color: bool
    shape: bool
    size: bool
    position: bool
    relation: bool
    count: bool
    all_correct: bool
    detected: list[dict] = field(default_factory=list)  # DetectedObject.to_dict() of each shape found

    def to_dict(self) -> dict:
        return asdict(self)

    def correct_except(self, unsaid: Collection[str]) -> bool:
        """Right on every attribute but those in ``unsaid`` (a prompt that did not state them); the count always
        counts."""
        unknown = set(unsaid) - set(STATED_ATTRIBUTES)
        if unknown:
            raise ValueError(f"unknown attributes {sorted(unknown)}; choose from {STATED_ATTRIBUTES}")
        return self.count and all(getattr(self, name) for name in STATED_ATTRIBUTES if name not in unsaid)


@dataclass
class EvaluationReport:
    """Verdicts on a batch and the share of images right on each of ``ATTRIBUTES``."""

    num_images: int
    accuracy: dict[str, float]
    judgements: list[Judgement]

    @classmethod
    def from_judgements(cls, judgements: list[Judgement]) -> EvaluationReport:
        if not judgements:
            raise ValueError("no images to evaluate")
        accuracy = {name: float(np.mean([getattr(j, name) for j in judgements])) for name in ATTRIBUTES}
        return cls(num_images=len(judgements), accuracy=accuracy, judgements=judgements)

    def to_dict(self) -> dict:
        return {"num_images": self.num_images, "accuracy": self.accuracy,
                "judgements": [j.to_dict() for j in self.judgements]}


def failed_judgement() -> Judgement:
    """The verdict on an image that could not be read: wrong on every count."""
    return Judgement(*[False] * len(ATTRIBUTES))


def classify_position(center: tuple[float, float]) -> str | None:
    """Which of ``POSITIONS`` a centre (x, y in fractions, y down) is at; None when in between."""
    dx, dy = center[0] - 0.5, center[1] - 0.5
    if max(abs(dx), abs(dy)) <= CENTER_TOLERANCE:
        return "center"
    if abs(dy) <= CENTER_TOLERANCE and abs(dx) >= MIN_OFFSET:
        return "left" if dx < 0 else "right"
    if abs(dx) <= CENTER_TOLERANCE and abs(dy) >= MIN_OFFSET:
        return "top" if dy < 0 else "bottom"
    return None


def classify_relation(first: tuple[float, float], second: tuple[float, float]) -> str | None:
    """Which of ``RELATIONS`` holds for "first <relation> second"; None when none clearly does."""
    dx, dy = second[0] - first[0], second[1] - first[1]
    if abs(dy) >= MIN_SEPARATION and abs(dx) <= MAX_CROSS_RATIO * abs(dy):
        return "above" if dy > 0 else "below"
    if abs(dx) >= MIN_SEPARATION and abs(dy) <= MAX_CROSS_RATIO * abs(dx):
        return "left of" if dx > 0 else "right of"
    return None


def _as_spec(spec: SceneSpec | str) -> SceneSpec:
    """A spec, its JSON, or a caption of any style."""
    if isinstance(spec, SceneSpec):
        return spec
    return SceneSpec.from_json(spec) if spec.lstrip().startswith("{") else parse_caption(spec)


def _match(detected: list[DetectedObject], spec: SceneSpec) -> tuple[list, bool]:
    """The detections matched to the spec objects (None where missing) that agree on the most
    colours, shapes and sizes, then satisfy the relation, then leave the fewest objects missing;
    and whether the relation holds for them."""
    n = len(spec.objects)
    slots = list(detected[:MAX_MATCHED_DETECTIONS]) + [None] * n  # None: the object is missing
    best, best_score = [None] * n, (-1, False, 0)
    for assignment in dict.fromkeys(itertools.permutations(range(len(slots)), n)):
        matched = [slots[j] for j in assignment]
        agree = sum((o.color == d.color) + (o.shape == d.shape) + (o.size == d.size)
                    for o, d in zip(spec.objects, matched) if d is not None)
        related = n == 2 and None not in matched and (
            classify_relation(matched[0].center, matched[1].center) == spec.relation)
        score = (agree, related, sum(d is not None for d in matched))
        if score > best_score:
            best, best_score = matched, score
    return best, best_score[1]


def judge_detections(detected: list[DetectedObject], spec: SceneSpec) -> Judgement:
    """Judge the shapes found in an image against the scene it should show."""
    matched, related = _match(detected, spec)
    complete = None not in matched
    verdict = {name: complete and all(getattr(o, name) == getattr(d, name) for o, d in zip(spec.objects, matched))
               for name in ("color", "shape", "size")}
    if len(spec.objects) == 1:
        verdict["position"] = complete and classify_position(matched[0].center) == spec.position
        verdict["relation"] = True
    else:
        verdict["position"] = True
        verdict["relation"] = related
    verdict["count"] = len(detected) == len(spec.objects)
    return Judgement(**verdict, all_correct=all(verdict.values()), detected=[d.to_dict() for d in detected])


def judge_image(image, spec: SceneSpec | str) -> Judgement:
    """Judge one image (PIL, (H, W, 3) uint8 array, or (3, H, W) tensor in [-1, 1]) against a
    scene spec, its JSON, or a caption."""
    return judge_detections(detect_objects(image), _as_spec(spec))


def evaluate(images, specs_or_captions) -> EvaluationReport:
    """Judge a batch: a list of images (as ``judge_image`` takes them), a (B, 3, H, W) tensor in
    [-1, 1], or a (B, H, W, 3) array (uint8, or float in [0, 1]); against as many specs, spec
    JSONs or captions."""
    if hasattr(images, "detach"):
        images = images.detach().cpu()  # one device transfer for the whole batch
    images = list(images)  # a batch tensor or array splits along its first axis
    specs = list(specs_or_captions)
    if len(images) != len(specs):
        raise ValueError(f"{len(images)} images but {len(specs)} specs/captions")
    return EvaluationReport.from_judgements([judge_image(i, s) for i, s in zip(images, specs)])


# ---------------------------------------------------------------------------------------------
# Command line


def _read_metadata(directory: Path) -> list[dict]:
    path = directory / "metadata.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the folder needs a metadata.jsonl with "
                                '{"file_name": ..., "text": ...} lines')
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if "file_name" not in row or "text" not in row:
                raise ValueError(f"{path}:{number}: each line needs 'file_name' and 'text'")
            rows.append(row)
    return rows


def _load_image(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _markdown_table(report: EvaluationReport) -> str:
    lines = ["| attribute | accuracy |", "|---|---|"]
    lines += [f"| {name} | {report.accuracy[name]:.4f} |" for name in ATTRIBUTES]
    return "\n".join(lines)


def _write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tessera.pipelines.shapes.evaluate",
                                     description="Score generated shapes images against their prompts.")
    parser.add_argument("directory", type=Path, help="imagefolder with metadata.jsonl (file_name, text)")
    parser.add_argument("--json", type=Path, default=None, dest="json_path",
                        help="also write the full report, with per-image verdicts, to this file")
    args = parser.parse_args(argv)
    try:
        rows = _read_metadata(args.directory)
        specs = [parse_caption(row["text"]) for row in rows]
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    judgements, unreadable = [], []
    for row, spec in zip(rows, specs):
        image = _load_image(args.directory / row["file_name"])
        if image is None:
            unreadable.append(row["file_name"])
            judgements.append(failed_judgement())
        else:
            judgements.append(judge_image(image, spec))
    try:
        report = EvaluationReport.from_judgements(judgements)
    except ValueError as error:
        print(f"error: {error} in {args.directory}", file=sys.stderr)
        return 2
    summary = {"directory": str(args.directory), "num_images": report.num_images,
               "accuracy": report.accuracy, "unreadable": unreadable}
    print(_markdown_table(report))
    print(json.dumps(summary, indent=2))
    if args.json_path is not None:
        images = [{"file_name": row["file_name"], "text": row["text"], **j.to_dict()}
                  for row, j in zip(rows, judgements)]
        _write_json_atomic(args.json_path, {**summary, "images": images})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
