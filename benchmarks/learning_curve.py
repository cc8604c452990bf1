"""Learning curves: a training run's snapshots judged on the emoji figures, against the CPU time spent.

A run trained with ``--snapshot_steps N`` (every training command; ``train.py quickstart --set
prior.training.snapshot_steps=N`` for its prior) keeps its EMA weights every N steps as a loadable pipeline in
``OUTPUT_DIR/snapshots/step-<N>/``, with ``snapshot.json`` recording the step and the run's CPU seconds so far
(``pipelines.training.tracking.CpuClock``: the training process's CPU time, all its threads, setup included;
resumes add up). This benchmark judges every snapshot of one or more runs with ``benchmarks.emoji_quality``'s
``EmojiJudge`` (recognisability of training names, held-out phrasings and held-out emoji, top-1 / top-5; FD / KID
of one sample per test row against the real test split; "FD, training captions": training rows drawn from their
own captions against the same split, the samples' quality without unseen names) and writes

- ``learning_curve.json``: every point; ``learning_curve.md``: the table;
- ``learning_curve.png``: training-names and held-out-phrasings top-5, and FD, against CPU-hours, one colour a run.

Each snapshot's figures are cached beside it (``judged.json``, keyed by the judge's settings), so re-running
the command while a run goes on judges only its new snapshots. ``--every K`` judges every K-th snapshot
(the last one always, and any judged before with the same settings). The data is any ``train``/``test`` pair of captioned imagefolders whose ``text`` names
what is drawn (``python -m benchmarks.emoji build``'s layout).

    python -m benchmarks.learning_curve runs/cand-base runs/cand-wide --names base wide \\
        --data data/emoji-32 --num_prompts 100 --cache_dir runs/judge-cache --output_dir runs/curves

``--ceiling VQGAN`` adds the image tokenizer's ceiling: the same judge on that VQ-GAN's reconstructions of the
real images (one training image per judged name, one per test row for FD).

``--sampling NAME=VALUE,...`` judges every snapshot with those sampling settings instead of the ones its
``pipeline.json`` holds (``benchmarks.emoji_quality --runs``' syntax: ``guidance_scale=1,choice_temperature=1``),
cached apart (``judged-<hash>.json``), so the curve shows the sampling a pipeline would ship with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmarks.emoji_quality import (
    ALL_FAMILIES,
    FAMILIES,
    EmojiJudge,
    family_prompts,
    name_ranks,
    read_split,
    sampling_setting,
)
from tessera.core.io import atomic_write_text
from tessera.pipelines.evaluation import ImageSet, extract_features
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.tokenizer.model import VQGAN

SNAPSHOT_RECORD = "snapshot.json"
JUDGED = "judged.json"
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


@dataclass
class Snapshot:
    run: str  # the run's display name
    folder: Path
    step: int
    cpu_hours: float


def find_snapshots(run_dir: Path, name: str) -> list[Snapshot]:
    """The run's complete snapshots (those with their record), by step."""
    folder = run_dir / "snapshots"
    if not folder.is_dir():
        raise FileNotFoundError(f"{run_dir}: no snapshots/ folder; train with --snapshot_steps N to keep snapshots")
    found = []
    for record in folder.glob(f"step-*/{SNAPSHOT_RECORD}"):
        values = json.loads(record.read_text(encoding="utf-8"))
        found.append(Snapshot(name, record.parent, values["step"], values["cpu_seconds"] / 3600))
    if not found:
        raise FileNotFoundError(f"{folder}: no complete snapshot yet (each has a {SNAPSHOT_RECORD})")
    return sorted(found, key=lambda snapshot: snapshot.step)


def every_kth(snapshots: list[Snapshot], k: int) -> list[Snapshot]:
    """Every ``k``-th snapshot, counted from the first, and always the last."""
    chosen = snapshots[::k]
    return chosen if chosen[-1] is snapshots[-1] else [*chosen, snapshots[-1]]


def summary(judged: dict) -> dict[str, float]:
    """The curve's figures of one ``EmojiJudge.judge`` result."""
    values = {f"{family}/{key}": figures[key] for family, figures in judged["families"].items()
              for key in ("top1", "top5")}
    values["fd"] = judged["fd_samples_vs_test"]["fid"]
    values["kid"] = judged["fd_samples_vs_test"]["kid_mean"]
    if "fd_seen_samples_vs_test" in judged:  # figures cached before it was measured lack it
        values["fd_seen"] = judged["fd_seen_samples_vs_test"]["fid"]
    return values


def cache_file(snapshot: Snapshot, settings: dict) -> Path:
    """Where the snapshot's figures under ``settings`` are kept: ``judged.json`` with its own sampling, one file
    per other sampling setting."""
    if not settings.get("sampling"):
        return snapshot.folder / JUDGED
    key = hashlib.sha256(json.dumps(settings["sampling"], sort_keys=True).encode()).hexdigest()[:12]
    return snapshot.folder / f"judged-{key}.json"


def cached_figures(snapshot: Snapshot, settings: dict) -> dict[str, float] | None:
    """The snapshot's figures when it was judged before with the same ``settings``."""
    cache = cache_file(snapshot, settings)
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("settings") == settings:
            return cached["figures"]
    return None


def judge_snapshot(judge: EmojiJudge, snapshot: Snapshot, settings: dict, batch_size: int) -> dict[str, float]:
    """The snapshot's figures, from its cache when it was judged with the same ``settings``."""
    cached = cached_figures(snapshot, settings)
    if cached is not None:
        return cached
    cache = cache_file(snapshot, settings)
    pipe = TextToImagePipeline.from_pretrained(snapshot.folder)
    judged = judge.judge(pipe, families=tuple(settings["families"]), num_prompts=settings["num_prompts"],
                         batch_size=batch_size, options=settings.get("sampling"))
    figures = {**summary(judged), "floor_fd": judged["fd_train_vs_test"]["fid"]}
    atomic_write_text(cache, json.dumps({"settings": settings, "figures": figures}, indent=2) + "\n")
    return figures


@torch.no_grad()
def reconstruct(vqgan: VQGAN, paths: list[str], batch_size: int = 64) -> list[Image.Image]:
    """The VQ-GAN's reconstructions (encode -> codes -> decode) of image files, as PIL images."""
    size = vqgan.config.resolution
    images = []
    for start in range(0, len(paths), batch_size):
        arrays = [np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC))
                  for path in paths[start:start + batch_size]]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, H, W), [-1, 1]
        decoded = vqgan.decode(vqgan.encode(batch))  # (B, 3, H, W) in [-1, 1]
        pixels = ((decoded + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
        images.extend(Image.fromarray(array) for array in pixels)
    return images


def tokenizer_ceiling(judge: EmojiJudge, vqgan_folder: str, settings: dict) -> dict[str, float]:
    """The judge on reconstructions instead of samples: for each judged name one of its real images (training
    names; for held-out phrasings the same names; held-out emoji from the test split), and the test rows for FD."""
    vqgan = VQGAN.from_pretrained(vqgan_folder).float().eval()
    by_name: dict[str, list[str]] = {}
    for row in judge.train + judge.test:
        by_name.setdefault(row["text"], []).append(row["path"])
    figures: dict[str, float] = {}
    for family in settings["families"]:
        pairs = family_prompts(family, judge.train, judge.test, settings["num_prompts"], judge.seed)
        rng = random.Random(f"{judge.seed}:ceiling:{family}")
        names = [name for _, name in pairs]
        images = ImageSet("reconstructions", reconstruct(vqgan, [rng.choice(by_name[name]) for name in names]),
                          names)
        features = extract_features(judge.extractor, images, total=len(names), desc=f"ceiling {family}").pool
        ranks = name_ranks(features, judge.gallery, judge.gallery_names, names)
        for k in (1, 5):
            figures[f"{family}/top{k}"] = sum(rank < k for rank in ranks) / len(ranks)
    test_images = ImageSet("reconstructions", reconstruct(vqgan, [row["path"] for row in judge.test]),
                           [row["file_name"] for row in judge.test])
    fd = judge.fd(test_images)
    figures.update(fd=fd["fid"], kid=fd["kid_mean"], floor_fd=judge.floor["fid"])
    return figures


def table(points: list[dict], families: list[str]) -> str:
    header = (["run", "step", "CPU-h"] + [f"{family} top-1 / top-5" for family in families]
              + ["FD vs test", "KID", "FD, training captions"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in points:
        cells = [point["run"], str(point["step"]), f"{point['cpu_hours']:.2f}"]
        cells += [f"{point[f'{family}/top1']:.1%} / {point[f'{family}/top5']:.1%}" for family in families]
        cells += [f"{point['fd']:.1f}", f"{point['kid']:.4f}", f"{point['fd_seen']:.1f}" if "fd_seen" in point else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str,
               series: list[tuple[str, str, list[tuple[float, float]], bool]], y_range: tuple[float, float],
               x_max: float, y_format: str, floor: float | None = None) -> None:
    """One line chart in ``box`` (left, top, right, bottom): ``series`` of (label, colour, points, dashed)."""
    left, top, right, bottom = box
    x0, y0, x1, y1 = left + 50, top + 24, right - 10, bottom - 30  # the plotting area
    draw.rectangle((x0, y0, x1, y1), outline="black")
    draw.text((x0, top + 4), title, fill="black")
    low, high = y_range

    def at(x: float, y: float) -> tuple[float, float]:
        return (x0 + (x1 - x0) * x / x_max, y1 - (y1 - y0) * (y - low) / max(high - low, 1e-9))

    for tick in range(5):
        value = low + (high - low) * tick / 4
        _, y = at(0, value)
        draw.line((x0 - 4, y, x0, y), fill="black")
        draw.text((left + 2, y - 6), format(value, y_format), fill="black")
        x, _ = at(x_max * tick / 4, low)
        draw.line((x, y1, x, y1 + 4), fill="black")
        draw.text((x - 10, y1 + 6), f"{x_max * tick / 4:.2f}", fill="black")
    draw.text(((x0 + x1) // 2 - 30, bottom - 14), "CPU-hours", fill="black")
    if floor is not None:
        _, y = at(0, floor)
        for x in range(int(x0), int(x1), 8):
            draw.line((x, y, x + 3, y), fill="gray")
        draw.text((x1 - 110, y - 12), f"real floor {floor:{y_format}}", fill="gray")
    for _label, colour, points, dashed in series:
        corners = [at(x, y) for x, y in points]
        for start, end in zip(corners, corners[1:]):
            if dashed:
                steps = max(1, int(abs(end[0] - start[0]) + abs(end[1] - start[1])) // 6)
                for index in range(0, steps, 2):
                    a, b = index / steps, min(1.0, (index + 1) / steps)
                    draw.line((start[0] + (end[0] - start[0]) * a, start[1] + (end[1] - start[1]) * a,
                               start[0] + (end[0] - start[0]) * b, start[1] + (end[1] - start[1]) * b),
                              fill=colour, width=2)
            else:
                draw.line((*start, *end), fill=colour, width=2)
        for x, y in corners:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)


def plot(points: list[dict], runs: list[str], path: Path) -> None:
    """Top-5 of training names (solid) and held-out phrasings (dashed), and FD, against CPU-hours."""
    image = Image.new("RGB", (980, 380), "white")
    draw = ImageDraw.Draw(image)
    x_max = max(point["cpu_hours"] for point in points) * 1.05 or 1.0
    recognised, distance = [], []
    for index, run in enumerate(runs):
        colour = COLOURS[index % len(COLOURS)]
        mine = [point for point in points if point["run"] == run]
        for family, dashed in (("training_names", False), ("held_out_phrasings", True)):
            if f"{family}/top5" in mine[0]:
                recognised.append((run, colour, [(p["cpu_hours"], p[f"{family}/top5"]) for p in mine], dashed))
        distance.append((run, colour, [(p["cpu_hours"], p["fd"]) for p in mine], False))
    top = max([y for _, _, line, _ in recognised for _, y in line] + [0.05])
    fds = [y for _, _, line, _ in distance for _, y in line] + [points[0]["floor_fd"]]
    plot_panel(draw, (0, 0, 480, 340), "top-5: training names (solid), held-out phrasings (dashed)", recognised,
               (0.0, min(1.0, top * 1.1)), x_max, ".0%")
    plot_panel(draw, (490, 0, 970, 340), "FD vs the test split (lower is better)", distance,
               (min(fds) * 0.9, max(fds) * 1.05), x_max, ".0f", floor=points[0]["floor_fd"])
    for index, run in enumerate(runs):
        draw.rectangle((60 + 150 * index, 352, 74 + 150 * index, 364), fill=COLOURS[index % len(COLOURS)])
        draw.text((80 + 150 * index, 352), run, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def learning_curve(run_dirs: list[Path], names: list[str], data: Path, *, families: tuple[str, ...] = FAMILIES,
                   num_prompts: int = 100, seed: int = 0, every: int = 1, batch_size: int = 64,
                   cache_dir: Path | None = None, ceiling: str | None = None, sampling: dict | None = None) -> dict:
    """Every chosen snapshot of each run judged (cached beside it); the points by run and step. ``sampling``: the
    pipeline call's settings for every snapshot (None: each snapshot's own)."""
    judge = EmojiJudge(data, seed=seed, cache_dir=cache_dir)
    test_files = [row["file_name"] for row in read_split(data / "test")]
    settings = {"data": str(data.resolve()), "test_files": len(test_files), "families": list(families),
                "num_prompts": num_prompts, "seed": seed, **({"sampling": sampling} if sampling else {})}
    points = []
    for run_dir, name in zip(run_dirs, names, strict=True):
        snapshots = find_snapshots(run_dir, name)
        chosen = {snapshot.step for snapshot in every_kth(snapshots, every)}
        for snapshot in snapshots:  # every K-th, and those already judged with these settings (they cost nothing)
            if snapshot.step not in chosen and cached_figures(snapshot, settings) is None:
                continue
            figures = judge_snapshot(judge, snapshot, settings, batch_size)
            points.append({"run": name, "step": snapshot.step, "cpu_hours": snapshot.cpu_hours, **figures})
            print(f"{name} step {snapshot.step} ({snapshot.cpu_hours:.2f} CPU-h): " + ", ".join(
                f"{key} {value:.3f}" for key, value in figures.items()), flush=True)
    result = {"settings": settings, "points": points}
    if ceiling is not None:
        result["ceiling"] = {"vqgan": ceiling, **tokenizer_ceiling(judge, ceiling, settings)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders with snapshots/")
    parser.add_argument("--names", nargs="+", default=None, help="one display name per run (default: folder names)")
    parser.add_argument("--data", type=Path, required=True, help="train/ and test/ imagefolders (benchmarks.emoji)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=ALL_FAMILIES)
    parser.add_argument("--num_prompts", type=int, default=100, help="names judged per family (a fixed subset)")
    parser.add_argument("--every", type=int, default=1, help="judge every K-th snapshot (and the last)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--cache_dir", type=Path, default=None, help="the judge's gallery features, kept for reuse")
    parser.add_argument("--ceiling", default=None, metavar="VQGAN", help="also judge this VQ-GAN's reconstructions")
    parser.add_argument("--sampling", type=sampling_setting, default={}, metavar="NAME=VALUE,...",
                        help="sampling settings for every snapshot (default: each snapshot's pipeline.json)")
    parser.add_argument("--output_dir", type=Path, required=True)
    args = parser.parse_args(argv)
    names = args.names or [run.name for run in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"--names gives {len(names)} names for {len(args.runs)} runs")
    if args.every < 1:
        parser.error("--every must be >= 1")
    try:
        result = learning_curve(args.runs, names, args.data, families=tuple(args.families),
                                num_prompts=args.num_prompts, seed=args.seed, every=args.every,
                                batch_size=args.batch_size, cache_dir=args.cache_dir, ceiling=args.ceiling,
                                sampling=args.sampling)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output_dir / "learning_curve.json", json.dumps(result, indent=2) + "\n")
    text = table(result["points"], args.families)
    if "ceiling" in result:
        text += "\n" + table([{"run": "tokenizer ceiling", "step": 0, "cpu_hours": 0.0, **result["ceiling"]}],
                             args.families)
    atomic_write_text(args.output_dir / "learning_curve.md", text)
    plot(result["points"], names, args.output_dir / "learning_curve.png")
    print(text)
    print(f"real floor FD {result['points'][0]['floor_fd']:.1f}; wrote {args.output_dir}/learning_curve.(json|md|png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
