"""Image -> text on real emoji: does a pipeline's captioner name the emoji it is shown?

On ``--num_images`` images of each split of ``python -m benchmarks.emoji build``'s data (drawn with ``--seed``;
``train``: emoji the captioner was trained on, ``test``: emoji it never saw, in either style):

- **exact**: the greedy caption equals the image's CLDR name (case and spaces ignored);
- **retrieval top-1 / top-5**: among the image's own name and ``--num_distractors`` other names of the same
  split (drawn per image), the rank of its own by the captioner's score (log-likelihood per token). Chance:
  k / (1 + distractors).

Prints JSON and a markdown table; a few example captions go in the JSON.

    python -m benchmarks.emoji_captioning models/tessera-emoji --data data/emoji-32
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

from benchmarks.emoji_quality import read_split
from tessera.pipelines.image_to_text import ImageToTextPipeline

TOP_K = (1, 5)


def normalised(text: str) -> str:
    return " ".join(text.lower().split())


def judge_split(pipe: ImageToTextPipeline, rows: list[dict], *, num_distractors: int, seed: int) -> dict:
    names = sorted({row["text"] for row in rows})
    paths = [row["path"] for row in rows]
    captions = pipe(paths).captions
    exact = [normalised(caption) == normalised(row["text"]) for caption, row in zip(captions, rows)]
    rng = random.Random(seed)
    candidates = [[row["text"]] + rng.sample([name for name in names if name != row["text"]],
                                             min(num_distractors, len(names) - 1)) for row in rows]
    width = min(len(options) for options in candidates)
    scores = torch.stack([pipe.score(paths, [options[column] for options in candidates])
                          for column in range(width)], dim=1)  # (N, 1 + distractors): column 0 is the truth
    ranks = (scores[:, 1:] > scores[:, :1]).sum(dim=1)  # (N,)
    return {"num_images": len(rows), "exact": sum(exact) / len(rows),
            **{f"retrieval_top{k}": float((ranks < k).float().mean()) for k in TOP_K},
            **{f"chance_top{k}": min(1.0, k / width) for k in TOP_K},
            "examples": [{"name": row["text"], "caption": caption} for row, caption in zip(rows[:8], captions[:8])]}


def evaluate_captioning(pipeline: str, data: Path, *, num_images: int = 200, num_distractors: int = 49,
                        seed: int = 0) -> dict:
    pipe = ImageToTextPipeline.from_pretrained(pipeline)
    results = {"pipeline": str(pipeline), "seed": seed, "splits": {}}
    for split in ("train", "test"):
        rows = read_split(data / split)
        rows = random.Random(f"{seed}:{split}").sample(rows, min(num_images, len(rows)))
        results["splits"][split] = judge_split(pipe, rows, num_distractors=num_distractors, seed=seed)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="a pipeline folder with a captioner/ (or a shipped pipeline's name)")
    parser.add_argument("--data", type=Path, required=True, help="python -m benchmarks.emoji build's folder")
    parser.add_argument("--num_images", type=int, default=200, help="images per split")
    parser.add_argument("--num_distractors", type=int, default=49)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = evaluate_captioning(args.pipeline, args.data, num_images=args.num_images,
                                  num_distractors=args.num_distractors, seed=args.seed)
    print(json.dumps(results, indent=2))
    print("\n| split | images | exact name | retrieval top-1 | top-5 | chance top-1 / top-5 |\n|---|---|---|---|---|---|")
    for split, row in results["splits"].items():
        print(f"| {split} | {row['num_images']} | {row['exact']:.1%} | {row['retrieval_top1']:.1%} | "
              f"{row['retrieval_top5']:.1%} | {row['chance_top1']:.0%} / {row['chance_top5']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
