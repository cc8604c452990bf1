"""benchmarks.emoji_editing: face sources, the half mask, and a run end to end with a tiny pipeline."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from benchmarks.emoji_editing import top_half_mask
from tests.pipelines.tiny_pipelines import tiny_pipelines


def write_faces(folder, rows):
    folder.mkdir(parents=True)
    lines = []
    for index, (name, subgroup) in enumerate(rows):
        Image.new("RGB", (8, 8), (30 * index % 255, 180, 60)).save(folder / f"{index}.png")
        lines.append(json.dumps({"file_name": f"{index}.png", "text": name, "subgroup": subgroup}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_the_mask_covers_the_top_half():
    mask = top_half_mask(8)
    assert mask.getpixel((3, 3)) == 255 and mask.getpixel((3, 4)) == 0


def test_edits_are_judged_against_their_targets(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    from benchmarks.emoji_editing import evaluate_editing, face_sources
    from benchmarks.emoji_quality import EmojiJudge

    write_faces(tmp_path / "train", [("grinning face", "face-smiling"), ("smiling face with sunglasses", "face-glasses"),
                                     ("winking face", "face-affection"), ("red apple", "food-fruit")])
    write_faces(tmp_path / "test", [("rocket", "transport-air"), ("cat face", "cat-face")])
    judge = EmojiJudge(tmp_path)
    sources = face_sources(judge, 10, 0, {"smiling face with sunglasses"})
    assert {row["text"] for row in sources} == {"grinning face", "winking face"}  # faces only, never the target
    results, rows = evaluate_editing(tiny_pipelines()["masked"], judge, inpaint_prompt="smiling face with sunglasses",
                                     edit_prompt="winking face", strength=0.5, num_sources=2, seed=0)
    assert set(results["tasks"]) == {"inpaint", "image_to_image"} and len(rows) == 3
    inpainted, source = rows[1][0], rows[0][0]
    assert inpainted.crop((0, 6, 8, 8)).tobytes() == source.crop((0, 6, 8, 8)).tobytes()  # kept
    for row in results["tasks"].values():
        assert 0 <= row["target"]["top1"] <= row["target"]["top5"] <= 1
