"""Editing real emoji: "the same face, but with sunglasses" (inpainting) and "... but another one" (image-to-image).

Sources: ``--num_sources`` face emoji of the training split (subgroups ``face-*``, both styles), drawn with
``--seed``, never the target emoji itself. Each edit is judged like ``benchmarks/emoji_quality.py``'s samples:
the rank of the **target** name among all names by the nearest real emoji in EfficientNet-Lite0 features.

- ``inpaint``: the top half of the face (where the eyes are) is masked and regenerated from
  ``--inpaint_prompt`` (default "smiling face with sunglasses"; target: that emoji); the rest is pasted back.
- ``image_to_image``: the whole face re-drawn from ``--edit_prompt`` (default "grinning face with big eyes")
  at ``--strength``.

Reported: how often the target is the nearest name / among the 5 nearest, for the edits and, as the baseline,
for the unedited sources; and how often the **source** name is still among the 5 nearest (the same face kept).
A picture of the first sources and their edits goes to ``--figure``.

    python -m benchmarks.emoji_editing models/tessera-emoji --data data/emoji-32 --figure editing.png
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch
from PIL import Image

from benchmarks.emoji_quality import EmojiJudge, name_ranks
from tessera.pipelines.editing import ImageToImagePipeline, InpaintPipeline
from tessera.pipelines.evaluation import ImageSet, extract_features
from tessera.pipelines.text_to_image import TextToImagePipeline


def face_sources(judge: EmojiJudge, count: int, seed: int, exclude: set[str]) -> list[dict]:
    rows = [row for row in judge.train if str(row.get("subgroup", "")).startswith("face-") and row["text"] not in exclude]
    return random.Random(seed).sample(rows, min(count, len(rows)))


def top_half_mask(size: int) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (0, 0, size, size // 2))
    return mask


def ranks_of(judge: EmojiJudge, images: list, names: list[str]) -> list[int]:
    features = extract_features(judge.extractor, ImageSet("edits", images, [str(i) for i in range(len(images))]),
                                total=len(images), progress=False).pool  # (N, D)
    return name_ranks(features, judge.gallery, judge.gallery_names, names)


def rates(ranks: list[int]) -> dict:
    return {"top1": sum(rank < 1 for rank in ranks) / len(ranks), "top5": sum(rank < 5 for rank in ranks) / len(ranks)}


def evaluate_editing(pipe: TextToImagePipeline, judge: EmojiJudge, *, inpaint_prompt: str, edit_prompt: str,
                     strength: float, num_sources: int, seed: int) -> tuple[dict, list[list]]:
    pipe.set_progress_bar_config(disable=True)
    sources = face_sources(judge, num_sources, seed, {inpaint_prompt, edit_prompt})
    images = [Image.open(row["path"]).convert("RGB") for row in sources]
    names = [row["text"] for row in sources]
    size = images[0].width
    generator = torch.Generator(device=pipe.device)
    inpainted = InpaintPipeline.from_pipe(pipe)([inpaint_prompt] * len(images), images, top_half_mask(size),
                                                generator=generator.manual_seed(seed)).images
    edited = ImageToImagePipeline.from_pipe(pipe)([edit_prompt] * len(images), images, strength=strength,
                                                  generator=generator.manual_seed(seed)).images
    results = {"num_sources": len(sources), "seed": seed, "tasks": {}}
    for task, prompt, outputs in (("inpaint", inpaint_prompt, inpainted), ("image_to_image", edit_prompt, edited)):
        target = [prompt] * len(images)
        results["tasks"][task] = {
            "prompt": prompt, "target": rates(ranks_of(judge, outputs, target)),
            "target_before_edit": rates(ranks_of(judge, images, target)),
            "source_kept_top5": rates(ranks_of(judge, outputs, names))["top5"],
            **({"strength": strength} if task == "image_to_image" else {})}
    return results, [images, inpainted, edited]


def save_figure(rows: list[list], path: Path, columns: int = 8, scale: int = 2) -> None:
    """Rows: sources, inpainted, image-to-image; the first ``columns`` of each, scaled up (nearest)."""
    side = rows[0][0].width * scale
    figure = Image.new("RGB", (columns * (side + 2) + 2, len(rows) * (side + 2) + 2), "white")
    for row, images in enumerate(rows):
        for column, image in enumerate(images[:columns]):
            figure.paste(image.resize((side, side), Image.NEAREST), (2 + column * (side + 2), 2 + row * (side + 2)))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="a saved pipeline folder (or a shipped pipeline's name)")
    parser.add_argument("--data", type=Path, required=True, help="python -m benchmarks.emoji build's folder")
    parser.add_argument("--inpaint_prompt", default="smiling face with sunglasses")
    parser.add_argument("--edit_prompt", default="grinning face with big eyes")
    parser.add_argument("--strength", type=float, default=0.6)
    parser.add_argument("--num_sources", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache_dir", type=Path, default=None, help="emoji_quality's gallery cache")
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    judge = EmojiJudge(args.data, seed=args.seed, cache_dir=args.cache_dir)
    results, rows = evaluate_editing(TextToImagePipeline.from_pretrained(args.pipeline), judge,
                                     inpaint_prompt=args.inpaint_prompt, edit_prompt=args.edit_prompt,
                                     strength=args.strength, num_sources=args.num_sources, seed=args.seed)
    if args.figure is not None:
        save_figure(rows, args.figure)
    print(json.dumps(results, indent=2))
    print("\n| task | prompt | target top-1 / top-5 after | before (the sources) | source still top-5 |\n|---|---|---|---|---|")
    for task, row in results["tasks"].items():
        print(f"| {task} | {row['prompt']} | {row['target']['top1']:.0%} / {row['target']['top5']:.0%} | "
              f"{row['target_before_edit']['top1']:.0%} / {row['target_before_edit']['top5']:.0%} | "
              f"{row['source_kept_top5']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
