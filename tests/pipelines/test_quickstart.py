"""train.py quickstart at tiny size: every stage runs, the pipeline folder is float16 and loads, a re-run skips
the finished stages, and an interrupted prior stage resumes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import train
from pipelines.text_to_image import TextToImagePipeline
from prior.trainer import PriorTrainer

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")

TINY = ["--tokenizer_preset", "tiny", "--prior_preset", "tiny", "--tokenizer_steps", "2", "--prior_steps", "3",
        "--data", "shapes:num_samples=64,resolution=8"]


def test_quickstart_runs_every_stage_and_resumes(tmp_path, capsys, monkeypatch):
    output = tmp_path / "quickstart"
    original, calls = PriorTrainer.train_step, []

    def crash_in_the_prior_stage(self, batch):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt("simulated crash in the prior stage")
        return original(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(PriorTrainer, "train_step", crash_in_the_prior_stage)
        patch.setattr("prior.trainer.PRIOR_TRAINING_DEFAULTS.checkpointing_steps", 1)
        with pytest.raises(KeyboardInterrupt):
            train.main(["quickstart", "--output_dir", str(output), *TINY])
    assert (output / "vqgan" / "model.safetensors").is_file()
    assert (output / "prior" / "checkpoints" / "checkpoint-1").is_dir()
    assert not (output / "pipeline").exists()

    calls.clear()
    with monkeypatch.context() as patch:
        patch.setattr(PriorTrainer, "train_step", lambda self, batch: calls.append(1) or original(self, batch))
        train.main(["quickstart", "--output_dir", str(output), *TINY])
    assert len(calls) == 2  # steps 2 and 3: the prior stage resumed from its step-1 checkpoint
    assert "saved the pipeline to" in capsys.readouterr().out
    record = json.loads((output / "quickstart.json").read_text())
    assert record["config"]["prior"] == "masked" and record["stage_seconds"].keys() >= {"tokenize", "prior"}

    weights = load_file(str(output / "pipeline" / "prior" / "model.safetensors"))
    assert {tensor.dtype for tensor in weights.values() if tensor.is_floating_point()} == {torch.float16}
    pipeline = TextToImagePipeline.from_pretrained(output / "pipeline")
    assert pipeline.dtype == torch.float32 and pipeline.training_data == "shapes:num_samples=64,resolution=8"
    assert pipeline("a small red circle", output_type="pt").images.shape == (1, 3, 8, 8)

    before = (output / "vqgan" / "model.safetensors").stat().st_mtime_ns
    train.main(["quickstart", "--output_dir", str(output), *TINY])
    assert (output / "vqgan" / "model.safetensors").stat().st_mtime_ns == before  # finished stages are skipped
