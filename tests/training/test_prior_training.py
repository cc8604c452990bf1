"""train.py prior at tiny size: the loss falls, the output folder loads, a mismatched tokenizer is refused."""

from __future__ import annotations

import json

import pytest
import torch

from tessera.core.folders import FolderInUseError
from tessera.pipelines.tokens.dataset import TokenizerMismatchError
from tessera.pipelines.training.prior import PriorRunConfig, PriorStage, train_prior
from tessera.pipelines.training.prior_options import FinetuneOptions
from tessera.prior.kinds import load_prior
from tessera.prior.text import TextConditioner
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.model import VQGAN
from tests.training.step_counter import counting_train_steps

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")


@pytest.mark.parametrize("kind", ["autoregressive", "masked"])
def test_training_reduces_loss_and_saves_a_loadable_folder(tokens, tiny_config, tmp_path, kind):
    vqgan, token_dir = tokens
    train_prior(tiny_config(tmp_path, vqgan, token_dir, kind))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_losses = [line["loss/train"] for line in lines if "loss/train" in line]
    assert train_losses[-1] < train_losses[0]
    validation = [line for line in lines if "val/loss" in line][-1]
    assert {"val/evaluator_accuracy_test", "val/evaluator_accuracy_holdout"} <= set(validation)
    assert list((tmp_path / "samples").glob("samples-*.png"))
    prior = load_prior(tmp_path / "prior")
    text = TextConditioner.from_pretrained(tmp_path)
    assert prior.config.kind == kind and prior.config.context_dim == text.hidden_size
    codes = prior.sample(text(["a small red circle on the left"]), generator=torch.Generator().manual_seed(0))
    assert VQGAN.from_pretrained(tmp_path / "vqgan").decode(codes).shape == (1, 3, 8, 8)


def test_mismatched_tokenizer_is_refused(tokens, tiny_config, tmp_path):
    _, token_dir = tokens
    torch.manual_seed(1)
    VQGAN(vqgan_preset("tiny")).save_pretrained(tmp_path / "other")
    with pytest.raises(TokenizerMismatchError):
        train_prior(tiny_config(tmp_path / "run", tmp_path / "other", token_dir, "autoregressive"))


def test_resume_continues_the_same_run(tokens, tiny_config, tmp_path, monkeypatch):
    vqgan, token_dir = tokens

    def config(name: str, **extra) -> PriorRunConfig:
        return tiny_config(tmp_path / name, vqgan, token_dir, "masked", max_train_steps=20, checkpointing_steps=10,
                           validation_steps=1000, **extra)

    train_prior(config("reference"))
    with monkeypatch.context() as patch:
        counting_train_steps(patch, crash_after=10)  # after the step-10 checkpoint
        with pytest.raises(KeyboardInterrupt):
            train_prior(config("resumed"))
    assert not (tmp_path / "resumed" / "prior").exists()
    train_prior(config("resumed", resume_from_checkpoint="latest"))
    expected = load_prior(tmp_path / "reference" / "prior").state_dict()
    actual = load_prior(tmp_path / "resumed" / "prior").state_dict()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_a_new_run_does_not_replace_an_earlier_runs_checkpoints(tokens, tiny_config, tmp_path, monkeypatch):
    vqgan, token_dir = tokens

    def config(**extra) -> PriorRunConfig:
        return tiny_config(tmp_path / "run", vqgan, token_dir, "masked", max_train_steps=4, checkpointing_steps=2,
                           validation_steps=1000, **extra)

    with monkeypatch.context() as patch:
        counting_train_steps(patch, crash_after=2)  # interrupted after its step-2 checkpoint
        with pytest.raises(KeyboardInterrupt):
            train_prior(config())
    checkpoints = tmp_path / "run" / "checkpoints"
    before = {path: path.read_bytes() for path in checkpoints.rglob("*") if path.is_file()}
    with pytest.raises(FolderInUseError, match=r"earlier run \(the newest at step 2\).*--resume_from_checkpoint latest"):
        train_prior(config())  # forgot --resume_from_checkpoint
    assert {path: path.read_bytes() for path in checkpoints.rglob("*") if path.is_file()} == before
    train_prior(config(overwrite_output_dir=True))  # asked to start over
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-4").is_dir()


def test_cli_tokenizes_images_first(tokens, tmp_path):
    import train

    vqgan, _ = tokens
    train.main(["prior", "--data", "shapes:num_samples=40", "--vqgan", str(vqgan), "--preset", "tiny",
                "--output_dir", str(tmp_path), "--max_train_steps", "2", "--validation_steps", "1000",
                "--checkpointing_steps", "1000", "--train_batch_size", "4", "--num_validation_images", "4",
                "--report_to", "none", "--set", "text.hidden_size=8", "text.num_layers=1", "text.num_heads=2",
                "text.intermediate_size=16", "text.vocab_size=300", "data.num_evaluation_captions=2",
                "--caption_variation", "shapes", "--caption_omission", "0.3", "--caption_omit", "size", "position"])
    assert (tmp_path / "tokens" / "tokenized_dataset.json").is_file()
    assert (tmp_path / "pipeline.json").is_file() and (tmp_path / "prior" / "model.safetensors").is_file()
    recorded = json.loads((tmp_path / "run_config.json").read_text())["data"]
    assert (recorded["caption_omission"], recorded["caption_omit"]) == (0.3, ["size", "position"])


def test_caption_warmup_varies_a_growing_share_of_the_rows(tokens, tiny_config, tmp_path):
    vqgan, token_dir = tokens
    config = tiny_config(tmp_path, vqgan, token_dir, "masked")
    config.data.caption_variation, config.data.caption_warmup_epochs = "shapes", 2
    stage = PriorStage(config)
    stage.load_data()
    get_row, rows = stage.varied_row(stage.train_rows), stage.train_rows

    def varied_share(epoch: int) -> float:
        return sum(get_row(row, epoch)["caption"] != rows[row]["caption"] for row in range(len(rows))) / len(rows)

    assert varied_share(0) == 0.0
    assert 0.0 < varied_share(1) < varied_share(3)
    config.finetune = FinetuneOptions(replay_tokens=str(token_dir), replay_fraction=0.25)
    with pytest.raises(ValueError, match="caption_warmup_epochs"):
        PriorStage(config)


def test_snapshots_keep_loadable_weights_and_the_cpu_time_across_a_resume(tokens, tiny_config, tmp_path, monkeypatch):
    from tessera.pipelines.text_to_image import TextToImagePipeline

    vqgan, token_dir = tokens
    config = tiny_config(tmp_path, vqgan, token_dir, "masked", max_train_steps=20, checkpointing_steps=10,
                         snapshot_steps=5, validation_steps=1000)
    with monkeypatch.context() as patch:
        counting_train_steps(patch, crash_after=12)  # after the step-10 checkpoint and the step-10 snapshot
        with pytest.raises(KeyboardInterrupt):
            train_prior(config)
    before = json.loads((tmp_path / "checkpoints" / "checkpoint-10" / "training_state.json").read_text())
    assert before["cpu_seconds"] > 0
    train_prior(tiny_config(tmp_path, vqgan, token_dir, "masked", max_train_steps=20, checkpointing_steps=10,
                            snapshot_steps=5, validation_steps=1000, resume_from_checkpoint="latest"))
    records = [json.loads(path.read_text()) for path in sorted((tmp_path / "snapshots").glob("step-*/snapshot.json"))]
    assert [record["step"] for record in records] == [5, 10, 15, 20]
    seconds = [record["cpu_seconds"] for record in records]
    assert seconds == sorted(seconds) and seconds[2] >= before["cpu_seconds"]  # the resumed run adds to it
    last = TextToImagePipeline.from_pretrained(tmp_path / "snapshots" / "step-0000020")
    final = load_prior(tmp_path / "prior").state_dict()
    for name, weight in last.prior.state_dict().items():  # the last snapshot is the final EMA weights
        assert torch.equal(weight, final[name]), name
    cpu_hours = [json.loads(line).get("cpu_hours") for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(value is None or value > 0 for value in cpu_hours) and any(cpu_hours)


def test_snapshot_steps_must_not_be_negative(tokens, tiny_config, tmp_path):
    vqgan, token_dir = tokens
    with pytest.raises(ValueError, match="snapshot_steps"):
        tiny_config(tmp_path, vqgan, token_dir, "masked", snapshot_steps=-1)


def test_a_spent_wall_clock_budget_ends_the_run_as_its_last_step_would(tokens, tiny_config, tmp_path):
    from tessera.pipelines.text_to_image import TextToImagePipeline

    vqgan, token_dir = tokens
    config = tiny_config(tmp_path, vqgan, token_dir, "masked", max_train_steps=40, checkpointing_steps=1000,
                         snapshot_steps=7, validation_steps=1000, max_train_seconds=1e-6)
    train_prior(config)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 10  # the first 10-step boundary past the budget, not step 40
    assert "val/loss" in json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])  # validated there
    assert (tmp_path / "checkpoints" / "checkpoint-10").is_dir()  # resumable from where it stopped
    records = [json.loads(path.read_text()) for path in sorted((tmp_path / "snapshots").glob("step-*/snapshot.json"))]
    assert [record["step"] for record in records] == [7, 10]  # every 7 steps and at the (early) last one
    assert all(record["wall_seconds"] > 0 for record in records)
    last = TextToImagePipeline.from_pretrained(tmp_path / "snapshots" / "step-0000010")
    final = load_prior(tmp_path / "prior").state_dict()
    for name, weight in last.prior.state_dict().items():
        assert torch.equal(weight, final[name]), name


def test_max_train_seconds_must_not_be_negative(tokens, tiny_config, tmp_path):
    vqgan, token_dir = tokens
    with pytest.raises(ValueError, match="max_train_seconds"):
        tiny_config(tmp_path, vqgan, token_dir, "masked", max_train_seconds=-1)


def test_a_run_on_a_longer_schedule_is_the_longer_runs_first_steps(tokens, tiny_config, tmp_path):
    """``lr_decay_steps``: a run that stops at step 6 of a 12-step schedule saves what the 12-step run's step-6
    snapshot holds; without it the same 6 steps decay their learning rate sooner and train other weights."""
    from tessera.pipelines.text_to_image import TextToImagePipeline

    vqgan, token_dir = tokens

    def run(name: str, **extra) -> None:
        train_prior(tiny_config(tmp_path / name, vqgan, token_dir, "masked", checkpointing_steps=1000,
                                validation_steps=1000, **extra))

    run("long", max_train_steps=12, snapshot_steps=6, lr_warmup_steps=2)
    run("early", max_train_steps=6, lr_decay_steps=12, lr_warmup_steps=2)
    run("short", max_train_steps=6, lr_warmup_steps=2)
    reference = TextToImagePipeline.from_pretrained(tmp_path / "long" / "snapshots" / "step-0000006").prior.state_dict()
    early, short = (load_prior(tmp_path / name / "prior").state_dict() for name in ("early", "short"))
    assert all(torch.equal(weight, early[name]) for name, weight in reference.items())
    assert not all(torch.equal(weight, short[name]) for name, weight in reference.items())


def test_lr_decay_steps_must_not_be_negative(tokens, tiny_config, tmp_path):
    vqgan, token_dir = tokens
    with pytest.raises(ValueError, match="lr_decay_steps"):
        tiny_config(tmp_path, vqgan, token_dir, "masked", lr_decay_steps=-1)
