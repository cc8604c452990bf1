"""A picture of what a pipeline draws: one row per prompt, the real emoji it names beside seeded samples.

``--prompts FILE``: one prompt a line, optionally ``prompt<TAB>name`` where ``name`` is the CLDR name of the
real emoji to show beside it (default: the prompt itself). Each row: the prompt, the real images of that name
in ``--data`` (one per art style; marked ``test`` when the name is in the held-out split, ``-`` when the data
has no such name), then ``--samples`` images drawn with one ``torch.Generator`` seeded ``--seed`` (the same
arguments give the same picture on the same device). Images are scaled up ``--scale`` times (nearest).

    python -m benchmarks.emoji_grid models/tessera-emoji --data data/emoji-32 --prompts prompts.tsv -o grid.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from benchmarks.emoji_quality import read_split
from tessera.pipelines.text_to_image import TextToImagePipeline

STYLES = ("openmoji", "twemoji")
LABEL_WIDTH = 220
GAP = 4


def read_prompts(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            prompt, _, name = line.partition("\t")
            pairs.append((prompt.strip(), name.strip() or prompt.strip()))
    if not pairs:
        raise ValueError(f"{path}: no prompts")
    return pairs


def real_images(data: Path, names: list[str]) -> dict[str, tuple[list[Image.Image], bool]]:
    """Each name's real images (the first of each style, in STYLES order) and whether the name is held out."""
    rows = {split: [row for row in read_split(data / split) if row["text"] in names] for split in ("train", "test")}
    held_out = {row["text"] for row in rows["test"]}
    found = {}
    for name in names:
        candidates = [row for split in ("train", "test") for row in rows[split] if row["text"] == name]
        firsts = [next((row for row in candidates if row.get("style", STYLES[0]) == style), None) for style in STYLES]
        images = [Image.open(row["path"]).convert("RGB") for row in firsts if row is not None]
        if images:
            found[name] = (images, name in held_out)
    return found


def draw_grid(pipe: TextToImagePipeline, pairs: list[tuple[str, str]], data: Path, *, samples: int, seed: int,
              scale: int) -> Image.Image:
    prompts = [prompt for prompt, _ in pairs]
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    drawn = pipe(prompts, num_images_per_prompt=samples, generator=generator).images  # prompt-major
    reals = real_images(data, [name for _, name in pairs])
    side = drawn[0].width * scale
    columns = len(STYLES) + samples
    width = LABEL_WIDTH + columns * (side + GAP) + GAP
    grid = Image.new("RGB", (width, len(pairs) * (side + GAP) + GAP + 16), "white")
    pen = ImageDraw.Draw(grid)
    pen.text((LABEL_WIDTH + GAP, 2), "real (OpenMoji, Twemoji)", fill="black")
    pen.text((LABEL_WIDTH + len(STYLES) * (side + GAP) + GAP, 2), f"drawn (seed {seed})", fill="black")
    for row, (prompt, name) in enumerate(pairs):
        top = 16 + GAP + row * (side + GAP)
        images, held_out = reals.get(name, ([], False))
        label = f'"{prompt}"' + (f"\n= {name}" if name != prompt else "") + ("\n(held out)" if held_out else "")
        pen.multiline_text((GAP, top + 2), label if images else label + "\n(no real emoji)", fill="black")
        cells = images + [None] * (len(STYLES) - len(images)) + drawn[row * samples:(row + 1) * samples]
        for column, image in enumerate(cells):
            if image is not None:
                grid.paste(image.resize((side, side), Image.NEAREST),
                           (LABEL_WIDTH + GAP + column * (side + GAP), top))
    return grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="a saved pipeline folder (or a shipped pipeline's name)")
    parser.add_argument("--data", type=Path, required=True, help="python -m benchmarks.emoji build's folder")
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    pipe = TextToImagePipeline.from_pretrained(args.pipeline)
    grid = draw_grid(pipe, read_prompts(args.prompts), args.data, samples=args.samples, seed=args.seed,
                     scale=args.scale)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.output)
    print(f"wrote {args.output} ({grid.width}x{grid.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
