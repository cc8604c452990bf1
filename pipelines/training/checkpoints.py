"""Checkpoints: ``accelerate`` state written to a temporary folder and renamed into place, oldest pruned; and
the stop on a non-finite loss, which keeps the last good checkpoint."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


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
        accelerator.wait_for_everyone()  # every process's RNG state is in the folder before it is renamed
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
    def state_of(checkpoint: Path) -> dict:
        """``training_state.json``: the step, the wall time it was written at, the run's CPU seconds so far."""
        return json.loads((checkpoint / "training_state.json").read_text())

    @staticmethod
    def step_of(checkpoint: Path) -> int:
        return CheckpointManager.state_of(checkpoint)["step"]
