"""The bad-input matrix of issue 32 (text as typed, limits before work, clear errors): each case gives a clear error
that names the problem, or the right result, and every input file survives byte for byte.

The commands run in-process through ``main(argv)``; the pipelines are the tiny ones of ``tests/pipelines``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers

import train
from benchmarks import emoji, emoji_art
from tessera.pipelines import cli
from tessera.pipelines.editing import ImageToImagePipeline, InpaintPipeline
from tessera.pipelines.image_to_text import ImageToTextPipeline
from tessera.prior.prompt_text import prompt_text
from tessera.prior.text import TextConditioner, TextEncoderConfig, build_scratch_encoder
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.model import VQGAN
from tests.pipelines.tiny_pipelines import tiny_pipeline_with_captioner

SEED = 0


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_pipeline_with_captioner()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def folder(pipe, tmp_path_factory) -> Path:
    return pipe.save_pretrained(tmp_path_factory.mktemp("bad-inputs") / "pipe")


def picture(width: int = 8, height: int = 8) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` and holds no pixels: what a decompression bomb looks like
    before it is decoded (a 12000x12000 PNG of one colour is 445 KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def snapshot(paths: list[Path]) -> dict:
    """What each path is (bytes, a folder's entries, a link's target), to show that nothing was touched."""
    state = {}
    for path in paths:
        if path.is_symlink():
            state[path] = ("link", os.readlink(path))
        elif path.is_dir():
            state[path] = ("folder", sorted(p.name for p in path.iterdir()))
        else:
            state[path] = ("file", path.read_bytes())
    return state


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """``tessera ARGV`` in-process, without progress bars (stderr is the error alone): (exit code, stderr)."""
    code = cli.main([str(arg) for arg in argv] + ["--no_progress"])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *names: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for name in names:
        assert name in err, (name, err)


# --------------------------------------------------------------------------------------------------------------
# Build item 3: text as people type it (issue items 6, 15)


def test_item6_emoji_prompts_are_read_as_their_names(pipe):
    def codes(prompt):
        return pipe(prompt, generator=torch.Generator().manual_seed(SEED), output_type="pt").codes

    def context(prompt):
        return pipe.text([prompt]).hidden_states

    assert torch.equal(codes("🍎"), codes("red apple"))
    assert torch.equal(context("a 🐱 on the left"), context("a cat face on the left"))
    assert context("🍎").shape != context("🐱").shape or not torch.equal(context("🍎"), context("🐱"))
    assert prompt_text("👩🏽\u200d💻") == "woman personal computer: medium skin tone"
    assert prompt_text("🇫🇷 1️⃣") == "flag: fr keycap: 1"


def test_item6_caption_scores_read_emoji_as_their_names(pipe):
    captioning = ImageToTextPipeline.from_pipe(pipe)
    image = picture()
    assert torch.equal(captioning.score(image, "🍎"), captioning.score(image, "red apple"))
    assert not torch.equal(captioning.score(image, "🍎"), captioning.score(image, "🐱"))


def test_item6_text_the_tokenizer_maps_to_unknown_is_warned_about(caplog):
    vocabulary = {"[PAD]": 0, "[UNK]": 1, "red": 2, "apple": 3}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    config = TextEncoderConfig(hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16, max_length=8)
    text = TextConditioner(config, tokenizer, build_scratch_encoder(config, tokenizer))
    with caplog.at_level(logging.WARNING, logger="tessera.prior.text"):
        text(["red apple", "🍎"])  # the emoji is spelled out: known words
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="tessera.prior.text"):
        text(["red apple", "ℤ≠∅"])
    assert "1 of 2 prompts" in caplog.text and "'ℤ≠∅'" in caplog.text and "[UNK]" in caplog.text


def test_item15_invalid_unicode_is_refused_naming_the_prompt(pipe, folder, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"prompt '\\ud800 red apple' is not valid Unicode text"):
        pipe("\ud800 red apple")
    with pytest.raises(ValueError, match=r"caption '\\udcff' is not valid Unicode"):
        ImageToTextPipeline.from_pipe(pipe).score(picture(), "\udcff")
    # an invalid byte on the command line reaches Python as a lone surrogate (surrogateescape)
    out = tmp_path / "out.png"
    code, err = run_cli(capsys, ["generate", "red \udcff apple", "--pipeline", folder, "--device", "cpu", "-o", out])
    assert_one_line_error(code, err, "not valid Unicode", "red \\udcff apple")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["latin1", "folder", "missing"])
def test_item22_a_bad_prompts_file_is_named(kind, folder, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    if kind == "latin1":
        prompts.write_bytes("red apple\ncaf\u00e9 au lait\n".encode("latin-1"))
    elif kind == "folder":
        prompts.mkdir()
    before = snapshot([prompts]) if kind != "missing" else {}
    code, err = run_cli(capsys, ["generate", "--prompts_file", prompts, "--pipeline", folder, "-o", tmp_path / "o.png"])
    assert_one_line_error(code, err, f"--prompts_file {prompts}", *(["line 2", "UTF-8"] if kind == "latin1" else []))
    assert snapshot(list(before)) == before


# --------------------------------------------------------------------------------------------------------------
# Build item 4: limits before work (issue items 12, 13, 14, 10)


EDIT_COMMANDS = {  # argv after the command name, IMAGE and MASK filled in
    "inpaint": lambda image, mask: [image, mask, "a red circle"],
    "outpaint": lambda image, mask: [image, "a red circle", "--left", "4"],
    "edit": lambda image, mask: [image, "a red circle"],
    "denoise": lambda image, mask: [image],
}


@pytest.mark.parametrize("command", sorted(EDIT_COMMANDS))
def test_item12_every_command_that_reads_an_image_applies_the_pixel_limit(command, folder, tmp_path, capsys):
    huge, mask = tmp_path / "huge.png", tmp_path / "mask.png"
    huge.write_bytes(png_header_only(12000, 12000))
    mask.write_bytes(png_bytes(Image.new("L", (8, 8), 255)))
    before, out = snapshot([huge, mask]), tmp_path / "out.png"
    code, err = run_cli(capsys, [command, *EDIT_COMMANDS[command](huge, mask), "--pipeline", folder, "-o", out])
    assert_one_line_error(code, err, str(huge), "12000x12000", "max_image_pixels")
    assert snapshot(list(before)) == before and not out.exists()


@pytest.mark.parametrize("command", sorted(EDIT_COMMANDS))
def test_edit_output_that_cannot_be_written_fails_before_loading(command, folder, tmp_path, capsys, monkeypatch):
    image, mask, notes = tmp_path / "photo.png", tmp_path / "mask.png", tmp_path / "notes.txt"
    image.write_bytes(png_bytes(Image.new("RGB", (8, 8), "red")))
    mask.write_bytes(png_bytes(Image.new("L", (8, 8), 255)))
    notes.write_text("keep me")
    (tmp_path / "taken.png").mkdir()
    monkeypatch.setattr(cli.command, "load_pipeline", lambda *a, **k: pytest.fail("loaded the pipeline"))
    before = snapshot([image, mask, notes])
    argv = [command, *EDIT_COMMANDS[command](image, mask), "--pipeline", folder]
    for output, *expected in ((notes / "out.png", "notes.txt is a file"), (tmp_path / "taken.png", "is a folder"),
                              (image, "the input IMAGE", "overwrite")):
        assert_one_line_error(*run_cli(capsys, [*argv, "-o", output]), str(output), *expected)
    if command == "inpaint":
        assert_one_line_error(*run_cli(capsys, [*argv, "-o", mask]), "the input MASK")
    assert snapshot(list(before)) == before


def test_item12_the_python_pipelines_apply_the_pixel_limit(pipe):
    inpaint, edit = InpaintPipeline.from_pipe(pipe), ImageToImagePipeline.from_pipe(pipe)
    inpaint.max_image_pixels = edit.max_image_pixels = 64  # an 8x8 image passes, 9x8 is too large
    assert edit("a red circle", picture(), strength=0.0).images[0].size == (8, 8)
    for call in (lambda: edit("a red circle", picture(9, 8)), lambda: edit.denoise(picture(9, 8)),
                 lambda: inpaint("a red circle", picture(9, 8), np.ones((8, 9), bool)),
                 lambda: inpaint("a red circle", picture(), Image.new("L", (9, 8)))):
        with pytest.raises(ValueError, match="9x8 = 72 pixels is larger than max_image_pixels=64"):
            call()


def test_item13_outpaint_limits_the_canvas_before_allocating_it(pipe, folder, tmp_path, capsys):
    inpaint = InpaintPipeline.from_pipe(pipe)
    with pytest.raises(ValueError, match=r"outpainting canvas .* 20008x20008 = 400,320,064 pixels"):
        inpaint.outpaint("a red circle", picture(), left=20000, bottom=20000)
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes(picture()))
    before = snapshot([image])
    code, err = run_cli(capsys, ["outpaint", image, "a red circle", "--left", "20000", "--bottom", "20000",
                                 "--pipeline", folder, "--device", "cpu", "-o", tmp_path / "out.png"])
    assert_one_line_error(code, err, "outpainting canvas", "max_image_pixels")
    assert snapshot(list(before)) == before


@pytest.mark.parametrize("setting, value", [("guidance_scale", math.inf), ("guidance_scale", math.nan),
                                            ("temperature", math.nan), ("temperature", math.inf)])
def test_item14_non_finite_sampling_settings_are_refused(setting, value, pipe, folder, tmp_path, capsys):
    with pytest.raises(ValueError, match=f"{setting} must be a finite number"):
        pipe("a red circle", **{setting: value})
    with pytest.raises(ValueError, match=f"{setting} must be a finite number"):
        ImageToImagePipeline.from_pipe(pipe)("a red circle", picture(), **{setting: value})
    out = tmp_path / "out.png"
    code, err = run_cli(capsys, ["generate", "a red circle", f"--{setting}", str(value), "--pipeline", folder,
                                 "--device", "cpu", "-o", out])
    assert_one_line_error(code, err, setting, "finite")
    assert not out.exists()


def test_item10_a_16_bit_mask_is_scaled_not_clipped(pipe, tmp_path):
    inpaint = InpaintPipeline.from_pipe(pipe)
    faint, full = tmp_path / "faint.png", tmp_path / "full.png"
    Image.fromarray(np.full((8, 8), 300, np.uint16)).save(faint)  # 300/65535: keep everything
    left = np.zeros((8, 8), np.uint16)
    left[:, :4] = 65535
    Image.fromarray(left).save(full)
    with Image.open(faint) as opened:
        assert opened.mode.startswith("I;16")
    options = dict(generator=torch.Generator().manual_seed(SEED), output_type="pt")
    assert not inpaint("a red circle", picture(), faint, **options).regenerated.any()
    regenerated = inpaint("a red circle", picture(), str(full), **options).regenerated[0]  # (h, w)
    assert regenerated[:, :2].all() and not regenerated[:, 2:].any()
    assert not inpaint("a red circle", picture(), np.full((8, 8), 300, np.uint16), **options).regenerated.any()


# --------------------------------------------------------------------------------------------------------------
# Build item 5: clear errors (issue items 20, 22, 7)


def make_bad_image(kind: str, path: Path) -> list[Path]:
    """A bad input file of ``kind`` at ``path``; returns the paths that must survive untouched."""
    if kind == "truncated":
        path.write_bytes(png_bytes(picture(32, 32))[:-40])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_an_image":
        path.write_text("this is not an image\n")
    elif kind == "folder":
        path.mkdir()
    elif kind == "symlink_loop":
        other = path.with_name("other.png")
        path.symlink_to(other)
        other.symlink_to(path)
        return [path, other]
    elif kind != "missing":
        raise ValueError(kind)
    return [path] if kind != "missing" else []


BAD_IMAGES = ["truncated", "empty", "not_an_image", "folder", "symlink_loop", "missing"]


@pytest.mark.parametrize("kind", BAD_IMAGES)
@pytest.mark.parametrize("command", sorted(EDIT_COMMANDS))
def test_item20_editing_commands_name_a_bad_input_file(command, kind, folder, tmp_path, capsys):
    image, mask, out = tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "out.png"
    survivors = make_bad_image(kind, image)
    mask.write_bytes(png_bytes(Image.new("L", (32, 32), 255)))
    before = snapshot([*survivors, mask])
    code, err = run_cli(capsys, [command, *EDIT_COMMANDS[command](image, mask), "--pipeline", folder, "-o", out])
    assert_one_line_error(code, err, str(image))
    assert snapshot(list(before)) == before and not out.exists()


@pytest.mark.parametrize("kind", ["truncated", "folder"])
def test_item20_inpaint_names_a_bad_mask(kind, folder, tmp_path, capsys):
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    image.write_bytes(png_bytes(picture()))
    survivors = make_bad_image(kind, mask)
    before = snapshot([image, *survivors])
    code, err = run_cli(capsys, ["inpaint", image, mask, "a red circle", "--pipeline", folder, "-o", tmp_path / "o.png"])
    assert_one_line_error(code, err, "mask", str(mask))
    assert snapshot(list(before)) == before


@pytest.fixture
def image_sets(tmp_path) -> tuple[Path, Path]:
    generated, reference = tmp_path / "generated", tmp_path / "reference"
    for root, count in ((generated, 1), (reference, 2)):
        root.mkdir()
        for index in range(count):
            picture().save(root / f"{index:05d}.png")
    return generated, reference


def test_item22_evaluate_images_names_the_one_image_set(image_sets, capsys):
    generated, reference = image_sets
    before = snapshot([generated, reference])
    code, err = run_cli(capsys, ["evaluate-images", generated, "--reference", reference, "--no_progress"])
    assert_one_line_error(code, err, "the generated set", str(generated), "1 image", "at least 2")
    code, err = run_cli(capsys, ["evaluate-images", reference, "--reference", generated, "--no_progress"])
    assert_one_line_error(code, err, "the reference set", str(generated))
    assert snapshot(list(before)) == before


def test_item22_a_reference_stats_folder_is_refused_before_the_work(image_sets, tmp_path, capsys):
    _, reference = image_sets
    stats = tmp_path / "stats"
    stats.mkdir()
    code, err = run_cli(capsys, ["evaluate-images", reference, "--reference", reference, "--reference_stats", stats,
                                 "--no_progress"])
    assert_one_line_error(code, err, f"reference_stats {stats} is a folder")
    assert list(stats.iterdir()) == [] and not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("argv", [
    ["generate", "a red circle", "--device", "foo"],
    ["generate", "a red circle", "--device", "cuda:x"],
    ["caption", "in.png", "--device", "foo"],
    ["evaluate-images", "generated", "--reference", "reference", "--device", "foo"],
])
def test_item22_an_unknown_device_is_a_clear_error(argv, folder, image_sets, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    picture().save(tmp_path / "in.png")
    image_sets[0].joinpath("00001.png").write_bytes(png_bytes(picture()))
    extra = [] if argv[0] == "evaluate-images" else ["--pipeline", folder]
    extra += ["-o", tmp_path / "out.png"] if argv[0] == "generate" else []
    code, err = run_cli(capsys, [*argv, *extra])
    assert_one_line_error(code, err, "device", repr(argv[-1]))
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("command", [["generate", "a red circle", "-o", "out.png"], ["caption", "in.png"]])
def test_item22_a_seed_outside_64_bits_is_a_clear_error(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--seed", str(2 ** 64)])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "argument --seed" in err and "2**64 - 1" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["finetune", "captioner"])
def test_item22_a_missing_pipeline_names_the_shipped_ones(command, tmp_path):
    with pytest.raises(SystemExit, match=r"error: no pipeline at nope.*shipped pipeline's name: tessera-emoji, "
                                         r"tessera-shapes"):
        train.main([command, "--pipeline", "nope", "--data", "shapes:num_samples=4",
                    "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("isolated_datasets_cache")
def test_item22_an_export_resumed_with_another_shard_size_is_a_clear_error(tmp_path, capsys):
    torch.manual_seed(0)
    vqgan = VQGAN(vqgan_preset("tiny")).save_pretrained(tmp_path / "vqgan")
    argv = ["tokenize", "--vqgan", str(vqgan), "--data", "shapes:num_samples=4", "--output_dir", str(tmp_path / "t")]
    train.main([*argv, "--shard_size", "2"])
    sidecar = (tmp_path / "t" / "tokenized_dataset.json").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        train.main([*argv, "--shard_size", "4"])
    message = str(exited.value.code)
    assert message.startswith("error: ") and "shard_size" in message and "another --output_dir" in message
    assert (tmp_path / "t" / "tokenized_dataset.json").read_bytes() == sidecar


def emoji_sources(root: Path) -> Path:
    """An unpacked openmoji package with two named emoji (no Twemoji)."""
    (root / "data").mkdir(parents=True)
    (root / "color" / "svg").mkdir(parents=True)
    entries = [{"emoji": chr(int(code, 16)), "hexcode": code, "group": "food-drink", "subgroups": "food-fruit",
                "annotation": name, "tags": "", "openmoji_tags": "", "skintone_base_hexcode": ""}
               for code, name in (("1F34E", "red apple"), ("1F34F", "green apple"))]
    (root / "data" / "openmoji.json").write_text(json.dumps(entries), encoding="utf-8")
    for entry in entries:
        (root / "color" / "svg" / f"{entry['hexcode']}.svg").write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72"><circle cx="36" cy="36" r="20" fill="red"/>'
            "</svg>")
    return root


def test_item7_an_emoji_build_where_every_file_fails_is_an_error_and_is_retried(tmp_path, capsys, monkeypatch):
    sources, out = emoji_sources(tmp_path / "openmoji"), tmp_path / "emoji"
    argv = ["build", str(out), "--openmoji_dir", str(sources), "--styles", "openmoji", "--resolution", "8",
            "--oversample", "1"]
    working = emoji.find_rasteriser("auto")

    class Broken(emoji_art.Rasteriser):
        def __call__(self, svg, size):
            raise OSError("no cairo today")

    monkeypatch.setattr(emoji, "find_rasteriser", lambda choice: Broken(working.name, working.version))
    assert emoji.main(argv) == 1
    err = capsys.readouterr().err
    assert "all 2 SVGs failed" in err and "no cairo today" in err and "Traceback" not in err
    assert not (out / "build.json").exists()
    monkeypatch.setattr(emoji, "find_rasteriser", lambda choice: working)
    assert emoji.main(argv) == 0  # the re-run rasterises again instead of returning an empty build
    assert json.loads((out / "build.json").read_text())["counts"]["images"] in ({"train": 2, "test": 0},
                                                                                {"train": 1, "test": 1},
                                                                                {"train": 0, "test": 2})


def test_item22_an_emoji_build_into_a_folder_it_cannot_write_is_a_clear_error(tmp_path, capsys):
    sources, blocker = emoji_sources(tmp_path / "openmoji"), tmp_path / "a-file"
    blocker.write_text("not a folder")
    targets = [blocker / "emoji"]
    if os.geteuid() != 0:  # root writes into read-only folders
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o555)
        targets.append(read_only)
    for target in targets:
        assert emoji.main(["build", str(target), "--openmoji_dir", str(sources), "--styles", "openmoji"]) == 1
        err = capsys.readouterr().err
        assert f"cannot write the build into {target}" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"
