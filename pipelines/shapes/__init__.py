"""The built-in synthetic world: scenes of coloured shapes, their captions (several phrasings and languages),
a rendered ``datasets`` dataset with train / test / holdout splits, and an analytic evaluator that judges
generated images against captions. It imports nothing from the models; the data layer offers it as a source.

    from tessera.pipelines.shapes import shapes_dataset, evaluate
    data = shapes_dataset(1000, split="test")
    report = evaluate(images, data["caption"])

``python -m tessera.pipelines.shapes DIR`` writes an imagefolder; ``python -m tessera.pipelines.shapes.evaluate DIR`` scores one.
"""

from tessera.pipelines.shapes.captions import (
    CAPTION_STYLES,
    caption,
    caption_style,
    parse_caption,
    same_scene,
)
from tessera.pipelines.shapes.dataset import (
    DEFAULT_HOLDOUT,
    SPLITS,
    render,
    sample_spec,
    shapes_dataset,
    spec_split,
    write_imagefolder,
)
from tessera.pipelines.shapes.evaluate import EvaluationReport, Judgement, evaluate, judge_image
from tessera.pipelines.shapes.scene import COLORS, POSITIONS, RELATIONS, SHAPES, SIZES, SceneSpec, ShapeObject

__all__ = [
    "CAPTION_STYLES", "COLORS", "DEFAULT_HOLDOUT", "POSITIONS", "RELATIONS", "SHAPES", "SIZES", "SPLITS",
    "EvaluationReport", "Judgement", "SceneSpec", "ShapeObject", "caption", "caption_style", "evaluate",
    "judge_image", "parse_caption", "render", "same_scene", "sample_spec", "shapes_dataset", "spec_split", "write_imagefolder",
]
