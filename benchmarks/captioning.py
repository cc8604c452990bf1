"""The captioner of a saved pipeline on the built-in shapes: captioning, retrieval, round trip and reranking.

For a pipeline folder with a ``captioner/`` component (``models/tessera-shapes``, ``train.py captioner`` or
``quickstart`` output), on scenes rendered at the VQ-GAN's resolution (seeded):

- **exact match**: the greedy caption of a scene's image parses (``pipelines.shapes.parse_caption``) to the
  scene (compared in canonical form), on ``test`` scenes (colour-shape pairs seen in training) and ``holdout``
  scenes (pairs never seen);
- **retrieval**: for ``--num_retrieval`` held-out ``test`` images and their captions, how often the caption the
  captioner scores highest for an image describes that image (top-1; a caption repeated in the set counts for
  each of its scenes);
- **round trip**: prompt -> generated image -> caption; how often the caption parses back to the prompt's scene;
- **reranking**: text-to-image accuracy (the analytic evaluator) on ``test`` and ``holdout`` prompts with one
  sample per prompt and with the best of ``--num_candidates`` by the captioner's score, same seeds.

Prints JSON and a markdown table.

    python -m benchmarks.captioning models/tessera-shapes
    python -m benchmarks.captioning runs/quickstart/pipeline --num_scenes 500 --num_candidates 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tessera.pipelines.image_to_text import ImageToTextPipeline
from tessera.pipelines.shapes import evaluate, same_scene, shapes_dataset
from tessera.pipelines.text_to_image import TextToImagePipeline

SPLITS = ("test", "holdout")


def scenes(count: int, split: str, resolution: int, seed: int) -> dict:
    """``{"image": [...], "caption": [...]}`` of ``count`` rendered scenes of a split."""
    return shapes_dataset(count, resolution=resolution, seed=seed, split=split)[:]


def exact_match(captioning: ImageToTextPipeline, rows: dict, num_beams: int, guidance_scale: float | None = None
                ) -> float:
    captions = captioning(rows["image"], num_beams=num_beams, guidance_scale=guidance_scale).captions
    return sum(same_scene(text, truth) for text, truth in zip(captions, rows["caption"])) / len(captions)


def retrieval_top1(captioning: ImageToTextPipeline, rows: dict) -> float:
    """Share of images whose highest-scoring caption among all the set's captions describes them."""
    codes = captioning.encode(rows["image"])  # (N, h, w)
    captions = list(rows["caption"])
    hits = 0
    for index in range(len(codes)):
        scores = captioning.score_codes(codes[index:index + 1].expand(len(captions), -1, -1), captions)  # (N,)
        hits += same_scene(captions[int(scores.argmax())], captions[index])
    return hits / len(codes)


def generate(pipe: TextToImagePipeline, prompts: list[str], num_candidates: int, seed: int) -> torch.Tensor:
    return pipe(prompts, num_candidates=num_candidates, generator=torch.Generator().manual_seed(seed),
                output_type="pt").images  # (N, 3, H, W)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("--num_scenes", type=int, default=200, help="scenes per split (exact match, reranking)")
    parser.add_argument("--num_retrieval", type=int, default=100, help="images (and captions) for retrieval")
    parser.add_argument("--num_candidates", type=int, default=4)
    parser.add_argument("--num_beams", type=int, default=1, help="captioning: 1 = greedy")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the text-to-image runs")
    parser.add_argument("--guidance_scales", type=float, nargs="*", default=[],
                        help="also measure exact match at these image-guidance scales")
    args = parser.parse_args(argv)

    pipe = TextToImagePipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    captioning = ImageToTextPipeline.from_pipe(pipe)
    captioning.set_progress_bar_config(disable=True)
    resolution = pipe.vqgan.config.resolution
    rows = {split: scenes(args.num_scenes, split, resolution, seed=1234) for split in SPLITS}
    result: dict = {"pipeline": str(args.pipeline), "num_scenes": args.num_scenes, "num_beams": args.num_beams,
                    "guidance_scale": captioning.captioner.config.guidance_scale,
                    "num_candidates": args.num_candidates, "seconds": {}}

    def timed(name: str, work, *arguments):
        start = time.perf_counter()
        value = work(*arguments)
        result["seconds"][name] = round(time.perf_counter() - start, 1)
        return value

    for split in SPLITS:
        result[f"exact_match_{split}"] = timed(f"exact_match_{split}", exact_match, captioning, rows[split],
                                               args.num_beams)
    for scale in args.guidance_scales:
        for split in SPLITS:
            result[f"exact_match_{split}_guidance_{scale:g}"] = exact_match(captioning, rows[split], args.num_beams,
                                                                            scale)
    retrieval_rows = scenes(args.num_retrieval, "test", resolution, seed=4321)
    result["retrieval_top1"] = timed("retrieval", retrieval_top1, captioning, retrieval_rows)
    prompts = {split: list(rows[split]["caption"]) for split in SPLITS}
    generated = timed("generate_test", generate, pipe, prompts["test"], 1, args.seed)
    captions = timed("caption_generated", captioning, generated).captions
    result["round_trip_test"] = sum(map(same_scene, captions, prompts["test"])) / len(captions)
    result["text_to_image_test"] = evaluate(generated, prompts["test"]).accuracy["all_correct"]
    holdout = timed("generate_holdout", generate, pipe, prompts["holdout"], 1, args.seed)
    result["text_to_image_holdout"] = evaluate(holdout, prompts["holdout"]).accuracy["all_correct"]
    for split in SPLITS:
        images = timed(f"rerank_{split}", generate, pipe, prompts[split], args.num_candidates, args.seed)
        result[f"text_to_image_{split}_reranked"] = evaluate(images, prompts[split]).accuracy["all_correct"]

    print(json.dumps(result, indent=2))
    k = args.num_candidates
    print("| measure | test | holdout |")
    print("|---|---|---|")
    print(f"| caption exact match ({'greedy' if args.num_beams == 1 else f'{args.num_beams} beams'}, image guidance "
          f"{result['guidance_scale']:g}) | "
          f"{result['exact_match_test']:.1%} | {result['exact_match_holdout']:.1%} |")
    for scale in args.guidance_scales:
        print(f"| caption exact match, image guidance {scale:g} | {result[f'exact_match_test_guidance_{scale:g}']:.1%}"
              f" | {result[f'exact_match_holdout_guidance_{scale:g}']:.1%} |")
    print(f"| retrieval top-1 ({args.num_retrieval} images x {args.num_retrieval} captions) | "
          f"{result['retrieval_top1']:.1%} | |")
    print(f"| round trip prompt -> image -> caption | {result['round_trip_test']:.1%} | |")
    print(f"| text-to-image, 1 sample | {result['text_to_image_test']:.1%} | {result['text_to_image_holdout']:.1%} |")
    print(f"| text-to-image, best of {k} by the captioner | {result['text_to_image_test_reranked']:.1%} | "
          f"{result['text_to_image_holdout_reranked']:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
