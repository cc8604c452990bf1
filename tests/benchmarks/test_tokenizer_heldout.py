"""benchmarks.tokenizer_heldout: tiny VQ-GANs side by side on a tiny held-out imagefolder (EfficientNet-Lite0
from its package; no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image


def write_heldout(folder, count):
    folder.mkdir(parents=True)
    rows = []
    for index in range(count):
        pixels = np.random.default_rng(index).integers(0, 256, (8, 8, 3), dtype=np.uint8)  # textured: has sharpness
        Image.fromarray(pixels).save(folder / f"{index}.png")
        rows.append(json.dumps({"file_name": f"{index}.png", "text": f"image {index}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")


def test_one_row_per_tokenizer_with_every_figure_and_a_grid(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    from benchmarks.tokenizer_heldout import COLUMNS, main
    from tessera.tokenizer.config import vqgan_preset
    from tessera.tokenizer.model import VQGAN

    write_heldout(tmp_path / "heldout", 3)
    folders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        folders.append(str(VQGAN(vqgan_preset("tiny")).save_pretrained(tmp_path / f"vqgan-{seed}")))
    out = tmp_path / "out"
    assert main([*folders, "--data", str(tmp_path / "heldout"), "--names", "a", "b", "--output_dir", str(out)]) == 0
    results = json.loads((out / "tokenizers.json").read_text())
    assert list(results) == ["a", "b"]
    for row in results.values():
        assert set(COLUMNS) <= set(row) and row["steps"] is None  # not a train.py run: no run_config.json
        assert row["reconstruction_fd"] >= 0 and 0 < row["codebook_usage"] <= 1 and row["sharpness"] > 0
    assert results["a"] != results["b"]  # other weights, other figures
    assert (out / "reconstructions.png").is_file()
    with pytest.raises(SystemExit):
        main([*folders, "--data", str(tmp_path / "heldout"), "--names", "only-one"])
