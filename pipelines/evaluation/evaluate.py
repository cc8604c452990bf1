"""``evaluate_images``: FD, KID and IS of generated images against reference images, in one feature space.

    from tessera.pipelines.evaluation import evaluate_images
    report = evaluate_images("samples/", "heldout/", features="efficientnet-lite0")
    print(report.to_dict())   # fid, kid_mean, kid_std, inception_score_mean, inception_score_std, ...

``fid`` is the Fréchet distance in the chosen space: the standard FID only with ``features="inception"`` and the
``pt_inception-2015-12-05`` weights; with ``efficientnet-lite0`` it is FD in that network's pool features (the
report's ``features`` field says which). The reference side may be images, cached statistics
(``reference_stats``, written with ``save_reference_stats``) or both (then the statistics are computed once and
saved there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tessera.pipelines.evaluation.features import (
    FeatureExtractor,
    Features,
    extract_features,
    load_feature_extractor,
)
from tessera.pipelines.evaluation.images import ImageSet, model_range_to_uint8, open_image_set
from tessera.pipelines.evaluation.metrics import (
    IS_SPLITS,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    SEED,
    frechet_distance,
    gaussian_statistics,
    inception_score,
    kernel_inception_distance,
)
from tessera.pipelines.evaluation.statistics import (
    ReferenceStatistics,
    load_reference_statistics,
    save_reference_statistics,
)

__all__ = ["EvaluationConfig", "ImageQualityReport", "evaluate_features", "evaluate_images", "frechet_distance_of",
           "reference_statistics"]


@dataclass
class EvaluationConfig:
    """How the figures are computed; the defaults are torch-fidelity's (KID subsets of 1000, capped at the
    smaller set's size; 10 IS splits; seed 2020)."""

    features: str = "efficientnet-lite0"
    weights: str | None = None  # --inception_weights for "inception"; overrides the packaged EfficientNet file
    batch_size: int = 64
    kid_subsets: int = KID_SUBSETS
    kid_subset_size: int = KID_SUBSET_SIZE
    is_splits: int = IS_SPLITS
    seed: int = SEED
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device {self.device!r} is not a torch device: use cpu, cuda or cuda:N") from None


@dataclass
class ImageQualityReport:
    fid: float  # Fréchet distance in ``features`` space (FID proper only for "inception")
    kid_mean: float
    kid_std: float
    inception_score_mean: float  # with efficientnet-lite0: the same formula over its ImageNet classes
    inception_score_std: float
    features: str
    num_generated: int
    num_reference: int
    kid_subset_size: int
    kid_subsets: int
    is_splits: int
    weights_sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


def _features(extractor: FeatureExtractor, images: ImageSet, config: EvaluationConfig, desc: str) -> Features:
    return extract_features(extractor, images, batch_size=config.batch_size, total=len(images),
                            device=config.device, desc=desc, progress=config.progress)


def reference_statistics(extractor: FeatureExtractor, reference: str | Path | ImageSet | None,
                         config: EvaluationConfig, reference_stats: str | Path | None = None) -> ReferenceStatistics:
    """The reference set's statistics: read from ``reference_stats`` when that file exists (checked against
    ``extractor``, and against ``reference`` when given: a file made from other images is refused), else
    computed from ``reference`` (and saved to ``reference_stats`` when given)."""
    images = None
    if reference is not None:
        images = reference if isinstance(reference, ImageSet) else open_image_set(reference)
    if reference_stats is not None and Path(reference_stats).is_file():
        statistics = load_reference_statistics(reference_stats)
        statistics.check(extractor.name, extractor.weights_sha256, str(reference_stats))
        if images is not None:  # keyed by the files they summarise: never another set's figures
            statistics.check_images(images.sha256(), images.where, str(reference_stats))
        return statistics
    if images is None:
        raise ValueError("no reference: pass reference images, or a reference statistics file that exists")
    images = two_or_more(images, "reference")
    pool = _features(extractor, images, config, "reference features").pool
    statistics = ReferenceStatistics.from_features(pool, features=extractor.name,
                                                   weights_sha256=extractor.weights_sha256, source=images.where,
                                                   images_sha256=images.sha256())
    if reference_stats is not None:
        save_reference_statistics(statistics, reference_stats)
    return statistics


def evaluate_features(generated: Features, reference: ReferenceStatistics, config: EvaluationConfig,
                      weights_sha256: str) -> ImageQualityReport:
    """The report from features already extracted (generated side) and reference statistics."""
    subset_size = min(config.kid_subset_size, len(generated.pool), len(reference.pool))
    kid_mean, kid_std = kernel_inception_distance(generated.pool, reference.pool, subsets=config.kid_subsets,
                                                  subset_size=subset_size, seed=config.seed)
    is_mean, is_std = inception_score(generated.logits, splits=config.is_splits, seed=config.seed)
    return ImageQualityReport(
        fid=frechet_distance(gaussian_statistics(generated.pool), reference.gaussian), kid_mean=kid_mean,
        kid_std=kid_std, inception_score_mean=is_mean, inception_score_std=is_std, features=reference.info.features,
        num_generated=len(generated.pool), num_reference=reference.info.num_images, kid_subset_size=subset_size,
        kid_subsets=config.kid_subsets, is_splits=config.is_splits, weights_sha256=weights_sha256)


def two_or_more(images: ImageSet, which: str) -> ImageSet:
    """``images``, or a ``ValueError`` naming the set when it has fewer than the 2 images a covariance needs."""
    if len(images) < 2:
        raise ValueError(f"the {which} set {images.where} has {len(images)} image; FD, KID and IS need at least 2 "
                         "images in each set")
    return images


def evaluate_images(generated: str | Path | ImageSet, reference: str | Path | ImageSet | None = None, *,
                    config: EvaluationConfig | None = None, reference_stats: str | Path | None = None,
                    extractor: FeatureExtractor | None = None, **options) -> ImageQualityReport:
    """FD / KID / IS of ``generated`` against ``reference`` (folders, imagefolders, saved datasets or
    ``ImageSet``s). ``options`` are ``EvaluationConfig`` fields (``features=``, ``weights=``, ``batch_size=``,
    ...); ``extractor`` reuses a loaded feature network (e.g. across several evaluations)."""
    config = config or EvaluationConfig(**options)
    if config.features not in ("inception", "efficientnet-lite0"):
        raise ValueError(f"unknown features {config.features!r}; choose inception or efficientnet-lite0")
    if reference_stats is not None and Path(reference_stats).is_dir():  # refused before any work
        raise ValueError(f"reference_stats {reference_stats} is a folder; give the path of a .safetensors file "
                         "(read when it exists, else written)")
    generated_images = two_or_more(generated if isinstance(generated, ImageSet) else open_image_set(generated),
                                   "generated")
    if reference is not None and not isinstance(reference, ImageSet) and not (
            reference_stats is not None and Path(reference_stats).is_file()):  # read (and checked) before the work
        reference = two_or_more(open_image_set(reference), "reference")
    extractor = extractor or load_feature_extractor(config.features, weights=config.weights)
    reference_stats_ = reference_statistics(extractor, reference, config, reference_stats)
    generated_features = _features(extractor, generated_images, config, "generated features")
    return evaluate_features(generated_features, reference_stats_, config, extractor.weights_sha256)


def frechet_distance_of(first: torch.Tensor, second: torch.Tensor, extractor: FeatureExtractor, *,
                        batch_size: int = 64, progress: bool = False) -> float:
    """FD between two image batches ``(N, 3, H, W)``, uint8 or model outputs in [-1, 1] (e.g. originals and
    their reconstructions), in ``extractor``'s space."""
    pools = []
    for images, desc in ((first, "first set"), (second, "second set")):
        images = images if images.dtype == torch.uint8 else model_range_to_uint8(images)
        pools.append(extract_features(extractor, images, batch_size=batch_size, total=len(images), desc=desc,
                                      progress=progress).pool)
    return frechet_distance(gaussian_statistics(pools[0]), gaussian_statistics(pools[1]))
