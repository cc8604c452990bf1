"""Compositional accuracy of saved pipelines on the built-in shapes, judged by the analytic evaluator.

For each pipeline folder (``models/tessera-shapes``, or the output of ``train.py prior`` / ``finetune`` /
``quickstart``), each guidance scale and each caption style, samples one image per caption through
``TextToImagePipeline`` (seeded) for

- ``test``: captions never seen in training, with colour-shape pairs that were (in distribution);
- ``holdout``: captions with a colour-shape pair never seen in training (compositional generalisation);

and prints the fraction judged fully correct, as JSON and a markdown table.

    python -m benchmarks.prior_quality models/tessera-shapes --num_captions 500 --guidance_scales 2
    python -m benchmarks.prior_quality runs/ar runs/masked --num_captions 500 --guidance_scales 1 2 3
    python -m benchmarks.prior_quality runs/ft-fr --caption_styles en fr
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tessera.pipelines.shapes.evaluate import evaluate
from tessera.pipelines.shapes.world import SHAPES_WORLD
from tessera.pipelines.text_to_image import TextToImagePipeline


def score(pipeline: TextToImagePipeline, captions: dict[str, list[str]], *, guidance_scale: float,
          num_steps: int | None, seed: int) -> dict:
    """``{split}_all_correct`` and ``{split}_seconds`` for each caption split, one image per caption."""
    masked = pipeline.prior.config.kind == "masked"
    row = {"kind": pipeline.prior.config.kind, "guidance_scale": guidance_scale,
           "num_steps": (num_steps or pipeline.sampling.num_steps) if masked else None}
    for split, texts in captions.items():
        start = time.perf_counter()
        images = pipeline(texts, guidance_scale=guidance_scale, num_steps=num_steps if masked else None,
                          generator=torch.Generator().manual_seed(seed), output_type="pt").images
        row[f"{split}_all_correct"] = evaluate(images, texts).accuracy["all_correct"]
        row[f"{split}_seconds"] = round(time.perf_counter() - start, 1)
    return row


def evaluation_captions(num_captions: int, styles: list[str]) -> dict[str, list[str]]:
    return SHAPES_WORLD.evaluation_captions(num_captions, seed=1234, styles=tuple(styles))


def print_table(rows: list[dict], splits: list[str]) -> None:
    print("| pipeline | prior | guidance | " + " | ".join(splits) + " |")
    print("|---|---|---|" + "---|" * len(splits))
    for row in rows:
        print(f"| {row['pipeline']} | {row['kind']} | {row['guidance_scale']:g} | "
              + " | ".join(f"{row[f'{split}_all_correct']:.1%}" for split in splits) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipelines", nargs="+", type=Path)
    parser.add_argument("--num_captions", type=int, default=500, help="captions per split and style")
    parser.add_argument("--guidance_scales", type=float, nargs="+", default=[2.0])
    parser.add_argument("--num_steps", type=int, default=None, help="masked prior decoding steps (default: "
                                                                     "the pipeline's)")
    parser.add_argument("--caption_styles", nargs="+", default=["en"], help="en, en_alt, fr")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    captions = evaluation_captions(args.num_captions, args.caption_styles)
    rows = []
    for folder in args.pipelines:
        pipeline = TextToImagePipeline.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        for scale in args.guidance_scales:
            rows.append({"pipeline": str(folder), **score(pipeline, captions, guidance_scale=scale,
                                                          num_steps=args.num_steps, seed=args.seed)})
    print(json.dumps(rows, indent=2))
    print_table(rows, list(captions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
