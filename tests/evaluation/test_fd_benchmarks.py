"""The FD parts of the benchmarks on a few images: benchmarks/image_quality.py's sanity rows and speed record,
and benchmarks/reconstruction_fd.py with the shipped 32x32 VQ-GAN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import image_quality
from tests.evaluation.conftest import write_images

VQGAN_DIR = Path(__file__).resolve().parents[2] / "models" / "tessera-shapes" / "vqgan"


@pytest.mark.skipif(not (VQGAN_DIR / "config.json").is_file(), reason="the shipped VQ-GAN is not checked out")
def test_sanity_rows_and_speed_record(tmp_path, capsys):
    real = write_images(tmp_path / "real", 12, size=32)
    out = tmp_path / "result.json"
    assert image_quality.main(["--real", str(real), "--vqgan", str(VQGAN_DIR), "--speed_images", "8",
                               "--batch_size", "4", "--json", str(out)]) == 0
    capsys.readouterr()
    result = json.loads(out.read_text())
    fd = result["fd_efficientnet_lite0"]
    assert fd["images_per_half"] == [6, 6] and fd["size"] == [32, 32]
    assert fd["halves"] < fd["noise"] and fd["reconstructions_of_same_images"] >= 0
    assert result["speed"]["images"] == 8 and result["speed"]["images_per_second"] > 0


@pytest.mark.skipif(not (VQGAN_DIR / "config.json").is_file(), reason="the shipped VQ-GAN is not checked out")
def test_sanity_on_a_seeded_subset(tmp_path, capsys):
    real = write_images(tmp_path / "real", 12, size=32)
    out = tmp_path / "sanity.json"
    assert image_quality.main(["--real", str(real), "--max_images", "8", "--json", str(out)]) == 0
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["max_images"] == 8 and result["fd_efficientnet_lite0"]["images_per_half"] == [4, 4]
