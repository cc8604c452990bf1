"""Reconstruction FD of a VQ-GAN: Fréchet distance, in EfficientNet-Lite0 features (``pipelines.evaluation``), between
held-out images and their reconstructions. Lower is closer; 0 would be indistinguishable in that feature space.
Not FID (another network), and biased upwards with few images: compare figures over the same images only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from tessera.pipelines.evaluation import frechet_distance_of, load_feature_extractor
from tessera.pipelines.evaluation.features import FeatureExtractor
from tessera.tokenizer.model import VQGAN

FEATURES = "efficientnet-lite0"


@torch.no_grad()
def reconstruct(model: VQGAN, loader: Iterable[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """All of ``loader``'s images (batches with ``pixel_values``) and the model's reconstructions,
    ``(N, 3, H, W)`` in [-1, 1] each."""
    model.eval()
    originals, reconstructions = [], []
    for batch in loader:
        originals.append(batch["pixel_values"])
        reconstructions.append(model(batch["pixel_values"]).reconstruction.clamp(-1, 1))
    return torch.cat(originals), torch.cat(reconstructions)


def reconstruction_fd(originals: torch.Tensor, reconstructions: torch.Tensor,
                      extractor: FeatureExtractor | None = None) -> float:
    return frechet_distance_of(originals, reconstructions, extractor or load_feature_extractor(FEATURES))
