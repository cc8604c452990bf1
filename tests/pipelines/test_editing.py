"""The editing pipelines on tiny random components (8x8 images, 4x4 codes: a code cell is 2x2 pixels): the mask ->
token rule, paste-back, kept codes, strength 0 and 1, from_pipe, both prior kinds, bad input, the CLI."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.pipelines import cli
from tessera.pipelines.editing import EditOutput, ImageToImagePipeline, InpaintPipeline
from tessera.pipelines.editing.inputs import extend_canvas
from tessera.pipelines.editing.masks import binary_mask, cell_coverage, paste_weights, token_mask
from tessera.pipelines.text_to_image import TextToImageOutput
from tests.pipelines.tiny_pipelines import KINDS, PROMPTS


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def picture(width: int = 8, height: int = 8, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def as_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) in [-1, 1], scaled as the data layer scales images."""
    return torch.from_numpy(pixels(image)).permute(2, 0, 1).float().div(127.5).sub(1)


def left_half(width: int = 8, height: int = 8) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[:, : width // 2] = True
    return mask


def test_mask_to_token_rule():
    mask = np.zeros((8, 8), dtype=bool)
    mask[0:2, 0:2] = True  # cell (0, 0): all 4 pixels
    mask[2:4, 2] = True  # cell (1, 1): 2 of 4
    mask[5, 5] = True  # cell (2, 2): 1 of 4
    coverage = cell_coverage(mask, (0, 0, 8), 4)
    np.testing.assert_allclose(np.diag(coverage), [1.0, 0.5, 0.25, 0.0], atol=1e-6)
    assert coverage.sum() == pytest.approx(1.75)

    def cells(threshold, dilation=0):
        return {tuple(i) for i in token_mask(coverage, threshold, dilation).nonzero().tolist()}

    assert cells(0.5) == {(0, 0), (1, 1)}
    assert cells(1.0) == {(0, 0)}
    assert cells(0.01) == {(0, 0), (1, 1), (2, 2)}
    assert cells(1.0, dilation=1) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    with pytest.raises(ValueError, match="cell_threshold"):
        token_mask(coverage, 0.0)
    with pytest.raises(ValueError, match="dilation"):
        token_mask(coverage, 0.5, dilation=-1)
    # a 16x12 image: the model sees the 12x12 square at (2, 0) (near the mask), each cell 3x3 input pixels
    wide = np.zeros((12, 16), dtype=bool)
    wide[0:3, 2:5] = True  # exactly cell (0, 0) of that square
    np.testing.assert_allclose(cell_coverage(wide, (2, 0, 12), 4), np.pad([[1.0]], ((0, 3), (0, 3))), atol=1e-6)


def test_pixel_masks_are_thresholded_at_half_way():
    levels = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    expected = [[False, False, True, True]]
    assert binary_mask(Image.fromarray(levels), (4, 1)).tolist() == expected
    assert binary_mask(levels, (4, 1)).tolist() == expected
    assert binary_mask(levels.astype(np.float32) / 255, (4, 1)).tolist() == expected
    assert binary_mask(torch.tensor(levels[None] > 127), (4, 1)).tolist() == expected  # (1, H, W) bool
    assert binary_mask(Image.fromarray(np.stack([levels] * 4, -1), "RGBA"), (4, 1)).tolist() == expected
    with pytest.raises(ValueError, match="mask_image is 4x1 but the image is 8x8"):
        binary_mask(levels, (8, 8))
    with pytest.raises(TypeError, match="bool, uint8"):
        binary_mask(levels.astype(np.int64), (4, 1))


def test_feathered_weights_are_zero_outside_the_mask():
    mask = left_half(16, 16)
    weights = paste_weights(mask, feather_radius=4)
    assert (weights[~torch.from_numpy(mask)] == 0).all()
    assert torch.allclose(weights[:, 0], torch.ones(16)) and 0 < weights[8, 6] < 0.9  # ramps up inside the edge
    assert torch.equal(paste_weights(mask), torch.from_numpy(mask).float())


def test_inpainting_keeps_the_unmasked_pixels_and_codes(pipes, kind):
    pipe = InpaintPipeline.from_pipe(pipes[kind])
    image, mask = picture(), left_half()
    mask[0, 7] = True  # one stray pixel: masked, but its cell is not regenerated (1 of 4 pixels)
    for options in ({}, {"feather_radius": 3.0}):
        out = pipe(PROMPTS, image, mask, num_images_per_prompt=2, generator=seeded(), **options)
        assert isinstance(out, EditOutput) and isinstance(out, TextToImageOutput)
        assert len(out.images) == 4 and out.prompts == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
        for edited in out.images:
            assert edited.size == (8, 8) and np.array_equal(pixels(edited)[~mask], pixels(image)[~mask])
            assert np.array_equal(pixels(edited)[0, 7], pixels(image)[0, 7])  # masked, but its cell was kept
    expected_cells = torch.zeros(4, 4, dtype=torch.bool)
    expected_cells[:, :2] = True
    assert all(torch.equal(cells, expected_cells) for cells in out.regenerated)
    given = pipe.pipe.encode(as_tensor(image)[None])  # (1, 4, 4)
    assert torch.equal(out.codes[:, ~expected_cells], given[:, ~expected_cells].expand(4, -1))
    tensors = pipe(PROMPTS[0], image, mask, generator=seeded(), output_type="pt").images  # (1, 3, 8, 8)
    kept = ~torch.from_numpy(mask)
    assert torch.equal(tensors[0][:, kept], as_tensor(image)[:, kept])


def test_empty_mask_returns_the_input_and_full_mask_is_text_to_image(pipes, kind):
    pipe = InpaintPipeline.from_pipe(pipes[kind])
    image = picture()
    out = pipe(PROMPTS[0], image, np.zeros((8, 8), dtype=bool), generator=seeded())
    assert np.array_equal(pixels(out.images[0]), pixels(image)) and not out.regenerated.any()
    full = pipe(PROMPTS, image, np.ones((8, 8), dtype=bool), generator=seeded(3), output_type="pt")
    text_to_image = pipes[kind](PROMPTS, generator=seeded(3), output_type="pt")
    assert full.regenerated.all() and torch.equal(full.codes, text_to_image.codes)
    assert torch.equal(full.images, text_to_image.images)


def test_a_mask_below_the_cell_threshold_warns_and_returns_the_input(pipes, caplog):
    pipe = InpaintPipeline.from_pipe(pipes["masked"])
    image, mask = picture(), np.zeros((8, 8), dtype=bool)
    mask[3, 3] = True  # a quarter of one cell
    with caplog.at_level(logging.WARNING, logger="tessera.pipelines.editing.inpaint"):
        out = pipe(PROMPTS[0], image, mask, generator=seeded())
    assert any("covers no code cell at cell_threshold=0.5" in r.getMessage() and "25%" in r.getMessage()
               for r in caplog.records)
    assert not out.regenerated.any() and np.array_equal(pixels(out.images[0]), pixels(image))
    assert pipe(PROMPTS[0], image, mask, cell_threshold=0.25, generator=seeded()).regenerated.sum() == 1


def test_other_sizes_and_modes_are_converted_like_training_data(pipes, caplog):
    pipe = InpaintPipeline.from_pipe(pipes["masked"])
    wide = picture(12, 8)
    mask = np.zeros((8, 12), dtype=bool)
    mask[2:6, 8:12] = True  # right of centre: the model's 8x8 square moves to (4, 0) to hold it
    out = pipe(PROMPTS[0], wide, mask, generator=seeded())
    assert out.images[0].size == (12, 8) and np.array_equal(pixels(out.images[0])[~mask], pixels(wide)[~mask])
    assert out.regenerated[0, 1:3, 2:4].all() and out.regenerated.sum() == 4
    mask[:, 0] = True  # a mask wider than the short side: column 0 lies outside the square
    with caplog.at_level(logging.WARNING, logger="tessera.pipelines.editing.inpaint"):
        out = pipe(PROMPTS[0], wide, mask, generator=seeded())
    assert any("outside the 8x8 square" in record.getMessage() for record in caplog.records)
    assert np.array_equal(pixels(out.images[0])[:, 0], pixels(wide)[:, 0])
    for mode in ("L", "RGBA", "P"):
        converted = picture().convert(mode)
        out = pipe(PROMPTS[0], converted, left_half(), generator=seeded())
        rgb = converted.convert("RGB") if mode != "RGBA" else Image.alpha_composite(
            Image.new("RGBA", (8, 8), "white"), converted).convert("RGB")
        assert out.images[0].mode == "RGB"
        assert np.array_equal(pixels(out.images[0])[~left_half()], pixels(rgb)[~left_half()])


def test_outpainting_grows_the_canvas(pipes, kind):
    pipe = InpaintPipeline.from_pipe(pipes[kind])
    image = picture(6, 8)
    canvas, mask = extend_canvas(image, left=2)
    assert canvas.size == (8, 8) and mask[:, :2].all() and not mask[:, 2:].any()
    assert np.array_equal(pixels(canvas)[:, 0], pixels(image)[:, 0])  # "edge": the nearest input pixel
    out = pipe.outpaint(PROMPTS[0], image, left=2, generator=seeded())
    assert out.images[0].size == (8, 8) and np.array_equal(pixels(out.images[0])[:, 2:], pixels(image))
    assert out.regenerated[0, :, 0].all() and out.regenerated.sum() == 4
    black, _ = extend_canvas(image, top=1, bottom=1, fill=(0, 0, 0))
    assert black.size == (6, 10) and pixels(black)[0].sum() == 0
    with pytest.raises(ValueError, match="left"):
        extend_canvas(image, left=-1)


def test_strength_0_keeps_the_codes_and_1_is_text_to_image(pipes, kind):
    pipe = ImageToImagePipeline.from_pipe(pipes[kind])
    image = picture()
    kept = pipe(PROMPTS, image, strength=0.0, generator=seeded(), output_type="pt")
    given = pipe.pipe.encode(as_tensor(image)[None])  # (1, 4, 4)
    assert torch.equal(kept.codes, given.expand(2, -1, -1)) and not kept.regenerated.any()
    torch.testing.assert_close(kept.images, pipe.pipe.decode(given).expand(2, -1, -1, -1).detach())  # batch 2 vs 1
    text_to_image = pipes[kind](PROMPTS, generator=seeded(5), output_type="codes")
    for remask in ("likelihood", "random"):
        out = pipe(PROMPTS, image, strength=1.0, remask=remask, generator=seeded(5), output_type="codes")
        assert torch.equal(out.codes, text_to_image.codes) and out.regenerated.all()


def test_strength_regenerates_that_share_of_the_codes(pipes, kind):
    pipe = ImageToImagePipeline.from_pipe(pipes[kind])
    image = picture()
    out = pipe(PROMPTS, image, strength=0.5, generator=seeded(), output_type="codes")
    assert out.regenerated.flatten(1).sum(1).tolist() == [8, 8]
    given = pipe.pipe.encode(as_tensor(image)[None])  # (1, 4, 4)
    assert torch.equal(out.codes[~out.regenerated], given.expand(2, -1, -1)[~out.regenerated])
    with torch.inference_mode():  # "likelihood": the 8 codes the prior finds least likely for each prompt
        scores = pipe.prior.code_log_probs(given.expand(2, -1, -1), pipe.pipe.encode_prompts(PROMPTS),
                                           guidance_scale=pipe.pipe.sampling.guidance_scale)
    assert (scores[out.regenerated].view(2, 8).max(1).values <= scores[~out.regenerated].view(2, 8).min(1).values).all()
    random = [pipe(PROMPTS, image, strength=0.5, remask="random", generator=seeded(seed), output_type="codes")
              for seed in (1, 1, 2)]
    assert torch.equal(random[0].regenerated, random[1].regenerated)
    assert not torch.equal(random[0].regenerated, random[2].regenerated)


def test_denoise(pipes, kind):
    pipe = ImageToImagePipeline.from_pipe(pipes[kind])
    image = picture()
    out = pipe.denoise(image, generator=seeded(), max_strength=0.25)
    assert out.images[0].size == (8, 8) and 0 < out.regenerated.sum() <= 4 and out.prompts == [""]
    assert not pipe.denoise(image, threshold=1e-30).regenerated.any()
    out = pipe.denoise(image, "a red circle", threshold=0.5, max_strength=1.0, guidance_scale=1.0)
    given = pipe.pipe.encode(as_tensor(image)[None])
    options = {"group_stride": 2} if kind == "masked" else {}
    with torch.inference_mode():
        scores = pipe.prior.code_log_probs(given, pipe.pipe.encode_prompts(["a red circle"]), **options)
    assert torch.equal(out.regenerated, scores < np.log(0.5))  # every code less likely than the threshold


def test_from_pipe_shares_the_modules(pipes, tmp_path):
    text_to_image = pipes["masked"]
    inpaint = InpaintPipeline.from_pipe(text_to_image)
    edit = ImageToImagePipeline.from_pipe(inpaint)
    for pipe in (inpaint, edit):
        assert pipe.vqgan is text_to_image.vqgan and pipe.text is text_to_image.text
        assert pipe.prior is text_to_image.prior
        assert pipe.pipe.sampling == text_to_image.sampling and pipe.pipe.sampling is not text_to_image.sampling
    loaded = ImageToImagePipeline.from_pretrained(text_to_image.save_pretrained(tmp_path / "pipe"))
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(loaded("a red circle", picture(), strength=0.5, generator=seeded(), output_type="codes").codes,
                       edit("a red circle", picture(), strength=0.5, generator=seeded(), output_type="codes").codes)


@pytest.mark.parametrize("output_type", ["np", "pt", "codes"])
def test_output_types_at_the_input_size(pipes, output_type):
    pipe = InpaintPipeline.from_pipe(pipes["masked"])
    out = pipe(PROMPTS, [picture(12, 8, seed=1), picture(12, 8, seed=2)], left_half(12, 8), output_type=output_type)
    assert out.codes.shape == (2, 4, 4) and out.regenerated.shape == (2, 4, 4)
    expected = {"np": (2, 8, 12, 3), "pt": (2, 3, 8, 12)}.get(output_type)
    assert (out.images is None) if expected is None else tuple(out.images.shape) == expected


def test_bad_input_is_refused(pipes):
    inpaint = InpaintPipeline.from_pipe(pipes["autoregressive"])
    edit = ImageToImagePipeline.from_pipe(inpaint)
    image = picture()
    with pytest.raises(ValueError, match="mask_image is 4x4 but the image is 8x8"):
        inpaint(PROMPTS[0], image, np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="image has 3 entries"):
        inpaint(PROMPTS, [image] * 3, left_half())
    with pytest.raises(ValueError, match="share one size"):
        inpaint(PROMPTS, [image, picture(8, 6)], [left_half(), left_half(8, 6)])
    with pytest.raises(TypeError, match="PIL image"):
        inpaint(PROMPTS[0], 42, left_half())
    with pytest.raises(ValueError, match="cannot read image 'no-such-image.png'"):  # paths are read as captioning reads them
        inpaint(PROMPTS[0], "no-such-image.png", left_half())
    with pytest.raises(ValueError, match="strength"):
        edit(PROMPTS[0], image, strength=1.5)
    with pytest.raises(ValueError, match="remask"):
        edit(PROMPTS[0], image, remask="confidence")
    with pytest.raises(ValueError, match="group_stride applies to the masked prior only"):
        edit(PROMPTS[0], image, group_stride=2)
    with pytest.raises(ValueError, match="num_steps"):
        edit(PROMPTS[0], image, num_steps=4)
    with pytest.raises(ValueError, match="guidance_scale"):
        inpaint(PROMPTS[0], image, left_half(), guidance_scale=-1.0)
    with pytest.raises(TypeError, match="TextToImagePipeline"):
        InpaintPipeline(pipes["masked"].prior)


def test_cli_inpaint_and_edit(pipes, tmp_path, capsys):
    folder = pipes["masked"].save_pretrained(tmp_path / "pipe")
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    picture(12, 8).save(image)
    Image.fromarray(left_half(12, 8).astype(np.uint8) * 255).save(mask)
    common = ["--pipeline", str(folder), "--no_progress", "--num_steps", "2"]
    assert cli.main(["inpaint", str(image), str(mask), PROMPTS[0], "-o", str(tmp_path / "a.png"), *common]) == 0
    assert cli.main(["edit", str(image), PROMPTS[0], "--strength", "0.6", "-o", str(tmp_path / "b.png"), *common]) == 0
    assert cli.main(["outpaint", str(image), PROMPTS[0], "--top", "4", "-o", str(tmp_path / "c.png"), *common]) == 0
    assert cli.main(["denoise", str(image), "-o", str(tmp_path / "d.png"), *common]) == 0
    assert [Image.open(tmp_path / f"{name}.png").size for name in "abcd"] == [(12, 8), (12, 8), (12, 12), (12, 8)]
    assert "a.png" in capsys.readouterr().out
    assert cli.main(["inpaint", str(image), str(image), PROMPTS[0], "-o", str(tmp_path / "e.png"), *common]) == 0
    Image.new("L", (4, 4)).save(mask)
    assert cli.main(["inpaint", str(image), str(mask), PROMPTS[0], "-o", str(tmp_path / "f.png"), *common]) == 2
    assert "mask_image is 4x4" in capsys.readouterr().err
