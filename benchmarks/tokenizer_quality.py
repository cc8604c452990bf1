"""VQ-GAN quality on the built-in shapes at 32x32 (8x8 codes): our default command vs a vanilla configuration.

Runs ``python train.py vqgan`` twice with the same data, seed, architecture and number of steps:

- ``default``: the command a user runs with no arguments but ``--output_dir`` (factorised l2-normalised
  codes, dead-code re-seeding, L1 + L2 + feature matching, hinge GAN);
- ``vanilla``: taming-transformers' settings on the same network (plain nearest-neighbour VQ in the full
  ``z_channels`` space, no l2 normalisation, no re-seeding, L1 reconstruction, GAN weight 0.8).

and prints the held-out curve of each (PSNR, SSIM, codebook usage, perplexity, evaluator accuracy on
reconstructions) with wall-clock time, and the final model's reconstruction FD (``benchmarks/reconstruction_fd.py``:
``--fd_images`` held-out shapes vs their reconstructions, EfficientNet-Lite0 features), as JSON and markdown.

    python -m benchmarks.tokenizer_quality --output_dir runs/bench-tokenizer
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from torch.utils.data import DataLoader

from benchmarks.reconstruction_fd import reconstruct, reconstruction_fd
from tessera.pipelines.data import collate_image_captions, load_image_caption_data
from tessera.tokenizer.model import VQGAN

ROOT = Path(__file__).resolve().parents[1]
VANILLA = [
    "model.quantizer.l2_normalize=false", "model.quantizer.code_dim=64", "model.quantizer.dead_code_threshold=0",
    "loss.l2_weight=0", "loss.feature_matching_weight=0", "loss.disc_weight=0.8",
]
COLUMNS = ("step", "minutes", "val/psnr", "val/ssim", "val/codebook_usage", "val/perplexity",
           "val/evaluator_accuracy")


def heldout_fd(model_dir: Path, num_images: int) -> float:
    """Reconstruction FD of the trained model on ``num_images`` held-out shapes (the stage's test split, seed 1)."""
    model = VQGAN.from_pretrained(model_dir)
    data = load_image_caption_data(f"shapes:split=test,num_samples={num_images},seed=1",
                                   resolution=model.config.resolution)
    loader = DataLoader(data.dataset, batch_size=64, collate_fn=collate_image_captions)
    return round(reconstruction_fd(*reconstruct(model, loader)), 2)


def run(name: str, output_dir: Path, extra: list[str], fd_images: int = 0) -> dict:
    command = [sys.executable, "train.py", "tokenizer", "--output_dir", str(output_dir), *extra]
    print("$", " ".join(command[1:]), flush=True)
    start = time.time()
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.time() - start
    lines = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [{"step": line["step"], "minutes": round((line["wall_time"] - start) / 60, 2),
              **{key: line[key] for key in COLUMNS[2:] if key in line}}
             for line in lines if "val/psnr" in line]
    fd = {"reconstruction_fd": heldout_fd(output_dir, fd_images), "fd_images": fd_images} if fd_images else {}
    return {"name": name, "command": " ".join(command[1:]), "wall_seconds": round(seconds, 1), "curve": curve, **fd}


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
    fds = [f"{r['name']} {r['reconstruction_fd']}" for r in results if "reconstruction_fd" in r]
    if fds:
        rows += ["", "held-out reconstruction FD (EfficientNet-Lite0): " + ", ".join(fds)]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/bench-tokenizer")
    parser.add_argument("--max_train_steps", type=int, default=None, help="default: train.py's default")
    parser.add_argument("--skip_vanilla", action="store_true")
    parser.add_argument("--fd_images", type=int, default=1000,
                        help="held-out shapes for the final reconstruction FD (0: skip it)")
    args = parser.parse_args(argv)
    output = Path(args.output_dir)
    steps = [] if args.max_train_steps is None else ["--max_train_steps", str(args.max_train_steps)]
    results = [run("default", output / "default", steps, args.fd_images)]
    if not args.skip_vanilla:
        results.append(run("vanilla", output / "vanilla", [*steps, "--set", *VANILLA], args.fd_images))
    print(json.dumps(results, indent=2))
    print(markdown(results))
    (output / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
