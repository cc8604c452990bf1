"""Reference statistics cached in one safetensors file: the reference set's pool features (KID needs them) and
their mean and covariance (FD), with a JSON header saying how they were made. Never a pickle.

The header (safetensors metadata, key ``tessera_reference_statistics``) records the feature space, the sha256
of the feature network's weights file, the number of images and where they came from. Loading checks the
space and the weights against the extractor about to be used: figures from cached statistics are only
comparable when both match, so a mismatch is an error, not a warning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from tessera.core.io import atomic_save_safetensors
from tessera.pipelines.evaluation.metrics import GaussianStatistics, gaussian_statistics

__all__ = ["FORMAT_VERSION", "ReferenceStatistics", "StatisticsMismatchError", "load_reference_statistics",
           "save_reference_statistics"]

FORMAT_VERSION = 1
HEADER_KEY = "tessera_reference_statistics"


class StatisticsMismatchError(ValueError):
    """Cached statistics that were made with another feature network (or are not statistics at all)."""


@dataclass
class StatisticsInfo:
    features: str
    weights_sha256: str
    num_images: int
    source: str
    format_version: int = FORMAT_VERSION
    images_sha256: str | None = None  # ``ImageSet.sha256()`` of the images summarised; None in older files


@dataclass
class ReferenceStatistics:
    info: StatisticsInfo
    pool: torch.Tensor  # (N, D) float32 pool features
    gaussian: GaussianStatistics

    @classmethod
    def from_features(cls, pool: torch.Tensor, *, features: str, weights_sha256: str, source: str,
                      images_sha256: str | None = None):
        info = StatisticsInfo(features, weights_sha256, len(pool), source, images_sha256=images_sha256)
        return cls(info, pool, gaussian_statistics(pool))

    def check(self, features: str, weights_sha256: str, where: str) -> None:
        """``StatisticsMismatchError`` unless these statistics were made in ``features`` with those weights."""
        if self.info.features != features:
            raise StatisticsMismatchError(f"{where} holds {self.info.features} statistics, not {features}: "
                                          f"recompute them with --features {features}")
        if self.info.weights_sha256 != weights_sha256:
            raise StatisticsMismatchError(
                f"{where} was made with other {features} weights (sha256 {self.info.weights_sha256[:12]}..., "
                f"now {weights_sha256[:12]}...): recompute them with the weights in use")


    def check_images(self, images_sha256: str, reference: str, where: str) -> None:
        """``StatisticsMismatchError`` unless these statistics summarise the images hashed ``images_sha256``."""
        if self.info.images_sha256 == images_sha256:
            return
        made = ("records no hash of the images it summarises" if self.info.images_sha256 is None
                else f"summarises other images ({self.info.num_images} from {self.info.source})")
        raise StatisticsMismatchError(
            f"{where} {made}, not the reference {reference}: its figures would not be {reference}'s. Pass "
            f"another --reference_stats file (it is computed and written), or delete {where} to recompute it.")


def save_reference_statistics(statistics: ReferenceStatistics, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"pool": statistics.pool.float().contiguous(),
               "mu": torch.from_numpy(np.ascontiguousarray(statistics.gaussian.mu)),
               "sigma": torch.from_numpy(np.ascontiguousarray(statistics.gaussian.sigma))}
    atomic_save_safetensors(tensors, path, metadata={HEADER_KEY: json.dumps(asdict(statistics.info))})
    return path


def load_reference_statistics(path: str | Path) -> ReferenceStatistics:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics {path} not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = (handle.metadata() or {}).get(HEADER_KEY)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open has no items
    except Exception as error:  # noqa: BLE001 - a damaged file is one error for the user
        raise StatisticsMismatchError(f"{path} is not a safetensors file: {error}") from None
    if header is None or set(tensors) != {"pool", "mu", "sigma"}:
        raise StatisticsMismatchError(f"{path} holds no Tessera reference statistics")
    info = StatisticsInfo(**json.loads(header))
    if info.format_version != FORMAT_VERSION:
        raise StatisticsMismatchError(f"{path}: statistics format {info.format_version}, expected {FORMAT_VERSION}")
    return ReferenceStatistics(info, tensors["pool"], GaussianStatistics(tensors["mu"].numpy(), tensors["sigma"].numpy()))
