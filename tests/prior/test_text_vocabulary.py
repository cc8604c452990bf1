"""Growing the scratch BPE text tokenizer with the words of new captions (train.py finetune)."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models

from tessera.pipelines.shapes.dataset import shapes_dataset
from tessera.prior.text import TextConditioner, TextEncoderConfig
from tessera.prior.text_tokenizer import train_text_tokenizer
from tessera.prior.text_vocabulary import extend_bpe_tokenizer

TINY = TextEncoderConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=24,
                         vocab_size=400)


@pytest.fixture(scope="module")
def captions() -> dict[str, list[str]]:
    return {style: shapes_dataset(300, seed=0, caption_style=style)["caption"] for style in ("en", "fr")}


def test_new_words_become_single_tokens_and_old_text_is_unchanged(captions):
    tokenizer = train_text_tokenizer(captions["en"], vocab_size=400, max_length=24)
    backend = tokenizer.backend_tokenizer
    extension = extend_bpe_tokenizer(backend, captions["fr"], max_new_tokens=500)
    extended = extension.tokenizer
    assert extension.words and len(extension.pieces) == extended.get_vocab_size() - backend.get_vocab_size()
    for word in extension.words:
        assert len(extended.model.tokenize(word)) == 1 < len(backend.model.tokenize(word))
    for text in captions["en"][:100]:
        assert extended.encode(text).ids == backend.encode(text).ids
    french = captions["fr"][:50]
    assert sum(len(extended.encode(t).ids) for t in french) < 0.6 * sum(len(backend.encode(t).ids) for t in french)
    assert all(extended.decode(extended.encode(t).ids) == t for t in french)
    again = extend_bpe_tokenizer(backend, captions["fr"], max_new_tokens=500)
    assert again.tokenizer.to_str() == extended.to_str()  # depends only on the captions


def test_the_budget_bounds_the_new_tokens(captions):
    backend = train_text_tokenizer(captions["en"], vocab_size=400, max_length=24).backend_tokenizer
    extension = extend_bpe_tokenizer(backend, captions["fr"], max_new_tokens=6)
    assert 0 < len(extension.pieces) <= 6
    assert extend_bpe_tokenizer(backend, captions["en"], max_new_tokens=50).words == []  # nothing new to add


def test_only_bpe_tokenizers_grow(captions):
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="only a BPE"):
        extend_bpe_tokenizer(wordpiece, captions["fr"], 10)


def test_conditioner_grows_its_embeddings_from_the_pieces(captions):
    torch.manual_seed(0)
    text = TextConditioner.from_captions(captions["en"], TINY)
    old_rows = text.encoder.get_input_embeddings().weight.detach().clone()
    old_size = len(text.text_tokenizer)
    prefix = text.text_tokenizer("a", add_special_tokens=False)["input_ids"]
    old_pieces = text.text_tokenizer("a cercle", add_special_tokens=False)["input_ids"][len(prefix):]  # " cercle"
    words = text.extend_vocabulary(captions["fr"], max_new_tokens=500)
    assert "Ġcercle" in words
    new_id = text.text_tokenizer.convert_tokens_to_ids("Ġcercle")
    rows = text.encoder.get_input_embeddings().weight
    assert rows.shape[0] == len(text.text_tokenizer) > old_size
    assert torch.equal(rows[:old_size], old_rows)
    torch.testing.assert_close(rows[new_id], old_rows[old_pieces].mean(0))
    assert text(["un petit cercle rouge à gauche"]).hidden_states.shape[-1] == TINY.hidden_size
    assert text.text_tokenizer.backend_tokenizer.normalizer.normalize_str("Un CERCLE.") == "un cercle"  # kept


def test_a_frozen_text_side_cannot_grow(captions):
    frozen = TextConditioner.from_captions(captions["en"], TextEncoderConfig(**{**TINY.to_dict(), "trainable": False}))
    with pytest.raises(ValueError, match="frozen"):
        frozen.extend_vocabulary(captions["fr"], 10)
