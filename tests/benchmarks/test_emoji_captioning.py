"""benchmarks.emoji_captioning: exact names and retrieval ranks on a tiny emoji-shaped folder."""

from __future__ import annotations

from benchmarks.emoji_captioning import evaluate_captioning, normalised
from tests.benchmarks.test_emoji_quality import write_split
from tests.pipelines.tiny_pipelines import tiny_pipeline_with_captioner


def test_names_compare_without_case_or_spacing():
    assert normalised("  Red   Apple ") == normalised("red apple")


def test_both_splits_get_exact_and_retrieval_figures(tmp_path):
    write_split(tmp_path / "data" / "train", ["red apple", "cat face", "pizza", "flag: Japan"])
    write_split(tmp_path / "data" / "test", ["hot beverage", "rocket", "rocket"])
    folder = tiny_pipeline_with_captioner().save_pretrained(tmp_path / "pipeline")
    results = evaluate_captioning(str(folder), tmp_path / "data", num_images=3, num_distractors=2)
    train, test = results["splits"]["train"], results["splits"]["test"]
    assert train["num_images"] == 3 and train["chance_top1"] == 1 / 3  # its own name and 2 others
    assert test["chance_top1"] == 1 / 2  # the test split has only 2 names
    for row in (train, test):
        assert 0 <= row["exact"] <= 1 and 0 <= row["retrieval_top1"] <= row["retrieval_top5"] <= 1
        assert row["examples"] and set(row["examples"][0]) == {"name", "caption"}
