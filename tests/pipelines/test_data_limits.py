"""tessera.pipelines.data refuses what it must not read: paths that leave an imagefolder, images over the pixel limit."""

from __future__ import annotations

import os
import warnings

import pytest
from PIL import Image, ImageFile

from tessera.pipelines.data.dataset import DataSourceError, load_image_caption_data
from tessera.pipelines.data.images import DEFAULT_MAX_IMAGE_PIXELS, RowSkipped, open_image

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")

R = 16


def _captioned(*names: str) -> list[dict]:
    return [{"file_name": name, "text": f"caption of {name}"} for name in names]


# ---------------------------------------------------------------------------------------------
# Paths that leave the folder


@pytest.mark.parametrize("metadata_format", ["jsonl", "csv"])
def test_paths_leaving_the_imagefolder_are_skipped_unread(tmp_path, make_image, imagefolder_writer, metadata_format):
    outside = tmp_path / "outside.png"
    make_image(20, 20).save(outside)  # a readable image: only the path rule keeps it out
    folder = tmp_path / "data"
    names = ["good.png", "../outside.png", str(outside), "sub/../../outside.png", "link.png", "sub/inner.png",
             "inner_link.png"]
    imagefolder_writer(folder, {"good.png": make_image(20, 20)}, _captioned(*names), metadata_format)
    (folder / "sub").mkdir()
    make_image(20, 20).save(folder / "sub" / "inner.png")
    os.symlink(outside, folder / "link.png")  # a link to a file elsewhere
    os.symlink(folder / "good.png", folder / "inner_link.png")  # a link that stays inside is fine

    data = load_image_caption_data(str(folder), resolution=R)

    report = data.report
    assert report.skipped == {"outside_folder": 4}
    assert report.examples["outside_folder"] == ["../outside.png", str(outside), "sub/../../outside.png", "link.png"]
    assert report.num_usable == 3 and report.num_rows == 7
    assert sorted(data.dataset[i]["source_id"] for i in range(len(data.dataset))) == [
        "good.png", "inner_link.png", "sub/inner.png"]
    assert "outside_folder" in report.summary()


def test_only_paths_leaving_the_folder_is_an_error_naming_the_reason(tmp_path, make_image, imagefolder_writer):
    make_image(20, 20).save(tmp_path / "outside.png")
    folder = imagefolder_writer(tmp_path / "data", {}, _captioned("../outside.png"))
    with pytest.raises(DataSourceError, match="(?s)no usable rows.*1 outside_folder"):
        load_image_caption_data(str(folder), resolution=R)


def test_streaming_skips_paths_leaving_the_folder_too(tmp_path, make_image, imagefolder_writer):
    make_image(20, 20).save(tmp_path / "outside.png")
    folder = imagefolder_writer(tmp_path / "data", {"good.png": make_image(20, 20)},
                                _captioned("good.png", "../outside.png"))
    data = load_image_caption_data(str(folder), resolution=R, streaming=True)
    assert [row["source_id"] for row in data.dataset] == ["good.png"]
    assert data.report.skipped == {"outside_folder": 1}


# ---------------------------------------------------------------------------------------------
# The pixel limit, from the header


@pytest.fixture
def no_decoding(monkeypatch):
    """Any attempt to decode pixels of a file fails the test."""
    def refuse(self):
        raise AssertionError(f"decoded {self.size} pixels of {getattr(self, 'filename', '')}")
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def _huge_png(path, side: int = 12_000):
    """A 12,000 x 12,000 one-bit PNG: 144 megapixels in a few kilobytes (18 MB while being written)."""
    Image.new("1", (side, side), 1).save(path)
    return path


def test_huge_image_skipped_from_its_header_without_decoding(tmp_path, make_image, imagefolder_writer, no_decoding):
    folder = imagefolder_writer(tmp_path / "data", {}, _captioned("huge.png", "fine.png"))
    _huge_png(folder / "huge.png")
    make_image(20, 20).save(folder / "fine.png")
    with pytest.raises(RowSkipped) as skipped:
        open_image(str(folder / "huge.png"))
    assert skipped.value.reason == "too_large"
    assert "12000x12000" in str(skipped.value) and f"max_image_pixels={DEFAULT_MAX_IMAGE_PIXELS}" in str(skipped.value)
    with pytest.raises(DataSourceError, match="(?s)1 too_large: e.g. huge.png"):  # fine.png fails: load refused
        load_image_caption_data(str(folder), resolution=R)


def test_pixel_limit_is_an_option(tmp_path, make_image, imagefolder_writer):
    files = {"small.png": make_image(20, 20), "big.png": make_image(40, 40), "big.jpg": make_image(40, 40)}
    folder = imagefolder_writer(tmp_path / "data", files, _captioned(*files))
    data = load_image_caption_data(str(folder), resolution=R, max_image_pixels=20 * 20)
    assert data.report.skipped == {"too_large": 2}
    assert data.report.examples["too_large"] == ["big.png", "big.jpg"]
    assert load_image_caption_data(str(folder), resolution=R, max_image_pixels=None).report.num_usable == 3
    with pytest.raises(ValueError, match="max_image_pixels"):
        load_image_caption_data(str(folder), resolution=R, max_image_pixels=0)


def test_pillow_bomb_limits_give_a_skip_not_a_crash(tmp_path, monkeypatch, make_image, imagefolder_writer):
    """Without our limit, Pillow's own: its warning is silenced, its error is "too_large" with its message."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 warns in Pillow, 64x64 is a bomb (> 2x)
    files = {"warned.png": make_image(40, 40), "bomb.png": make_image(64, 64)}
    folder = imagefolder_writer(tmp_path / "data", files, _captioned(*files))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        data = load_image_caption_data(str(folder), resolution=R, max_image_pixels=None)
    assert data.report.skipped == {"too_large": 1} and data.report.examples["too_large"] == ["bomb.png"]
    with pytest.raises(RowSkipped, match="too_large: .*bomb.png.*decompression bomb"):
        open_image(str(folder / "bomb.png"), max_pixels=None)
