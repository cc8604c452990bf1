"""The Tux Paint imagefolder builder of benchmarks/real_images.py, on a tiny fabricated stamps folder (the
Debian package is never needed here)."""

import json

import pytest
from PIL import Image

from benchmarks.tuxpaint import (
    build_tuxpaint_imagefolders,
    english_description,
    is_held_out,
    scan_stamps,
    square_on_white,
    write_imagefolders,
)
from tessera.pipelines.data import load_image_caption_data


def test_english_description_is_the_line_without_a_locale():
    text = "\ufeffA  red\tapple.\nde.utf8=Ein roter Apfel.\nen_GB.utf8=A red apple.\nca@valencia.utf8=Una poma.\n"
    assert english_description(text) == "A red apple."
    assert english_description("fr.utf8=Une pomme.\nA calculator.  6x7=42\n") == "A calculator. 6x7=42"
    assert english_description("de.utf8=Nur Deutsch.\n\n") is None
    assert english_description("") is None


def test_held_out_split_is_deterministic_and_about_the_fraction():
    names = [f"animals/birds/bird{i}" for i in range(2000)]
    held = [name for name in names if is_held_out(name)]
    assert held == [name for name in names if is_held_out(name)]
    assert 0.07 < len(held) / len(names) < 0.13
    assert not any(is_held_out(name, fraction=0.0) for name in names[:50])
    assert all(is_held_out(name, fraction=1.0) for name in names[:50])


def test_alpha_is_composited_on_white_and_padded_to_a_square():
    wide = Image.new("RGBA", (40, 20), (255, 0, 0, 255))
    wide.putpixel((0, 0), (0, 0, 0, 0))  # transparent corner
    square = square_on_white(wide, 8)
    assert square.mode == "RGB" and square.size == (8, 8)
    assert square.getpixel((4, 0)) == (255, 255, 255)  # padding above the wide stamp
    red = square.getpixel((4, 4))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def fabricated_stamps(root):
    folder = root / "animals" / "birds"
    folder.mkdir(parents=True)
    for index in range(6):
        Image.new("LA", (30 + index, 20), (100, 200)).save(folder / f"bird{index}.png")
        (folder / f"bird{index}.txt").write_text(f"A bird number {index}.\nde.utf8=Ein Vogel.\n", encoding="utf-8")
    Image.new("RGBA", (10, 10)).save(folder / "bird0_mirror.png")  # a mirrored variant: no row
    (folder / "drawing.svg").write_text("<svg/>")
    (folder / "drawing.txt").write_text("A drawing.\n")  # SVG only: left out
    (folder / "gift.txt").write_text("A gift.\n")  # no image at all
    Image.new("RGB", (10, 10)).save(folder / "german.png")
    (folder / "german.txt").write_text("de.utf8=Nur Deutsch.\n")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "broken.txt").write_text("A broken stamp.\n")
    return root


def test_scan_counts_what_it_leaves_out(tmp_path):
    scan = scan_stamps(fabricated_stamps(tmp_path / "stamps"))
    assert [stamp.name for stamp in scan.stamps] == ["animals/birds/bird0", "animals/birds/bird1",
                                                     "animals/birds/bird2", "animals/birds/bird3",
                                                     "animals/birds/bird4", "animals/birds/bird5",
                                                     "animals/birds/broken"]
    assert scan.stamps[2].caption == "A bird number 2."
    assert dict(scan.skipped) == {"svg_only": 1, "no_image": 1, "no_english_description": 1, "mirror_variant": 1}


def test_imagefolders_are_readable_by_the_data_layer(tmp_path):
    scan = scan_stamps(fabricated_stamps(tmp_path / "stamps"))
    info = write_imagefolders(scan, tmp_path / "out", resolution=16, heldout_fraction=0.5)
    assert info["skipped"]["undecodable"] == 1
    assert sum(info["rows"].values()) == 6
    rows = {}
    for split in ("train", "heldout"):
        records = [json.loads(line) for line in (tmp_path / "out" / split / "metadata.jsonl").read_text().splitlines()]
        rows[split] = records
        for record in records:
            with Image.open(tmp_path / "out" / split / record["file_name"]) as image:
                assert image.size == (16, 16) and image.mode == "RGB"
        if records:
            data = load_image_caption_data(str(tmp_path / "out" / split), resolution=16)
            assert len(data.dataset) == len(records)
            assert data.dataset[0]["caption"].startswith("A bird number")
    names = {record["file_name"] for split in rows for record in rows[split]}
    assert len(names) == 6 and all(name.startswith("images/animals__birds__bird") for name in names)
    # a second build reuses the finished folders (data_info.json marks them complete)
    assert build_tuxpaint_imagefolders(tmp_path / "out", tmp_path / "cache", tmp_path / "missing") == info


def test_no_stamps_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="no PNG stamps"):
        build_tuxpaint_imagefolders(tmp_path / "out", tmp_path / "cache", tmp_path / "empty")


def test_without_apt_the_download_is_a_clear_error(tmp_path, monkeypatch):
    import benchmarks.tuxpaint as tuxpaint

    monkeypatch.setattr(tuxpaint.shutil, "which", lambda name: None)
    with pytest.raises(tuxpaint.DataSourceError, match="--stamps_dir"):
        build_tuxpaint_imagefolders(tmp_path / "out", tmp_path / "cache")
    assert not (tmp_path / "out").exists()
