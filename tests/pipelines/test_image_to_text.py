"""ImageToTextPipeline and reranking at tiny size: inputs of every kind, clear errors for bad ones, the folder
format with and without a captioner, and num_candidates keeping the candidate the captioner scores best."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.captioner.model import Captioner, CaptionerConfig, tokenize_captions
from tessera.pipelines import cli
from tessera.pipelines.image_to_text import ImageToTextPipeline
from tessera.pipelines.text_to_image import TextToImagePipeline
from tests.pipelines.tiny_pipelines import PROMPTS, tiny_pipeline_with_captioner


@pytest.fixture(scope="module")
def pipe() -> TextToImagePipeline:
    return tiny_pipeline_with_captioner()


@pytest.fixture(scope="module")
def folder(pipe, tmp_path_factory):
    return pipe.save_pretrained(tmp_path_factory.mktemp("pipeline") / "tiny")


def test_images_of_every_kind_give_one_caption_each(pipe, tmp_path):
    captioning = ImageToTextPipeline.from_pipe(pipe)
    path = tmp_path / "scene.png"
    Image.new("RGBA", (20, 12), (255, 0, 0, 128)).save(path)
    images = [Image.new("L", (8, 8), 40), np.zeros((30, 10, 3), np.uint8), torch.zeros(3, 8, 8), path, str(path)]
    output = captioning(images)
    assert len(output.captions) == 5 and all(isinstance(text, str) for text in output.captions)
    assert output.codes.shape == (5, 4, 4)
    assert len(captioning(torch.zeros(2, 3, 8, 8), num_beams=2, num_return_sequences=2).captions) == 4
    seeded = [captioning(images[:2], do_sample=True, top_k=5, num_return_sequences=3,
                         generator=torch.Generator().manual_seed(3)).captions for _ in range(2)]
    assert seeded[0] == seeded[1] and len(seeded[0]) == 6


@pytest.mark.parametrize("images, error, match", [
    ([], ValueError, "empty"),
    (42, TypeError, "images must be"),
    ([42], TypeError, "an image is"),
    ([np.zeros((8, 8), np.float32)], ValueError, "uint8"),
    ([torch.zeros(1, 8, 8)], ValueError, "3, H, W"),
    ([Image.new("RGB", (9, 8))], ValueError, "max_image_pixels"),
    (["/no/such/image.png"], ValueError, "cannot read image"),
])
def test_bad_inputs_get_clear_errors(pipe, images, error, match):
    captioning = ImageToTextPipeline.from_pipe(pipe)
    captioning.max_image_pixels = 64  # an 8x8 image passes, 9x8 is too large: the limit is checked first
    with pytest.raises(error, match=match):
        captioning(images)


def test_bad_settings_and_scores(pipe):
    captioning = ImageToTextPipeline.from_pipe(pipe)
    image = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="num_return_sequences"):
        captioning([image], num_return_sequences=2)
    with pytest.raises(ValueError, match="num_beams"):
        captioning([image], num_beams=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        captioning([image], guidance_scale=-1.0)
    assert len(captioning([image, image], guidance_scale=2.0).captions) == 2
    with pytest.raises(ValueError, match="2 captions for 3 images"):
        captioning.score([image] * 3, ["a", "b"])
    with pytest.raises(TypeError, match="captions must be"):
        captioning.score([image], None)
    scores = captioning.score([image, image], PROMPTS)
    assert scores.shape == (2,) and (scores <= 0).all()
    assert torch.allclose(captioning.score([image], PROMPTS[0]), scores[:1])


def test_folder_with_a_captioner_round_trips(pipe, folder):
    assert json.loads((folder / "pipeline.json").read_text())["components"]["captioner"] == "captioner"
    loaded = TextToImagePipeline.from_pretrained(folder)
    assert loaded.captioner is not None
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    assert ImageToTextPipeline.from_pretrained(folder)([image]).captions == ImageToTextPipeline.from_pipe(pipe)(
        [image]).captions


def test_folder_without_a_captioner(pipe, folder, tmp_path):
    plain = TextToImagePipeline.from_components(pipe.vqgan, pipe.text, pipe.prior, pipe.sampling)
    plain.save_pretrained(tmp_path / "plain")
    assert "captioner" not in json.loads((tmp_path / "plain" / "pipeline.json").read_text())["components"]
    with pytest.raises(FileNotFoundError, match="train.py captioner"):
        ImageToTextPipeline.from_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="no captioner"):
        ImageToTextPipeline.from_pipe(TextToImagePipeline.from_pretrained(tmp_path / "plain"))
    with pytest.raises(ValueError, match="num_candidates"):
        plain("a red circle", num_candidates=2)
    listed = tmp_path / "listed"
    pipe.save_pretrained(listed)
    for file in (listed / "captioner").iterdir():
        file.unlink()
    (listed / "captioner").rmdir()
    with pytest.raises(FileNotFoundError, match="lists a captioner"):
        TextToImagePipeline.from_pretrained(listed)


def test_a_captioner_for_another_vqgan_is_refused(pipe):
    config = CaptionerConfig(codebook_size=16, grid_size=4, code_dim=4, hidden_size=16, num_layers=1, num_heads=2,
                             intermediate_size=32)
    with pytest.raises(ValueError, match="code_dim 4 vs VQ-GAN z_channels 8"):
        ImageToTextPipeline(pipe.vqgan, pipe.text.text_tokenizer, Captioner(config))


def test_reranking_keeps_the_best_scoring_candidate(pipe):
    prompt = PROMPTS[1]
    candidates = pipe(prompt, num_images_per_prompt=4, output_type="codes",
                      generator=torch.Generator().manual_seed(5)).codes  # the same draw as 4 candidates
    best = pipe(prompt, num_candidates=4, output_type="codes", generator=torch.Generator().manual_seed(5)).codes
    scores = pipe.captioner.log_likelihood(candidates, tokenize_captions(pipe.text.text_tokenizer, [prompt] * 4))
    assert torch.equal(best[0], candidates[scores.argmax()])
    both = pipe(PROMPTS, num_images_per_prompt=2, num_candidates=3, batch_size=3, output_type="pil",
                generator=torch.Generator().manual_seed(0))
    assert len(both.images) == 4 and both.prompts == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2


def test_cli_captions_and_scores(folder, tmp_path, capsys):
    path = tmp_path / "scene.png"
    Image.new("RGB", (8, 8), (0, 0, 255)).save(path)
    assert cli.main(["caption", str(path), str(path), "--pipeline", str(folder), "--no_progress", "--device",
                     "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{path}\t")
    assert cli.main(["caption", str(path), "--score", PROMPTS[0], "--pipeline", str(folder), "--device", "cpu"]) == 0
    assert float(capsys.readouterr().out.split("\t")[1]) <= 0
    assert cli.main(["caption", str(tmp_path / "missing.png"), "--pipeline", str(folder), "--device", "cpu"]) == 2
    assert "cannot read image" in capsys.readouterr().err
