"""Caption variation: phrasings say the same scene, held-out words and orders never reach training, the bank is
deterministic, and a frozen encoder's cached outputs equal running it."""

from __future__ import annotations

import random
import re

import pytest
import torch
import transformers

from tessera.pipelines.data.captions import typed_noise
from tessera.pipelines.shapes import SceneSpec, caption, parse_caption, shapes_dataset
from tessera.pipelines.shapes.phrasings import (
    ATTRIBUTES,
    HELD_OUT_LEAD_INS,
    HELD_OUT_PAIR,
    HELD_OUT_SINGLE,
    HELD_OUT_WORDS,
    TRAINING_LEAD_INS,
    TRAINING_WORDS,
    has_held_out_synonym,
    omittable,
    phrase,
)
from tessera.pipelines.shapes.scene import CONVERSE_RELATION
from tessera.pipelines.training.captions import (
    CaptionBank,
    ContextCache,
    check_caption_variation,
    variation_share,
    vary_caption,
)
from tessera.pipelines.training.prior_options import PriorDataOptions
from tessera.prior.text import TextConditioner, TextEncoderConfig

CAPTIONS = shapes_dataset(300, seed=5)["caption"]


def spaced(text: str) -> str:
    """``text``'s words in lower case, one space apart and around, so that ``f" {word} " in`` finds whole words."""
    return f" {' '.join(re.findall(r'[a-z-]+', text.lower()))} "


def held_out_words() -> set[str]:
    training = {word for table in vars(TRAINING_WORDS).values() for words in table.values() for word in words}
    held = {word for table in vars(HELD_OUT_WORDS).values() for words in table.values() for word in words}
    assert not held & training
    return held


@pytest.mark.parametrize("omission", [0.0, 0.5])
def test_training_variation_never_uses_held_out_words_orders_or_lead_ins(omission):
    held = held_out_words()
    bank = CaptionBank(CAPTIONS, "shapes", 8, seed=0, omission=omission)
    texts = [text.lower() for text in bank.captions()]
    assert len(texts) > 5 * len(set(CAPTIONS))
    for text in texts:
        assert not any(f" {word} " in spaced(text) for word in held), text
        assert not any(text.startswith(lead) for lead in HELD_OUT_LEAD_INS), text
    # the held-out sentence orders' own words (HELD_OUT_SINGLE, HELD_OUT_PAIR), after any training lead-in
    assert HELD_OUT_SINGLE == ("{obj} placed {pos}", "{pos} we see {obj}")
    assert HELD_OUT_PAIR == ("{obj1} with {obj0} {rel} it", "{obj1} and {obj0} {rel} it")
    lead_ins = [lead.split() for lead in TRAINING_LEAD_INS]
    for text in texts:
        words = re.findall(r"[a-z-]+", text)
        body = next((words[len(lead):] for lead in lead_ins if words[:len(lead)] == lead), words)
        assert not {"placed", "we", "with", "and"} & set(body), text


def test_held_out_words_share_no_word_piece_with_training_words(minilm):
    """A held-out synonym must be unseen to the frozen encoder too: no training word may contain one of its word
    pieces ("aquamarine" would bring "aqua"), only the structural words both kinds of phrase are built from."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm)

    def pieces(words) -> set[str]:
        return {piece for table in vars(words).values() for options in table.values() for word in options
                for piece in tokenizer.tokenize(word)}

    shared = pieces(TRAINING_WORDS) & pieces(HELD_OUT_WORDS)
    assert shared <= {"in", "on", "of", "the", "left", "right", "top", "side"}, shared


@pytest.mark.parametrize("family", ["held_out_lead_in", "held_out_order", "held_out_synonyms"])
def test_held_out_families_differ_from_the_template(family):
    rng = random.Random(0)
    specs = [SceneSpec.from_json(spec) for spec in shapes_dataset(50, seed=1)["spec"]]
    texts = [phrase(spec, rng, family=family) for spec in specs]
    assert all(text != caption(spec) for text, spec in zip(texts, specs))
    if family == "held_out_synonyms":
        assert all(any(f" {word} " in spaced(text) for word in held_out_words()) for text in texts)


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_held_out_synonyms_of_one_attribute(attribute):
    words = {name: {word for words in getattr(HELD_OUT_WORDS, name).values() for word in words} for name in ATTRIBUTES}
    specs = [SceneSpec.from_json(spec) for spec in shapes_dataset(80, seed=2)["spec"]]
    chosen = [spec for spec in specs if has_held_out_synonym(spec, attribute)]
    assert 0 < len(chosen) < len(specs) or attribute == "sizes"
    rng = random.Random(0)
    for spec in chosen:
        text = spaced(phrase(spec, rng, family="held_out_synonyms", synonym_attributes=(attribute,)))
        assert any(f" {word} " in text for word in words[attribute]), text
        others = set().union(*(words[name] for name in ATTRIBUTES if name != attribute))
        assert not any(f" {word} " in text for word in others), text
    with pytest.raises(ValueError, match="unknown attributes"):
        phrase(specs[0], rng, family="held_out_synonyms", synonym_attributes=("texture",))


def words_of(attribute: str) -> set[str]:
    """Every training word of ``attribute`` ("size", "color", "shape", "position", "relation")."""
    table = getattr(TRAINING_WORDS, f"{attribute}s")
    return {word for words in table.values() for word in words}


SPECS = [SceneSpec.from_json(spec) for spec in shapes_dataset(60, seed=3)["spec"]]


@pytest.mark.parametrize("attribute", ["size", "color", "shape", "position", "relation"])
def test_an_omitted_attribute_is_left_unsaid_and_the_rest_is_said(attribute):
    rng = random.Random(0)
    chosen = [spec for spec in SPECS if attribute in omittable(spec)]
    assert chosen
    for spec in chosen:
        text = spaced(phrase(spec, rng, omit=(attribute,)))
        assert not any(f" {word} " in text for word in words_of(attribute)), text
        for obj in spec.objects:
            for name in {"size", "color", "shape"} - {attribute}:
                value = getattr(obj, name)
                assert any(f" {word} " in text for word in getattr(TRAINING_WORDS, f"{name}s")[value]), text
        if attribute == "shape":
            assert " shape " in text or " object " in text, text


def test_omitting_what_a_scene_does_not_have_is_an_error():
    single = next(spec for spec in SPECS if len(spec.objects) == 1)
    pair = next(spec for spec in SPECS if len(spec.objects) == 2)
    with pytest.raises(ValueError, match="cannot omit .'relation'. from a 1-object scene"):
        phrase(single, random.Random(0), omit=("relation",))
    with pytest.raises(ValueError, match="cannot omit .'position'. from a 2-object scene"):
        phrase(pair, random.Random(0), omit=("position",))


def said(spec: SceneSpec, text: str) -> set[str]:
    """The attributes of ``spec`` that ``text`` states (with training words)."""
    text = spaced(text)
    stated = {name for name in ("size", "color", "shape")
              if all(any(f" {word} " in text for word in getattr(TRAINING_WORDS, f"{name}s")[getattr(obj, name)])
                     for obj in spec.objects)}
    if len(spec.objects) == 1:
        places = TRAINING_WORDS.positions[spec.position]
    else:  # either object may come first, with the relation flipped
        places = TRAINING_WORDS.relations[spec.relation] + TRAINING_WORDS.relations[CONVERSE_RELATION[spec.relation]]
    return stated | ({omittable(spec)[-1]} if any(f" {word} " in text for word in places) else set())


@pytest.mark.parametrize("omission", [0.0, 1.0])
def test_the_omission_share_leaves_one_attribute_out_of_that_share_of_phrasings(omission):
    bank = CaptionBank(CAPTIONS[:100], "shapes", 5, seed=0, omission=omission)
    for text, options in bank.variants.items():
        spec = parse_caption(text)
        assert said(spec, options[0]) == set(omittable(spec))  # the caption itself, whole
        for variant in options[1:]:
            assert len(said(spec, variant)) == len(omittable(spec)) - (omission == 1.0), variant


def test_the_omitted_attributes_can_be_limited():
    bank = CaptionBank(CAPTIONS[:100], "shapes", 5, seed=0, omission=1.0, omit=("position",))
    for text, options in bank.variants.items():
        spec = parse_caption(text)
        expected = {"size", "color", "shape"} | ({"relation"} if len(spec.objects) == 2 else set())
        assert all(said(spec, variant) == expected for variant in options[1:]), options


def test_caption_omission_needs_the_shapes_variation_and_a_share():
    check_caption_variation("shapes", 0.2)
    with pytest.raises(ValueError, match="needs caption variation 'shapes'"):
        PriorDataOptions(caption_variation="noise", caption_omission=0.2)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        check_caption_variation("shapes", 1.5)
    with pytest.raises(ValueError, match="unknown caption variation"):
        CaptionBank(CAPTIONS, "paraphrase", 4, seed=0)
    with pytest.raises(ValueError, match="cannot omit .'count'."):
        PriorDataOptions(caption_variation="shapes", caption_omission=0.2, caption_omit=("count",))


def test_the_bank_is_deterministic_and_keeps_the_caption():
    first, second = CaptionBank(CAPTIONS, "shapes", 4, seed=3), CaptionBank(CAPTIONS, "shapes", 4, seed=3)
    assert first.variants == second.variants
    assert all(options[0] == text for text, options in first.variants.items())
    assert CaptionBank(CAPTIONS, "none", 4, seed=3).captions() == list(dict.fromkeys(CAPTIONS))


def test_the_warmup_epochs_vary_a_growing_share_of_the_rows():
    assert [variation_share(epoch, 2) for epoch in range(4)] == [0.0, 0.5, 1.0, 1.0]
    assert variation_share(0, 0) == 1.0
    bank = CaptionBank(CAPTIONS, "shapes", 8, seed=0)
    def varied(share: float) -> float:
        picks = [bank.pick(text, random.Random(f"{share}:{row}"), share) for row, text in enumerate(CAPTIONS)]
        return sum(pick != text for pick, text in zip(picks, CAPTIONS)) / len(CAPTIONS)
    assert varied(0.0) == 0.0
    assert 0.3 < varied(0.5) < 0.6 and varied(1.0) > 0.75  # a variant may equal the caption (1 in 8)
    # share 1 draws exactly as the bank always did (no extra random draw)
    assert bank.pick(CAPTIONS[4], random.Random(9), 1.0) == bank.pick(CAPTIONS[4], random.Random(9))


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
