"""Trained VQ-GAN image tokenizers side by side on held-out real images: PSNR, SSIM, codebook usage and
perplexity, sharpness and reconstruction FD, one row per tokenizer, and a grid of their reconstructions.

Sharpness is the high-frequency energy of the reconstructions over that of the originals
(``tokenizer.metrics.high_frequency_energy``; 1.0 = as sharp). Reconstruction FD is the Fréchet distance between
the held-out images and their reconstructions in EfficientNet-Lite0 features (``benchmarks/reconstruction_fd.py``;
lower = closer; biased upwards with few images, so compare rows over the same images only). Each tokenizer reads
the images at its own resolution.

    python -m benchmarks.tokenizer_heldout --data data/emoji-32/test runs/emoji/vqgan runs/no-gan runs/vanilla \\
        --names default no_gan vanilla --output_dir runs/tokenizer-heldout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks.reconstruction_fd import reconstruction_fd
from tessera.core.io import atomic_write_text, save_image_grid
from tessera.pipelines.data import collate_image_captions, load_image_caption_data
from tessera.pipelines.training.vqgan import evaluate_reconstructions
from tessera.tokenizer.metrics import high_frequency_energy
from tessera.tokenizer.model import VQGAN

COLUMNS = ("steps", "psnr", "ssim", "codebook_usage", "perplexity", "sharpness", "reconstruction_fd")
GRID_IMAGES = 16  # originals and reconstructions shown per row of the grid


def heldout_loader(data: str | Path, resolution: int, batch_size: int = 64) -> DataLoader:
    heldout = load_image_caption_data(str(data), resolution=resolution, allow_empty_captions=True)
    return DataLoader(heldout.dataset, batch_size=batch_size, collate_fn=collate_image_captions)


def trained_steps(folder: Path) -> int | None:
    """The run's ``max_train_steps`` (``run_config.json`` of ``train.py vqgan``), or None for another folder."""
    run_config = folder / "run_config.json"
    return json.loads(run_config.read_text())["training"]["max_train_steps"] if run_config.is_file() else None


@torch.no_grad()
def evaluate_tokenizer(folder: Path, loader: DataLoader) -> tuple[dict, torch.Tensor]:
    """Held-out metrics of one trained tokenizer and its reconstructions of the first ``GRID_IMAGES`` images."""
    model = VQGAN.from_pretrained(folder).eval()
    metrics, _, _ = evaluate_reconstructions(model, loader, torch.device("cpu"))
    original_energy = reconstruction_energy = 0.0
    originals, reconstructions = [], []
    for batch in loader:
        images = batch["pixel_values"]
        output = model(images).reconstruction.clamp(-1, 1)
        original_energy += float(high_frequency_energy(images).sum())
        reconstruction_energy += float(high_frequency_energy(output).sum())
        originals.append(images)
        reconstructions.append(output)
    metrics = {key.removeprefix("val/"): round(value, 4) for key, value in metrics.items()}
    # flat originals (no high frequencies at all) have no sharpness to compare with
    metrics["sharpness"] = round(reconstruction_energy / original_energy, 4) if original_energy > 0 else None
    metrics["reconstruction_fd"] = round(reconstruction_fd(torch.cat(originals), torch.cat(reconstructions)), 2)
    return {"steps": trained_steps(folder), **metrics}, torch.cat(reconstructions)[:GRID_IMAGES]


def markdown_table(results: dict[str, dict]) -> str:
    lines = ["| tokenizer | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(row.get(column, "")) for column in COLUMNS) + " |"
              for name, row in results.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizers", nargs="+", type=Path, help="VQ-GAN folders (train.py vqgan outputs)")
    parser.add_argument("--data", required=True, help="held-out images (an imagefolder, folder or saved dataset)")
    parser.add_argument("--names", nargs="+", default=None, help="a row name per tokenizer (default: folder names)")
    parser.add_argument("--output_dir", type=Path, default=None, help="tokenizers.json and reconstructions.png")
    args = parser.parse_args(argv)
    names = args.names or [folder.name for folder in args.tokenizers]
    if len(names) != len(args.tokenizers):
        parser.error(f"--names has {len(names)} names for {len(args.tokenizers)} tokenizers")
    results, rows = {}, []
    for name, folder in zip(names, args.tokenizers):
        loader = heldout_loader(args.data, VQGAN.from_pretrained(folder).config.resolution)
        if not rows:
            rows.append(next(iter(loader))["pixel_values"][:GRID_IMAGES])
        results[name], reconstructions = evaluate_tokenizer(folder, loader)
        rows.append(reconstructions)
        print(json.dumps({"tokenizer": name, **results[name]}), flush=True)
    print(markdown_table(results))
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output_dir / "tokenizers.json", json.dumps(results, indent=2) + "\n")
        if len({row.shape[-1] for row in rows}) == 1:  # one grid needs one resolution
            save_image_grid(torch.cat(rows), args.output_dir / "reconstructions.png", nrow=GRID_IMAGES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
