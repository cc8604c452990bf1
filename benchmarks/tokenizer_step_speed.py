"""Time of one VQ-GAN training step (``train.py vqgan``), before and after the adversarial phase starts, from
the in-memory shapes and from an imagefolder on disk; optionally split into its parts and compared with another
checkout of the project in the same run.

Each measurement builds the stage as ``train.py vqgan`` does (the preset, the command's training defaults,
batch ``--batch_size``, the DataLoader worker), runs ``--warmup`` steps, then times ``--steps`` steps of each
phase: "pre-GAN" (steps below ``loss.disc_start``: generator only) and "post-GAN" (discriminator, feature
matching, adaptive weight, discriminator step). A step is the loop's whole step: waiting for the batch, forward,
backward, clipping, optimizer, schedulers, EMA. The imagefolder is ``--imagefolder`` or, by default, shapes drawn
at 4x the training resolution into a temporary folder (PNG decode + resize on every read).

    python -m benchmarks.tokenizer_step_speed                       # this checkout, cpu-32, batch 32
    python -m benchmarks.tokenizer_step_speed --profile             # ... and where the time of a step goes
    python -m benchmarks.tokenizer_step_speed --presets cpu-32 base-64 --batch_size 16
    git worktree add /tmp/base <commit>                             # then old and new interleaved, one run:
    python -m benchmarks.tokenizer_step_speed --baseline /tmp/base --rounds 3

With ``--baseline`` each round runs one process per checkout (baseline, then this one; A B A B ...), each
importing the project from its own folder (``PYTHONPATH``), and the best step time of every (preset, source,
phase) over the rounds is compared: ratio = baseline / this checkout. Figures on a shared machine are only
comparable within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("pre-GAN", "post-GAN")


# ---------------------------------------------------------------------------------------------
# Where the time of a step goes (--profile)


class PartTimer:
    """Wall time per named part of a step, from wrappers around methods and forward hooks (CPU: no sync)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def wrap(self, owner, attribute: str, name: str) -> None:
        """Time every call of ``owner.attribute`` as ``name`` (parts nested in it are subtracted when reported)."""
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self.part(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)  # on the instance (or module): this process only measures

    def reset(self) -> None:
        self.seconds.clear()


def instrument(loop, timer: PartTimer) -> None:
    """Wrap the parts of a VQ-GAN step: data wait, encoder, quantizer (its state updates separately),
    decoder, discriminator forwards, losses, adaptive weight, backward, clipping, optimizers, EMA."""
    import tessera.pipelines.training.vqgan as stage_module

    stage = loop.stage
    model = loop.accelerator.unwrap_model(stage.model)
    discriminator = loop.accelerator.unwrap_model(stage.discriminator)
    timer.wrap(model.encoder, "forward", "encoder forward")
    timer.wrap(model.quantizer, "forward", "quantizer forward (lookup, losses, statistics)")
    timer.wrap(model.quantizer, "_update_state", "quantizer state (usage EMA, re-seeding)")
    timer.wrap(model.decoder, "forward", "decoder forward")
    timer.wrap(discriminator, "forward", "discriminator forwards")
    for name in ("reconstruction_loss", "feature_matching_loss", "hinge_generator_loss", "hinge_discriminator_loss"):
        if hasattr(stage_module, name):
            timer.wrap(stage_module, name, "losses")
    for name in ("adaptive_generator_weight", "adaptive_adversarial_loss"):  # before / after this benchmark's issue
        if hasattr(stage_module, name):
            timer.wrap(stage_module, name, "adaptive GAN weight (autograd.grad)")
    timer.wrap(loop.accelerator, "backward", "backward")
    timer.wrap(loop.accelerator, "clip_grad_norm_", "gradient clipping")
    timer.wrap(stage.optimizer_g, "step", "optimizer steps")
    timer.wrap(stage.optimizer_d, "step", "optimizer steps")
    timer.wrap(stage.ema, "update", "EMA update")


def exclusive(seconds: dict[str, float]) -> dict[str, float]:
    """Nested parts out of their parents: state updates run inside the quantizer's forward."""
    out = dict(seconds)
    nested = "quantizer state (usage EMA, re-seeding)"
    parent = "quantizer forward (lookup, losses, statistics)"
    if nested in out and parent in out:
        out[parent] -= out[nested]
    return out


# ---------------------------------------------------------------------------------------------
# One process: measure this checkout (whichever is on PYTHONPATH)


def shapes_imagefolder(directory: Path, num_images: int, resolution: int) -> str:
    from tessera.pipelines.shapes.dataset import write_imagefolder

    if not (directory / "metadata.jsonl").is_file():
        write_imagefolder(str(directory), num_images, resolution=resolution)
    return str(directory)


def build_loop(preset: str, source: str, batch_size: int, output_dir: Path, mixed_precision: str = "no"):
    from tessera.pipelines.training.loop import TrainingLoop
    from tessera.pipelines.training.vqgan import (
        TOKENIZER_TRAINING_DEFAULTS,
        DataOptions,
        TokenizerRunConfig,
        VQGANStage,
    )
    from tessera.tokenizer.config import vqgan_preset

    training = dataclasses.replace(TOKENIZER_TRAINING_DEFAULTS, output_dir=str(output_dir), train_batch_size=batch_size,
                                   max_train_steps=10**6, num_validation_images=16, report_to="none",
                                   mixed_precision=mixed_precision)
    config = TokenizerRunConfig(model=vqgan_preset(preset), data=DataOptions(data=source), training=training)
    return TrainingLoop(VQGANStage(config), training, config)


def time_phase(loop, batches: Iterator[dict], first_step: int, warmup: int, steps: int,
               timer: PartTimer | None) -> tuple[list[float], list[float], dict[str, float]]:
    """Wall seconds and CPU seconds (this process: the model's work, not the DataLoader worker's) of each step,
    and the mean wall seconds of each part."""
    for step in range(first_step, first_step + warmup):
        loop.step(batches, step)
    times, cpu_times = [], []
    if timer is not None:
        timer.reset()
    for step in range(first_step + warmup, first_step + warmup + steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loop.step(batches, step)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    parts = {name: value / steps for name, value in exclusive(timer.seconds).items()} if timer is not None else {}
    return times, cpu_times, parts


def measure_stage(args: argparse.Namespace, preset: str, source_name: str, source: str, precision: str,
                  scratch: Path) -> list[dict]:
    import torch

    loop = build_loop(preset, source, args.batch_size, scratch / f"{preset}-{source_name}-{precision}", precision)
    timer = None
    if args.profile:
        timer = PartTimer()
        instrument(loop, timer)
    for model in loop.stage.models:
        model.train()
    disc_start = loop.stage.config.loss.disc_start
    batches = loop.micro_batches(0)
    results = []
    name = preset if precision == "no" else f"{preset} {precision}"
    for phase, first_step in zip(PHASES, (0, disc_start), strict=True):
        times, cpu_times, parts = time_phase(loop, batches, first_step, args.warmup, args.steps, timer)
        results.append({"preset": name, "source": source_name, "phase": phase, "batch_size": args.batch_size,
                        "threads": torch.get_num_threads(), "times": times, "cpu_times": cpu_times, "parts": parts})
        print(f"  {name} {source_name:11s} {phase:8s} best {min(times):.3f} s  "
              f"median {statistics.median(times):.3f} s  best CPU {min(cpu_times):.3f} s", file=sys.stderr, flush=True)
    return results


def measure(args: argparse.Namespace) -> list[dict]:
    import torch

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for preset in args.presets:
            from tessera.tokenizer.config import vqgan_preset

            resolution = vqgan_preset(preset).resolution
            folder = args.imagefolder or shapes_imagefolder(
                Path(args.cache) / f"shapes-{4 * resolution}px-{args.num_images}", args.num_images, 4 * resolution)
            sources = {"shapes": f"shapes:num_samples={args.num_images}", "imagefolder": folder}
            for source_name, source in sources.items():
                results += measure_stage(args, preset, source_name, source, args.mixed_precision[0], scratch)
    return results


# ---------------------------------------------------------------------------------------------
# The driver: rounds of one process per checkout, then tables


def run_worker(tree: Path, args: argparse.Namespace, precision: str) -> list[dict]:
    """One process measuring ``tree`` at one precision (accelerate fixes the precision once per process)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--presets", *args.presets,
               "--batch_size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--num_images", str(args.num_images), "--cache", args.cache, "--threads", str(args.threads),
               "--mixed_precision", precision]
    if args.imagefolder:
        command += ["--imagefolder", args.imagefolder]
    if args.profile:
        command.append("--profile")
    environment = {**os.environ, "PYTHONPATH": str(tree)}  # import the project from that checkout
    print(f"# {tree}", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=tree, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the measurement in {tree} failed:\n{done.stderr[-3000:]}")
    sys.stderr.write("\n".join(line for line in done.stderr.splitlines() if line.startswith("  ")) + "\n")
    return json.loads(done.stdout)


def best_times(rounds: list[list[dict]], kind: str = "times") -> dict[tuple, float]:
    """The best (smallest) step time of each (preset, source, phase) over all rounds; ``kind``: "times" (wall)
    or "cpu_times"."""
    best: dict[tuple, float] = {}
    for results in rounds:
        for result in results:
            key = (result["preset"], result["source"], result["phase"])
            best[key] = min(best.get(key, float("inf")), *result[kind])
    return best


def parts_table(rounds: list[list[dict]], title: str) -> str:
    """Per-part seconds of each (preset, source, phase), from the round where its steps were fastest."""
    fastest: dict[tuple, dict] = {}
    for results in rounds:
        for r in results:
            key = (r["preset"], r["source"], r["phase"])
            if key not in fastest or statistics.mean(r["times"]) < statistics.mean(fastest[key]["times"]):
                fastest[key] = r
    rows = [r for r in fastest.values() if r["parts"]]
    if not rows:
        return ""
    columns = [(r["preset"], r["source"], r["phase"]) for r in rows]
    names = list(dict.fromkeys(name for r in rows for name in r["parts"]))
    lines = [f"### {title}: wall seconds per step (mean of the timed steps of the fastest round)", "",
             "| part | " + " | ".join(" ".join(c) for c in columns) + " |", "|---|" + "---:|" * len(columns)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{r['parts'].get(name, 0.0):.3f}" for r in rows) + " |")
    other = [statistics.mean(r["times"]) - sum(r["parts"].values()) for r in rows]
    lines.append("| rest (data wait, loop, logs, schedulers) | " + " | ".join(f"{v:.3f}" for v in other) + " |")
    lines.append("| **step** | " + " | ".join(f"**{statistics.mean(r['times']):.3f}**" for r in rows) + " |")
    return "\n".join(lines)


def report(current: list[list[dict]], baseline: list[list[dict]] | None, args: argparse.Namespace) -> str:
    threads = current[0][0]["threads"]
    lines = [f"## VQ-GAN training step, batch {args.batch_size}, {threads} thread(s), best of {args.rounds} rounds x "
             f"{args.steps} steps", ""]
    for kind, title in (("times", "wall seconds per step"), ("cpu_times", "CPU seconds per step (main process)")):
        new = best_times(current, kind)
        old = best_times(baseline, kind) if baseline else {}
        header = (f"| {title} | source | phase | " + ("baseline | " if old else "") + "this checkout | "
                  + ("baseline / this | " if old else "") + "imagefolder / shapes |")
        lines += [header, "|---|---|---|" + "---:|" * (header.count("|") - 4)]
        for (preset, source, phase), seconds in new.items():
            cells = [preset, source, phase]
            if old:
                cells.append(f"{old[(preset, source, phase)]:.3f}")
            cells.append(f"{seconds:.3f}")
            if old:
                cells.append(f"{old[(preset, source, phase)] / seconds:.2f}x")
            shapes = new.get((preset, "shapes", phase))
            cells.append(f"{seconds / shapes:.2f}x" if shapes else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    if args.profile:
        text += "\n" + parts_table(current, "this checkout")
        if baseline:
            text += "\n\n" + parts_table(baseline, "baseline")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["cpu-32"])
    parser.add_argument("--batch_size", type=int, default=32, help="the command's default batch")
    parser.add_argument("--mixed_precision", nargs="+", default=["no"], choices=["no", "bf16", "fp16"],
                        help="each is measured, in its own processes (as train.py's --mixed_precision)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per phase and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num_images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); on a busy "
                        "machine 1 thread gives steadier ratios")
    parser.add_argument("--imagefolder", help="an imagefolder to read instead of shapes drawn at 4x resolution")
    parser.add_argument("--baseline", type=Path, help="another checkout of the project, timed in the same rounds")
    parser.add_argument("--profile", action="store_true", help="also split each step into its parts")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "tessera-step-speed"),
                        help="where the drawn imagefolder is kept between processes")
    parser.add_argument("--json", type=Path, help="write every measured step time here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        json.dump(measure(args), sys.stdout)
        return 0
    current, baseline = [], [] if args.baseline else None
    for _ in range(args.rounds):
        for precision in args.mixed_precision:
            if args.baseline:
                baseline.append(run_worker(args.baseline.resolve(), args, precision))
            current.append(run_worker(ROOT, args, precision))
    print(report(current, baseline, args))
    if args.json:
        args.json.write_text(json.dumps({"current": current, "baseline": baseline}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
