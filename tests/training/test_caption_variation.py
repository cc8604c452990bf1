"""Caption variation: phrasings say the same scene, held-out words and orders never reach training, the bank is
deterministic, and a frozen encoder's cached outputs equal running it."""

from __future__ import annotations

import random

import pytest
import torch

from pipelines.data.captions import typed_noise
from pipelines.shapes import SceneSpec, caption, shapes_dataset
from pipelines.shapes.phrasings import (
    HELD_OUT_LEAD_INS,
    HELD_OUT_PAIR,
    HELD_OUT_SINGLE,
    HELD_OUT_WORDS,
    TRAINING_WORDS,
    phrase,
)
from pipelines.training.captions import CaptionBank, ContextCache, vary_caption
from prior.text import TextConditioner, TextEncoderConfig

CAPTIONS = shapes_dataset(300, seed=5)["caption"]


def held_out_words() -> set[str]:
    training = {word for table in vars(TRAINING_WORDS).values() for words in table.values() for word in words}
    held = {word for table in vars(HELD_OUT_WORDS).values() for words in table.values() for word in words}
    assert not held & training
    return held


def test_training_variation_never_uses_held_out_words_orders_or_lead_ins():
    held = held_out_words()
    bank = CaptionBank(CAPTIONS, "shapes", 8, seed=0)
    texts = [text.lower() for text in bank.captions()]
    assert len(texts) > 5 * len(set(CAPTIONS))
    for text in texts:
        padded = f" {text} "
        assert not any(f" {word} " in padded for word in held), text
        assert not any(text.startswith(lead) for lead in HELD_OUT_LEAD_INS), text
    # the held-out sentence orders' own words (HELD_OUT_SINGLE, HELD_OUT_PAIR)
    assert HELD_OUT_SINGLE == ("{obj} placed {pos}", "{pos} we see {obj}") and all(t.endswith(" it") for t in HELD_OUT_PAIR)
    assert not any(" placed " in text or " we see " in text or text.endswith(" it") for text in texts)


@pytest.mark.parametrize("family", ["held_out_lead_in", "held_out_order", "held_out_synonyms"])
def test_held_out_families_differ_from_the_template(family):
    rng = random.Random(0)
    specs = [SceneSpec.from_json(spec) for spec in shapes_dataset(50, seed=1)["spec"]]
    texts = [phrase(spec, rng, family=family) for spec in specs]
    assert all(text != caption(spec) for text, spec in zip(texts, specs))
    if family == "held_out_synonyms":
        assert all(any(f" {word} " in f" {text} " for word in held_out_words()) for text in texts)


def test_the_bank_is_deterministic_and_keeps_the_caption():
    first, second = CaptionBank(CAPTIONS, "shapes", 4, seed=3), CaptionBank(CAPTIONS, "shapes", 4, seed=3)
    assert first.variants == second.variants
    assert all(options[0] == text for text, options in first.variants.items())
    assert CaptionBank(CAPTIONS, "none", 4, seed=3).captions() == list(dict.fromkeys(CAPTIONS))


def test_noise_keeps_the_words():
    rng = random.Random(1)
    for text in CAPTIONS[:50]:
        noisy = typed_noise(text, rng)
        assert noisy.lower().replace(",", "").replace(".", "").replace("!", "").split() == text.split()
    other = vary_caption("Une photo floue", random.Random(2), "shapes")  # not a shapes caption: noise only
    assert other.lower().strip(" .!").replace(",", "").split() == ["une", "photo", "floue"]


def test_cached_outputs_equal_running_the_frozen_encoder():
    torch.manual_seed(0)
    config = TextEncoderConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=16,
                               vocab_size=300, trainable=False)
    text = TextConditioner.from_captions(CAPTIONS, config).eval()
    cache = ContextCache(text, CAPTIONS[:20], batch_size=7)
    batch = [CAPTIONS[3], CAPTIONS[11], CAPTIONS[0]]
    expected, cached = text(batch), cache.context(batch, "cpu")
    assert torch.equal(cached.mask, expected.mask)
    torch.testing.assert_close(cached.hidden_states, expected.hidden_states, atol=2e-3, rtol=1e-3)  # float16
    with pytest.raises(ValueError, match="frozen"):
        ContextCache(TextConditioner.from_captions(CAPTIONS, TextEncoderConfig(hidden_size=16, num_layers=1,
                     num_heads=2, intermediate_size=32, max_length=16, vocab_size=300)), CAPTIONS[:2])
