"""Generative-quality evaluation: FD (FID with the standard Inception weights), KID and Inception Score of image
sets, offline in EfficientNet-Lite0 features by default. ``evaluate`` is the entry point, ``images`` reads image
sets, ``features`` the feature networks (``inception`` the standard one), ``metrics`` the formulas,
``statistics`` the cached reference statistics.

    from tessera.pipelines.evaluation import evaluate_images
    report = evaluate_images("samples/", "heldout/")            # efficientnet-lite0 features, offline
    report = evaluate_images("samples/", "heldout/", features="inception", weights="pt_inception-2015-12-05.pth")
"""

from tessera.pipelines.evaluation.evaluate import (
    EvaluationConfig,
    ImageQualityReport,
    evaluate_features,
    evaluate_images,
    frechet_distance_of,
    reference_statistics,
)
from tessera.pipelines.evaluation.features import (
    FEATURE_SPACES,
    Features,
    extract_features,
    load_feature_extractor,
)
from tessera.pipelines.evaluation.images import ImageSet, model_range_to_uint8, open_image_set
from tessera.pipelines.evaluation.statistics import StatisticsMismatchError

__all__ = ["FEATURE_SPACES", "EvaluationConfig", "Features", "ImageQualityReport", "ImageSet",
           "StatisticsMismatchError", "evaluate_features", "evaluate_images", "extract_features", "frechet_distance_of",
           "load_feature_extractor", "model_range_to_uint8", "open_image_set", "reference_statistics"]
