"""The analytic shapes evaluator: exact on ground truth, robust to mild damage, strict on errors."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from tessera.pipelines.shapes.dataset import (
    JITTER,
    SPLITS,
    SceneSpec,
    ShapeObject,
    caption,
    render,
    sample_spec,
)
from tessera.pipelines.shapes.detect import detect_objects, label_components
from tessera.pipelines.shapes.evaluate import CENTER_TOLERANCE, MIN_OFFSET, evaluate, judge_image, main

ABOVE = SceneSpec((ShapeObject("blue", "square", "large"), ShapeObject("green", "triangle", "small")),
                  relation="above")
LEFT = SceneSpec((ShapeObject("red", "circle", "small"),), position="left")


def ground_truth(num: int, resolution: int, seed: int = 0) -> tuple[list[Image.Image], list[SceneSpec]]:
    rng = np.random.default_rng(seed)
    specs = [sample_spec(rng, SPLITS[i % 3]) for i in range(num)]
    return [render(spec, resolution, rng) for spec in specs], specs


def damage(image: Image.Image, rng: np.random.Generator, noise: float = 8, blur: float = 0.5) -> Image.Image:
    """Gaussian noise of ``noise``/255 and a Gaussian blur of ``blur`` pixels at 32 (scaled with size)."""
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, noise, (*image.size[::-1], 3))
    noisy = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    return noisy.filter(ImageFilter.GaussianBlur(blur * image.size[0] / 32))


def replace_object(spec: SceneSpec, index: int, **changes) -> SceneSpec:
    objects = list(spec.objects)
    objects[index] = dataclasses.replace(objects[index], **changes)
    return dataclasses.replace(spec, objects=tuple(objects))


def test_margins_leave_room_for_jitter_and_a_pixel_at_32():
    assert CENTER_TOLERANCE > JITTER + 1 / 32
    assert MIN_OFFSET < 0.25 - JITTER - 1 / 32


@pytest.mark.parametrize("resolution, num", [(32, 200), (64, 100)])
def test_exact_on_ground_truth(resolution, num):
    images, specs = ground_truth(num, resolution, seed=resolution)
    report = evaluate(images, specs)
    assert report.accuracy["all_correct"] == 1.0, [j for j in report.judgements if not j.all_correct][:2]


@pytest.mark.parametrize("resolution", [32, 64])
def test_robust_to_noise_blur_off_colours_and_specks(resolution):
    rng = np.random.default_rng(1)
    images, specs = ground_truth(100, resolution, seed=2)
    damaged = [damage(image, rng) for image in images]
    assert evaluate(damaged, specs).accuracy["all_correct"] >= 0.99
    shifted = []
    for image in images:  # every colour 30 levels off, plus a 2x2 grey speck in a corner
        pixels = np.asarray(image).astype(np.int16)
        pixels = np.where(pixels > 0, pixels - 30, pixels + 20)
        pixels[:2, :2] = 128
        shifted.append(np.clip(pixels, 0, 255).astype(np.uint8))
    assert evaluate(shifted, specs).accuracy["all_correct"] == 1.0


def test_input_types_agree():
    image = render(ABOVE, 32)
    pixels = np.array(image)  # (H, W, 3) uint8, writable
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W) in [-1, 1]
    verdicts = [judge_image(x, ABOVE) for x in (image, pixels, pixels / 255.0, tensor)]
    assert all(v == verdicts[0] and v.all_correct for v in verdicts)
    assert judge_image(tensor.bfloat16(), ABOVE).all_correct
    for batch in (tensor[None].repeat(2, 1, 1, 1), np.stack([pixels, pixels])):
        assert evaluate(batch, [ABOVE.to_json(), caption(ABOVE, "fr")]).accuracy["all_correct"] == 1.0


def test_converse_caption_is_the_same_scene():
    assert judge_image(render(ABOVE, 32), "a small green triangle below a large blue square").all_correct


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("wrong, attribute", [
    (replace_object(ABOVE, 0, color="purple"), "color"),
    (replace_object(ABOVE, 1, color="cyan"), "color"),
    (replace_object(ABOVE, 0, shape="circle"), "shape"),
    (replace_object(ABOVE, 1, shape="square"), "shape"),
    (replace_object(ABOVE, 0, size="small"), "size"),
    (replace_object(ABOVE, 1, size="large"), "size"),
    (dataclasses.replace(ABOVE, relation="below"), "relation"),
    (dataclasses.replace(ABOVE, relation="left of"), "relation"),
    (dataclasses.replace(ABOVE, objects=ABOVE.objects[::-1]), "relation"),
    (replace_object(LEFT, 0, color="yellow"), "color"),
    (replace_object(LEFT, 0, shape="triangle"), "shape"),
    (replace_object(LEFT, 0, size="large"), "size"),
    (dataclasses.replace(LEFT, position="center"), "position"),
    (dataclasses.replace(LEFT, position="right"), "position"),
    (dataclasses.replace(LEFT, position="top"), "position"),
])
def test_rejects_a_wrong_attribute(resolution, wrong, attribute):
    truth = ABOVE if len(wrong.objects) == 2 else LEFT
    verdict = judge_image(render(truth, resolution, np.random.default_rng(0)), wrong)
    assert not getattr(verdict, attribute) and not verdict.all_correct and verdict.count


def test_a_prompt_that_leaves_an_attribute_unsaid_is_judged_on_the_rest():
    image = render(LEFT, 32, np.random.default_rng(0))
    wrong_size = judge_image(image, replace_object(LEFT, 0, size="large"))
    assert not wrong_size.correct_except(()) and wrong_size.correct_except(("size",))
    assert not wrong_size.correct_except(("color",))
    elsewhere = judge_image(image, dataclasses.replace(LEFT, position="right"))
    assert elsewhere.correct_except(("position",)) and not elsewhere.correct_except(("size",))
    two = judge_image(render(ABOVE, 32), LEFT)  # one object asked for, two drawn: the count always counts
    assert not two.correct_except(("position", "color", "shape", "size"))
    with pytest.raises(ValueError, match="unknown attributes"):
        wrong_size.correct_except(("count",))


@pytest.mark.parametrize("resolution", [32, 64])
def test_rejects_missing_extra_and_no_objects(resolution):
    only_first = SceneSpec(ABOVE.objects[:1], position="top")
    missing = judge_image(render(only_first, resolution), ABOVE)
    assert not missing.count and not missing.relation and not missing.all_correct
    extra = judge_image(render(ABOVE, resolution), only_first)
    assert extra.color and extra.position and not extra.count and not extra.all_correct
    blank = judge_image(Image.new("RGB", (resolution, resolution)), LEFT)
    assert not any([blank.color, blank.shape, blank.size, blank.position, blank.count, blank.all_correct])
    assert blank.detected == []


def odd_shapes() -> dict[str, Image.Image]:
    """Red blobs that are none of our shapes, each about as large as a large shape at 64 x 64."""
    triangle = render(SceneSpec((ShapeObject("red", "triangle", "large"),), position="center"), 64)
    images = {"upside-down triangle": triangle.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
              "sideways triangle": triangle.transpose(Image.Transpose.ROTATE_90)}
    for name, draw_fn in {
        "diamond": lambda d: d.polygon([(32, 18), (46, 32), (32, 46), (18, 32)], fill=(255, 0, 0)),
        "ring": lambda d: d.ellipse([18, 18, 45, 45], outline=(255, 0, 0), width=3),
        "bar": lambda d: d.rectangle([12, 26, 51, 37], fill=(255, 0, 0)),
    }.items():
        images[name] = Image.new("RGB", (64, 64))
        draw_fn(ImageDraw.Draw(images[name]))
    return images


@pytest.mark.parametrize("name", ["upside-down triangle", "sideways triangle", "diamond", "ring", "bar"])
def test_odd_blobs_are_no_shape(name):
    (found,) = detect_objects(odd_shapes()[name])
    assert found.color == "red" and found.shape is None


def test_label_components_joins_diagonals_and_separates_gaps():
    mask = np.array([[1, 0, 0, 1],
                     [0, 1, 0, 1],
                     [0, 0, 0, 0],
                     [1, 1, 0, 1]], dtype=bool)
    labels, count = label_components(mask)
    assert count == 4
    assert labels[0, 0] == labels[1, 1] and labels[0, 3] == labels[1, 3] and labels[3, 0] == labels[3, 1]
    assert len({labels[0, 0], labels[0, 3], labels[3, 0], labels[3, 3]}) == 4 and labels[2].sum() == 0


def test_evaluate_checks_lengths():
    with pytest.raises(ValueError, match="2 images but 1"):
        evaluate([render(LEFT), render(LEFT)], [LEFT])


def write_folder(tmp_path, rows):
    with open(tmp_path / "metadata.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def test_cli_scores_a_folder_and_lists_unreadable_images(tmp_path, capsys):
    specs = [LEFT, ABOVE, ABOVE]
    for i, spec in enumerate(specs):
        render(spec, 32).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [{"file_name": f"{i}.png", "text": caption(spec, "fr")} for i, spec in enumerate(specs)]
    rows[2]["text"] = caption(dataclasses.replace(ABOVE, relation="below"))  # a wrong image
    rows.append({"file_name": "broken.png", "text": caption(LEFT)})
    write_folder(tmp_path, rows)
    assert main([str(tmp_path), "--json", str(tmp_path / "out" / "report.json")]) == 0
    out = capsys.readouterr().out
    assert "| all_correct | 0.5000 |" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["num_images"] == 4 and report["unreadable"] == ["broken.png"]
    assert [image["all_correct"] for image in report["images"]] == [True, True, False, False]


def test_cli_refuses_unparseable_prompts_and_missing_metadata(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    write_folder(tmp_path, [{"file_name": "0.png", "text": "a photo of a cat"}])
    assert main([str(tmp_path)]) == 2
    assert "cannot parse shapes caption" in capsys.readouterr().err
