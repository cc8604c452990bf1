"""Run one training stage from a saved run config, then write this process's trainable parameters to
``OUT/rank<i>.safetensors``. Started by ``accelerate launch`` in the across-ranks tests (and imported by
them for the one-process reference run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import save_file

from tessera.pipelines.training.loop import TrainingLoop
from tessera.pipelines.training.prior import PriorRunConfig, PriorStage
from tessera.pipelines.training.vqgan import TokenizerRunConfig, VQGANStage

STAGES = {"tokenizer": (TokenizerRunConfig, VQGANStage), "prior": (PriorRunConfig, PriorStage)}


def train_and_save_parameters(stage_name: str, config_path: Path, out: Path) -> Path:
    config_class, stage_class = STAGES[stage_name]
    config = config_class.load(config_path)
    stage = stage_class(config)
    loop = TrainingLoop(stage, config.training, config)
    loop.run()
    modules = [stage.ema_source] + ([loop.accelerator.unwrap_model(stage.discriminator)]
                                    if stage_name == "tokenizer" else [])
    parameters = {f"{index}.{name}": parameter.detach().cpu().contiguous()
                  for index, module in enumerate(modules) for name, parameter in module.named_parameters()}
    path = out / f"rank{loop.accelerator.process_index}.safetensors"
    out.mkdir(parents=True, exist_ok=True)
    save_file(parameters, str(path))
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("config", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    train_and_save_parameters(args.stage, args.config, args.out)
