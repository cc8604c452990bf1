"""VQ-GAN quality on the built-in shapes at 32x32 (8x8 codes): our default command vs a vanilla configuration.

Runs ``python train.py vqgan`` twice with the same data, seed, architecture and number of steps:

- ``default``: the command a user runs with no arguments but ``--output_dir`` (factorised l2-normalised
  codes, dead-code re-seeding, L1 + L2 + feature matching, hinge GAN);
- ``vanilla``: taming-transformers' settings on the same network (plain nearest-neighbour VQ in the full
  ``z_channels`` space, no l2 normalisation, no re-seeding, L1 reconstruction, GAN weight 0.8).

and prints the held-out curve of each (PSNR, SSIM, codebook usage, perplexity, evaluator accuracy on
reconstructions) with wall-clock time, as JSON and a markdown table.

    python -m benchmarks.tokenizer_quality --output_dir runs/bench-tokenizer
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VANILLA = [
    "model.quantizer.l2_normalize=false", "model.quantizer.code_dim=64", "model.quantizer.dead_code_threshold=0",
    "loss.l2_weight=0", "loss.feature_matching_weight=0", "loss.disc_weight=0.8",
]
COLUMNS = ("step", "minutes", "val/psnr", "val/ssim", "val/codebook_usage", "val/perplexity",
           "val/evaluator_accuracy")


def run(name: str, output_dir: Path, extra: list[str]) -> dict:
    command = [sys.executable, "train.py", "tokenizer", "--output_dir", str(output_dir), *extra]
    print("$", " ".join(command[1:]), flush=True)
    start = time.time()
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.time() - start
    lines = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [{"step": line["step"], "minutes": round((line["wall_time"] - start) / 60, 2),
              **{key: line[key] for key in COLUMNS[2:] if key in line}}
             for line in lines if "val/psnr" in line]
    return {"name": name, "command": " ".join(command[1:]), "wall_seconds": round(seconds, 1), "curve": curve}


def markdown(results: list[dict]) -> str:
    header = "| run | " + " | ".join(c.replace("val/", "") for c in COLUMNS) + " |"
    rows = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for result in results:
        for point in result["curve"]:
            cells = [f"{point[c]:.4f}" if isinstance(point.get(c), float) else str(point.get(c, "")) for c in COLUMNS]
            rows.append(f"| {result['name']} | " + " | ".join(cells) + " |")
    final = {r["name"]: r["curve"][-1] for r in results if r["curve"]}
    if {"default", "vanilla"} <= set(final):
        rows.append("")
        rows.append("| final ratio default / vanilla | " + " | ".join(
            f"{final['default'][c] / final['vanilla'][c]:.2f}" if c.startswith("val/") and final["vanilla"].get(c)
            else "" for c in COLUMNS) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/bench-tokenizer")
    parser.add_argument("--max_train_steps", type=int, default=None, help="default: train.py's default")
    parser.add_argument("--skip_vanilla", action="store_true")
    args = parser.parse_args(argv)
    output = Path(args.output_dir)
    steps = [] if args.max_train_steps is None else ["--max_train_steps", str(args.max_train_steps)]
    results = [run("default", output / "default", steps)]
    if not args.skip_vanilla:
        results.append(run("vanilla", output / "vanilla", [*steps, "--set", *VANILLA]))
    print(json.dumps(results, indent=2))
    print(markdown(results))
    (output / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
