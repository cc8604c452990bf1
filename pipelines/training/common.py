"""Training machinery shared by the image-tokenizer and prior trainers.

- ``TrainingConfig`` + ``add_training_arguments``: the diffusers-style flags every trainer takes.
- ``StepBatchSampler``: the rows of global step ``s`` depend only on ``(seed, s)``, so a resumed run sees
  exactly the batches an uninterrupted run would have seen, and each process takes its own slice.
- ``CheckpointManager``: ``accelerate`` state written to a temporary folder and renamed into place.
- ``EMA``: an exponential moving average of a model's weights that checkpoints with the rest.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipelines.core.config import JSONConfig
from pipelines.core.io import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class TrainingConfig(JSONConfig):
    output_dir: str = "outputs/run"
    seed: int = 0
    train_batch_size: int = 32
    learning_rate: float = 2e-4
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    adam_weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lr_warmup_steps: int = 100
    max_train_steps: int = 2000
    mixed_precision: str = "no"
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 2
    resume_from_checkpoint: str | None = None
    validation_steps: int = 500
    num_validation_images: int = 256
    ema_decay: float = 0.99
    report_to: str = "auto"  # "auto" = tensorboard when installed, else metrics.jsonl only
    dataloader_num_workers: int = 1


def add_training_arguments(parser: argparse.ArgumentParser, defaults: TrainingConfig) -> None:
    """One flag per ``TrainingConfig`` field, named as in diffusers' example scripts."""
    group = parser.add_argument_group("training")
    for field in dataclasses.fields(TrainingConfig):
        default = getattr(defaults, field.name)
        if field.name == "mixed_precision":
            group.add_argument("--mixed_precision", default=default, choices=["no", "fp16", "bf16"])
        elif field.name == "resume_from_checkpoint":
            group.add_argument("--resume_from_checkpoint", default=default,
                               help='a checkpoint folder, or "latest" to continue the newest one in --output_dir')
        else:
            kind = type(default) if default is not None else str
            group.add_argument(f"--{field.name}", type=kind, default=default)


def training_config_from_args(args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TrainingConfig)})


class StepBatchSampler:
    """Yields, for each global step from ``start_step`` to ``end_step``, this process's slice of the batch.

    Epoch ``e`` visits the rows in ``randperm(num_rows)`` seeded by ``(seed, e)``; a global batch is
    ``batch_size * num_processes`` consecutive rows of that endless sequence.
    """

    def __init__(self, num_rows: int, batch_size: int, *, seed: int, start_step: int, end_step: int,
                 process_index: int = 0, num_processes: int = 1):
        if num_rows <= 0:
            raise ValueError("cannot sample batches from an empty dataset")
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self.start_step, self.end_step = start_step, end_step
        self.process_index, self.num_processes = process_index, num_processes

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_rows, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        global_batch = self.batch_size * self.num_processes
        cached_epoch, order = -1, None
        for step in range(self.start_step, self.end_step):
            first = step * global_batch + self.process_index * self.batch_size
            rows = []
            for position in range(first, first + self.batch_size):
                epoch = position // self.num_rows
                if epoch != cached_epoch:
                    cached_epoch, order = epoch, self._epoch_order(epoch)
                rows.append(int(order[position % self.num_rows]))
            yield rows


class MixedBatchSampler:
    """Batches of ``StepBatchSampler`` rows with ``round(fraction * batch_size)`` of each replaced by rows of a
    second dataset stored after the first (indices offset by the first one's length): fine-tuning on new data
    while replaying a share of the original. Both parts are step-indexed, so resuming stays exact."""

    def __init__(self, base: StepBatchSampler, num_replay_rows: int, fraction: float):
        num_replay = round(base.batch_size * fraction)
        if not 0 <= num_replay < base.batch_size:
            raise ValueError(f"a replay fraction of {fraction} leaves no new rows in a batch of {base.batch_size}")
        self.seed = base.seed
        self.offset = base.num_rows
        self.new = StepBatchSampler(base.num_rows, base.batch_size - num_replay, seed=base.seed,
                                    start_step=base.start_step, end_step=base.end_step,
                                    process_index=base.process_index, num_processes=base.num_processes)
        self.replay = StepBatchSampler(num_replay_rows, num_replay, seed=base.seed + 1, start_step=base.start_step,
                                       end_step=base.end_step, process_index=base.process_index,
                                       num_processes=base.num_processes) if num_replay else None

    def __len__(self) -> int:
        return len(self.new)

    def __iter__(self) -> Iterator[list[int]]:
        replay = iter(self.replay) if self.replay is not None else itertools.repeat([])
        for rows, replayed in zip(self.new, replay):
            yield rows + [self.offset + row for row in replayed]


class EMA(nn.Module):
    """Exponential moving average of a model: ``ema.model`` is a frozen copy used for validation and saving."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        step = int(self.num_updates)
        decay = min(self.decay, (1 + step) / (10 + step))  # warm up: early weights are forgotten fast
        source = model.state_dict()
        for name, average in self.model.state_dict().items():
            if average.dtype.is_floating_point:
                average.lerp_(source[name].to(average.dtype), 1 - decay)
            else:
                average.copy_(source[name])


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def check_finite(losses: dict[str, torch.Tensor], step: int, checkpoints: CheckpointManager) -> None:
    bad = {name: float(value) for name, value in losses.items() if not torch.isfinite(value).all()}
    if bad:
        latest = checkpoints.latest()
        where = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"
        raise TrainingDivergedError(
            f"non-finite loss at step {step}: {bad}; {where}. Lower --learning_rate or use --mixed_precision no, "
            "then resume with --resume_from_checkpoint latest."
        )


CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


class CheckpointManager:
    """``output_dir/checkpoints/checkpoint-<step>`` folders, written atomically, oldest pruned."""

    def __init__(self, output_dir: str | os.PathLike, total_limit: int):
        self.directory = Path(output_dir) / "checkpoints"
        self.total_limit = total_limit

    def all(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), path) for path in self.directory.iterdir()
                 if (m := CHECKPOINT_PATTERN.match(path.name)) and (path / "training_state.json").is_file()]
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1][1] if found else None

    def resolve(self, resume_from: str | None) -> Path | None:
        if resume_from is None:
            return None
        if resume_from == "latest":
            latest = self.latest()
            if latest is None:
                logger.warning("--resume_from_checkpoint latest: no checkpoint in %s, starting fresh", self.directory)
            return latest
        path = Path(resume_from)
        if not (path / "training_state.json").is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no training_state.json)")
        return path

    def save(self, accelerator, step: int, extra: dict | None = None) -> Path | None:
        """All processes call this; the main process renames the finished folder into place."""
        final = self.directory / f"checkpoint-{step}"
        staging = self.directory / f".checkpoint-{step}.tmp"
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        if accelerator.is_main_process:
            state = {"step": step, "time": time.time(), **(extra or {})}
            (staging / "training_state.json").write_text(json.dumps(state, indent=2))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            for _, old in self.all()[: -self.total_limit] if self.total_limit > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def step_of(checkpoint: Path) -> int:
        return json.loads((checkpoint / "training_state.json").read_text())["step"]


def learning_rate_lambda(warmup_steps: int, total_steps: int):
    """Linear warm-up, then cosine decay to 10% of the peak."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def resolve_trackers(report_to: str) -> list[str]:
    if report_to == "auto":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return []
        return ["tensorboard"]
    return [] if report_to in ("none", "") else [report_to]


class MetricsLog:
    """Appends one JSON line per logged step to ``output_dir/metrics.jsonl`` (main process only)."""

    def __init__(self, output_dir: str | os.PathLike, enabled: bool):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.enabled = enabled

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": step, "wall_time": round(time.time(), 3), **values}) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines from steps the resumed run will redo."""
        if self.enabled and self.path.exists():
            lines = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
            self.path.write_text("".join(line + "\n" for line in lines))


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> Path:
    """(B, 3, H, W) in [-1, 1] -> one PNG grid, written atomically."""
    from PIL import Image

    images = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    b, c, h, w = images.shape
    ncol = min(nrow, b)
    nrows = math.ceil(b / ncol)
    grid = torch.zeros(c, nrows * (h + 2) + 2, ncol * (w + 2) + 2, dtype=torch.uint8)
    for index in range(b):
        row, col = divmod(index, ncol)
        grid[:, 2 + row * (h + 2): 2 + row * (h + 2) + h, 2 + col * (w + 2): 2 + col * (w + 2) + w] = images[index]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp)  # (H, W, 3)
    os.replace(tmp, path)
    return path


def make_accelerator(training: TrainingConfig):
    """The ``Accelerator`` every trainer uses: mixed precision, trackers, project folder; seeds everything."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    output_dir = Path(training.output_dir)
    trackers = resolve_trackers(training.report_to)
    accelerator = Accelerator(
        mixed_precision=training.mixed_precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    set_seed(training.seed)
    return accelerator


def start_run(accelerator, checkpoints: CheckpointManager, metrics_log: MetricsLog, run_config: JSONConfig,
              training: TrainingConfig, project_name: str) -> int:
    """Restore the newest (or named) checkpoint if asked, record the run's config; returns the first step."""
    start_step = 0
    checkpoint = checkpoints.resolve(training.resume_from_checkpoint)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        start_step = CheckpointManager.step_of(checkpoint)
        logger.info("resumed from %s at step %d", checkpoint, start_step)
    metrics_log.truncate_after(start_step)  # a fresh run into an old folder starts a fresh log
    if accelerator.is_main_process:
        output_dir = Path(training.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / "run_config.json", json.dumps(run_config.to_dict(), indent=2))
        accelerator.init_trackers(project_name, config={key: value for key, value in dataclasses.asdict(training).items()
                                                        if isinstance(value, (int, float, str, bool))})
    return start_step


def is_due(done: int, every: int, total: int) -> bool:
    """True every ``every`` steps and at the last step."""
    return (every > 0 and done % every == 0) or done == total


def log_step(accelerator, metrics_log: MetricsLog, done: int, values: dict) -> dict[str, float]:
    floats = {name: float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
              for name, value in values.items()}
    accelerator.log(floats, step=done)
    metrics_log.write(done, floats)
    return floats


def step_loader(dataset, sampler: StepBatchSampler, collate_fn, num_workers: int = 0):
    """A DataLoader over ``sampler``'s batches with a generator of its own: creating its iterator must not
    draw from the global RNG, or a resumed run (whose RNG state was restored) would drift from the original."""
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(sampler.seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                      generator=generator)
