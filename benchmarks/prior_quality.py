"""Compositional accuracy of trained priors on the built-in shapes, judged by the analytic evaluator.

For each trained prior folder (the output of ``train.py prior``: ``prior/``, ``text_encoder/``,
``text_tokenizer/``, ``vqgan/``) and each guidance scale, samples one image per caption for

- ``test``: captions never seen in training, with colour-shape pairs that were (in distribution);
- ``holdout``: captions with a colour-shape pair never seen in training (compositional generalisation);

and prints the fraction judged fully correct, as JSON and a markdown table.

    python -m benchmarks.prior_quality runs/ar runs/masked --num_captions 500 --guidance_scales 1 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pipelines.evaluate import evaluate
from prior.config import SamplingConfig
from prior.masked import load_prior
from prior.text import TextConditioner
from prior.trainer import PriorBundle, generate_codes, shapes_evaluation_captions
from tokenizer.model import VQGAN


def score(run: Path, captions: dict[str, list[str]], sampling: SamplingConfig, seed: int) -> dict:
    bundle = PriorBundle(TextConditioner.from_pretrained(run), load_prior(run / "prior")).eval()
    vqgan = VQGAN.from_pretrained(run / "vqgan")
    row = {"run": str(run), "kind": bundle.prior.config.kind, "guidance_scale": sampling.guidance_scale,
           "temperature": sampling.temperature, "num_steps": sampling.num_steps}
    for split, texts in captions.items():
        start = time.time()
        images = vqgan.decode(generate_codes(bundle, texts, sampling, seed=seed))
        row[f"{split}_all_correct"] = evaluate(images, texts).accuracy["all_correct"]
        row[f"{split}_seconds"] = round(time.time() - start, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--num_captions", type=int, default=500)
    parser.add_argument("--guidance_scales", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--num_steps", type=int, default=8, help="masked prior decoding steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    captions = shapes_evaluation_captions(args.num_captions, seed=1234)
    rows = [score(run, captions, SamplingConfig(guidance_scale=scale, temperature=args.temperature,
                                                num_steps=args.num_steps), args.seed)
            for run in args.runs for scale in args.guidance_scales]
    print(json.dumps(rows, indent=2))
    print("| prior | guidance | test captions (pairs seen) | holdout (pairs never seen) |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['kind']} | {row['guidance_scale']:g} | {row['test_all_correct']:.1%} | "
              f"{row['holdout_all_correct']:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
