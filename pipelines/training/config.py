"""``TrainingConfig``: the settings every training stage shares, one diffusers-style flag per field."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass

from tessera.core.config import JSONConfig, dataclass_from_dict


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
    # 0: none; else a wall-clock budget: the run stops at the first 10-step boundary past this many seconds since
    # the loop began (setup included), saving as at its last step (checkpoint, snapshot, validation, final
    # weights). The learning-rate schedule still runs to max_train_steps, so size the steps to fit the budget.
    max_train_seconds: float = 0.0
    mixed_precision: str = "no"
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 2  # 0: keep every checkpoint
    resume_from_checkpoint: str | None = None
    validation_steps: int = 500
    # 0: none; else every N steps and at the last step the EMA weights are saved as a loadable folder (the stage's
    # final save) in output_dir/snapshots/step-<N>, with the run's CPU and wall-clock time, for learning curves
    # (benchmarks.learning_curve)
    snapshot_steps: int = 0
    num_validation_images: int = 256
    ema_decay: float = 0.99
    report_to: str = "auto"  # "auto" = tensorboard when installed, else metrics.jsonl only
    dataloader_num_workers: int = 1
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step (effective batch: batch x this x processes)

    def __post_init__(self) -> None:
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")
        if self.snapshot_steps < 0:
            raise ValueError(f"snapshot_steps must be >= 0 (0: no snapshots), got {self.snapshot_steps}")
        if self.max_train_seconds < 0:
            raise ValueError(f"max_train_seconds must be >= 0 (0: no limit), got {self.max_train_seconds}")
        if self.train_batch_size < 1 or self.max_train_steps < 1:
            raise ValueError("train_batch_size and max_train_steps must be >= 1")


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


def with_overrides(config: JSONConfig, assignments: list[str]) -> JSONConfig:
    """A copy of ``config`` (a run config) with ``--set a.b.c=value`` ``assignments`` applied."""
    return dataclass_from_dict(type(config), apply_overrides(config.to_dict(), assignments))
