"""The data layer: image-caption pairs from any source as checked, preprocessed model inputs, with a report of
every row skipped or converted. ``dataset`` is the loader, ``sources`` opens each kind of source, ``images``
decodes and preprocesses one image.

    from tessera.pipelines.data import load_image_caption_data
"""

from tessera.pipelines.data.dataset import (
    DataReport,
    ImageCaptionData,
    collate_image_captions,
    load_image_caption_data,
)
from tessera.pipelines.data.sources import DataSourceError

__all__ = ["DataReport", "DataSourceError", "ImageCaptionData", "collate_image_captions", "load_image_caption_data"]
