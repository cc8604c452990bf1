"""How benchmarks/real_images.py schedules its tokenizer runs (the commands it would start; nothing trains)."""

from __future__ import annotations

import argparse
from pathlib import Path

import benchmarks.real_images as real_images


def planned_commands(tmp_path, monkeypatch, recipes) -> dict[str, list[str]]:
    started = {}

    def fake_run(arguments, log, threads=None):
        output_dir = Path(arguments[arguments.index("--output_dir") + 1])
        output_dir.mkdir(parents=True, exist_ok=True)  # where the benchmark writes the run's record
        started[output_dir.name.removeprefix("tokenizer-")] = arguments

    monkeypatch.setattr(real_images, "run_command", fake_run)
    monkeypatch.setattr(real_images, "wait_all", lambda processes: {name: 1.0 for name in processes})
    args = argparse.Namespace(tokenizer_steps=300, tokenizer_batch_size=4, seed=0, disc_start=None, concurrent=1,
                              recipes=recipes)
    real_images.train_tokenizers(tmp_path, args)
    return started


def test_no_gan_continues_from_the_default_run_at_the_gan_start(tmp_path, monkeypatch):
    (tmp_path / "tokenizer-default" / "checkpoints" / "checkpoint-200").mkdir(parents=True)
    (tmp_path / "tokenizer-default" / "model.safetensors").write_bytes(b"")  # the default is trained already
    started = planned_commands(tmp_path, monkeypatch, ["default", "vanilla", "no_gan"])
    assert sorted(started) == ["no_gan", "vanilla"]
    no_gan = started["no_gan"]
    assert no_gan[no_gan.index("--resume_from_checkpoint") + 1].endswith("tokenizer-default/checkpoints/checkpoint-200")
    assert "loss.disc_start=1000000000" in no_gan
    assert "--resume_from_checkpoint" not in started["vanilla"] and "loss.disc_start=200" in started["vanilla"]


def test_only_the_asked_recipes_start_and_no_gan_starts_afresh_without_the_checkpoint(tmp_path, monkeypatch):
    started = planned_commands(tmp_path, monkeypatch, ["no_gan"])
    assert list(started) == ["no_gan"] and "--resume_from_checkpoint" not in started["no_gan"]
