"""The captioner model at tiny size: it overfits a handful of captions to exact match, scores the true caption
highest, maps its small vocabulary to the text tokenizer's ids and back, and saves and loads strictly."""

from __future__ import annotations

import pytest
import torch

from tessera.captioner.model import (
    EOS,
    UNK,
    Captioner,
    CaptionerConfig,
    caption_vocabulary,
    tokenize_captions,
)
from tessera.core.config import CheckpointMismatchError
from tessera.pipelines.shapes.world import VALIDATION_PROMPTS
from tessera.prior.text_tokenizer import train_text_tokenizer

CAPTIONS = list(VALIDATION_PROMPTS[:6])


@pytest.fixture(scope="module")
def text_tokenizer():
    return train_text_tokenizer(CAPTIONS * 4, vocab_size=300, max_length=32)


@pytest.fixture(scope="module")
def trained(text_tokenizer):
    """A tiny captioner trained to reproduce each caption from its own random 4x4 grid."""
    torch.manual_seed(0)
    config = CaptionerConfig(codebook_size=16, grid_size=4, hidden_size=32, num_layers=2, num_heads=2,
                             intermediate_size=64, text_token_ids=caption_vocabulary(text_tokenizer, CAPTIONS))
    captioner = Captioner(config)
    codes = torch.randint(0, 16, (len(CAPTIONS), 4, 4), generator=torch.Generator().manual_seed(1))
    batch = captioner.caption_batch(tokenize_captions(text_tokenizer, CAPTIONS))
    optimizer = torch.optim.AdamW(captioner.parameters(), lr=3e-3)
    for _ in range(300):
        loss = captioner(codes, batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return captioner.eval(), codes


def decode(text_tokenizer, captioner: Captioner, sequences: torch.Tensor) -> list[str]:
    ids = captioner.text_token_ids(sequences)
    return [text.strip() for text in text_tokenizer.batch_decode(ids, skip_special_tokens=True)]


def test_a_tiny_captioner_overfits_to_exact_match(text_tokenizer, trained):
    captioner, codes = trained
    assert decode(text_tokenizer, captioner, captioner.generate(codes)) == CAPTIONS
    beams = captioner.generate(codes, num_beams=3, num_return_sequences=2)  # (6 * 2, T), image-major
    assert decode(text_tokenizer, captioner, beams)[::2] == CAPTIONS


def test_the_true_caption_scores_highest(text_tokenizer, trained):
    captioner, codes = trained
    ids = tokenize_captions(text_tokenizer, CAPTIONS)
    scores = torch.stack([captioner.log_likelihood(codes, [ids[j]] * len(CAPTIONS)) for j in range(len(CAPTIONS))],
                         dim=1)  # (image, caption)
    assert torch.equal(scores.argmax(1), torch.arange(len(CAPTIONS)))
    assert (scores <= 0).all()


def test_score_is_the_mean_log_probability_per_token(text_tokenizer, trained):
    captioner, codes = trained
    ids = tokenize_captions(text_tokenizer, CAPTIONS[:1])
    batch = captioner.caption_batch(ids)
    prefix = captioner.prefix(codes[:1])  # (1, 17, D)
    total = 0.0
    with torch.no_grad():
        for t in range(batch.ids.shape[1]):  # token by token, as generation reads them
            inputs = torch.cat([prefix, captioner.language_model.get_input_embeddings()(batch.ids[:, :t])], dim=1)
            log_probs = torch.log_softmax(captioner.language_model(inputs_embeds=inputs).logits[0, -1], dim=-1)
            total += float(log_probs[batch.ids[0, t]])
    expected = total / batch.ids.shape[1]
    assert float(captioner.log_likelihood(codes[:1], ids)) == pytest.approx(expected, abs=1e-4)


def test_vocabulary_maps_unknown_words_and_truncates(text_tokenizer):
    config = CaptionerConfig(codebook_size=16, grid_size=4, hidden_size=32, num_layers=1, num_heads=2,
                             intermediate_size=64, max_caption_tokens=4,
                             text_token_ids=caption_vocabulary(text_tokenizer, CAPTIONS[:1]))
    captioner = Captioner(config)
    known = tokenize_captions(text_tokenizer, ["a small red"])[0]
    unknown = tokenize_captions(text_tokenizer, ["purple"])[0]
    batch = captioner.caption_batch([known + known, unknown])
    assert batch.ids.shape == (2, 4)  # 3 tokens + EOS at most
    assert batch.ids[0, -1] == EOS and batch.mask[0].all()
    assert UNK in batch.ids[1].tolist()
    assert captioner.text_token_ids(batch.ids[:1]) == [known[:3]]


def test_save_and_load_are_strict(tmp_path, trained):
    captioner, codes = trained
    captioner.save_pretrained(tmp_path / "captioner")
    loaded = Captioner.from_pretrained(tmp_path / "captioner")
    assert torch.equal(loaded.generate(codes), captioner.generate(codes))
    config = CaptionerConfig.load(tmp_path / "captioner" / "config.json")
    config.hidden_size = 16
    config.save(tmp_path / "captioner" / "config.json")
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        Captioner.from_pretrained(tmp_path / "captioner")


def test_input_noise_changes_what_is_read_not_what_is_predicted(text_tokenizer, trained):
    captioner, codes = trained
    batch = captioner.caption_batch(tokenize_captions(text_tokenizer, CAPTIONS))
    clean = captioner(codes, batch)
    assert torch.equal(captioner(codes, batch, input_noise=0.0).log_likelihood, clean.log_likelihood)
    torch.manual_seed(0)
    noisy = captioner(codes, batch, input_noise=1.0)
    assert noisy.loss > clean.loss  # every word read is random; the targets are the same captions


def test_image_guidance_decodes_with_every_search(text_tokenizer, trained):
    captioner, codes = trained
    assert torch.equal(captioner.generate(codes, guidance_scale=1.0), captioner.generate(codes))
    assert captioner.generate(codes, guidance_scale=2.0).shape[0] == len(CAPTIONS)
    assert captioner.generate(codes, guidance_scale=2.0, num_beams=2, num_return_sequences=2).shape[0] == 12
    assert captioner.generate(codes, guidance_scale=2.0, do_sample=True, top_k=3).shape[0] == len(CAPTIONS)
    batch = captioner.caption_batch(tokenize_captions(text_tokenizer, CAPTIONS))
    with_image = captioner(codes, batch).log_likelihood
    torch.manual_seed(0)
    without = captioner(codes, batch, image_dropout=1.0).log_likelihood  # every grid is the null image
    assert (with_image > without).all()  # the trained captioner reads its captions off the grids
