"""The one training loop every stage runs (VQ-GAN, prior, fine-tuning): one code path for one CPU, one GPU or
many processes (``accelerate launch`` on GPUs, ``torchrun`` on CPUs).

A stage (``TrainingStage``) supplies its models, its loss step, its validation and its final save; the loop
does the rest, the same way for every stage:

- devices, mixed precision and DDP through ``accelerate``; every forward that trains goes through the
  prepared (DDP-wrapped) modules, so gradients are averaged over processes;
- gradient accumulation (``gradient_accumulation_steps`` micro-batches per optimizer step, with
  ``accelerator.accumulate``: no gradient sync before the last micro-batch), clipping, LR schedules, EMA;
- step-indexed batches (``pipelines.training.batches``), so ``--resume_from_checkpoint latest`` continues the
  run exactly; checkpoints every N steps, written atomically;
- a stop on a non-finite loss, and an optional wall-clock budget (``max_train_seconds``: the run ends early as
  if at its last step); metrics every 10 steps (``metrics.jsonl``, tensorboard when installed), a tqdm
  bar; validation every N steps on the main process only, from the EMA weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, broadcast, set_seed
from torch import nn
from tqdm.auto import tqdm

from tessera.core.config import JSONConfig
from tessera.core.folders import FolderInUseError
from tessera.core.io import atomic_write_text
from tessera.core.launch import launched_on_cpu
from tessera.pipelines.training.batches import MixedBatchSampler, StepBatchSampler, step_loader
from tessera.pipelines.training.checkpoints import CheckpointManager, check_finite
from tessera.pipelines.training.config import TrainingConfig
from tessera.pipelines.training.ema import EMA
from tessera.pipelines.training.tracking import CpuClock, MetricsLog, resolve_trackers

logger = logging.getLogger(__name__)

LOG_EVERY = 10  # steps between metric lines
# beside each snapshot's weights: its step, the run's CPU time and this process's wall-clock time
SNAPSHOT_RECORD = "snapshot.json"


def learning_rate_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10% of the peak."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_accelerator(training: TrainingConfig) -> Accelerator:
    """The ``Accelerator`` of a run: mixed precision, gradient accumulation, trackers, project folder; seeds
    everything. Parameters a step leaves unused (the null context when no caption is dropped) are allowed."""
    output_dir = Path(training.output_dir)
    trackers = resolve_trackers(training.report_to)
    accelerator = Accelerator(
        cpu=launched_on_cpu(),  # torchrun on a machine without GPUs: the processes find each other over gloo
        mixed_precision=training.mixed_precision,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(training.seed)
    return accelerator


def is_due(done: int, every: int, last: bool) -> bool:
    """True every ``every`` steps and at the ``last`` step."""
    return (every > 0 and done % every == 0) or last


def make_optimizer(parameters: Iterable[nn.Parameter], training: TrainingConfig) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel (one pass over all parameters: ~3x cheaper than the per-tensor loop on CPU)."""
    return torch.optim.AdamW([p for p in parameters if p.requires_grad], lr=training.learning_rate,
                             betas=(training.adam_beta1, training.adam_beta2),
                             weight_decay=training.adam_weight_decay, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, training: TrainingConfig) -> torch.optim.lr_scheduler.LambdaLR:
    decay_steps = training.lr_decay_steps or training.max_train_steps
    return torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_lambda(training.lr_warmup_steps, decay_steps))


class TrainingStage:
    """What a stage supplies to ``TrainingLoop``.

    ``setup`` builds the models and optimizers and passes them through ``accelerator.prepare``; after it the
    loop reads ``models`` (the prepared modules: put in train mode, and in ``accelerator.accumulate``),
    ``schedulers`` (stepped once per optimizer step), ``ema`` and ``ema_source`` (averaged after each optimizer
    step). ``train_step`` runs one micro-batch: forward through the prepared modules, then ``loop.optimize``
    for each optimizer. ``validate`` (main process only) and ``save_final`` (main process only) use the EMA.
    """

    name: str = "stage"
    models: list[nn.Module]
    schedulers: list[torch.optim.lr_scheduler.LRScheduler]
    ema: EMA

    def setup(self, accelerator: Accelerator) -> None:
        raise NotImplementedError

    def prepare_averaged(self, accelerator: Accelerator, model: nn.Module, training: TrainingConfig
                         ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The one-model setup: an EMA of ``model``, AdamW on its trainable parameters with the warmup-cosine
        schedule, both through ``accelerator.prepare``. Sets ``ema``, ``schedulers`` and ``models``; returns the
        prepared model and optimizer."""
        self.ema = EMA(model, training.ema_decay)
        optimizer = make_optimizer(model.parameters(), training)
        self.schedulers = [make_scheduler(optimizer, training)]
        prepared, optimizer = accelerator.prepare(model, optimizer)
        self.models = [prepared]
        return prepared, optimizer

    @property
    def ema_source(self) -> nn.Module:
        raise NotImplementedError

    def train_sampler(self, sampler: StepBatchSampler) -> StepBatchSampler | MixedBatchSampler:
        """The batch sampler of the run (e.g. mixed with replayed data); the plain one by default."""
        return sampler

    def train_data(self) -> tuple[Any, Callable[[list], dict]]:
        """(a map-style dataset addressed by the sampler's indices, its collate function)."""
        raise NotImplementedError

    def train_step(self, loop: TrainingLoop, batch: dict, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def schedulers_to_step(self, step: int) -> list[torch.optim.lr_scheduler.LRScheduler]:
        """The schedulers whose optimizer stepped at ``step`` (all of them by default)."""
        return self.schedulers

    def progress_values(self, logs: dict[str, float]) -> dict[str, str]:
        return {}

    def validate(self, step: int) -> dict[str, float]:
        return {}

    def save_final(self, output_dir: Path) -> Path:
        raise NotImplementedError


class TrainingLoop:
    def __init__(self, stage: TrainingStage, training: TrainingConfig, run_config: JSONConfig):
        self.stage, self.training, self.run_config = stage, training, run_config
        self.cpu_clock = CpuClock()  # the setup (data, text-encoder caches) is part of the run's cost
        self.wall_started = time.monotonic()  # this process's start, for max_train_seconds and snapshot records
        self.output_dir = Path(training.output_dir)
        self.checkpoints = CheckpointManager(self.output_dir, training.checkpoints_total_limit)
        if training.resume_from_checkpoint is None and not training.overwrite_output_dir:
            self.refuse_earlier_run()  # before the setup's work
        self.accelerator = make_accelerator(training)
        stage.setup(self.accelerator)
        stage.ema.to(self.accelerator.device)
        self.accelerator.register_for_checkpointing(*stage.schedulers, stage.ema)
        self.metrics_log = MetricsLog(self.output_dir, self.accelerator.is_main_process)

    def optimize(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters: Iterable[nn.Parameter],
                 *, shared_graph: bool = False, last_use: bool = False) -> None:
        """Backward of one micro-batch's loss; on the last micro-batch of a step, clip, step and zero the
        gradients (the prepared optimizer skips these until ``accelerator.sync_gradients``).

        ``shared_graph``: the loss shares its graph with another optimizer's (two players, one forward):
        gradients go to ``parameters`` only, and the graph is kept for the other's backward unless ``last_use``.
        """
        parameters = [parameter for parameter in parameters if parameter.requires_grad]
        options = {"inputs": parameters, "retain_graph": not last_use} if shared_graph else {}
        self.accelerator.backward(loss, **options)  # divides by gradient_accumulation_steps
        if self.accelerator.sync_gradients and self.training.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(parameters, self.training.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def start(self) -> int:
        """Restore the newest (or named) checkpoint if asked, record the run's config; the first step."""
        start_step = 0
        checkpoint = self.checkpoints.resolve(self.training.resume_from_checkpoint)
        if checkpoint is not None:
            self.accelerator.load_state(str(checkpoint))
            state = CheckpointManager.state_of(checkpoint)
            start_step = state["step"]
            self.cpu_clock.spent_before = state.get("cpu_seconds", 0.0)
            logger.info("resumed from %s at step %d", checkpoint, start_step)
        self.metrics_log.truncate_after(start_step)  # a fresh run into an old folder starts a fresh log
        if self.accelerator.is_main_process:
            accelerator, training = self.accelerator, self.training
            logger.info("%s: %d processes (%s on %s), effective batch %d = %d per micro-batch x %d accumulated x "
                        "%d processes, steps %d..%d", self.stage.name, accelerator.num_processes,
                        accelerator.distributed_type.value, accelerator.device,
                        training.train_batch_size * training.gradient_accumulation_steps * accelerator.num_processes,
                        training.train_batch_size, training.gradient_accumulation_steps, accelerator.num_processes,
                        start_step, training.max_train_steps)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / "run_config.json", json.dumps(self.run_config.to_dict(), indent=2))
            scalars = {key: value for key, value in dataclasses.asdict(self.training).items()
                       if isinstance(value, (int, float, str, bool))}
            self.accelerator.init_trackers(self.stage.name, config=scalars)
        return start_step

    def refuse_earlier_run(self) -> None:
        """``FolderInUseError`` when output_dir holds an earlier run's checkpoints: a new run would replace them."""
        earlier = self.checkpoints.latest()
        if earlier is not None:
            raise FolderInUseError(
                f"{self.output_dir} holds the checkpoints of an earlier run (the newest at step "
                f"{CheckpointManager.step_of(earlier)}); a new run there would replace them. Continue it with "
                f"--resume_from_checkpoint latest, choose another --output_dir, or pass --overwrite_output_dir to "
                f"start over. Nothing was written.")

    def log(self, done: int, values: dict[str, Any]) -> dict[str, float]:
        floats = {name: float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                  for name, value in values.items()}
        self.accelerator.log(floats, step=done)
        self.metrics_log.write(done, floats)
        return floats

    def micro_batches(self, start_step: int) -> Iterator[dict]:
        training, accelerator = self.training, self.accelerator
        dataset, collate = self.stage.train_data()
        sampler = self.stage.train_sampler(StepBatchSampler(
            len(dataset), training.train_batch_size, seed=training.seed, start_step=start_step,
            end_step=training.max_train_steps, process_index=accelerator.process_index,
            num_processes=accelerator.num_processes, accumulation=training.gradient_accumulation_steps))
        return iter(step_loader(dataset, sampler, collate, training.dataloader_num_workers))

    def step(self, batches: Iterator[dict], step: int) -> dict[str, torch.Tensor]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches; the logs are their mean."""
        accumulation = self.training.gradient_accumulation_steps
        totals: dict[str, torch.Tensor] = {}
        for _ in range(accumulation):
            with self.accelerator.accumulate(*self.stage.models):
                logs = self.stage.train_step(self, next(batches), step)
            for name, value in logs.items():
                value = torch.as_tensor(value).detach().float()
                totals[name] = totals[name] + value if name in totals else value
        if not self.accelerator.sync_gradients:
            raise RuntimeError("gradient accumulation is out of step with the optimizer steps")
        for scheduler in self.stage.schedulers_to_step(step):
            scheduler.step()
        self.stage.ema.update(self.stage.ema_source)
        return {name: total / accumulation for name, total in totals.items()}

    def wall_seconds(self) -> float:
        """Wall-clock seconds since this process's loop began (its setup included; a resume starts from 0)."""
        return time.monotonic() - self.wall_started

    def out_of_time(self, done: int) -> bool:
        """Whether ``max_train_seconds`` is spent; asked every ``LOG_EVERY`` steps, and decided by the main
        process's clock, so that every process stops at the same step."""
        budget = self.training.max_train_seconds
        if budget <= 0 or done % LOG_EVERY:
            return False
        spent = torch.tensor([float(self.wall_seconds() > budget)], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            spent = broadcast(spent)  # the main process's answer
        return bool(spent.item())

    def save_snapshot(self, done: int) -> Path:
        """The EMA weights now, as the stage's final save would write them, in ``snapshots/step-<done>``."""
        folder = self.output_dir / "snapshots" / f"step-{done:07d}"
        cpu_seconds = self.cpu_clock.seconds()
        shutil.rmtree(folder, ignore_errors=True)  # a step redone after a resume: this run's own snapshot
        self.stage.save_final(folder)
        record = {"step": done, "cpu_seconds": round(cpu_seconds, 1), "wall_seconds": round(self.wall_seconds(), 1)}
        atomic_write_text(folder / SNAPSHOT_RECORD, json.dumps(record))
        return folder

    def run(self) -> Path:
        training, accelerator, stage = self.training, self.accelerator, self.stage
        start_step = self.start()
        batches = self.micro_batches(start_step)
        progress = tqdm(total=training.max_train_steps, initial=start_step, desc=stage.name,
                        disable=not accelerator.is_local_main_process)
        for model in stage.models:
            model.train()
        for step in range(start_step, training.max_train_steps):
            logs = self.step(batches, step)
            check_finite(logs, step, self.checkpoints)
            done = step + 1
            progress.update(1)
            last = done == training.max_train_steps or self.out_of_time(done)
            if last and done < training.max_train_steps:
                logger.info("stopping at step %d of %d: the wall-clock budget of %.0f s is spent (%.0f s)", done,
                            training.max_train_steps, training.max_train_seconds, self.wall_seconds())
            if is_due(done, LOG_EVERY, last):
                values = self.log(done, {**logs, "lr": stage.schedulers[0].get_last_lr()[0],
                                         "cpu_hours": self.cpu_clock.seconds() / 3600})
                progress.set_postfix(stage.progress_values(values))
            if is_due(done, training.checkpointing_steps, last):
                self.checkpoints.save(accelerator, done, {"cpu_seconds": self.cpu_clock.seconds()})
            if training.snapshot_steps and is_due(done, training.snapshot_steps, last) and accelerator.is_main_process:
                self.save_snapshot(done)
            if is_due(done, training.validation_steps, last) and accelerator.is_main_process:
                with torch.random.fork_rng(devices=[]):
                    metrics = stage.validate(done)
                self.log(done, metrics)
                progress.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            if last:
                break
        progress.close()
        if accelerator.is_main_process:
            stage.save_final(self.output_dir)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return self.output_dir
