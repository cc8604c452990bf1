"""Sanity and speed of ``pipelines.evaluation`` (README "Image quality: FD, KID, IS").

Sanity (``--real`` an image set, ``--vqgan`` a VQ-GAN folder of the same resolution): the set's images at even
positions (A) and odd positions (B); FD in EfficientNet-Lite0 features of

- A vs B (two halves of one real set: the floor at this number of images),
- B vs B's VQ-GAN reconstructions and A vs B's reconstructions,
- A vs uniform noise images of B's count and size.

``--max_images N`` takes a seeded random subset first (the halves then hold N / 2 each).

Speed (``--speed_images N``): features of N images of the set's size (its images repeated), batch
``--batch_size``, timed after one warm-up batch, with the torch thread count.

    python -m benchmarks.image_quality --real runs/real-images/data/train --vqgan runs/real-images/tokenizer-default
    python -m benchmarks.image_quality --real runs/real-images/data/train --speed_images 10000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.reconstruction_fd import reconstruct
from tessera.pipelines.evaluation import (
    extract_features,
    load_feature_extractor,
    model_range_to_uint8,
    open_image_set,
)
from tessera.pipelines.evaluation.metrics import frechet_distance, gaussian_statistics
from tessera.tokenizer.model import VQGAN


def load_uint8(source: str) -> torch.Tensor:
    images = list(open_image_set(source))
    if len({image.shape for image in images}) != 1:
        raise ValueError(f"{source}: the sanity check needs images of one size")
    return torch.stack(images)  # (N, 3, H, W) uint8


def sanity(images: torch.Tensor, vqgan: Path | None, seed: int, batch_size: int = 64) -> dict:
    extractor = load_feature_extractor("efficientnet-lite0")
    sets = {"A": images[0::2], "B": images[1::2]}
    sets["noise"] = torch.randint(0, 256, sets["B"].shape, dtype=torch.uint8,
                                  generator=torch.Generator().manual_seed(seed))
    if vqgan is not None:
        batches = [{"pixel_values": batch.float().div(127.5).sub(1)} for batch in sets["B"].split(64)]  # -> [-1, 1]
        sets["B_reconstructed"] = model_range_to_uint8(reconstruct(VQGAN.from_pretrained(vqgan), batches)[1])
    stats = {name: gaussian_statistics(extract_features(extractor, batch, batch_size=batch_size, total=len(batch),
                                                        desc=name).pool) for name, batch in sets.items()}
    result = {"images_per_half": [len(sets["A"]), len(sets["B"])], "size": list(images.shape[2:]),
              "halves": frechet_distance(stats["A"], stats["B"]), "noise": frechet_distance(stats["A"], stats["noise"])}
    if vqgan is not None:
        result["vqgan"] = str(vqgan)
        result["reconstructions_of_same_images"] = frechet_distance(stats["B"], stats["B_reconstructed"])
        result["reconstructions_of_other_half"] = frechet_distance(stats["A"], stats["B_reconstructed"])
    return {key: round(value, 2) if isinstance(value, float) else value for key, value in result.items()}


def speed(images: torch.Tensor, count: int, batch_size: int) -> dict:
    extractor = load_feature_extractor("efficientnet-lite0")
    repeats = -(-count // len(images))
    batch = images.repeat(repeats, 1, 1, 1)[:count]  # (count, 3, H, W)
    extract_features(extractor, batch[:batch_size], batch_size=batch_size, progress=False)  # warm-up
    start = time.time()
    extract_features(extractor, batch, batch_size=batch_size, total=count, desc="speed")
    seconds = time.time() - start
    return {"images": count, "size": list(images.shape[2:]), "batch_size": batch_size, "seconds": round(seconds, 1),
            "images_per_second": round(count / seconds, 1), "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="real images (a folder, imagefolder or saved dataset)")
    parser.add_argument("--vqgan", type=Path, default=None, help="a VQ-GAN folder for the reconstruction rows")
    parser.add_argument("--speed_images", type=int, default=0, help="time features for this many images (0: no)")
    parser.add_argument("--skip_sanity", action="store_true")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_images", type=int, default=None,
                        help="a seeded random subset of this many images (default: all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    images = load_uint8(args.real)
    if args.max_images is not None and args.max_images < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:args.max_images]
        images = images[keep.sort().values]  # (max_images, 3, H, W), in the set's order
    result = {"real": args.real, "max_images": args.max_images}
    if not args.skip_sanity:
        result["fd_efficientnet_lite0"] = sanity(images, args.vqgan, args.seed)
    if args.speed_images:
        result["speed"] = speed(images, args.speed_images, args.batch_size)
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
