"""Shared fixtures. Every binary input is built at test time, in ``tmp_path``; nothing binary is committed."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image


def gradient_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A left-to-right red ramp over a top-to-bottom green ramp: asymmetric, so crops and flips show."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, np.full_like(x, 64)], axis=-1).astype(np.uint8)  # (H, W, 3)
    return Image.fromarray(rgb).convert(mode)


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_imagefolder(root: Path, files: dict[str, Image.Image | bytes], rows: list[dict | str],
                      metadata_format: str = "jsonl") -> Path:
    """Write an imagefolder: ``files`` (PIL images saved by extension, or raw bytes) and a metadata
    file of ``rows``: dicts with ``file_name`` and (unless the row has no caption) ``text``, or
    strings written as raw lines, to make unparseable rows."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (root / name).write_bytes(content)
        else:
            content.save(root / name)  # PNG keeps image.info["transparency"]
    with (root / f"metadata.{metadata_format}").open("w", newline="") as file:
        if metadata_format == "csv":
            writer = csv.writer(file)
            writer.writerow(["file_name", "text"])
        for row in rows:
            if isinstance(row, str):
                file.write(row + "\n")
            elif metadata_format == "csv":  # a short row is how csv says "no caption"
                writer.writerow([row["file_name"]] + ([row["text"]] if "text" in row else []))
            else:
                file.write(json.dumps(row) + "\n")
    return root


def bad_input_files() -> dict[str, Image.Image | bytes]:
    """Image files covering every kind of bad or unusual input (see ``build_bad_imagefolder``)."""
    rng = np.random.default_rng(0)
    palette = gradient_image(20, 20).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = 0
    cmyk = gradient_image(20, 20).convert("CMYK")
    return {
        "good.png": gradient_image(24, 20),
        "good.jpg": _jpeg_bytes(gradient_image(40, 24)),
        "corrupt.png": rng.bytes(300),  # random bytes under an image name
        "truncated.jpg": _jpeg_bytes(gradient_image(64, 64))[:-300],  # header intact, scan data cut
        "empty_caption.png": gradient_image(16, 16),
        "no_text.png": gradient_image(16, 16),
        "gray.png": gradient_image(20, 20, "L"),
        "rgba.png": gradient_image(20, 20, "RGBA"),
        "gray16.png": Image.fromarray((np.arange(400).reshape(20, 20) * 160).astype(np.uint16)),  # "I;16"
        "palette.png": palette,
        "cmyk.jpg": _jpeg_bytes(cmyk),
        "tiny.png": gradient_image(2, 2),
        "unlisted.png": gradient_image(16, 16),  # no metadata row names it
    }


def build_bad_imagefolder(root: Path, metadata_format: str = "jsonl") -> Path:
    """An imagefolder with 7 usable rows and one row for each way a row can go wrong.

    Expected with resolution 16 (min_size 4): 15 rows, 7 usable (good.png, good.jpg, and the 5
    converted: gray L, rgba RGBA, gray16 I;16, palette P, cmyk CMYK); skipped: unreadable 2
    (corrupt.png, truncated.jpg), missing_file 1, empty_caption 1, missing_caption 1,
    too_small 1 (tiny.png), bad_metadata 1 (one unparseable row), no_metadata 1 (unlisted.png).
    """
    files = bad_input_files()
    captions = {name: f"a picture called {name}" for name in files if name != "unlisted.png"}
    captions |= {"missing.png": "a file that is not there", "empty_caption.png": ""}
    rows: list[dict | str] = [{"file_name": name, "text": text} for name, text in captions.items()]
    rows[[row["file_name"] for row in rows].index("no_text.png")].pop("text")
    rows.insert(5, "{not json" if metadata_format == "jsonl" else ",a row without a file name")
    return write_imagefolder(root, files, rows, metadata_format)


@pytest.fixture
def make_image() -> Callable[..., Image.Image]:
    """``make_image(width, height, mode="RGB")``: an asymmetric gradient (``gradient_image``)."""
    return gradient_image


@pytest.fixture
def imagefolder_writer() -> Callable[..., Path]:
    """``write_imagefolder(root, files, rows, metadata_format="jsonl")``."""
    return write_imagefolder


@pytest.fixture
def bad_imagefolder(tmp_path: Path) -> Callable[[str], Path]:
    """Factory: ``bad_imagefolder("jsonl" | "csv")`` builds ``build_bad_imagefolder`` in tmp_path."""
    return lambda metadata_format="jsonl": build_bad_imagefolder(tmp_path / f"bad_{metadata_format}", metadata_format)


@pytest.fixture
def isolated_datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep ``datasets``' builder cache (parquet, Hub) under tmp_path instead of ~/.cache."""
    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run on one intra-op thread: on a busy 2-core machine two threads spin against each
    other and make tiny-model tests many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
