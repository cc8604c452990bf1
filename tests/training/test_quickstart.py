"""train.py quickstart at tiny size: every stage runs, the pipeline folder is float16 and loads, a re-run skips
the finished stages, and an interrupted prior stage resumes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import train
from tessera.pipelines.shapes.world import VALIDATION_PROMPTS
from tessera.pipelines.text_to_image import TextToImagePipeline
from tests.training.step_counter import counting_train_steps

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")

TINY = ["--tokenizer_preset", "tiny", "--prior_preset", "tiny", "--tokenizer_steps", "2", "--prior_steps", "3",
        "--data", "shapes:num_samples=64,resolution=8", "--text_encoder", "none", "--captioner_preset", "tiny",
        "--captioner_steps", "2"]


def test_quickstart_runs_every_stage_and_resumes(tmp_path, capsys, monkeypatch):
    output = tmp_path / "quickstart"
    with monkeypatch.context() as patch:
        counting_train_steps(patch, crash_after=1)  # in the prior stage
        patch.setattr("tessera.pipelines.training.prior.PRIOR_TRAINING_DEFAULTS.checkpointing_steps", 1)
        with pytest.raises(KeyboardInterrupt):
            train.main(["quickstart", "--output_dir", str(output), *TINY])
    assert (output / "vqgan" / "model.safetensors").is_file()
    assert (output / "prior" / "checkpoints" / "checkpoint-1").is_dir()
    assert not (output / "pipeline").exists()

    with monkeypatch.context() as patch:
        calls = counting_train_steps(patch)
        train.main(["quickstart", "--output_dir", str(output), *TINY])
    assert len(calls) == 2  # steps 2 and 3: the prior stage resumed from its step-1 checkpoint
    assert "saved the pipeline to" in capsys.readouterr().out
    record = json.loads((output / "quickstart.json").read_text())
    assert record["recipe"]["prior"]["settings"]["prior"]["kind"] == "masked"  # recipes/tessera-shapes.json
    run_config = json.loads((output / "prior" / "run_config.json").read_text())
    assert tuple(run_config["data"]["validation_prompts"]) == VALIDATION_PROMPTS  # the shapes default, unchanged
    assert run_config["data"]["caption_variation"] == "shapes"
    assert record["stage_seconds"].keys() >= {"tokenize", "prior", "captioner"}
    assert "captioner/val/exact_match_test" in record["final_metrics"]

    weights = load_file(str(output / "pipeline" / "prior" / "model.safetensors"))
    assert {tensor.dtype for tensor in weights.values() if tensor.is_floating_point()} == {torch.float16}
    pipeline = TextToImagePipeline.from_pretrained(output / "pipeline")
    assert pipeline.dtype == torch.float32 and pipeline.training_data == "shapes:num_samples=64,resolution=8"
    assert pipeline("a small red circle", output_type="pt").images.shape == (1, 3, 8, 8)
    assert pipeline.captioner is not None
    weights = load_file(str(output / "pipeline" / "captioner" / "model.safetensors"))
    assert {tensor.dtype for tensor in weights.values()} == {torch.float16}

    before = (output / "vqgan" / "model.safetensors").stat().st_mtime_ns
    train.main(["quickstart", "--output_dir", str(output), *TINY])
    assert (output / "vqgan" / "model.safetensors").stat().st_mtime_ns == before  # finished stages are skipped


@pytest.mark.e2e
def test_train_your_own_imagefolder_stage_by_stage(tmp_path, capsys):
    """The README's "train your own" commands, at tiny size, on an imagefolder with metadata.jsonl."""
    from tessera.pipelines import cli
    from tessera.pipelines.shapes.dataset import write_imagefolder

    images = tmp_path / "my_images"
    write_imagefolder(str(images), 48, resolution=8)
    assert (images / "metadata.jsonl").is_file()
    quick = ["--report_to", "none", "--checkpointing_steps", "1000", "--validation_steps", "1000",
             "--num_validation_images", "4", "--train_batch_size", "8"]
    train.main(["tokenizer", "--preset", "tiny", "--data", str(images), "--output_dir", str(tmp_path / "vqgan"),
                "--max_train_steps", "2", *quick])
    train.main(["tokenize", "--tokenizer", str(tmp_path / "vqgan"), "--data", str(images),
                "--output_dir", str(tmp_path / "tokens")])
    train.main(["prior", "--tokens", str(tmp_path / "tokens"), "--tokenizer", str(tmp_path / "vqgan"),
                "--prior", "masked", "--preset", "tiny", "--output_dir", str(tmp_path / "prior"),
                "--max_train_steps", "2", *quick, "--set", "text.hidden_size=8", "text.num_layers=1",
                "text.num_heads=2", "text.intermediate_size=16", "text.vocab_size=300",
                "data.num_evaluation_captions=2"])
    assert cli.main(["generate", "a small red circle on the left", "--pipeline", str(tmp_path / "prior"),
                     "-o", str(tmp_path / "out.png")]) == 0
    assert (tmp_path / "out.png").is_file()
    assert TextToImagePipeline.from_pretrained(tmp_path / "prior").training_data == str(images)
    train.main(["captioner", "--data", str(images), "--tokenizer", str(tmp_path / "vqgan"), "--preset", "tiny",
                "--output_dir", str(tmp_path / "captioner"), "--max_train_steps", "2", *quick,
                "--set", "data.num_evaluation_images=2"])
    assert (tmp_path / "captioner" / "tokens" / "tokenized_dataset.json").is_file()  # --data: tokenized first
    capsys.readouterr()
    assert cli.main(["caption", str(tmp_path / "out.png"), "--pipeline", str(tmp_path / "captioner")]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'out.png'}\t")
