"""How exact is the analytic shapes evaluator? Ground truth must pass, mismatched prompts must fail.

For each resolution, draws ``--num_images`` jittered ground-truth scenes (a third from each split,
half one-object, half two-object) and judges them:

    own specs          against the spec they were drawn from              (want >= 99.5% all correct)
    captions <style>   against their caption in each style, parsed back   (want >= 99.5%)
    shuffled captions  against a random permutation of the captions       (want <= 2%; the few
                       passes are prompts that happen to describe the same scene)
    shuffled, other    the same, counting only prompts of a different scene (want 0)
    one attribute off  against the spec with one colour, shape, size, position or relation
                       changed: the hardest wrong prompts                 (want 0)
    noise + blur       after Gaussian noise (--noise/255) and blur (--blur px at 32, scaled)
                       against their own specs                            (want >= 99%)

Prints a JSON object and a markdown table; exits 1 when a figure misses its target.

    python -m benchmarks.evaluator_accuracy --num_images 2000 --resolutions 32 64 --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
from PIL import Image, ImageFilter

from tessera.pipelines.shapes.dataset import (
    CAPTION_STYLES,
    COLORS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    SPLITS,
    SceneSpec,
    caption,
    parse_caption,
    shapes_dataset,
)
from tessera.pipelines.shapes.detect import detect_objects
from tessera.pipelines.shapes.evaluate import ATTRIBUTES, EvaluationReport, evaluate, judge_detections

TARGETS = {"own specs": (">=", 0.995), **{f"captions {style}": (">=", 0.995) for style in CAPTION_STYLES},
           "shuffled captions": ("<=", 0.02), "shuffled, other scene": ("<=", 0.0), "one attribute off": ("<=", 0.0),
           "noise + blur": (">=", 0.99)}


def ground_truth(num_images: int, resolution: int, seed: int) -> tuple[list[Image.Image], list[SceneSpec]]:
    images, specs = [], []
    for k, split in enumerate(SPLITS):
        count = num_images // len(SPLITS) + (k < num_images % len(SPLITS))
        rows = shapes_dataset(count, resolution=resolution, seed=seed, split=split)[:]  # draws every image
        images += rows["image"]
        specs += [SceneSpec.from_json(spec) for spec in rows["spec"]]
    return images, specs


def one_attribute_off(spec: SceneSpec, rng: np.random.Generator) -> SceneSpec:
    """``spec`` with one randomly chosen attribute set to another value."""
    attribute = rng.choice(["color", "shape", "size", "layout"])
    if attribute == "layout":
        name, values = ("position", POSITIONS) if spec.position else ("relation", RELATIONS)
        return dataclasses.replace(spec, **{name: str(rng.choice([v for v in values if v != getattr(spec, name)]))})
    k = int(rng.integers(len(spec.objects)))
    values = {"color": list(COLORS), "shape": SHAPES, "size": SIZES}[attribute]
    new = str(rng.choice([v for v in values if v != getattr(spec.objects[k], attribute)]))
    objects = [dataclasses.replace(o, **{attribute: new}) if i == k else o for i, o in enumerate(spec.objects)]
    return dataclasses.replace(spec, objects=tuple(objects))


def damage(images: list[Image.Image], noise: float, blur: float, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    damaged = []
    for image in images:
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, noise, (image.height, image.width, 3))
        noisy = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
        damaged.append(noisy.filter(ImageFilter.GaussianBlur(blur * image.width / 32)))
    return damaged


def figures(report: EvaluationReport, seconds: float | None = None) -> dict:
    row = {name: round(report.accuracy[name], 5) for name in ATTRIBUTES}
    if seconds is not None:
        row["images_per_s"] = round(report.num_images / seconds, 1)
    return row


def run_resolution(resolution: int, args: argparse.Namespace) -> dict[str, dict]:
    images, specs = ground_truth(args.num_images, resolution, args.seed)
    start = time.perf_counter()
    results = {"own specs": figures(evaluate(images, specs), time.perf_counter() - start)}
    # The remaining prompt sets reuse the detections: only the judging differs.
    detections = [detect_objects(image) for image in images]

    def judged(prompt_specs: list[SceneSpec]) -> dict:
        return figures(EvaluationReport.from_judgements(
            [judge_detections(d, s) for d, s in zip(detections, prompt_specs)]))

    for style in CAPTION_STYLES:
        results[f"captions {style}"] = judged([parse_caption(caption(s, style)) for s in specs])
    rng = np.random.default_rng(args.seed)
    shuffled = [specs[i] for i in rng.permutation(len(specs))]
    results["shuffled captions"] = judged(shuffled)
    other = [k for k, (a, b) in enumerate(zip(specs, shuffled)) if a.canonical() != b.canonical()]
    results["shuffled, other scene"] = figures(EvaluationReport.from_judgements(
        [judge_detections(detections[k], shuffled[k]) for k in other]))
    results["one attribute off"] = judged([one_attribute_off(spec, rng) for spec in specs])
    results["noise + blur"] = figures(evaluate(damage(images, args.noise, args.blur, args.seed), specs))
    return results


def markdown(results: dict[str, dict[str, dict]]) -> str:
    columns = [*ATTRIBUTES, "images_per_s"]
    lines = ["| resolution | prompts | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for resolution, rows in results.items():
        for name, row in rows.items():
            cells = [f"{row[c]:.4f}" if c in ATTRIBUTES else str(row.get(c, "")) for c in columns]
            lines.append(f"| {resolution} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=8.0, help="std of the Gaussian noise, in 1/255")
    parser.add_argument("--blur", type=float, default=0.5, help="Gaussian blur radius in pixels at 32x32")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = {str(r): run_resolution(r, args) for r in args.resolutions}
    misses = [f"{r} px {name}: {rows[name]['all_correct']:.4f} (want {op} {target})"
              for r, rows in results.items() for name, (op, target) in TARGETS.items()
              if not (rows[name]["all_correct"] >= target if op == ">=" else rows[name]["all_correct"] <= target)]
    summary = {"config": vars(args), "results": results, "targets": {k: " ".join(map(str, v)) for k, v in TARGETS.items()},
               "misses": misses, "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(summary, indent=2))
    print()
    print(markdown(results))
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
