"""benchmarks/generation_quality.py on the shipped shapes pipeline: seeded samples written as an imagefolder,
evaluated against held-out shapes, the same figures on a second run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import generation_quality
from tessera.pipelines.shapes.dataset import write_imagefolder

PIPELINE = Path(__file__).resolve().parents[2] / "models" / "tessera-shapes"


@pytest.mark.skipif(not (PIPELINE / "pipeline.json").is_file(), reason="the shipped pipeline is not checked out")
def test_samples_are_seeded_and_evaluated(tmp_path, capsys):
    reference = tmp_path / "reference"
    write_imagefolder(str(reference), 10, seed=5, split="test")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a small red circle on the left\na large blue square\n\n")
    reports = []
    for run in ("first", "second"):
        assert generation_quality.main([str(PIPELINE), "--reference", str(reference), "--prompts", str(prompts),
                                        "--num_images_per_prompt", "5", "--seed", "3",
                                        "--output_dir", str(tmp_path / run)]) == 0
        reports.append(json.loads((tmp_path / run / "generation_quality.json").read_text()))
    capsys.readouterr()
    first, second = reports
    assert first["num_generated"] == 10 and first["num_prompts"] == 2 and first["features"] == "efficientnet-lite0"
    assert first["fid"] == second["fid"] and first["kid_mean"] == second["kid_mean"]
    rows = (tmp_path / "first" / "samples" / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(row)["text"] for row in rows] == ["a small red circle on the left"] * 5 + ["a large blue square"] * 5
