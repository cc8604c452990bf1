"""Issue 32, the bad-input matrix (data lost, wrong results without an error, unclear errors): one case per
item, each asserting the error type, that the message names the problem, and that the files that must
survive are intact byte for byte. Tiny pipelines (``tests.pipelines.tiny_pipelines``); nothing trains."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import train
from tessera.core.config import CheckpointMismatchError
from tessera.core.folders import FolderInUseError
from tessera.pipelines.cli import main as tessera
from tessera.pipelines.data.dataset import load_image_caption_data
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.training import quickstart
from tessera.pipelines.training.recipe import load_recipe, with_assignments
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.model import VQGAN
from tests.conftest import gradient_image, write_imagefolder
from tests.evaluation.conftest import write_images
from tests.pipelines.tiny_pipelines import tiny_pipelines

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` by relative path: what must survive, byte for byte."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def tiny_pipe() -> TextToImagePipeline:
    """The masked tiny pipeline, its prior recording its VQ-GAN (as ``train.py prior`` writes it)."""
    pipe = tiny_pipelines()["masked"]
    pipe.prior.config.vqgan_sha256 = pipe.vqgan.codes_sha256()
    return pipe


@pytest.fixture
def folder(tiny_pipe, tmp_path) -> Path:
    """A saved tiny pipeline folder."""
    return tiny_pipe.save_pretrained(tmp_path / "pipe")


@pytest.fixture
def imagefolder(tmp_path) -> Path:
    """A user's imagefolder: two images and their captions."""
    return write_imagefolder(tmp_path / "mine", {"a.png": gradient_image(8, 8), "b.png": gradient_image(9, 9)},
                             [{"file_name": "a.png", "text": "my own caption"}, {"file_name": "b.png", "text": "b"}])


def generate(folder: Path, *args: str) -> int:
    return tessera(["generate", "a small red circle on the left", "--pipeline", str(folder), "--no_progress", *args])


# ---- 1, 11, 22(-o FILE/out.png): tessera generate writes only where asked -------------------------------------

def case_generate_into_an_imagefolder(folder, imagefolder, capsys, **_):
    before = snapshot(imagefolder)
    assert generate(folder, "-o", str(imagefolder)) == 2
    error = capsys.readouterr().err
    assert "imagefolder (metadata.jsonl)" in error and "--overwrite" in error
    assert snapshot(imagefolder) == before
    assert generate(folder, "-o", str(imagefolder), "--overwrite") == 0  # told to: it writes
    assert json.loads((imagefolder / "metadata.jsonl").read_text())["file_name"] == "00000.png"


def case_generate_with_an_image_suffix(folder, tmp_path, capsys, **_):
    assert generate(folder, "-o", str(tmp_path / "apple.jpg")) == 0
    assert (tmp_path / "apple.jpg").is_file() and (tmp_path / "apple.jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG
    assert generate(folder, "-o", str(tmp_path / "two.jpg"), "--num_images_per_prompt", "2") == 2
    assert "2 images do not fit in one file" in capsys.readouterr().err and not (tmp_path / "two.jpg").exists()


def case_generate_below_a_file_fails_before_loading(folder, tmp_path, capsys, monkeypatch, **_):
    (tmp_path / "notes.txt").write_text("keep me")
    monkeypatch.setattr(TextToImagePipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded the pipeline"))
    assert generate(folder, "-o", str(tmp_path / "notes.txt" / "out.png")) == 2
    assert "notes.txt is a file" in capsys.readouterr().err and (tmp_path / "notes.txt").read_text() == "keep me"


# ---- 2, 16, 17, 18: train.py finetune -------------------------------------------------------------------------

def finetune(*args: str) -> None:
    train.main(["finetune", *args, "--max_train_steps", "1", "--report_to", "none"])


def case_finetune_into_another_pipeline(folder, tmp_path, tiny_pipe, **_):
    other = tiny_pipe.save_pretrained(tmp_path / "other")
    before = snapshot(other)
    with pytest.raises(SystemExit, match=r"saved pipeline \(pipeline.json\).*--overwrite"):
        finetune("--pipeline", str(folder), "--data", "shapes:num_samples=8", "--output_dir", str(other))
    assert snapshot(other) == before


def case_finetune_shipped_name_and_a_local_typo(tmp_path, monkeypatch, **_):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit, match="data/nope: no such file") as error:  # not a Hub request
        finetune("--pipeline", "tessera-shapes", "--data", "data/nope", "--output_dir", "ft")
    assert "tessera-shapes/pipeline.json" not in str(error.value)  # the shipped name was resolved
    assert not (tmp_path / "ft").exists()


def case_finetune_missing_replay_folder(folder, tmp_path, **_):
    config = json.loads((folder / "pipeline.json").read_text())
    (folder / "pipeline.json").write_text(json.dumps({**config, "training_data": "data/emoji-32/train"}))
    with pytest.raises(SystemExit, match=r"data/emoji-32/train.*--replay_data.*--replay_fraction 0"):
        finetune("--pipeline", str(folder), "--data", "shapes:num_samples=8", "--output_dir", str(tmp_path / "ft"))
    assert not (tmp_path / "ft").exists()  # refused before any export


def case_vqgan_training_into_saved_weights(tmp_path, capsys, **_):
    weights = VQGAN(vqgan_preset("tiny")).save_pretrained(tmp_path / "converted")  # e.g. a converted tokenizer
    before = snapshot(weights)
    with pytest.raises(SystemExit, match=r"saved model weights \(model.safetensors\).*--overwrite"):
        train.main(["vqgan", "--preset", "tiny", "--output_dir", str(weights), "--max_train_steps", "1",
                    "--report_to", "none"])
    assert snapshot(weights) == before  # refused before any training


def case_tokenize_into_an_imagefolder(tiny_pipe, imagefolder, tmp_path, **_):
    vqgan = tiny_pipe.vqgan.save_pretrained(tmp_path / "vqgan")
    before = snapshot(imagefolder)
    with pytest.raises(SystemExit, match=r"imagefolder \(metadata.jsonl\).*--overwrite"):
        train.main(["tokenize", "--vqgan", str(vqgan), "--data", "shapes:num_samples=4", "--output_dir",
                    str(imagefolder)])
    assert snapshot(imagefolder) == before  # refused before any shard


def refuse_training(monkeypatch) -> None:
    """A quickstart that was not refused fails at once instead of training."""
    for stage in ("train_tokenizer", "export_tokenized_dataset", "train_prior"):
        monkeypatch.setattr(quickstart, stage, lambda *a, **k: pytest.fail("the quickstart ran a stage"))


def case_quickstart_over_another_recipes_run(tmp_path, monkeypatch, **_):
    refuse_training(monkeypatch)
    recipe = load_recipe(train.DEFAULT_RECIPE)
    run = tmp_path / "run"
    run.mkdir()
    recipe.save(run / "recipe.json")
    before = snapshot(run)
    with pytest.raises(FolderInUseError, match=r"another recipe.*seed: 0 -> 1.*--recipe"):
        quickstart.run_quickstart(with_assignments(recipe, {"seed": 1}), run)
    assert snapshot(run) == before
    older = json.loads((run / "recipe.json").read_text())
    del older["save_dtype"]  # written before a field existed: the same recipe, at that field's default
    (run / "recipe.json").write_text(json.dumps(older))
    with pytest.raises(pytest.fail.Exception, match="ran a stage"):  # not refused: it continues that run
        quickstart.run_quickstart(recipe, run)


def case_quickstart_into_a_pipeline(folder, monkeypatch, **_):
    refuse_training(monkeypatch)
    before = snapshot(folder)
    with pytest.raises(FolderInUseError, match=r"saved pipeline \(pipeline.json\)"):
        quickstart.run_quickstart(load_recipe(train.DEFAULT_RECIPE), folder)
    assert snapshot(folder) == before


# ---- 3, 8: save_pretrained is atomic and refuses other folders; files get the umask's permissions ---------------

def case_save_fails_half_way(folder, tiny_pipe, monkeypatch, **_):
    before = snapshot(folder)
    other = TextToImagePipeline.from_pipe(tiny_pipe, prior=tiny_pipelines()["masked"].prior)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(other.text, "save_pretrained", full_disk)  # after vqgan/ and prior/ were written
    with pytest.raises(OSError, match="intact"):
        other.save_pretrained(folder)
    assert snapshot(folder) == before and not list(folder.parent.glob(".pipe.saving-*"))
    TextToImagePipeline.from_pretrained(folder)  # the old pipeline still loads


def case_save_fails_while_swapping(folder, tiny_pipe, monkeypatch, **_):
    before = snapshot(folder)
    replace, moved_in = os.replace, []

    def failing_replace(source, target):
        if Path(target).parent == folder and not Path(target).name.startswith("."):  # a new entry moving in
            moved_in.append(target)
            if len(moved_in) == 3:  # every old entry set aside, two new ones in place; then the undo's moves
                raise PermissionError(13, "Permission denied", str(target))
        replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(PermissionError, match="holds what it held before"):
        tiny_pipe.save_pretrained(folder)
    monkeypatch.undo()
    assert len(moved_in) > 3  # the old entries were moved back
    assert snapshot(folder) == before
    TextToImagePipeline.from_pretrained(folder)


def case_save_over_an_imagefolder(tiny_pipe, imagefolder, **_):
    before = snapshot(imagefolder)
    with pytest.raises(FolderInUseError, match=r"imagefolder \(metadata.jsonl\).*overwrite=True"):
        tiny_pipe.save_pretrained(imagefolder)
    assert snapshot(imagefolder) == before
    tiny_pipe.save_pretrained(imagefolder, overwrite=True)
    assert snapshot(imagefolder)["metadata.jsonl"] == before["metadata.jsonl"]  # other files are left alone


def case_saved_files_are_readable_by_others(folder, tmp_path, **_):
    assert generate(folder, "-o", str(tmp_path / "samples")) == 0
    written = [*folder.rglob("*"), *(tmp_path / "samples").iterdir()]
    umask = os.umask(0)
    os.umask(umask)
    expected = {False: 0o666 & ~umask, True: 0o777 & ~umask}  # by is_dir: not the private 0600 of a temp file
    modes = {str(path): (stat.S_IMODE(path.stat().st_mode), expected[path.is_dir()]) for path in written}
    assert {path: oct(mode) for path, (mode, want) in modes.items() if mode != want} == {}


# ---- 4: statistics files are keyed by the images they summarise ---------------------------------------------------

def case_statistics_of_another_reference(tmp_path, capsys, **_):
    generated, first, second = (write_images(tmp_path / name, 4, seed=seed) for seed, name in enumerate("GRS"))
    stats = tmp_path / "stats.safetensors"
    small = ["--kid_subset_size", "2", "--kid_subsets", "2", "--is_splits", "2", "--no_progress"]
    assert tessera(["evaluate-images", str(generated), "--reference", str(first), "--reference_stats", str(stats),
                    *small]) == 0
    before = stats.read_bytes()
    assert tessera(["evaluate-images", str(generated), "--reference", str(second), "--reference_stats", str(stats),
                    *small]) == 2
    error = capsys.readouterr().err
    assert "summarises other images" in error and str(second) in error and stats.read_bytes() == before


# ---- 5, 21: damaged components are errors naming the file ---------------------------------------------------------

def case_missing_tokenizer_json(folder, **_):
    (folder / "text_tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"text_tokenizer/tokenizer.json is missing"):
        TextToImagePipeline.from_pretrained(folder)


def case_truncated_tokenizer_json(folder, **_):
    path = folder / "text_tokenizer" / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointMismatchError, match=r"text_tokenizer/tokenizer.json \(the text tokenizer\)"):
        TextToImagePipeline.from_pretrained(folder)


def case_empty_vqgan_config(folder, capsys, **_):
    (folder / "vqgan" / "config.json").write_bytes(b"")
    assert generate(folder, "-o", str(folder.parent / "out.png")) == 2
    assert "vqgan/config.json is not valid JSON" in capsys.readouterr().err


def case_invalid_sampling_in_pipeline_json(folder, **_):
    config = json.loads((folder / "pipeline.json").read_text())
    config["sampling"]["num_steps"] = 0
    (folder / "pipeline.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match=r"pipeline.json: the saved sampling settings.*num_steps"):
        TextToImagePipeline.from_pretrained(folder)


# ---- 9: a prior is tied to the VQ-GAN it was trained with -----------------------------------------------------------

def case_another_vqgan_of_the_same_size(folder, tiny_pipe, capsys, **_):
    torch.manual_seed(1)
    other = VQGAN(vqgan_preset("tiny")).eval()  # the same codebook size and grid
    with pytest.raises(CheckpointMismatchError, match="another VQ-GAN.*allow_vqgan_mismatch"):
        TextToImagePipeline.from_pipe(tiny_pipe, vqgan=other)
    TextToImagePipeline.from_pipe(tiny_pipe, vqgan=other, allow_vqgan_mismatch=True)  # the override
    other.save_pretrained(folder / "vqgan")
    assert generate(folder, "-o", str(folder.parent / "out.png")) == 2
    assert "another VQ-GAN" in capsys.readouterr().err
    assert generate(folder, "-o", str(folder.parent / "out.png"), "--allow_vqgan_mismatch") == 0
    half = tiny_pipe.save_pretrained(folder.parent / "half", dtype=torch.float16)  # a half copy is the same VQ-GAN
    TextToImagePipeline.from_pretrained(half)


def case_folder_without_the_record_still_loads(folder, **_):
    config = json.loads((folder / "prior" / "config.json").read_text())
    (folder / "prior" / "config.json").write_text(json.dumps({**config, "vqgan_sha256": None}))
    TextToImagePipeline.from_pretrained(folder)


# ---- 19: one non-UTF-8 byte in metadata.jsonl ------------------------------------------------------------------------

def case_latin1_byte_in_metadata(imagefolder, **_):
    lines = (imagefolder / "metadata.jsonl").read_bytes().splitlines()
    lines[1] = lines[1].replace(b'"b"', b'"caf\xe9"')  # Latin-1 e-acute
    (imagefolder / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    data = load_image_caption_data(str(imagefolder), resolution=8, min_size=4)
    assert data.report.num_usable == 1 and data.report.skipped["bad_metadata"] == 1  # b.png is then unlisted
    assert data.report.examples["bad_metadata"] == ["metadata.jsonl:2"]  # the file and line


CASES: dict[str, Callable] = {name.removeprefix("case_"): case for name, case in dict(globals()).items()
                              if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, request, tmp_path, capsys, monkeypatch):
    fixtures = {"tmp_path": tmp_path, "capsys": capsys, "monkeypatch": monkeypatch}
    wanted = CASES[name].__code__.co_varnames[:CASES[name].__code__.co_argcount]
    fixtures |= {key: request.getfixturevalue(key) for key in wanted if key not in fixtures}
    CASES[name](**fixtures)
