"""FD / KID / IS of a pipeline's samples against held-out real images (``pipelines.evaluation``).

Samples ``--num_images_per_prompt`` images for each line of ``--prompts`` with ``TextToImagePipeline`` (seeded:
one ``torch.Generator`` from ``--seed``; the same arguments give the same images on the CPU), writes them as an
imagefolder (``OUT/samples/00000.png ...`` + ``metadata.jsonl``), evaluates them against ``--reference`` and
writes ``OUT/generation_quality.json`` (the report, the settings and the sampling time).

    python -m benchmarks.generation_quality runs/real-images/pipeline --reference runs/real-images/data/heldout \\
        --prompts captions.txt --seed 0 --output_dir runs/generation-quality
    python -m benchmarks.generation_quality models/tessera-shapes --reference shapes-heldout/ --prompts p.txt \\
        --features inception --inception_weights pt_inception-2015-12-05-6726825d.pth

``--prompts`` may be a text file (one caption a line) or an imagefolder's ``metadata.jsonl`` (its ``text``
fields), e.g. the reference set's own captions. ``--reference_stats FILE`` caches the reference statistics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from tessera.core.io import atomic_write_text
from tessera.pipelines.evaluation import EvaluationConfig, evaluate_images
from tessera.pipelines.text_to_image import TextToImagePipeline


def read_prompts(path: Path) -> list[str]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        lines = [json.loads(line).get("text") or "" for line in lines]
    if not lines:
        raise ValueError(f"{path}: no prompts")
    return lines


def sample(pipe: TextToImagePipeline, prompts: list[str], out: Path, *, images_per_prompt: int, seed: int,
           batch_size: int) -> float:
    """Write the samples as an imagefolder; returns the seconds spent sampling."""
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    start = time.time()
    images = pipe(prompts, num_images_per_prompt=images_per_prompt, generator=generator,
                  batch_size=batch_size).images  # prompt-major
    seconds = time.time() - start
    rows = []
    for index, image in enumerate(images):
        name = f"{index:05d}.png"
        image.save(out / name)
        rows.append(json.dumps({"file_name": name, "text": prompts[index // images_per_prompt]}))
    atomic_write_text(out / "metadata.jsonl", "\n".join(rows) + "\n")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", type=Path, metavar="PIPELINE_DIR")
    parser.add_argument("--reference", required=True, help="held-out real images (folder, imagefolder, dataset)")
    parser.add_argument("--reference_stats", type=Path, default=None)
    parser.add_argument("--prompts", type=Path, required=True, help="captions: a text file or a metadata.jsonl")
    parser.add_argument("--num_images_per_prompt", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--features", choices=("efficientnet-lite0", "inception"), default="efficientnet-lite0")
    parser.add_argument("--inception_weights", default=None)
    parser.add_argument("--output_dir", type=Path, default=Path("runs/generation-quality"))
    args = parser.parse_args(argv)
    try:
        prompts = read_prompts(args.prompts)
        pipe = TextToImagePipeline.from_pretrained(args.pipeline)
        samples = args.output_dir / "samples"
        seconds = sample(pipe, prompts, samples, images_per_prompt=args.num_images_per_prompt, seed=args.seed,
                         batch_size=args.batch_size)
        config = EvaluationConfig(features=args.features, weights=args.inception_weights)
        report = evaluate_images(samples, args.reference, config=config, reference_stats=args.reference_stats)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {**report.to_dict(), "pipeline": str(args.pipeline), "prompts": str(args.prompts),
              "num_prompts": len(prompts), "num_images_per_prompt": args.num_images_per_prompt, "seed": args.seed,
              "sampling_seconds": round(seconds, 1)}
    atomic_write_text(args.output_dir / "generation_quality.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
