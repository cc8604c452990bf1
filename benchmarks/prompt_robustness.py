"""Prompts as people type them: accuracy of saved pipelines on held-out shapes scenes, per phrasing family.

The same scenes (the shapes ``test`` split: captions never seen in training) are described in several ways and
each prompt gets one image (seeded), judged by the analytic evaluator against the scene:

- ``template``: the training template ("a small red circle on the left");
- ``typed``: the template as typed (capitals, full stops, commas, doubled spaces);
- ``training``: the phrasings ``--caption_variation shapes`` trains on, words and orders drawn at random ("a
  blue box has a big turquoise disc over it"): what a pipeline trained with the current vocabulary should know;
- ``held_out_lead_in``: a lead-in never used in training ("please draw ...");
- ``held_out_order``: a sentence order never used in training ("a blue square with a red circle above it");
- ``held_out_synonyms``: synonyms never used in training ("tiny", "huge", "violet", "beneath", "in the centre");
- ``holdout``: the template on ``holdout`` scenes (colour-shape pairs never seen in training);
- ``underspecified``: a training phrasing that leaves one attribute of the scene unsaid, drawn per scene ("a
  small red circle" without its position, "a red circle and a blue square" without their relation, "a small red
  shape"), judged on what it says (and on the number of objects).

``--per_attribute`` adds ``held_out_synonyms:<attribute>`` (sizes, colors, shapes, positions, relations): the
synonyms of one attribute only, on the scenes that have one for it, to see which held-out words carry over; and
``underspecified:<attribute>`` (size, color, shape, position, relation): that attribute left unsaid.

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

from tessera.pipelines.data.captions import typed_noise
from tessera.pipelines.shapes import SceneSpec, caption, evaluate, parse_caption, shapes_dataset
from tessera.pipelines.shapes.evaluate import STATED_ATTRIBUTES
from tessera.pipelines.shapes.phrasings import ATTRIBUTES, has_held_out_synonym, omittable, phrase
from tessera.pipelines.text_to_image import TextToImagePipeline

FAMILIES = ("template", "typed", "training", "held_out_lead_in", "held_out_order", "held_out_synonyms", "holdout",
            "underspecified")
ATTRIBUTE_FAMILIES = (tuple(f"held_out_synonyms:{attribute}" for attribute in ATTRIBUTES)
                      + tuple(f"underspecified:{attribute}" for attribute in STATED_ATTRIBUTES))


def scenes(split: str, count: int, seed: int) -> list[SceneSpec]:
    return [parse_caption(text) for text in shapes_dataset(count, seed=seed, split=split)["caption"]]


def prompts_of(family: str, specs: list[SceneSpec], seed: int) -> list[str]:
    """One prompt per scene, drawn with ``random.Random(f"{seed}:{family}:{index}")``."""
    out, unsaid = [], unsaid_of(family, specs, seed)
    for index, spec in enumerate(specs):
        rng = random.Random(f"{seed}:{family}:{index}")
        if family in ("template", "holdout"):
            out.append(caption(spec))
        elif family == "typed":
            out.append(typed_noise(caption(spec), rng))
        elif family.startswith("held_out_synonyms:"):
            attribute = family.split(":")[1]
            out.append(phrase(spec, rng, family="held_out_synonyms", synonym_attributes=(attribute,)))
        elif family.startswith("underspecified"):
            out.append(phrase(spec, rng, omit=unsaid[index]))
        else:
            out.append(phrase(spec, rng, family=family))
    return out


def unsaid_of(family: str, specs: list[SceneSpec], seed: int) -> list[tuple[str, ...]]:
    """What each prompt of ``family`` leaves unsaid: for ``underspecified``, one attribute of ``omittable(spec)``
    drawn with ``random.Random(f"{seed}:{family}:{index}:unsaid")``; for ``underspecified:<attribute>``, that
    one; for the other families, nothing."""
    if family == "underspecified":
        return [(random.Random(f"{seed}:{family}:{index}:unsaid").choice(omittable(spec)),)
                for index, spec in enumerate(specs)]
    if family.startswith("underspecified:"):
        return [(family.split(":")[1],)] * len(specs)
    return [()] * len(specs)


def specs_of(family: str, test: list[SceneSpec], holdout: list[SceneSpec]) -> list[SceneSpec]:
    if family == "holdout":
        return holdout
    if family.startswith("held_out_synonyms:"):
        return [spec for spec in test if has_held_out_synonym(spec, family.split(":")[1])]
    if family.startswith("underspecified:"):
        return [spec for spec in test if family.split(":")[1] in omittable(spec)]
    return test


def score(pipeline: TextToImagePipeline, num_scenes: int, seed: int, families: tuple[str, ...] = FAMILIES) -> dict:
    test, holdout = scenes("test", num_scenes, seed=1234), scenes("holdout", num_scenes, seed=1234)
    row, examples = {}, {}
    for family in families:
        specs = specs_of(family, test, holdout)
        prompts = prompts_of(family, specs, seed)
        start = time.perf_counter()
        images = pipeline(prompts, generator=torch.Generator().manual_seed(seed), output_type="pt").images
        judgements = evaluate(images, specs).judgements
        unsaid = unsaid_of(family, specs, seed)
        row[family] = sum(j.correct_except(u) for j, u in zip(judgements, unsaid)) / len(specs)
        row[f"{family}_seconds"] = round(time.perf_counter() - start, 1)
        row[f"{family}_scenes"] = len(specs)
        examples[family] = prompts[:3]
    return {**row, "examples": examples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipelines", nargs="+", type=Path)
    parser.add_argument("--num_scenes", type=int, default=200, help="scenes per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--per_attribute", action="store_true",
                        help="also score the held-out synonyms of each attribute alone")
    args = parser.parse_args(argv)
    families = FAMILIES + (ATTRIBUTE_FAMILIES if args.per_attribute else ())
    rows = []
    for folder in args.pipelines:
        pipeline = TextToImagePipeline.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        rows.append({"pipeline": str(folder), "text_encoder": pipeline.text.config.pretrained or "scratch",
                     **score(pipeline, args.num_scenes, args.seed, families)})
    print(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print("| pipeline | text encoder | " + " | ".join(families) + " |")
    print("|---|---|" + "---|" * len(families))
    for row in rows:
        print(f"| {row['pipeline']} | {row['text_encoder']} | "
              + " | ".join(f"{row[family]:.1%}" for family in families) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
