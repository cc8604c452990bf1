"""Fine-tuning a pipeline on captions in a style it has never seen: evaluator accuracy before and after.

Scores the pipeline on held-out captions in its original style (English) and in the new style, runs
``train.py finetune`` on ``--num_images`` new shapes images captioned in the new style (other scenes than the
pipeline's training data: another seed), scores the result the same way, and prints the figures with the
fine-tuning wall time (tokenizing the new and the replayed data included).

    python -m benchmarks.finetune_new_style --pipeline models/tessera-shapes --output_dir runs/ft-fr
    python -m benchmarks.finetune_new_style ... -- --learning_rate 5e-4 --max_train_steps 800   # finetune flags
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import train
from benchmarks.prior_quality import evaluation_captions, print_table, score
from tessera.pipelines.text_to_image import TextToImagePipeline


def measure(folder: Path, captions: dict[str, list[str]], label: str) -> dict:
    pipeline = TextToImagePipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    return {"pipeline": label, **score(pipeline, captions, guidance_scale=pipeline.sampling.guidance_scale,
                                        num_steps=None, seed=0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=Path("models/tessera-shapes"))
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--caption_style", default="fr", help="the new style: fr or en_alt")
    parser.add_argument("--num_images", type=int, default=4000, help="new images captioned in the new style")
    parser.add_argument("--data_seed", type=int, default=1, help="seed of the new images (the shipped model: 0)")
    parser.add_argument("--num_captions", type=int, default=500, help="held-out captions per split and style")
    parser.add_argument("finetune_args", nargs="*", help="extra train.py finetune flags, after --")
    args = parser.parse_args(argv)
    captions = evaluation_captions(args.num_captions, ["en", args.caption_style])
    rows = [measure(args.pipeline, captions, "before")]
    start = time.perf_counter()
    train.main(["finetune", "--pipeline", str(args.pipeline), "--output_dir", str(args.output_dir), "--data",
                f"shapes:caption_style={args.caption_style},num_samples={args.num_images},seed={args.data_seed}",
                *args.finetune_args])
    minutes = (time.perf_counter() - start) / 60
    rows.append({**measure(args.output_dir, captions, "after"), "finetune_minutes": round(minutes, 2)})
    print(json.dumps(rows, indent=2))
    print_table(rows, list(captions))
    print(f"fine-tuning took {minutes:.1f} min (tokenizing included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
