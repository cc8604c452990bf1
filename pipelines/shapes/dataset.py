"""The built-in synthetic dataset: one or two coloured shapes, their captions and their specs.

Nothing is shipped or cached: every sample is drawn on the fly and depends only on
``(seed, split, index)``, so any row is reproducible in isolation and identical across processes.

Scenes
    Shapes ``SHAPES`` in colours ``COLORS`` and sizes ``SIZES`` on a black background. One object
    stands at one of ``POSITIONS``; two objects stand in one of ``RELATIONS`` ("a above b"). The two
    objects of a scene never share both colour and shape, so each is named unambiguously.
    Geometry is given in fractions of the image side (``SIZE_FRACTION``, ``POSITION_CENTERS``,
    ``RELATION_CENTERS``), so any resolution works; 32 and 64 are the tested ones. Shapes are drawn
    at ``SUPERSAMPLE`` times the resolution and box-filtered down (anti-aliasing).

Splits (``SPLITS``)
    holdout  scenes containing at least one held-out (colour, shape) pair (``DEFAULT_HOLDOUT``):
             these combinations never occur in train or test, to measure compositional generalisation.
    test     scenes without held-out pairs whose *canonical* scene falls in the test bucket: the
             SHA-256 of its "en" caption, taken modulo 1000, is below ``TEST_FRACTION * 1000``. The
             canonical scene writes "below"/"right of" as "above"/"left of" with the objects swapped,
             so a test picture is never in train under the converse caption either. Jitter is ignored,
             so no test caption, in any style, ever occurs in train.
    train    everything else.
    ``sample_spec`` draws uniformly over scenes and rejects those of other splits.

Usage::

    ds = shapes_dataset(10_000, resolution=32, seed=0, split="train")
    ds[0]  # {"index": 0, "caption": "a small red circle on the left", "spec": "{...}", "image": <PIL>}
"""

from __future__ import annotations

import functools
import hashlib

import datasets
import numpy as np
from PIL import Image, ImageDraw

from tessera.pipelines.shapes.captions import CAPTION_STYLES, caption, parse_caption
from tessera.pipelines.shapes.scene import (
    BACKGROUND,
    COLORS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    SceneSpec,
    ShapeObject,
)

__all__ = [
    "BACKGROUND", "CAPTION_STYLES", "COLORS", "DEFAULT_HOLDOUT", "POSITIONS", "RELATIONS", "SHAPES", "SIZES",
    "SPLITS", "TEST_FRACTION", "SceneSpec", "ShapeObject", "caption", "parse_caption", "render", "sample_spec",
    "shapes_dataset", "spec_split",
]

SPLITS = ("train", "test", "holdout")
DEFAULT_HOLDOUT: tuple[tuple[str, str], ...] = (("red", "triangle"), ("blue", "circle"), ("yellow", "square"))
TEST_FRACTION = 0.1

# Geometry, in fractions of the image side. A shape of size s fills an s x s box centred on its
# anchor (circle: inscribed; triangle: apex up, base at the bottom of the box).
SIZE_FRACTION = {"small": 0.26, "large": 0.42}
POSITION_CENTERS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25),
                    "bottom": (0.5, 0.75), "center": (0.5, 0.5)}
# Anchors of (objects[0], objects[1]); two large shapes keep a gap of 0.08 of the side.
RELATION_CENTERS = {
    "above": ((0.5, 0.25), (0.5, 0.75)),
    "below": ((0.5, 0.75), (0.5, 0.25)),
    "left of": ((0.25, 0.5), (0.75, 0.5)),
    "right of": ((0.75, 0.5), (0.25, 0.5)),
}
JITTER = 0.03  # max shift of an anchor per axis; the evaluator's margins are built around it
SUPERSAMPLE = 4
_MAX_REJECTIONS = 10_000


# ---------------------------------------------------------------------------------------------
# Splits and sampling


def _stable_bucket(text: str, buckets: int = 1000) -> int:
    """A bucket of ``text`` that is the same on every machine (unlike the salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % buckets


def spec_split(spec: SceneSpec, holdout=DEFAULT_HOLDOUT) -> str:
    """The split ("train", "test" or "holdout") a scene belongs to; see the module docstring."""
    held = {tuple(pair) for pair in holdout}
    if any((o.color, o.shape) in held for o in spec.objects):
        return "holdout"
    bucket = _stable_bucket(caption(spec.canonical(), "en"))
    return "test" if bucket < TEST_FRACTION * 1000 else "train"


def _random_object(rng: np.random.Generator) -> ShapeObject:
    return ShapeObject(color=str(rng.choice(list(COLORS))), shape=str(rng.choice(SHAPES)),
                       size=str(rng.choice(SIZES)))


def _random_spec(rng: np.random.Generator, two_object_fraction: float) -> SceneSpec:
    first = _random_object(rng)
    if rng.random() >= two_object_fraction:
        return SceneSpec((first,), position=str(rng.choice(POSITIONS)))
    second = _random_object(rng)
    while (second.color, second.shape) == (first.color, first.shape):
        second = _random_object(rng)
    return SceneSpec((first, second), relation=str(rng.choice(RELATIONS)))


def sample_spec(rng: np.random.Generator, split: str = "train", holdout=DEFAULT_HOLDOUT,
                two_object_fraction: float = 0.5) -> SceneSpec:
    """A random scene of ``split``: uniform over scenes, rejecting those of other splits.

    ``two_object_fraction`` is the probability of drawing a two-object scene before rejection
    (the "holdout" split keeps relatively more two-object scenes, which contain two chances of
    meeting a held-out pair).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split == "holdout" and not holdout:
        raise ValueError("the holdout split is empty when no (colour, shape) pair is held out")
    for _ in range(_MAX_REJECTIONS):
        spec = _random_spec(rng, two_object_fraction)
        if spec_split(spec, holdout) == split:
            return spec
    raise RuntimeError(f"no scene of split {split!r} found (holdout={holdout!r}); is the split empty?")


# ---------------------------------------------------------------------------------------------
# Rendering


def _anchors(spec: SceneSpec, rng: np.random.Generator | None) -> np.ndarray:
    """Centres (x, y) of the objects in fractions of the side, jittered when ``rng`` is given."""
    if len(spec.objects) == 1:
        centers = np.array([POSITION_CENTERS[spec.position]])  # (1, 2)
    else:
        centers = np.array(RELATION_CENTERS[spec.relation])  # (2, 2)
    if rng is None:
        return centers
    jitter = rng.uniform(-JITTER, JITTER, size=centers.shape)  # (n, 2)
    if len(spec.objects) == 2:
        # Along the relation's axis both objects move together, so their gap never shrinks.
        axis = 1 if spec.relation in ("above", "below") else 0
        jitter[:, axis] = jitter[0, axis]
    return centers + jitter


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, color, cx: float, cy: float, side: float) -> None:
    """Draw ``shape`` filling the ``side`` x ``side`` box centred on (``cx``, ``cy``) in pixels."""
    half = side / 2
    if shape == "triangle":
        draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=color)
        return
    # PIL boxes include their last pixel, hence the -1.
    box = [round(cx - half), round(cy - half), round(cx + half) - 1, round(cy + half) - 1]
    if shape == "circle":
        draw.ellipse(box, fill=color)
    else:
        draw.rectangle(box, fill=color)


def render(spec: SceneSpec, resolution: int = 32, rng: np.random.Generator | None = None) -> Image.Image:
    """Draw ``spec`` as a ``resolution`` x ``resolution`` RGB image.

    ``rng`` adds a small jitter (at most ``JITTER`` of the side per axis) to the placement;
    ``None`` gives the canonical placement.
    """
    canvas = resolution * SUPERSAMPLE
    image = Image.new("RGB", (canvas, canvas), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj, (cx, cy) in zip(spec.objects, _anchors(spec, rng)):
        _draw_shape(draw, obj.shape, COLORS[obj.color], cx * canvas, cy * canvas, SIZE_FRACTION[obj.size] * canvas)
    return image.resize((resolution, resolution), Image.Resampling.BOX)


# ---------------------------------------------------------------------------------------------
# Dataset


def _row_rngs(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the spec and the jitter of one row."""
    split_id = SPLITS.index(split)
    return (np.random.default_rng([seed, split_id, index, 0]),
            np.random.default_rng([seed, split_id, index, 1]))


def _render_rows(batch: dict, *, resolution: int, seed: int, split: str) -> dict:
    """``with_transform`` hook: adds the "image" column to a batch of rows, drawing only those."""
    images = [render(SceneSpec.from_json(spec), resolution, rng=_row_rngs(seed, split, index)[1])
              for index, spec in zip(batch["index"], batch["spec"])]
    return {**batch, "image": images}


def shapes_dataset(num_samples: int, resolution: int = 32, seed: int = 0, split: str = "train",
                   caption_style: str = "en", holdout=DEFAULT_HOLDOUT,
                   two_object_fraction: float = 0.5) -> datasets.Dataset:
    """An in-memory ``datasets.Dataset`` of ``num_samples`` shapes scenes.

    Columns: "index" (int), "caption" (str, in ``caption_style``), "spec" (``SceneSpec`` JSON) and
    "image" (PIL RGB). Images are drawn lazily when rows are read (a ``with_transform``), so
    building the dataset costs only the specs and nothing is written to disk.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if caption_style not in CAPTION_STYLES:
        raise ValueError(f"unknown caption style {caption_style!r}; expected one of {CAPTION_STYLES}")
    specs = [sample_spec(_row_rngs(seed, split, i)[0], split, holdout, two_object_fraction)
             for i in range(num_samples)]
    table = datasets.Dataset.from_dict({
        "index": list(range(num_samples)),
        "caption": [caption(spec, caption_style) for spec in specs],
        "spec": [spec.to_json() for spec in specs],
    })
    transform = functools.partial(_render_rows, resolution=resolution, seed=seed, split=split)
    return table.with_transform(transform)


def write_imagefolder(directory: str, num_samples: int, *, resolution: int = 32, seed: int = 0,
                      split: str = "train", caption_style: str = "en") -> int:
    """Write shapes samples as an ``imagefolder`` (PNGs + ``metadata.jsonl`` with ``file_name``/``text``).

    The folder is what ``datasets.load_dataset("imagefolder", data_dir=...)``, ``pipelines.data`` and
    ``python -m tessera.pipelines.shapes.evaluate`` read. Returns the number of images written.
    """
    import json
    import os
    from pathlib import Path

    from tqdm.auto import tqdm

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    dataset = shapes_dataset(num_samples, resolution, seed, split, caption_style)
    lines = []
    for row in tqdm(dataset, total=num_samples, desc="drawing shapes", unit="img"):
        name = f"{split}-{row['index']:06d}.png"
        row["image"].save(folder / name)
        lines.append(json.dumps({"file_name": name, "text": row["caption"], "spec": row["spec"]}))
    tmp = folder / "metadata.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, folder / "metadata.jsonl")
    return num_samples


def main(argv: list[str] | None = None) -> int:
    """``python -m tessera.pipelines.shapes OUT_DIR``: draw a folder of captioned shapes images."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("output_dir")
    parser.add_argument("--num_images", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train", choices=SPLITS)
    parser.add_argument("--caption_style", default="en", choices=CAPTION_STYLES)
    args = parser.parse_args(argv)
    count = write_imagefolder(args.output_dir, args.num_images, resolution=args.resolution, seed=args.seed,
                              split=args.split, caption_style=args.caption_style)
    print(f"wrote {count} images and metadata.jsonl to {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
