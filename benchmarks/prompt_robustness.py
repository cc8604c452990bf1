"""Prompts as people type them: accuracy of saved pipelines on held-out shapes scenes, per phrasing family.

The same scenes (the shapes ``test`` split: captions never seen in training) are described in several ways and
each prompt gets one image (seeded), judged by the analytic evaluator against the scene:

- ``template``: the training template ("a small red circle on the left");
- ``typed``: the template as typed (capitals, full stops, commas, doubled spaces);
- ``held_out_lead_in``: a lead-in never used in training ("please draw ...");
- ``held_out_order``: a sentence order never used in training ("a blue square with a red circle above it");
- ``held_out_synonyms``: synonyms never used in training ("tiny", "huge", "violet", "beneath", "in the centre");
- ``holdout``: the template on ``holdout`` scenes (colour-shape pairs never seen in training).

The held-out families come from ``pipelines.shapes.phrasings`` (its ``HELD_OUT_*`` sets), which training with
``--caption_variation shapes`` never draws from. Prints JSON and a markdown table.

    python -m benchmarks.prompt_robustness models/tessera-shapes --num_scenes 200
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from pipelines.data.captions import typed_noise
from pipelines.shapes import SceneSpec, caption, evaluate, parse_caption, shapes_dataset
from pipelines.shapes.phrasings import phrase
from pipelines.text_to_image import TextToImagePipeline

FAMILIES = ("template", "typed", "held_out_lead_in", "held_out_order", "held_out_synonyms", "holdout")


def scenes(split: str, count: int, seed: int) -> list[SceneSpec]:
    return [parse_caption(text) for text in shapes_dataset(count, seed=seed, split=split)["caption"]]


def prompts_of(family: str, specs: list[SceneSpec], seed: int) -> list[str]:
    """One prompt per scene, drawn with ``random.Random(f"{seed}:{family}:{index}")``."""
    out = []
    for index, spec in enumerate(specs):
        rng = random.Random(f"{seed}:{family}:{index}")
        if family in ("template", "holdout"):
            out.append(caption(spec))
        elif family == "typed":
            out.append(typed_noise(caption(spec), rng))
        else:
            out.append(phrase(spec, rng, family=family))
    return out


def score(pipeline: TextToImagePipeline, num_scenes: int, seed: int) -> dict:
    test, holdout = scenes("test", num_scenes, seed=1234), scenes("holdout", num_scenes, seed=1234)
    row, examples = {}, {}
    for family in FAMILIES:
        specs = holdout if family == "holdout" else test
        prompts = prompts_of(family, specs, seed)
        start = time.perf_counter()
        images = pipeline(prompts, generator=torch.Generator().manual_seed(seed), output_type="pt").images
        row[family] = evaluate(images, specs).accuracy["all_correct"]
        row[f"{family}_seconds"] = round(time.perf_counter() - start, 1)
        examples[family] = prompts[:3]
    return {**row, "examples": examples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipelines", nargs="+", type=Path)
    parser.add_argument("--num_scenes", type=int, default=200, help="scenes per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    rows = []
    for folder in args.pipelines:
        pipeline = TextToImagePipeline.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        rows.append({"pipeline": str(folder), "text_encoder": pipeline.text.config.pretrained or "scratch",
                     **score(pipeline, args.num_scenes, args.seed)})
    print(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print("| pipeline | text encoder | " + " | ".join(FAMILIES) + " |")
    print("|---|---|" + "---|" * len(FAMILIES))
    for row in rows:
        print(f"| {row['pipeline']} | {row['text_encoder']} | "
              + " | ".join(f"{row[family]:.1%}" for family in FAMILIES) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
