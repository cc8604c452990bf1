"""tessera.pipelines.data: every source, every kind of bad input, preprocessing, DataLoader use."""

from __future__ import annotations

import importlib.util
import random
import time
import warnings

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image

from tessera.pipelines.data.dataset import (
    DataSourceError,
    collate_image_captions,
    load_image_caption_data,
    preprocess_image,
    to_rgb,
)

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")

R = 16  # resolution of every test; default min_size is R // 4 = 4
BAD_FOLDER_SKIPPED = {"unreadable": 2, "missing_file": 1, "empty_caption": 1, "missing_caption": 1,
                      "too_small": 1, "bad_metadata": 1, "no_metadata": 1}
BAD_FOLDER_CONVERTED = {"L->RGB": 1, "RGBA->RGB": 1, "I;16->RGB": 1, "P->RGB": 1, "CMYK->RGB": 1}
BAD_FOLDER_USABLE = {"good.png", "good.jpg", "gray.png", "rgba.png", "gray16.png", "palette.png", "cmyk.jpg"}
HAS_SHAPES = importlib.util.find_spec("tessera.pipelines.shapes") is not None


def _assert_pixels(pixels: torch.Tensor) -> None:
    assert pixels.shape == (3, R, R) and pixels.dtype == torch.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0


def _image_dataset(make_image, n: int = 4, **extra_columns) -> datasets.Dataset:
    """A Dataset with an Image feature: n gradients of different sizes, captions "caption i"."""
    columns = {"image": [make_image(20 + 4 * i, 18) for i in range(n)],
               "text": [f"caption {i}" for i in range(n)], **extra_columns}
    features = datasets.Features({"image": datasets.Image(), **{k: datasets.Value("string") for k in columns
                                                               if k != "image"}})
    return datasets.Dataset.from_dict(columns, features=features)


# ---------------------------------------------------------------------------------------------
# Imagefolder with every kind of bad input


@pytest.mark.parametrize("metadata_format", ["jsonl", "csv"])
def test_bad_imagefolder_report(bad_imagefolder, metadata_format):
    data = load_image_caption_data(str(bad_imagefolder(metadata_format)), resolution=R)
    report = data.report
    assert report.skipped == BAD_FOLDER_SKIPPED
    assert report.converted == BAD_FOLDER_CONVERTED
    assert (report.num_rows, report.num_usable, len(data.dataset)) == (15, 7, 7)
    assert report.num_rows == report.num_usable + sum(report.skipped.values())
    assert sorted(report.examples["unreadable"]) == ["corrupt.png", "truncated.jpg"]
    assert report.examples["missing_file"] == ["missing.png"]
    assert report.examples["too_small"] == ["tiny.png"]
    assert report.examples["no_metadata"] == ["unlisted.png"]
    assert report.examples["bad_metadata"][0].startswith(f"metadata.{metadata_format}:")
    assert "7 of 15 rows usable" in report.summary() and "truncated.jpg" in report.summary()
    assert report.to_dict()["skipped"] == BAD_FOLDER_SKIPPED


def test_bad_imagefolder_rows_are_rgb_tensors(bad_imagefolder):
    data = load_image_caption_data(str(bad_imagefolder()), resolution=R)
    rows = [data.dataset[i] for i in range(len(data.dataset))]
    assert {row["source_id"] for row in rows} == BAD_FOLDER_USABLE
    for row in rows:
        _assert_pixels(row["pixel_values"])
        assert row["caption"] == f"a picture called {row['source_id']}"
    by_id = {row["source_id"]: row["pixel_values"] for row in rows}
    assert by_id["gray.png"][0].equal(by_id["gray.png"][1])  # grey stays grey
    assert by_id["gray16.png"].max() > 0.9  # 16-bit scaled to 8-bit, not clipped to white everywhere
    assert by_id["gray16.png"].min() < -0.9


@pytest.mark.parametrize(("streaming", "num_workers"), [(False, 0), (False, 2), (True, 0), (True, 2)])
def test_dataloader_iterates_everything(bad_imagefolder, streaming, num_workers):
    data = load_image_caption_data(str(bad_imagefolder()), resolution=R, streaming=streaming, random_flip=True)
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=3, num_workers=num_workers,
                                         collate_fn=collate_image_captions)
    batches = list(loader)
    assert sorted(sid for batch in batches for sid in batch["source_id"]) == sorted(BAD_FOLDER_USABLE)
    assert batches[0]["pixel_values"].shape[1:] == (3, R, R)


def test_streaming_report_matches_table_report(bad_imagefolder):
    root = str(bad_imagefolder())
    table = load_image_caption_data(root, resolution=R)
    stream = load_image_caption_data(root, resolution=R, streaming=True)
    rows = list(stream.dataset)
    assert stream.report.to_dict() == table.report.to_dict()
    table_rows = {table.dataset[i]["source_id"]: table.dataset[i] for i in range(len(table.dataset))}
    for row in rows:
        assert row["pixel_values"].equal(table_rows[row["source_id"]]["pixel_values"])


def test_options_keep_small_images_and_empty_captions(bad_imagefolder):
    data = load_image_caption_data(str(bad_imagefolder()), resolution=R, min_size=0, allow_empty_captions=True)
    assert data.report.skipped == {"unreadable": 2, "missing_file": 1, "bad_metadata": 1, "no_metadata": 1}
    captions = {row["source_id"]: row["caption"] for row in (data.dataset[i] for i in range(len(data.dataset)))}
    assert captions["empty_caption.png"] == captions["no_text.png"] == ""
    assert "tiny.png" in captions


def test_max_samples_reads_first_rows(bad_imagefolder):
    data = load_image_caption_data(str(bad_imagefolder()), resolution=R, max_samples=4)
    assert data.report.num_rows == 4  # good.png, good.jpg, corrupt.png, truncated.jpg; no folder scan
    assert data.report.skipped == {"unreadable": 2}


def test_decompression_bomb_skipped_and_big_image_loaded(tmp_path, monkeypatch, make_image, imagefolder_writer):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 is "big but legal", 64x64 a bomb (> 2x)
    rows = [{"file_name": name, "text": name} for name in ("big.png", "big.jpg", "bomb.png")]
    files = {"big.png": make_image(40, 40), "big.jpg": make_image(40, 40), "bomb.png": make_image(64, 64)}
    root = imagefolder_writer(tmp_path / "folder", files, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        data = load_image_caption_data(str(root), resolution=R)
        rows = [data.dataset[i] for i in range(len(data.dataset))]
    assert data.report.skipped == {"too_large": 1} and data.report.examples["too_large"] == ["bomb.png"]
    assert [row["source_id"] for row in rows] == ["big.png", "big.jpg"]


def test_imagefolder_split_folders(tmp_path, make_image, imagefolder_writer):
    for split, n in (("train", 3), ("test", 2)):
        imagefolder_writer(tmp_path / "root" / split, {f"{i}.png": make_image(16, 16) for i in range(n)},
                           [{"file_name": f"{i}.png", "text": f"{split} {i}"} for i in range(n)])
    assert len(load_image_caption_data(str(tmp_path / "root"), resolution=R, split="test").dataset) == 2
    with pytest.raises(DataSourceError, match=r"no split 'validation'.*\['test', 'train'\]"):
        load_image_caption_data(str(tmp_path / "root"), resolution=R, split="validation")
    with pytest.raises(DataSourceError, match="all of it is the 'train' split"):
        load_image_caption_data(str(tmp_path / "root" / "train"), resolution=R, split="test")


def test_all_rows_bad_is_an_error(tmp_path, imagefolder_writer):
    root = imagefolder_writer(tmp_path / "folder", {"a.png": b"junk"}, [{"file_name": "a.png", "text": "a"}])
    with pytest.raises(DataSourceError, match="no usable rows"):
        load_image_caption_data(str(root), resolution=R)


# ---------------------------------------------------------------------------------------------
# Saved datasets, parquet, columns, hub, shapes


def test_saved_dataset_and_dataset_dict(tmp_path, make_image):
    dataset = _image_dataset(make_image)
    dataset.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict(train=dataset, test=dataset.select([1, 3])).save_to_disk(str(tmp_path / "saved_dict"))
    data = load_image_caption_data(str(tmp_path / "saved"), resolution=R)
    assert [data.dataset[i]["source_id"] for i in range(4)] == ["0", "1", "2", "3"]
    _assert_pixels(data.dataset[0]["pixel_values"])
    test = load_image_caption_data(str(tmp_path / "saved_dict"), resolution=R, split="test")
    assert [test.dataset[i]["caption"] for i in range(2)] == ["caption 1", "caption 3"]
    with pytest.raises(DataSourceError, match=r"no split 'valid'.*\['train', 'test'\]"):
        load_image_caption_data(str(tmp_path / "saved_dict"), resolution=R, split="valid")


@pytest.mark.parametrize("form", ["file", "glob", "folder"])
def test_parquet_source_skips_bad_rows(tmp_path, make_image, form):
    dataset = _image_dataset(make_image)
    bad = datasets.Dataset.from_dict({"image": [{"bytes": b"not an image", "path": None}, make_image(16, 16)],
                                      "text": ["corrupt", "  "]}, features=dataset.features)
    (tmp_path / "pq").mkdir()
    datasets.concatenate_datasets([dataset, bad]).to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    source = {"file": tmp_path / "pq" / "part-0.parquet", "glob": tmp_path / "pq" / "*.parquet",
              "folder": tmp_path / "pq"}[form]
    data = load_image_caption_data(str(source), resolution=R)
    assert data.report.skipped == {"unreadable": 1, "empty_caption": 1}
    assert data.report.examples == {"unreadable": ["4"], "empty_caption": ["5"]}
    assert len(data.dataset) == 4 and data.dataset[3]["caption"] == "caption 3"


def test_streaming_parquet_matches_table(tmp_path, make_image):
    path = tmp_path / "data.parquet"
    _image_dataset(make_image, n=6).to_parquet(str(path))
    options = {"resolution": R, "random_flip": True, "center_crop": False, "seed": 3}
    table = load_image_caption_data(str(path), **options)
    stream = load_image_caption_data(str(path), streaming=True, **options)
    assert isinstance(stream.dataset, datasets.IterableDataset)
    rows = list(stream.dataset)
    assert [row["source_id"] for row in rows] == [str(i) for i in range(6)]
    for i, row in enumerate(rows):
        assert row["pixel_values"].equal(table.dataset[i]["pixel_values"])
        assert row["caption"] == table.dataset[i]["caption"]
    assert (stream.report.num_rows, stream.report.num_usable) == (6, 6)


def test_streaming_ids_stay_unique_across_workers(tmp_path, make_image):
    (tmp_path / "pq").mkdir()
    for part in range(2):
        _image_dataset(make_image, n=3).to_parquet(str(tmp_path / "pq" / f"part-{part}.parquet"))
    data = load_image_caption_data(str(tmp_path / "pq"), resolution=R, streaming=True)
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=2, num_workers=2, collate_fn=collate_image_captions)
    ids = [source_id for batch in loader for source_id in batch["source_id"]]
    assert len(ids) == len(set(ids)) == 6
    assert set(ids) == {f"{i}@worker{k}" for i in range(3) for k in range(2)}


def test_configurable_columns(tmp_path, make_image):
    dataset = _image_dataset(make_image, description=["d0", "d1", "d2", "d3"]).rename_column("image", "picture")
    dataset = dataset.rename_column("text", "notes").add_column("score", [1, 2, 3, 4])
    dataset.save_to_disk(str(tmp_path / "saved"))
    source = str(tmp_path / "saved")
    data = load_image_caption_data(source, resolution=R, caption_column="description")
    assert data.dataset[2]["caption"] == "d2"  # the image column is found by its Image feature
    with pytest.raises(DataSourceError, match=r"caption column 'captions' not found.*\['picture', 'notes', 'description', 'score'\]"):
        load_image_caption_data(source, resolution=R, caption_column="captions")
    with pytest.raises(DataSourceError, match="no caption column found.*pass caption_column"):
        load_image_caption_data(source, resolution=R)
    with pytest.raises(DataSourceError, match="'score' .* holds .*not images"):
        load_image_caption_data(source, resolution=R, image_column="score", caption_column="description")
    with pytest.raises(DataSourceError, match="(?s)no usable rows.*4 missing_file"):  # strings are taken for paths
        load_image_caption_data(source, resolution=R, image_column="notes", caption_column="description")


def test_imagefolder_custom_metadata_keys(tmp_path, make_image, imagefolder_writer):
    root = imagefolder_writer(tmp_path / "folder", {"a.png": make_image(16, 16)}, [{"file_name": "a.png", "text": "a"}])
    (root / "metadata.jsonl").write_text('{"path": "a.png", "prompt": "hello"}\n')
    data = load_image_caption_data(str(root), resolution=R, image_column="path")
    assert data.dataset[0]["caption"] == "hello"
    with pytest.raises(DataSourceError, match=r"image column 'file' not found.*\['path', 'prompt'\]"):
        load_image_caption_data(str(root), resolution=R, image_column="file")


def test_hub_name_offline_fails_fast_and_clearly(monkeypatch):
    # datasets and huggingface_hub read HF_HUB_OFFLINE at import, so patch their constants too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(DataSourceError) as error:
        load_image_caption_data("someone/no-such-dataset", resolution=R)
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "someone/no-such-dataset" in message and "HF_HUB_OFFLINE" in message and "local" in message


@pytest.mark.parametrize("source", ["./no/such/folder", "missing.parquet", "nothing/*.parquet"])
def test_missing_local_source_is_not_sent_to_the_hub(source):
    with pytest.raises(DataSourceError, match="no such file|no parquet files"):
        load_image_caption_data(source, resolution=R)


@pytest.mark.skipif(not HAS_SHAPES, reason="tessera.pipelines.shapes is not written yet")
def test_shapes_source():
    data = load_image_caption_data("shapes:num_samples=6,seed=1,split=test", resolution=R)
    assert len(data.dataset) == 6 and data.report.num_usable == 6 and not data.report.skipped
    row = data.dataset[5]
    _assert_pixels(row["pixel_values"])
    assert row["source_id"] == "5" and row["caption"]
    stream = load_image_caption_data("shapes:num_samples=6,seed=1,split=test", resolution=R, streaming=True)
    assert [r["caption"] for r in stream.dataset] == [data.dataset[i]["caption"] for i in range(6)]
    assert len(load_image_caption_data("shapes:num_samples=50", resolution=R, max_samples=5).dataset) == 5
    with pytest.raises(DataSourceError, match="unknown shapes option 'colour'"):
        load_image_caption_data("shapes:colour=red", resolution=R)


# ---------------------------------------------------------------------------------------------
# Conversions and preprocessing


def _solid(mode: str, value, size=(4, 4)) -> Image.Image:
    return Image.new(mode, size, value)


@pytest.mark.parametrize(("image", "label", "rgb"), [
    (_solid("RGB", (1, 2, 3)), None, (1, 2, 3)),
    (_solid("L", 77), "L->RGB", (77, 77, 77)),
    (_solid("I;16", 32896), "I;16->RGB", (128, 128, 128)),  # 128 * 257: scaled, not clipped to 255
    (_solid("I;16", 65535), "I;16->RGB", (255, 255, 255)),
    (_solid("I", 32896), "I->RGB", (128, 128, 128)),
    (_solid("I", 200), "I->RGB", (200, 200, 200)),  # 8-bit data in a 32-bit image stays as it is
    (_solid("F", 0.5), "F->RGB", (128, 128, 128)),
    (_solid("RGBA", (0, 0, 0, 0)), "RGBA->RGB", (255, 255, 255)),  # transparent -> white
    (_solid("RGBA", (255, 0, 0, 255)), "RGBA->RGB", (255, 0, 0)),
    (_solid("LA", (0, 0)), "LA->RGB", (255, 255, 255)),
    (_solid("CMYK", (0, 0, 0, 0)), "CMYK->RGB", (255, 255, 255)),
], ids=lambda value: value.mode if isinstance(value, Image.Image) else None)
def test_to_rgb(image, label, rgb):
    converted, got_label = to_rgb(image)
    assert converted.mode == "RGB" and got_label == label
    assert converted.getpixel((0, 0)) == rgb


def test_to_rgb_palette_with_transparency():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 200, 10, 10])  # index 0 black (transparent), index 1 red
    image.putpixel((1, 1), 1)
    image.info["transparency"] = 0
    converted, label = to_rgb(image)
    assert label == "P->RGB"
    assert converted.getpixel((0, 0)) == (255, 255, 255) and converted.getpixel((1, 1)) == (200, 10, 10)


def test_center_crop_keeps_the_center():
    image = Image.new("RGB", (30, 10), (255, 0, 0))  # red | blue | green thirds
    image.paste((0, 0, 255), (10, 0, 20, 10))
    image.paste((0, 255, 0), (20, 0, 30, 10))
    pixels = preprocess_image(image, 8)  # (3, 8, 8)
    expected = torch.tensor([-1.0, -1.0, 1.0])[:, None, None].expand(3, 8, 8)
    assert torch.allclose(pixels, expected, atol=0.02)


@pytest.mark.parametrize("make_rng", [random.Random, np.random.default_rng, lambda s: torch.Generator().manual_seed(s)])
def test_random_flip_and_crop_reproducible(make_image, make_rng):
    image = make_image(24, 16)
    outputs = [preprocess_image(image, 8, center_crop=False, random_flip=True, rng=make_rng(seed))
               for seed in range(8)]
    again = [preprocess_image(image, 8, center_crop=False, random_flip=True, rng=make_rng(seed))
             for seed in range(8)]
    assert all(a.equal(b) for a, b in zip(outputs, again))
    unflipped = preprocess_image(image, 8, center_crop=True)
    flipped = unflipped.flip(-1)
    centred = [preprocess_image(image, 8, random_flip=True, rng=make_rng(seed)) for seed in range(8)]
    assert all(out.equal(unflipped) or out.equal(flipped) for out in centred)
    assert any(out.equal(flipped) for out in centred) and any(out.equal(unflipped) for out in centred)
    assert len({tuple(out.flatten().tolist()) for out in outputs}) > 2  # crop offsets vary too


def test_dataset_flips_follow_seed_and_epoch(tmp_path, make_image):
    path = tmp_path / "data.parquet"
    _image_dataset(make_image, n=8).to_parquet(str(path))

    def tensors(data):
        return torch.stack([data.dataset[i]["pixel_values"] for i in range(len(data.dataset))])

    first = load_image_caption_data(str(path), resolution=R, random_flip=True, seed=0)
    same = load_image_caption_data(str(path), resolution=R, random_flip=True, seed=0)
    plain = tensors(load_image_caption_data(str(path), resolution=R))
    assert tensors(first).equal(tensors(same))
    epoch0 = tensors(first)
    first.set_epoch(1)
    assert not tensors(first).equal(epoch0)
    for pixels, reference in zip(epoch0, plain):  # every row is the image or its mirror
        assert pixels.equal(reference) or pixels.equal(reference.flip(-1))


def test_collate_rejects_empty_batch():
    with pytest.raises(ValueError):
        collate_image_captions([])
