"""Caption variation "prompts" for free-text captions, and the alternative captions it draws on: lead-ins and
tails (held-out ones never drawn), "X: Y" names reordered, alternatives appended, a deterministic bank; the
alternatives read from a list column, kept by the tokenized export, and a tiny quickstart on a captioned
imagefolder that is not the shapes."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train
from tessera.pipelines.data.captions import (
    HELD_OUT_PROMPT_TEMPLATES,
    HELD_OUT_PROMPT_WORDS,
    TRAINING_PROMPT_TEMPLATES,
    fill_template,
    prompt_variant,
    reordered,
)
from tessera.pipelines.data.sources import DataSourceError, open_source
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.tokens import ExportConfig, export_tokenized_dataset, load_tokenized_dataset
from tessera.pipelines.tokens.export import export_spec
from tessera.pipelines.training.captions import CaptionBank, merged_alternatives
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.model import VQGAN

ROWS = [  # CLDR-like names and keywords, as in the emoji data
    ("red apple", ["apple", "fruit", "red"]),
    ("grinning face", ["face", "grin", "happy"]),
    ("flag: Japan", ["flag"]),
    ("waving hand: dark skin tone", ["hand", "wave", "waving"]),
    ("red apple", ["apple", "crunchy"]),  # the same name in another art style, other keywords
    ("hot beverage", ["coffee", "drink", "tea"]),
]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z'-]+", text.lower()))


@pytest.fixture
def captioned_folder(tmp_path: Path) -> Path:
    """A tiny imagefolder (16x16 PNGs) whose metadata.jsonl has a ``keywords`` list column."""
    folder = tmp_path / "captioned"
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for index in range(24):
        name, keywords = ROWS[index % len(ROWS)]
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{index:02d}.png")
        lines.append(json.dumps({"file_name": f"{index:02d}.png", "text": name, "keywords": keywords,
                                 "style": "a" if index % 2 else "b"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_held_out_templates_have_words_no_training_template_has():
    training = set().union(*(words(template.replace("{a}", "").replace("{}", "")) for template in
                             TRAINING_PROMPT_TEMPLATES))
    for template, word in zip(HELD_OUT_PROMPT_TEMPLATES, HELD_OUT_PROMPT_WORDS, strict=True):
        assert word in words(template) and word not in training
    assert fill_template("an illustration of {a} {}", "apple") == "an illustration of an apple"


def test_prompt_bank_is_deterministic_never_held_out_and_uses_alternatives():
    captions = [name for name, _ in ROWS]
    alternatives = merged_alternatives(captions, [keywords for _, keywords in ROWS])
    assert alternatives["red apple"] == ["apple", "fruit", "red", "crunchy"]  # both rows' keywords, once each
    bank = CaptionBank(captions, "prompts", 32, seed=3, alternatives=alternatives)
    assert bank.variants == CaptionBank(captions, "prompts", 32, seed=3, alternatives=alternatives).variants
    assert bank.variants != CaptionBank(captions, "prompts", 32, seed=4, alternatives=alternatives).variants
    texts = bank.captions()
    assert len(texts) > 4 * len(set(captions))
    for text in texts:
        assert not words(text) & set(HELD_OUT_PROMPT_WORDS), text
    apple = [text.lower() for text in bank.variants["red apple"]]
    assert any("fruit" in text or "crunchy" in text for text in apple)  # alternatives appended
    assert not any(re.search(r"\bapple\b.*\bapple\b", text) for text in apple)  # "apple" adds nothing: left out
    assert all("red apple" in text.lower().replace("  ", " ").replace(",", "") for text in apple)  # name kept
    assert any(text.lower().startswith(("an emoji of", "draw", "show me", "an icon of")) for text in apple)
    assert any("japan flag" in text.lower() for text in bank.variants["flag: Japan"])  # "X: Y" reordered
    plain = CaptionBank(captions, "prompts", 32, seed=3)  # without alternatives: none of the keywords appear
    assert not any("fruit" in text.lower() for text in plain.variants["red apple"])


def test_reordered_and_held_out_variants():
    rng = random.Random(0)
    assert {reordered("flag: Japan", rng) for _ in range(20)} == {"flag Japan", "Japan flag"}
    assert reordered("red apple", rng) == "red apple"
    held = [prompt_variant("red apple", random.Random(k), templates=HELD_OUT_PROMPT_TEMPLATES) for k in range(40)]
    assert any(words(text) & set(HELD_OUT_PROMPT_WORDS) for text in held)  # evaluation prompts can be made


def test_alternatives_come_from_a_list_column(captioned_folder):
    raw = open_source(str(captioned_folder), split="train", image_column=None, caption_column=None,
                      streaming=False, resolution=8, max_rows=None, alternative_caption_column="keywords")
    rows = raw.layout.batch(raw.dataset[:3])
    assert [row.caption for row in rows] == ["red apple", "grinning face", "flag: Japan"]
    assert rows[0].alternatives == ("apple", "fruit", "red")
    plain = open_source(str(captioned_folder), split="train", image_column=None, caption_column=None,
                        streaming=False, resolution=8, max_rows=None)
    assert plain.layout.batch(plain.dataset[:1])[0].alternatives == ()
    with pytest.raises(DataSourceError, match="alternative caption column 'tags' not found"):
        open_source(str(captioned_folder), split="train", image_column=None, caption_column=None, streaming=False,
                    resolution=8, max_rows=None, alternative_caption_column="tags")


@pytest.mark.usefixtures("isolated_datasets_cache")
def test_export_keeps_alternative_captions(tmp_path, captioned_folder):
    torch.manual_seed(0)
    VQGAN(vqgan_preset("tiny")).save_pretrained(tmp_path / "vqgan")
    config = ExportConfig(vqgan=str(tmp_path / "vqgan"), data=str(captioned_folder), output_dir=str(tmp_path / "tok"),
                          alternative_caption_column="keywords", augmentations=2, shard_size=10)
    info = export_tokenized_dataset(config, show_progress=False).info
    assert "alternative_captions" in info["columns"] and info["source"]["alternative_caption_column"] == "keywords"
    rows = load_tokenized_dataset(tmp_path / "tok")
    assert len(rows) == 48 and rows[0]["alternative_captions"] == rows[1]["alternative_captions"] == \
        ["apple", "fruit", "red"]  # each view of an image keeps its alternatives
    assert rows[8]["caption"] == "red apple" and rows[8]["alternative_captions"] == ["apple", "crunchy"]
    # without the option the settings are those of exports made before it existed (same fingerprint)
    assert "alternative_caption_column" not in export_spec(ExportConfig(vqgan=str(tmp_path / "vqgan"),
                                                                        data="shapes", output_dir="x"))["source"]


@pytest.mark.e2e
@pytest.mark.usefixtures("isolated_datasets_cache")
def test_quickstart_on_a_captioned_imagefolder(tmp_path, captioned_folder, capsys):
    output = tmp_path / "run"
    train.main(["quickstart", "--output_dir", str(output), "--data", str(captioned_folder),
                "--tokenizer_preset", "tiny", "--prior_preset", "tiny", "--captioner_preset", "tiny",
                "--tokenizer_steps", "2", "--prior_steps", "2", "--captioner_steps", "2", "--text_encoder", "none",
                "--caption_variation", "prompts", "--alternative_caption_column", "keywords",
                "--caption_variants", "4"])
    assert 'try: tessera generate "red apple"' in capsys.readouterr().out.replace("'", '"')
    record = json.loads((output / "quickstart.json").read_text())
    assert record["recipe"]["prior"]["settings"]["data"]["caption_variation"] == "prompts"
    assert not any(key.startswith("val/evaluator") for key in record["final_metrics"])  # not the shapes
    assert "alternative_captions" in load_tokenized_dataset(output / "tokens").column_names
    run_config = json.loads((output / "prior" / "run_config.json").read_text())
    assert run_config["data"]["validation_prompts"] == []  # the prior samples the first distinct held-out captions
    assert run_config["data"]["caption_variation"] == "prompts"
    assert list((output / "prior" / "samples").glob("samples-*.png"))
    pipeline = TextToImagePipeline.from_pretrained(output / "pipeline")
    assert pipeline.captioner is not None
    assert pipeline("an emoji of a red apple, fruit", output_type="pt").images.shape == (1, 3, 8, 8)
    train.main(["quickstart", "--output_dir", str(output), "--data", str(captioned_folder),
                "--tokenizer_preset", "tiny", "--prior_preset", "tiny", "--captioner_preset", "tiny",
                "--tokenizer_steps", "2", "--prior_steps", "2", "--captioner_steps", "2", "--text_encoder", "none",
                "--caption_variation", "prompts", "--alternative_caption_column", "keywords",
                "--caption_variants", "4"])  # a finished run: every stage skipped, the export confirmed
    assert json.loads((output / "quickstart.json").read_text())["stage_seconds"].keys() >= {"tokenize", "prior"}
