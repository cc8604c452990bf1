"""Editing with a saved pipeline on held-out shapes scenes, judged by the analytic evaluator.

Scenes come from the shapes ``test`` split (captions never seen in training), rendered with jitter, seeded by
``--scene_seed``; every edit is seeded by ``--seed``. Four tasks:

(a) inpainting: a two-object scene; the slot of one object (the square where an object of either size could
    stand at its anchor, jitter included) is masked and the prompt asks for a different object there (another
    colour, shape or size; never the partner's colour and shape). Reported: the evaluator's accuracy of the
    whole edited image against the new caption (the unedited scene's, for reference), and the largest pixel
    difference outside the mask (0 with paste-back).
(b) outpainting: a band of the picture is cut away and grown back by ``InpaintPipeline.outpaint`` from the
    scene's caption: ``cut off``, a one-object scene (not centred) loses the 12 px band on its object's side,
    so the object is cut off; ``partner missing``, a two-object scene loses the 16 px half that holds one
    object. Reported: accuracy against the caption, and the largest pixel difference in the kept part.
(c) image-to-image: one attribute of a scene changed by the prompt (uniformly one of colour, shape, size of a
    random object, or the position of a one-object scene / the relation of a two-object scene) at each
    ``--strengths``. Reported: accuracy against the new caption and the old one, and how much of the source
    is kept (codes unchanged, PSNR to the source).
(d) denoising: Gaussian noise of ``--noise_levels`` (standard deviation, in units of the 0..255 range), rounded
    to 8 bits. Reported: mean PSNR to the clean image of the noisy input, of plain encode -> decode, and of
    ``denoise`` without and with the scene's caption.

    python -m benchmarks.editing models/tessera-shapes --num_scenes 200
    python -m benchmarks.editing runs/ar --num_scenes 200 --tasks inpaint image_to_image
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tessera.pipelines.editing import ImageToImagePipeline, InpaintPipeline
from tessera.pipelines.shapes.captions import caption
from tessera.pipelines.shapes.dataset import JITTER, RELATION_CENTERS, SIZE_FRACTION, render, sample_spec
from tessera.pipelines.shapes.evaluate import evaluate
from tessera.pipelines.shapes.scene import COLORS, POSITIONS, RELATIONS, SHAPES, SIZES, SceneSpec, ShapeObject
from tessera.tokenizer.metrics import psnr

TASKS = ("inpaint", "outpaint", "image_to_image", "denoise")
CUT_BAND = 0.375  # share of the side cut away for "cut off" (12 px at 32)
SIDES = {"left": (1, 0), "right": (1, -1), "top": (0, 0), "bottom": (0, -1)}  # side -> (axis, end)


def scenes(count: int, seed: int, task: int, two_objects: float, resolution: int, accept=None):
    """``count`` (spec, image, rng) of the ``test`` split, reproducible per (seed, task)."""
    rng = np.random.default_rng([seed, task])
    found = []
    while len(found) < count:
        spec = sample_spec(rng, "test", two_object_fraction=two_objects)
        if accept is None or accept(spec):
            found.append((spec, render(spec, resolution, rng=rng)))
    return found, rng


def other_object(old: ShapeObject, partner: ShapeObject | None, rng: np.random.Generator) -> ShapeObject:
    while True:
        new = ShapeObject(str(rng.choice(list(COLORS))), str(rng.choice(SHAPES)), str(rng.choice(SIZES)))
        if new != old and (partner is None or (new.color, new.shape) != (partner.color, partner.shape)):
            return new


def changed(spec: SceneSpec, rng: np.random.Generator) -> tuple[SceneSpec, str]:
    """``spec`` with one attribute changed, and its name."""
    layout = "position" if spec.position else "relation"
    attribute = str(rng.choice(["color", "shape", "size", layout]))
    if attribute == "position":
        return replace(spec, position=str(rng.choice([p for p in POSITIONS if p != spec.position]))), attribute
    if attribute == "relation":
        return replace(spec, relation=str(rng.choice([r for r in RELATIONS if r != spec.relation]))), attribute
    values = {"color": list(COLORS), "shape": SHAPES, "size": SIZES}[attribute]
    while True:
        objects = list(spec.objects)
        k = int(rng.integers(len(objects)))
        new_value = str(rng.choice([v for v in values if v != getattr(objects[k], attribute)]))
        objects[k] = replace(objects[k], **{attribute: new_value})
        if len(objects) == 1 or (objects[0].color, objects[0].shape) != (objects[1].color, objects[1].shape):
            return replace(spec, objects=tuple(objects)), attribute


def slot_mask(spec: SceneSpec, k: int, resolution: int) -> np.ndarray:
    """(R, R) bool: the square where object ``k`` of a two-object scene could stand (either size, any jitter)."""
    center = np.array(RELATION_CENTERS[spec.relation][k])  # (x, y) fractions
    half = SIZE_FRACTION["large"] / 2 + JITTER
    (x0, y0), (x1, y1) = np.floor((center - half) * resolution), np.ceil((center + half) * resolution)
    mask = np.zeros((resolution, resolution), dtype=bool)
    mask[max(int(y0), 0):int(y1), max(int(x0), 0):int(x1)] = True
    return mask


def max_difference(edited: list[Image.Image], sources: list[Image.Image], kept: list[np.ndarray]) -> int:
    return max(int(np.abs(np.asarray(e, dtype=np.int16) - np.asarray(s, dtype=np.int16))[k].max(initial=0))
               for e, s, k in zip(edited, sources, kept))


def accuracy(images, captions: list[str]) -> float:
    return evaluate(images, captions).accuracy["all_correct"]


def inpaint_task(pipe: InpaintPipeline, args, generator) -> dict:
    found, rng = scenes(args.num_scenes, args.scene_seed, 0, 1.0, pipe.resolution)
    prompts, images, masks = [], [], []
    for spec, image in found:
        k = int(rng.integers(2))
        objects = list(spec.objects)
        objects[k] = other_object(objects[k], objects[1 - k], rng)
        prompts.append(caption(replace(spec, objects=tuple(objects))))
        images.append(image)
        masks.append(slot_mask(spec, k, pipe.resolution))
    out = pipe(prompts, images, masks, generator=generator, **args.inpaint_options, **args.sampling)
    return {"accuracy": accuracy(out.images, prompts), "source_accuracy": accuracy(images, prompts),
            "max_difference_outside_mask": max_difference(out.images, images, [~m for m in masks]),
            "regenerated_codes": float(out.regenerated.float().mean())}


def outpaint_task(pipe: InpaintPipeline, args, generator) -> dict:
    resolution = pipe.resolution
    one, rng = scenes(args.num_scenes, args.scene_seed, 1, 0.0, resolution, lambda s: s.position != "center")
    two, _ = scenes(args.num_scenes, args.scene_seed, 2, 1.0, resolution)
    cases = {"cut off": [(spec, image, spec.position, round(CUT_BAND * resolution)) for spec, image in one]}
    partner = []
    for spec, image in two:  # the side of the removed object: from the relation and which object goes
        k = int(rng.integers(2))
        x, y = RELATION_CENTERS[spec.relation][k]
        side = ("left" if x < 0.5 else "right") if spec.relation in ("left of", "right of") else \
            ("top" if y < 0.5 else "bottom")
        partner.append((spec, image, side, resolution // 2))
    cases["partner missing"] = partner
    rows = {}
    for name, items in cases.items():
        edited, sources, kept, prompts = [], [], [], []
        for side in SIDES:  # one outpaint call per side and band
            group = [item for item in items if item[2] == side]
            if not group:
                continue
            band = group[0][3]
            axis, end = SIDES[side]
            keep = slice(band, None) if end == 0 else slice(None, resolution - band)
            index = (slice(None), keep) if axis == 1 else (keep, slice(None))  # the part of the picture kept
            cut = [Image.fromarray(np.asarray(image)[index]) for _, image, _, _ in group]
            texts = [caption(spec) for spec, _, _, _ in group]
            out = pipe.outpaint(texts, cut, **{side: band}, generator=generator, **args.inpaint_options,
                                **args.sampling)
            kept_mask = np.zeros((resolution, resolution), dtype=bool)
            kept_mask[index] = True
            edited += out.images
            sources += [image for _, image, _, _ in group]
            kept += [kept_mask] * len(group)
            prompts += texts
        rows[name] = {"accuracy": accuracy(edited, prompts),
                      "max_difference_kept": max_difference(edited, sources, kept)}
    return rows


def image_to_image_task(pipe: ImageToImagePipeline, args, generator_seed: int) -> list[dict]:
    found, rng = scenes(args.num_scenes, args.scene_seed, 3, 0.5, pipe.resolution)
    edits = [changed(spec, rng) for spec, _ in found]
    images = [image for _, image in found]
    new, old = [caption(spec) for spec, _ in edits], [caption(spec) for spec, _ in found]
    attributes = np.array([attribute for _, attribute in edits])
    source = torch.stack([torch.from_numpy(np.asarray(i, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
                          for i in images])  # (N, 3, R, R)
    rows = []
    for remask in args.remask:
        for strength in args.strengths:
            generator = torch.Generator().manual_seed(generator_seed)
            out = pipe(new, images, strength=strength, remask=remask, generator=generator, output_type="pt",
                       **args.edit_options, **args.sampling)
            report = evaluate(out.images, new)
            correct = np.array([j.all_correct for j in report.judgements])
            rows.append({"remask": remask, "strength": strength, "accuracy": float(correct.mean()),
                         "old_caption_accuracy": accuracy(out.images, old),
                         "codes_kept": float(1 - out.regenerated.float().mean()),
                         "psnr_to_source": float(psnr(source, out.images).mean()),
                         "per_attribute": {a: float(correct[attributes == a].mean())
                                           for a in sorted(set(attributes))}})
    return rows


def denoise_task(pipe: ImageToImagePipeline, args, generator_seed: int) -> list[dict]:
    found, _ = scenes(args.num_scenes, args.scene_seed, 4, 0.5, pipe.resolution)
    clean = np.stack([np.asarray(image, dtype=np.float32) for _, image in found])  # (N, R, R, 3)
    texts = [caption(spec) for spec, _ in found]

    def as_tensor(array):  # (N, R, R, 3) 0..255 -> (N, 3, R, R) in [-1, 1]
        return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1

    rows = []
    for level in args.noise_levels:
        noise = np.random.default_rng([args.scene_seed, 5]).normal(0, level, clean.shape)
        noisy = np.clip(np.round(clean + noise), 0, 255).astype(np.uint8)
        noisy_images = [Image.fromarray(array) for array in noisy]
        reference = as_tensor(clean)
        row = {"noise_std": level, "noisy": float(psnr(reference, as_tensor(noisy.astype(np.float32))).mean())}
        reconstruction = pipe(texts, noisy_images, strength=0.0, output_type="pt").images
        row["encode_decode"] = float(psnr(reference, reconstruction).mean())
        for name, prompts in (("denoise", None), ("denoise_with_caption", texts)):
            out = pipe.denoise(noisy_images, prompts or [""] * len(texts), output_type="pt",
                               generator=torch.Generator().manual_seed(generator_seed), **args.denoise_options,
                               **args.sampling)
            row[name] = float(psnr(reference, out.images).mean())
            row[f"{name}_regenerated"] = float(out.regenerated.float().mean())
        rows.append(row)
    return rows


def print_tables(results: dict) -> None:
    if "inpaint" in results:
        row = results["inpaint"]
        print("| inpainting | accuracy (new caption) | unedited scene | max pixel change outside mask |\n|---|---|---|---|")
        print(f"| {row['num_scenes']} scenes | {row['accuracy']:.1%} | {row['source_accuracy']:.1%} | "
              f"{row['max_difference_outside_mask']} |\n")
    if "outpaint" in results:
        print("| outpainting | accuracy | max pixel change in the kept part |\n|---|---|---|")
        for name, row in results["outpaint"].items():
            if isinstance(row, dict):
                print(f"| {name} | {row['accuracy']:.1%} | {row['max_difference_kept']} |")
        print()
    if "image_to_image" in results:
        rows = results["image_to_image"]["rows"]
        attributes = list(rows[0]["per_attribute"])
        print("| remask | strength | accuracy (new caption) | old caption | codes kept | PSNR to source | "
              + " | ".join(attributes) + " |\n|---|---|---|---|---|---|" + "---|" * len(attributes))
        for row in rows:
            print(f"| {row['remask']} | {row['strength']:g} | {row['accuracy']:.1%} | "
                  f"{row['old_caption_accuracy']:.1%} | {row['codes_kept']:.1%} | {row['psnr_to_source']:.1f} | "
                  + " | ".join(f"{row['per_attribute'][a]:.0%}" for a in attributes) + " |")
        print()
    if "denoise" in results:
        print("| noise σ (of 255) | noisy input | encode → decode | denoise | denoise + caption |\n|---|---|---|---|---|")
        for row in results["denoise"]["rows"]:
            print(f"| {row['noise_std']:g} | {row['noisy']:.2f} dB | {row['encode_decode']:.2f} dB | "
                  f"{row['denoise']:.2f} dB | {row['denoise_with_caption']:.2f} dB |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("--num_scenes", type=int, default=200, help="scenes per task (and per outpainting case)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--scene_seed", type=int, default=1234)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    parser.add_argument("--remask", nargs="+", choices=("likelihood", "random"), default=["likelihood", "random"])
    parser.add_argument("--noise_levels", type=float, nargs="+", default=[25.5, 51.0])
    method = parser.add_argument_group("method settings (default: the pipelines' defaults)")
    for name, kind in (("cell_threshold", float), ("dilation", int), ("group_stride", int),
                       ("denoise_threshold", float), ("denoise_max_strength", float), ("guidance_scale", float),
                       ("num_steps", int)):
        method.add_argument(f"--{name}", type=kind, default=None)
    args = parser.parse_args(argv)

    def given(*pairs):
        return {key: getattr(args, name) for key, name in pairs if getattr(args, name) is not None}

    args.sampling = given(("guidance_scale", "guidance_scale"), ("num_steps", "num_steps"))
    args.inpaint_options = given(("cell_threshold", "cell_threshold"), ("dilation", "dilation"))
    args.denoise_options = given(("threshold", "denoise_threshold"), ("max_strength", "denoise_max_strength"))
    args.edit_options = given(("group_stride", "group_stride"))
    inpaint = InpaintPipeline.from_pretrained(args.pipeline)
    inpaint.set_progress_bar_config(disable=True)
    edit = ImageToImagePipeline.from_pipe(inpaint)
    edit.set_progress_bar_config(disable=True)
    results = {"pipeline": str(args.pipeline), "prior": inpaint.prior.config.kind, "num_scenes": args.num_scenes,
               "scene_seed": args.scene_seed, "seed": args.seed, "settings": {**args.sampling, **args.inpaint_options,
                                                                               **args.edit_options,
                                                                               "denoise": args.denoise_options}}
    runs = {"inpaint": lambda: inpaint_task(inpaint, args, torch.Generator().manual_seed(args.seed)),
            "outpaint": lambda: outpaint_task(inpaint, args, torch.Generator().manual_seed(args.seed)),
            "image_to_image": lambda: {"rows": image_to_image_task(edit, args, args.seed)},
            "denoise": lambda: {"rows": denoise_task(edit, args, args.seed)}}
    for task in args.tasks:
        start = time.perf_counter()
        results[task] = {**runs[task](), "num_scenes": args.num_scenes}
        results[task]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"{task}: {results[task]['seconds']} s", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    print_tables(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
