"""Tokenized-dataset export speed (``train.py tokenize``'s code path) on the built-in shapes at 32x32.

Exports ``shapes:num_samples=20000`` (32x32 images -> 8x8 codes) from scratch and reports images/s,
the encoder's share of the time and the total seconds, against a baseline measured in the same run:
the bare encoder (``vqgan.encode`` on ready tensors, same batch size, same threads). Then checks that
the result opens with one ``datasets.load_dataset("parquet", ...)`` call. Trains nothing.

Without ``--tokenizer`` a VQ-GAN of the ``--preset`` architecture (default "cpu-32") is built with
random weights: speed depends on the architecture, not on the weights (its codes mean nothing, so
use a trained folder for anything but timing).

    python -m benchmarks.export_speed                                   # 20,000 images, random cpu-32
    python -m benchmarks.export_speed --vqgan runs/vqgan --num_processes 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import datasets
import torch

from tessera.pipelines.tokens.export import ExportConfig, export_tokenized_dataset
from tessera.tokenizer.config import VQGAN_PRESETS, vqgan_preset
from tessera.tokenizer.model import VQGAN


def random_tokenizer(folder: Path, preset: str) -> Path:
    if not (folder / "model.safetensors").is_file():
        torch.manual_seed(0)
        VQGAN(vqgan_preset(preset)).save_pretrained(folder)
    return folder


def encoder_baseline(tokenizer: Path, batch_size: int, num_images: int) -> dict:
    """Images/s of ``vqgan.encode`` alone on random tensors (one warm-up batch first)."""
    vqgan = VQGAN.from_pretrained(tokenizer)
    side = vqgan.config.resolution
    images = torch.rand(batch_size, 3, side, side) * 2 - 1  # (B, 3, R, R)
    batches = max(1, num_images // batch_size)
    with torch.inference_mode():
        vqgan.encode(images)
        start = time.perf_counter()
        for _ in range(batches):
            vqgan.encode(images)
        seconds = time.perf_counter() - start
    return {"images": batches * batch_size, "seconds": round(seconds, 2),
            "images_per_second": round(batches * batch_size / seconds, 1)}


def check_loads(output: Path, expected_rows: int, code_side: int) -> dict:
    """One ``datasets`` call, into a throw-away cache (no cache hit, nothing left in ~/.cache)."""
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        dataset = datasets.load_dataset("parquet", data_files=str(output / "data" / "*.parquet"), split="train",
                                        cache_dir=cache)
        seconds = time.perf_counter() - start
        assert len(dataset) == expected_rows, (len(dataset), expected_rows)
        assert dataset.features["codes"] == datasets.Array2D((code_side, code_side), "int16"), dataset.features
        first = dataset.with_format("torch")[0]["codes"]
        assert tuple(first.shape) == (code_side, code_side)
    return {"rows": len(dataset), "seconds": round(seconds, 2), "columns": dataset.column_names}


def markdown(result: dict) -> str:
    run, base, after = result["export"], result["encoder_baseline"], result["encoder_baseline_after"]
    rows = [
        ("images exported", f"{run['images']:,}"),
        ("export images/s", f"{run['images_per_second']:.1f}"),
        ("encoder images/s inside the export", f"{run['encoder_images_per_second']:.1f}"),
        ("encoder-only images/s, before / after the export (baseline)",
         f"{base['images_per_second']:.1f} / {after['images_per_second']:.1f}"),
        ("encoder share of the worker time", f"{100 * run['encoder_share']:.1f}%"),
        ("encoder / data / writing / setup seconds",
         f"{run['encoder_seconds']:.1f} / {run['data_seconds']:.1f} / {run['write_seconds']:.1f} / "
         f"{run['setup_seconds']:.1f}"),
        ("total seconds (export call, wall)", f"{result['total_seconds']:.1f}"),
        ("load with one datasets call", f"{result['load']['rows']:,} rows in {result['load']['seconds']:.1f} s"),
    ]
    lines = ["| metric | value |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vqgan", "--tokenizer", dest="vqgan", default=None,
                        help="a saved VQ-GAN folder (default: random weights)")
    parser.add_argument("--preset", default="cpu-32", choices=sorted(VQGAN_PRESETS))
    parser.add_argument("--num_samples", type=int, default=20_000)
    parser.add_argument("--output_dir", default="runs/bench-export")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--shard_size", type=int, default=5000)
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--baseline_images", type=int, default=2048)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    output = Path(args.output_dir)
    tokenizer = Path(args.vqgan) if args.vqgan else random_tokenizer(output / "vqgan-random", args.preset)
    dataset_dir = output / "dataset"
    shutil.rmtree(dataset_dir, ignore_errors=True)  # a fresh export every time
    load_before = os.getloadavg()
    baseline = encoder_baseline(tokenizer, args.batch_size, args.baseline_images)
    print(f"encoder alone, before the export: {baseline['images_per_second']} images/s", flush=True)

    config = ExportConfig(vqgan=str(tokenizer), data=f"shapes:num_samples={args.num_samples}",
                          output_dir=str(dataset_dir), batch_size=args.batch_size, shard_size=args.shard_size,
                          num_processes=args.num_processes)
    start = time.perf_counter()
    exported = export_tokenized_dataset(config, command=" ".join([sys.executable, "-m", "benchmarks.export_speed",
                                                                   *(argv or sys.argv[1:])]))
    total = time.perf_counter() - start
    info = exported.info
    run = info["timings"]["this_run"]
    run["encoder_images_per_second"] = round(run["images"] / run["encoder_seconds"], 1)  # inside the export
    baseline_after = encoder_baseline(tokenizer, args.batch_size, args.baseline_images)  # shows drift on a busy machine
    result = {
        "tokenizer": str(tokenizer) if args.vqgan else f"random-weight {args.preset} (speed only)",
        "source": config.data, "resolution": info["resolution"], "code_shape": info["code_shape"],
        "batch_size": args.batch_size, "shard_size": args.shard_size, "num_processes": args.num_processes,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "encoder_baseline": baseline, "encoder_baseline_after": baseline_after, "export": run,
        "total_seconds": round(total, 2),
        "load": check_loads(dataset_dir, info["num_rows"], info["code_shape"][0]),
    }
    print(json.dumps(result, indent=2))
    print(markdown(result))
    (output / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
