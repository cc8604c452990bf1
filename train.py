"""Tessera training entry point: one command per stage, the same script on CPU, one GPU or many.

Train the VQ-GAN image tokenizer (defaults: the CPU preset on the built-in synthetic shapes, 32x32 -> 8x8 codes):

    python train.py tokenizer --output_dir runs/vqgan
    python train.py tokenizer --output_dir runs/vqgan --resume_from_checkpoint latest
    python train.py tokenizer --preset base-64 --data path/to/imagefolder --output_dir runs/vqgan64 \\
        --mixed_precision bf16 --train_batch_size 64
    accelerate launch --num_processes 4 train.py tokenizer --preset f16-256 --data my_images --output_dir runs/f16

Config fields beyond the flags are set with ``--set``, e.g. ``--set model.quantizer.kind=fsq loss.disc_start=500``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pipelines.pretrained import dataclass_from_dict
from pipelines.training import TrainingConfig, add_training_arguments, training_config_from_args
from tokenizer.config import VQGAN_PRESETS, vqgan_preset

TOKENIZER_TRAINING_DEFAULTS = TrainingConfig(
    output_dir="runs/vqgan",
    train_batch_size=32,
    learning_rate=4e-4,
    max_train_steps=2000,
    lr_warmup_steps=100,
    checkpointing_steps=500,
    validation_steps=500,
)


def apply_overrides(config: dict, assignments: list[str]) -> dict:
    """``a.b.c=value`` assignments on a nested config dict; values parse as JSON, else stay strings."""
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {assignment!r}")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise SystemExit(f"--set {key}: {part!r} is not a config section (sections: {sorted(node)})")
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"--set {key}: unknown field {leaf!r}; fields here: {sorted(node)}")
        try:
            node[leaf] = json.loads(raw)
        except json.JSONDecodeError:
            node[leaf] = raw
    return config


def add_tokenizer_parser(subparsers) -> None:
    parser = subparsers.add_parser("tokenizer", help="train the VQ-GAN image tokenizer",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", default="cpu-32", choices=sorted(VQGAN_PRESETS))
    parser.add_argument("--data", default="shapes:num_samples=50000",
                        help="imagefolder, save_to_disk folder, parquet, hub name, or shapes[:k=v,...]")
    parser.add_argument("--validation_data", default=None)
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--caption_column", default=None)
    parser.add_argument("--random_flip", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config fields: model.*, discriminator.*, loss.*")
    add_training_arguments(parser, TOKENIZER_TRAINING_DEFAULTS)
    parser.set_defaults(run=run_tokenizer)


def run_tokenizer(args: argparse.Namespace) -> None:
    from tokenizer.trainer import DataOptions, TokenizerRunConfig, train_tokenizer

    config = TokenizerRunConfig(
        model=vqgan_preset(args.preset),
        data=DataOptions(data=args.data, validation_data=args.validation_data, image_column=args.image_column,
                         caption_column=args.caption_column, random_flip=args.random_flip),
        training=training_config_from_args(args),
    )
    config = dataclass_from_dict(TokenizerRunConfig, apply_overrides(config.to_dict(), args.set))
    output = train_tokenizer(config)
    print(f"saved the image tokenizer to {output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_tokenizer_parser(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved object otherwise
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
