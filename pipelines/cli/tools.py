"""The ``tessera`` subcommands that work on files rather than draw: ``convert`` and ``export`` (other projects'
VQ checkpoints in, ours out to diffusers) and ``evaluate-images`` (FD / KID / IS); their parsers and handlers,
which ``pipelines.cli`` wires into the one command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CONVERT_SOURCES = ("taming", "llamagen", "diffusers")  # tokenizer.convert.SOURCES (imported late: start-up time)
PIXEL_RANGES = {"-1,1": (-1, 1), "0,1": (0, 1)}


def add_convert_parsers(commands) -> None:
    convert = commands.add_parser(
        "convert", help="import a taming-transformers, LlamaGen or diffusers VQ checkpoint as a Tessera VQ-GAN folder",
        description="Converts strictly: every source weight is used or dropped for a stated reason and every "
                    "Tessera weight is filled, or nothing is written. Checkpoint pickles are read with "
                    "torch.load(weights_only=True) only.")
    convert.add_argument("--from", dest="source", required=True, choices=CONVERT_SOURCES)
    convert.add_argument("checkpoint", type=Path, metavar="SOURCE",
                         help=".ckpt / .pt / .pth / .safetensors file, or a diffusers VQModel (or pipeline) folder")
    convert.add_argument("-o", "--output", type=Path, required=True, help="the Tessera VQ-GAN folder to write")
    convert.add_argument("--resolution", type=int, default=None,
                         help="image side recorded in the config (default: diffusers' sample_size, else 256)")
    convert.add_argument("--pixel_range", choices=sorted(PIXEL_RANGES), default=None, metavar="{-1,1|0,1}",
                         help="pixels the network works in; write --pixel_range=-1,1 (default: 0,1 for an aMUSEd "
                              "pipeline, else -1,1)")
    export = commands.add_parser("export", help="write a Tessera VQ-GAN folder as a diffusers VQModel folder",
                                 description="Needs ch_mult[0] == 1 and a vq quantizer.")
    export.add_argument("--to", dest="target", required=True, choices=["diffusers"])
    export.add_argument("vqgan", type=Path, metavar="VQGAN_DIR", help="a Tessera VQ-GAN folder")
    export.add_argument("-o", "--output", type=Path, required=True)
    for command in (convert, export):
        command.add_argument("--overwrite", action="store_true",
                             help="write into a folder that already holds a model, a pipeline or data")


def check_model_output(output: Path, overwrite: bool) -> None:
    """Before converting: refuse an -o folder that holds a model (config.json, model.safetensors), a pipeline or
    data, unless --overwrite."""
    from tessera.core.folders import check_output_folder, refuse_to_overwrite

    check_output_folder(output, what="the converted model", override="--overwrite", overwrite=overwrite)
    taken = [name for name in ("config.json", "model.safetensors") if (output / name).is_file()]
    if taken and not overwrite:
        refuse_to_overwrite(output, f"a model ({', '.join(taken)})", what="the converted model", override="--overwrite")


def convert(args: argparse.Namespace) -> int:
    from tessera.tokenizer.convert import convert_checkpoint

    pixel_range = None if args.pixel_range is None else PIXEL_RANGES[args.pixel_range]
    check_model_output(args.output, args.overwrite)
    report = convert_checkpoint(args.source, args.checkpoint, args.output, resolution=args.resolution,
                                pixel_range=pixel_range)
    print("\n".join(report.lines()))
    return 0


def export(args: argparse.Namespace) -> int:
    from tessera.tokenizer.convert import export_to_diffusers

    check_model_output(args.output, args.overwrite)
    print("\n".join(export_to_diffusers(args.vqgan, args.output).lines()))
    return 0


def add_evaluate_images_parser(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate-images", help="FD (FID), KID and Inception Score of generated images against reference images",
        description="Prints one JSON line. --features inception with --inception_weights gives the standard FID/KID/IS "
                    "(torch-fidelity's network and preprocessing); efficientnet-lite0 (default, offline) gives FD, "
                    "KID and an IS-like score in EfficientNet-Lite0 features: not comparable with papers' FID.")
    evaluate.add_argument("generated", metavar="GENERATED_DIR",
                          help="a folder of images, an imagefolder or a saved datasets folder")
    evaluate.add_argument("--reference", default=None, metavar="REFERENCE_DIR",
                          help="reference images (may be left out when --reference_stats exists)")
    evaluate.add_argument("--reference_stats", type=Path, default=None,
                          help="cached reference statistics (.safetensors): read if it exists, else written")
    evaluate.add_argument("--features", choices=("efficientnet-lite0", "inception"), default="efficientnet-lite0")
    evaluate.add_argument("--inception_weights", type=Path, default=None,
                          help="pt_inception-2015-12-05-6726825d.pth (needed for --features inception)")
    evaluate.add_argument("--batch_size", type=int, default=64)
    evaluate.add_argument("--kid_subset_size", type=int, default=1000, help="capped at the smaller set's size")
    evaluate.add_argument("--kid_subsets", type=int, default=100)
    evaluate.add_argument("--is_splits", type=int, default=10)
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the report here")
    evaluate.add_argument("--no_progress", action="store_true")


def evaluate_image_sets(args: argparse.Namespace) -> int:
    from tessera.core.io import atomic_write_text
    from tessera.pipelines.evaluation import EvaluationConfig, evaluate_images

    weights = args.inception_weights if args.features == "inception" else None
    if args.inception_weights is not None and args.features != "inception":
        raise ValueError("--inception_weights is for --features inception")
    config = EvaluationConfig(features=args.features, weights=None if weights is None else str(weights),
                              batch_size=args.batch_size, kid_subset_size=args.kid_subset_size,
                              kid_subsets=args.kid_subsets, is_splits=args.is_splits, device=args.device,
                              progress=not args.no_progress)
    report = evaluate_images(args.generated, args.reference, config=config, reference_stats=args.reference_stats)
    line = json.dumps(report.to_dict())
    if args.json is not None:
        atomic_write_text(args.json, line + "\n")
    print(line)
    return 0
