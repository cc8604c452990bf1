"""benchmarks.emoji_quality: the name ranking it judges recognisability by, and a run end to end on a tiny
emoji-shaped folder with a tiny pipeline (no download)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from benchmarks.emoji_quality import FAMILIES, evaluate_pipeline, family_prompts, name_ranks
from tessera.pipelines.data.captions import HELD_OUT_PROMPT_WORDS
from tests.pipelines.tiny_pipelines import tiny_pipelines


def test_a_name_ranks_by_its_nearest_image():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])
    names = ["apple", "cat", "cat", "pizza"]  # cat has two images (two art styles)
    images = torch.tensor([[0.9, 0.1], [0.6, 0.8], [-1.0, 0.1]])
    assert name_ranks(images, gallery, names, ["apple", "cat", "apple"]) == [0, 0, 2]


def write_split(folder, names):
    folder.mkdir(parents=True)
    rows = []
    for index, name in enumerate(names):
        Image.new("RGB", (8, 8), (40 * index % 255, 200, 90)).save(folder / f"{index}.png")
        rows.append(json.dumps({"file_name": f"{index}.png", "text": name, "keywords": [name.split()[0]]}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")


@pytest.fixture()
def emoji_data(tmp_path):
    write_split(tmp_path / "data" / "train", ["red apple", "red apple", "cat face", "pizza", "flag: Japan"])
    write_split(tmp_path / "data" / "test", ["hot beverage", "rocket"])
    return tmp_path / "data"


def test_held_out_families_never_use_training_phrasings_or_training_emoji(emoji_data):
    from benchmarks.emoji_quality import read_split

    train, test = read_split(emoji_data / "train"), read_split(emoji_data / "test")
    phrased = family_prompts("held_out_phrasings", train, test, 10, seed=0)
    assert all(any(word in prompt for word in HELD_OUT_PROMPT_WORDS) for prompt, _ in phrased)
    assert {name for _, name in family_prompts("held_out_emoji", train, test, 10, 0)} == {"hot beverage", "rocket"}
    assert family_prompts("training_names", train, test, 10, 0) == family_prompts("training_names", train, test, 10, 0)


def test_a_run_reports_every_family_and_the_floor(emoji_data, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    folder = tiny_pipelines()["masked"].save_pretrained(tmp_path / "pipeline")
    results = evaluate_pipeline(str(folder), emoji_data, num_prompts=3, output_dir=tmp_path / "out",
                                settings=[{}, {"guidance_scale": 1.0}])
    assert [run["options"] for run in results["runs"]] == [{}, {"guidance_scale": 1.0}]
    for run in results["runs"]:
        assert set(run["families"]) == set(FAMILIES) and run["num_names"] == 6
        for row in run["families"].values():
            assert 0 <= row["top1"] <= row["top5"] <= 1 and row["chance_top5"] == 5 / 6
        assert run["fd_samples_vs_test"]["num_generated"] == 2
        assert run["fd_seen_samples_vs_test"]["num_generated"] == run["fd_train_vs_test"]["num_generated"] == 2
        assert run["fd_train_vs_test"]["features"] == "efficientnet-lite0"
    assert json.loads((tmp_path / "out" / "emoji_quality.json").read_text())["runs"][0]["seed"] == 0


def test_the_command_prints_one_row_per_setting(emoji_data, tmp_path, capsys):
    pytest.importorskip("efficientnet_lite_pytorch")
    from benchmarks.emoji_quality import main

    folder = tiny_pipelines()["masked"].save_pretrained(tmp_path / "pipeline")
    assert main([str(folder), "--data", str(emoji_data), "--num_prompts", "2", "--runs", "defaults", "guidance_scale=3,num_candidates=1",
                 "--families", "training_names"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| {", "| defaults"))]
    assert len(table) == 2 and "'guidance_scale': 3" in table[1]


def test_a_setting_names_the_call_arguments():
    import argparse

    from benchmarks.emoji_quality import sampling_setting

    assert sampling_setting("defaults") == {}
    assert sampling_setting("guidance_scale=2.5,num_candidates=4") == {"guidance_scale": 2.5, "num_candidates": 4}
    assert sampling_setting("guidance_schedule=linear,choice_temperature=1") == {"guidance_schedule": "linear",
                                                                                 "choice_temperature": 1}
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
        sampling_setting("guidance=3")


def test_the_gallery_cache_is_reused_only_for_the_same_files(emoji_data, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    from benchmarks.emoji_quality import EmojiJudge

    first = EmojiJudge(emoji_data, cache_dir=tmp_path / "cache")
    cached = tmp_path / "cache" / "gallery-efficientnet-lite0.safetensors"
    stamp = cached.stat().st_mtime_ns
    again = EmojiJudge(emoji_data, cache_dir=tmp_path / "cache")
    assert cached.stat().st_mtime_ns == stamp and torch.equal(first.gallery, again.gallery)
    assert again.floor["fid"] == pytest.approx(first.floor["fid"])
    other = tmp_path / "other"  # another gallery: computed again, not read
    write_split(other / "train", ["red apple", "pizza", "cat face"])
    write_split(other / "test", ["rocket", "rocket ship"])
    changed = EmojiJudge(other, cache_dir=tmp_path / "cache")
    assert changed.num_names == 5 and len(changed.gallery) == 5


def test_training_drawings_leave_out_the_variants_of_another_emoji():
    rows = [{"text": "waving hand", "hexcode": "1F44B", "base": "1F44B"},
            {"text": "waving hand: dark skin tone", "hexcode": "1F44B-1F3FF", "base": "1F44B"},
            {"text": "man shrugging", "hexcode": "1F937-200D-2642-FE0F", "base": "1F937"},
            {"text": "red apple", "hexcode": "1F34E", "base": "1F34E"}]
    pairs = family_prompts("training_drawings", rows, [], 10, 0)
    assert sorted(name for _, name in pairs) == ["red apple", "waving hand"]
    assert all(prompt == name for prompt, name in pairs)
    assert len(family_prompts("training_drawings", [{"text": "cat"}], [], 10, 0)) == 1  # no hexcode: its own drawing
    variants = family_prompts("training_variants", rows, [], 10, 0)
    assert sorted(name for _, name in variants) == ["man shrugging", "waving hand: dark skin tone"]
