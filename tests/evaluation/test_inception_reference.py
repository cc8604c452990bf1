"""The standard path equals the reference library: a randomly initialised FID Inception saved to a file gives
the same FID, KID and IS through ``tessera evaluate-images --features inception`` as through torch-fidelity
0.4.0 (``calculate_metrics`` with ``feature_extractor_weights_path``), with no download.

torch-fidelity imports torchvision when it is imported (its CLIP, VGG and dataset modules), and no torchvision
wheel works with the tested torch, so the test gives it a stand-in ``torchvision`` in ``sys.modules`` for the
duration of the test; nothing of torchvision is used by the Inception extractor or the metric code compared here.
``.ci/run`` installs torch-fidelity with ``--no-deps``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.pipelines.cli import main
from tessera.pipelines.evaluation.inception import FIDInceptionV3

if importlib.util.find_spec("torch_fidelity") is None:
    pytest.skip("torch-fidelity is not installed (pip install --no-deps torch-fidelity==0.4.0)",
                allow_module_level=True)


@pytest.fixture
def torch_fidelity(monkeypatch):
    stub = types.ModuleType("torchvision")
    for name in ("transforms", "transforms.functional", "datasets", "models"):
        module = types.ModuleType(f"torchvision.{name}")
        monkeypatch.setitem(sys.modules, f"torchvision.{name}", module)
    for name in ("CIFAR10", "CIFAR100", "STL10"):  # base classes of torch-fidelity's dataset wrappers
        setattr(sys.modules["torchvision.datasets"], name, type(name, (), {}))
    stub.transforms, stub.datasets, stub.models = (sys.modules[f"torchvision.{name}"]
                                                   for name in ("transforms", "datasets", "models"))
    monkeypatch.setitem(sys.modules, "torchvision", stub)
    yield importlib.import_module("torch_fidelity")
    for name in [name for name in sys.modules if name.startswith("torch_fidelity")]:
        del sys.modules[name]


class TensorFolder(torch.utils.data.Dataset):
    """A folder's PNGs as uint8 (3, H, W), read here with PIL and numpy (independently of our reader)."""

    def __init__(self, folder: Path):
        self.files = sorted(folder.glob("*.png"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)  # (3, H, W)


def random_inception_file(path: Path) -> Path:
    """Random weights whose activations neither vanish nor explode: batch-norm statistics from one batch."""
    torch.manual_seed(0)
    network = FIDInceptionV3()
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative: the running statistics become those of the calibration batch
    with torch.no_grad():
        network.train()(torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8))
        network.fc.weight.mul_(4)  # logits far enough from uniform for a non-trivial IS
    torch.save(network.state_dict(), path)
    return path


def test_our_figures_are_torch_fidelitys(torch_fidelity, image_folders, tmp_path, capsys):
    generated, reference = image_folders
    weights = random_inception_file(tmp_path / "inception.pth")
    settings = {"kid_subset_size": 6, "kid_subsets": 7, "isc_splits": 3}
    expected = torch_fidelity.calculate_metrics(
        input1=TensorFolder(generated), input2=TensorFolder(reference), feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(weights), fid=True, kid=True, isc=True, cuda=False, cache=False,
        verbose=False, save_cpu_ram=True, batch_size=5, **settings)
    assert main(["evaluate-images", str(generated), "--reference", str(reference), "--features", "inception",
                 "--inception_weights", str(weights), "--kid_subset_size", "6", "--kid_subsets", "7",
                 "--is_splits", "3", "--batch_size", "4", "--no_progress"]) == 0
    ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ours["features"] == "inception" and ours["num_generated"] == ours["num_reference"] == 12
    assert ours["inception_score_mean"] > 1.05  # the random network's logits are not uniform: IS is informative
    assert ours["fid"] > 0
    assert ours["fid"] == pytest.approx(expected["frechet_inception_distance"], rel=1e-4, abs=1e-6)
    assert ours["kid_mean"] == pytest.approx(expected["kernel_inception_distance_mean"], rel=1e-4, abs=1e-7)
    assert ours["kid_std"] == pytest.approx(expected["kernel_inception_distance_std"], rel=1e-3, abs=1e-7)
    assert ours["inception_score_mean"] == pytest.approx(expected["inception_score_mean"], rel=1e-5)
    assert ours["inception_score_std"] == pytest.approx(expected["inception_score_std"], rel=1e-3, abs=1e-6)


def test_network_matches_torch_fidelitys_extractor_feature_by_feature(torch_fidelity, tmp_path):
    weights = random_inception_file(tmp_path / "inception.pth")
    reference = torch_fidelity.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights))
    ours = FIDInceptionV3()
    ours.load_state_dict(torch.load(weights, weights_only=True))
    images = torch.randint(0, 256, (2, 3, 37, 51), dtype=torch.uint8)  # not square, not a divisor of 299
    with torch.no_grad():
        expected, got = reference(images), ours.eval()(images)
    for theirs, mine in zip(expected, got):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
