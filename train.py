"""Tessera training entry point: one command per stage, the same script on CPU, one GPU or many.

Train the VQ-GAN image tokenizer (defaults: the CPU preset on the built-in synthetic shapes, 32x32 -> 8x8 codes):

    python train.py vqgan --output_dir runs/vqgan
    python train.py vqgan --output_dir runs/vqgan --resume_from_checkpoint latest
    python train.py vqgan --preset cpu-64 --data path/to/imagefolder --output_dir runs/vqgan64 \\
        --train_batch_size 16 --max_train_steps 3000 --set loss.disc_start=2000
    accelerate launch --num_processes 4 train.py vqgan --preset f16-256 --data my_images --output_dir runs/f16

Export a tokenized dataset (parquet shards + a JSON sidecar; resumable; several processes):

    python train.py tokenize --vqgan runs/vqgan --data shapes:num_samples=20000 --output_dir runs/tokens
    python train.py tokenize --vqgan runs/vqgan --data path/to/imagefolder --output_dir runs/tokens --num_processes 2

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

Everything above in one command, from a recipe file (the shipped pipelines' are in recipes/; resumable; flags
and --set override the recipe; the run writes the recipe it ran to OUTPUT_DIR/recipe.json):

    python train.py quickstart --recipe recipes/tessera-shapes.json --output_dir runs/quickstart
    python train.py quickstart --recipe recipes/tessera-emoji.json --output_dir runs/emoji
    python train.py quickstart --recipe recipes/tessera-shapes.json --prior_steps 100 --set prior.training.learning_rate=5e-4

Every flag comes from a config field (help: the field's comment); nested fields are set with ``--set``, e.g.
``--set model.quantizer.kind=fsq loss.disc_start=500``. Fields a run takes from its components (the prior's
codebook_size, grid_size, context_*; the captioner's codebook_size, grid_size, code_dim) cannot be set.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import typing
from pathlib import Path

from accelerate import PartialState

from tessera.captioner.model import CAPTIONER_PRESETS
from tessera.core.folders import check_output_folder
from tessera.core.launch import end_processes
from tessera.models import existing_pipeline_folder
from tessera.pipelines.data.worlds import WORLDS
from tessera.pipelines.pipeline_folder import PipelineConfig
from tessera.pipelines.tokens import ExportConfig, export_tokenized_dataset
from tessera.pipelines.tokens.config import DTYPES
from tessera.pipelines.tokens.shards import ExportMismatchError
from tessera.pipelines.training import captioner, prior, vqgan
from tessera.pipelines.training.captions import CAPTION_VARIATIONS
from tessera.pipelines.training.config import (
    add_config_flags,
    add_training_arguments,
    config_from_flags,
    training_config_from_args,
    with_overrides,
)
from tessera.pipelines.training.finetune import FinetuneRequest, finetune_run_config
from tessera.pipelines.training.quickstart import run_quickstart
from tessera.pipelines.training.recipe import SAVE_DTYPES, Recipe, StageRecipe, load_recipe, with_assignments
from tessera.prior.config import GUIDANCE_SCHEDULES, PRIOR_KINDS, PRIOR_PRESETS, SamplingConfig
from tessera.prior.text import TextEncoderConfig
from tessera.tokenizer.config import VQGAN_PRESETS

DEFAULT_RECIPE = Path(__file__).resolve().parent / "recipes" / "tessera-shapes.json"
OLD_VQGAN_FLAG = {"vqgan": "tokenizer"}  # --tokenizer: the old spelling of --vqgan
VARIATION_CHOICES = {"caption_variation": CAPTION_VARIATIONS, "world": ("auto", "none", *WORLDS)}
SAMPLING_CHOICES = {"guidance_schedule": GUIDANCE_SCHEDULES}


def report(message: str) -> None:
    """Print on the main process only (one line per run, however many processes were launched)."""
    if PartialState().is_main_process:
        print(message)


def add_set_flag(parser: argparse.ArgumentParser, sections: str) -> None:
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help=f"override config fields: {sections}")


def add_overwrite_flag(parser: argparse.ArgumentParser, holds: str = "a pipeline") -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"write into an --output_dir that holds {holds} (or a dataset, an imagefolder, an "
                             "earlier run's checkpoints)")


def add_source_flags(parser: argparse.ArgumentParser, tokenized_into: str) -> None:
    """``--tokens`` or ``--data`` (exactly one)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokens", help="tokenized dataset folder (train.py tokenize)")
    source.add_argument("--data", help="images + captions (any data-layer source): tokenized first into "
                                       f"OUTPUT_DIR/tokens {tokenized_into} (resumable), then trained on")


def add_tokenizer_parser(subparsers) -> None:
    parser = subparsers.add_parser("vqgan", aliases=["tokenizer"], help="train the VQ-GAN image tokenizer "
                                   "(`train.py tokenizer`, the old name, still works)",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = vqgan.default_run_config()
    parser.add_argument("--preset", default=vqgan.DEFAULT_PRESET, choices=sorted(VQGAN_PRESETS))
    add_config_flags(parser, vqgan.DataOptions, defaults.data, choices=VARIATION_CHOICES)
    add_set_flag(parser, "model.*, discriminator.*, loss.*")
    add_overwrite_flag(parser, "saved model weights")
    add_training_arguments(parser, defaults.training)
    parser.set_defaults(run=run_tokenizer)


def run_tokenizer(args: argparse.Namespace) -> None:
    check_output_folder(Path(args.output_dir), what="the trained VQ-GAN", override="--overwrite",
                        overwrite=args.overwrite)
    config = vqgan.default_run_config(args.preset)
    config.data = config_from_flags(args, config.data)
    config.training = training_config_from_args(args, config.training)
    output = vqgan.train_tokenizer(with_overrides(config, args.set))
    report(f"saved the image tokenizer to {output}")


def add_tokenize_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenize", help="encode an image-caption dataset with a trained VQ-GAN into a tokenized dataset (parquet)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Writes OUTPUT_DIR/data/*.parquet (codes, caption, source_id) and OUTPUT_DIR/tokenized_dataset.json. "
                    "Re-running the same command resumes an interrupted export. See pipelines/tokens/export.py.")
    add_config_flags(parser, ExportConfig, ExportConfig(), aliases=OLD_VQGAN_FLAG, choices={"dtype": DTYPES},
                     required=("vqgan", "data", "output_dir"))
    parser.set_defaults(run=run_tokenize)


def run_tokenize(args: argparse.Namespace) -> None:
    config = config_from_flags(args, ExportConfig())
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


def add_sampling_flags(parser: argparse.ArgumentParser, default_from: str) -> None:
    """One flag per ``SamplingConfig`` field, None by default: ``default_from``'s value is kept."""
    group = parser.add_argument_group("validation sampling", f"default: {default_from}")
    add_config_flags(group, SamplingConfig, choices=SAMPLING_CHOICES)


def add_prior_parser(subparsers) -> None:
    parser = subparsers.add_parser("prior", help="train a text-conditioned prior on a tokenized dataset",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = prior.default_run_config()
    add_source_flags(parser, "with --vqgan")
    add_config_flags(parser, prior.PriorDataOptions, defaults.data, only=("vqgan",), aliases=OLD_VQGAN_FLAG,
                     required=("vqgan",))
    parser.add_argument("--prior", default=None, choices=PRIOR_KINDS, help="the prior's kind (default: the preset's)")
    parser.add_argument("--preset", default=prior.DEFAULT_PRESET, choices=sorted(PRIOR_PRESETS))
    add_config_flags(parser, TextEncoderConfig, defaults.text, only=("pretrained",), names={"pretrained": "text_encoder"})
    add_config_flags(parser, prior.PriorDataOptions, defaults.data, skip=("tokens", "vqgan"), choices=VARIATION_CHOICES)
    add_sampling_flags(parser, "SamplingConfig's")
    add_set_flag(parser, "prior.*, text.*, sampling.*, data.*")
    add_overwrite_flag(parser)
    add_training_arguments(parser, defaults.training)
    parser.set_defaults(run=run_prior)


def tokenize_for_prior(data: str, tokenizer: str, output_dir: str) -> str:
    """``train.py prior --data`` and ``train.py captioner --data``: export the images once (a finished export is reused as is)."""
    export_tokenized_dataset(ExportConfig(vqgan=tokenizer, data=data, output_dir=output_dir))
    return output_dir


def prior_run_config(args: argparse.Namespace, tokens: str) -> prior.PriorRunConfig:
    """The run config of ``train.py prior`` flags on ``tokens``, ``--set`` applied (``benchmarks.gpu_bundle``
    rebuilds a run's captions from it)."""
    config = prior.default_run_config(args.preset)
    if args.prior is not None:
        config.prior.kind = args.prior
    config.text.pretrained = args.text_encoder
    config.data = config_from_flags(args, config.data, skip=("tokens",))
    config.data.tokens = tokens
    config.sampling = config_from_flags(args, config.sampling)
    config.training = training_config_from_args(args, config.training)
    return with_overrides(config, args.set, prior.DERIVED_FIELDS)


def run_prior(args: argparse.Namespace) -> None:
    check_output_folder(Path(args.output_dir), what="the trained pipeline", override="--overwrite",
                        overwrite=args.overwrite)
    tokens = args.tokens or tokenize_for_prior(args.data, args.vqgan, f"{args.output_dir}/tokens")
    output = prior.train_prior(prior_run_config(args, tokens))
    report(f"saved the prior, text encoder and VQ-GAN to {output}")


def add_captioner_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "captioner", help="train an image captioner (codes -> captions) on a tokenized dataset",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="With --pipeline the output is that pipeline with captioner/ added; without, vqgan/, "
                    "text_tokenizer/ (a BPE trained on the captions) and captioner/. See pipelines/training/captioner.py.")
    defaults = captioner.default_run_config()
    add_source_flags(parser, "")
    add_config_flags(parser, captioner.CaptionerDataOptions, defaults.data, skip=("tokens",), aliases=OLD_VQGAN_FLAG,
                     choices=VARIATION_CHOICES)
    parser.add_argument("--preset", default=captioner.DEFAULT_PRESET, choices=sorted(CAPTIONER_PRESETS))
    add_set_flag(parser, "captioner.*, data.*")
    add_overwrite_flag(parser, "another pipeline")
    add_training_arguments(parser, defaults.training)
    parser.set_defaults(run=run_captioner)


def run_captioner(args: argparse.Namespace) -> None:
    if args.pipeline is not None:
        args.pipeline = pipeline_folder(args.pipeline)
    if args.pipeline is None or Path(args.output_dir).resolve() != Path(args.pipeline).resolve():
        check_output_folder(Path(args.output_dir), what="the captioner's folder", override="--overwrite",
                            overwrite=args.overwrite)
    tokenizer = args.vqgan or (f"{args.pipeline}/vqgan" if args.pipeline else None)
    if not tokenizer:
        raise SystemExit("train.py captioner needs --pipeline or --vqgan (the VQ-GAN that makes the codes)")
    tokens = args.tokens or tokenize_for_prior(args.data, tokenizer, f"{args.output_dir}/tokens")
    config = captioner.default_run_config(args.preset)
    config.data = config_from_flags(args, config.data, skip=("tokens",))
    config.data.tokens, config.data.vqgan = tokens, tokenizer
    config.training = training_config_from_args(args, config.training)
    output = captioner.train_captioner(with_overrides(config, args.set, captioner.DERIVED_FIELDS))
    report(f"saved the captioner to {output}; try: tessera caption IMAGE --pipeline {output}")


def add_finetune_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune", help="continue a saved pipeline's prior (and trainable text encoder) on new image-caption data",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Writes a new pipeline folder to --output_dir. The new data and the replayed original data "
                    "are tokenized with the pipeline's own VQ-GAN into OUTPUT_DIR/tokens and OUTPUT_DIR/replay_tokens "
                    "first (resumable). Give exactly one of --data and --tokens, at most one of --replay_data and "
                    "--replay_tokens.")
    add_config_flags(parser, FinetuneRequest, FinetuneRequest(pipeline="-", data="-"), skip=("data",),
                     required=("pipeline",))
    parser.add_argument("--data", help="new images + captions (any data-layer source)")
    add_sampling_flags(parser, "the pipeline's sampling settings (pipeline.json)")
    add_set_flag(parser, "data.*, sampling.*, finetune.*")
    add_training_arguments(parser, prior.FINETUNE_TRAINING_DEFAULTS)
    parser.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> None:
    kept = [item for item in args.set if item.startswith(("prior.", "text."))]
    if kept:
        raise SystemExit(f"--set {kept[0]}: fine-tuning continues the pipeline's prior and text side as they are "
                         "(their configs cannot be set)")
    args.pipeline = pipeline_folder(args.pipeline)
    request = config_from_flags(args, FinetuneRequest(pipeline=args.pipeline, data=args.data, tokens=args.tokens))
    request.sampling = config_from_flags(args, PipelineConfig.read(Path(args.pipeline)).sampling)
    config = finetune_run_config(request, training_config_from_args(args, prior.FINETUNE_TRAINING_DEFAULTS))
    config = with_overrides(config, args.set)
    output = prior.train_prior(config)
    report(f"saved the fine-tuned pipeline to {output}")


# quickstart's flags: each sets one recipe entry (a recipe field, a stage's preset, or a stage setting); type and
# help come from the config field it sets. The old quickstart flag names, kept.
QUICKSTART_FLAGS = {
    "tokenizer_preset": "vqgan.preset", "tokenizer_steps": "vqgan.training.max_train_steps",
    "prior": "prior.prior.kind", "prior_preset": "prior.preset", "prior_steps": "prior.training.max_train_steps",
    "text_encoder": "prior.text.pretrained", "caption_variation": "prior.data.caption_variation",
    "caption_variants": "prior.data.caption_variants", "caption_warmup_epochs": "prior.data.caption_warmup_epochs",
    "caption_omission": "prior.data.caption_omission", "caption_omit": "prior.data.caption_omit",
    "validation_prompts": "prior.data.validation_prompts",
    "captioner_preset": "captioner.preset", "captioner_steps": "captioner.training.max_train_steps",
}
QUICKSTART_CHOICES = {"tokenizer_preset": VQGAN_PRESETS, "prior_preset": PRIOR_PRESETS, "prior": PRIOR_KINDS,
                      "captioner_preset": CAPTIONER_PRESETS, "caption_variation": CAPTION_VARIATIONS,
                      "save_dtype": SAVE_DTYPES, "mixed_precision": ("no", "fp16", "bf16")}
QUICKSTART_OWNERS = {"vqgan": vqgan.TokenizerRunConfig, "prior": prior.PriorRunConfig,
                     "captioner": captioner.CaptionerRunConfig}


def setting_owner(path: str) -> tuple[type, str]:
    """The config class and field that a recipe entry ``stage.section.field`` (or ``stage.preset``) sets."""
    stage, *sections, name = path.split(".")
    owner = StageRecipe if name == "preset" else QUICKSTART_OWNERS[stage]
    for section in sections:
        owner = typing.get_type_hints(owner)[section]
    return owner, name


def add_quickstart_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="image tokenizer -> tokenized dataset -> prior -> captioner -> pipeline, from a recipe",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Trains a recipe (recipes/*.json; see pipelines/training/recipe.py); the flags below and --set "
                    "override it (default: the recipe's). Re-running the same command continues an interrupted run.")
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="a recipe file (the shipped pipeline's: "
                        "recipes/tessera-shapes.json, recipes/tessera-emoji.json; a run's own: OUTPUT_DIR/recipe.json)")
    parser.add_argument("--output_dir", default="runs/quickstart")
    add_config_flags(parser, Recipe, choices=QUICKSTART_CHOICES)
    for flag, path in QUICKSTART_FLAGS.items():
        owner, name = setting_owner(path)
        choices = {name: QUICKSTART_CHOICES[flag]} if flag in QUICKSTART_CHOICES else None
        add_config_flags(parser, owner, only=(name,), names={name: flag}, choices=choices)
    add_set_flag(parser, "a recipe field (seed=1), a stage's preset (prior.preset=base) or setting "
                         "(prior.training.learning_rate=5e-4)")
    parser.set_defaults(run=run_quickstart_command)


def quickstart_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe file with the given flags and ``--set`` applied."""
    recipe = load_recipe(args.recipe)
    assignments = {name: getattr(args, name) for name in ("data", "caption_column", "alternative_caption_column",
                                                           "seed", "mixed_precision", "save_dtype")
                   if getattr(args, name) is not None}
    for flag, path in QUICKSTART_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            assignments[path] = None if flag == "text_encoder" and value in ("none", "") else value
    if assignments.get("captioner.training.max_train_steps") == 0:  # --captioner_steps 0: no captioner
        del assignments["captioner.training.max_train_steps"]
        assignments["captioner"] = None
    assignments.update(parse_assignment(item) for item in args.set)
    return with_assignments(recipe, assignments)


def parse_assignment(item: str) -> tuple[str, object]:
    """``--set key=value``: the value parsed as JSON, else kept as a string."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise SystemExit(f"--set expects key=value, got {item!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def run_quickstart_command(args: argparse.Namespace) -> None:
    result = run_quickstart(quickstart_recipe(args), args.output_dir)
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
    return str(existing_pipeline_folder(name_or_path))


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
    finally:
        end_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
