"""A frozen pretrained text encoder's outputs cached by the export are what training reads: the same loss as
encoding the captions, and no text-encoder forward per step; a cache of another encoder or length is ignored."""

from __future__ import annotations

import pytest
import torch

from tessera.pipelines.tokens import ExportConfig, export_tokenized_dataset
from tessera.pipelines.training.loop import TrainingLoop
from tessera.pipelines.training.prior import PriorStage
from tessera.prior.context import TextContext
from tessera.prior.text import TextEncoderConfig

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")


@pytest.fixture(scope="module")
def cached_tokens(tokens, minilm, tmp_path_factory):
    vqgan, _ = tokens
    folder = tmp_path_factory.mktemp("cached") / "tokens"
    export_tokenized_dataset(ExportConfig(vqgan=str(vqgan), data="shapes:num_samples=32", output_dir=str(folder),
                                          text_encoder=minilm, max_text_length=16), show_progress=False)
    return vqgan, folder


def frozen_stage(tiny_config, cached_tokens, minilm, tmp_path, max_length=16) -> tuple[PriorStage, TrainingLoop]:
    vqgan, folder = cached_tokens
    config = tiny_config(tmp_path, vqgan, folder, "autoregressive", train_batch_size=8, max_train_steps=2)
    config.text = TextEncoderConfig(pretrained=minilm, max_length=max_length)
    config.prior.caption_dropout = 0.0
    stage = PriorStage(config)
    return stage, TrainingLoop(stage, config.training, config)


def test_cached_and_encoded_captions_give_the_same_loss(tiny_config, cached_tokens, minilm, tmp_path):
    stage, loop = frozen_stage(tiny_config, cached_tokens, minilm, tmp_path)
    assert stage.use_text_cache
    batch = next(loop.micro_batches(0))
    cached = TextContext(batch["text_hidden_states"].float(), batch["text_mask"])
    bundle = stage.ema_source
    encoded_loss = bundle(batch["codes"], batch["caption"]).loss
    cached_loss = bundle(batch["codes"], batch["caption"], text_context=cached).loss
    torch.testing.assert_close(cached_loss, encoded_loss, atol=2e-3, rtol=1e-3)  # float16 storage


def test_a_cached_step_runs_no_text_encoder(tiny_config, cached_tokens, minilm, tmp_path, monkeypatch):
    stage, loop = frozen_stage(tiny_config, cached_tokens, minilm, tmp_path)

    def no_forward(*args, **kwargs):
        raise AssertionError("the text encoder ran although its outputs are cached")

    monkeypatch.setattr(stage.ema_source.text.encoder, "forward", no_forward)
    loop.run()
    assert (tmp_path / "pipeline.json").is_file()


def test_a_cache_of_another_length_is_not_used(tiny_config, cached_tokens, minilm, tmp_path):
    stage, _ = frozen_stage(tiny_config, cached_tokens, minilm, tmp_path, max_length=12)
    assert not stage.use_text_cache
