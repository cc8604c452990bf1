"""``ExportConfig``: what a tokenized-dataset export reads and how it writes (one ``train.py tokenize`` flag per field)."""

from __future__ import annotations

from dataclasses import dataclass

from tessera.core.config import JSONConfig

DTYPES = ("fp32", "bf16")


@dataclass
class ExportConfig(JSONConfig):
    """What to export and how (``train.py tokenize`` has one flag per field)."""

    vqgan: str = ""  # a saved VQ-GAN folder (the image tokenizer: train.py vqgan's output)
    data: str = ""  # any source pipelines.data reads
    output_dir: str = ""
    split: str = "train"
    image_column: str | None = None
    caption_column: str | None = None
    # a column of alternative captions (a list of strings, e.g. keywords), kept as "alternative_captions"
    alternative_caption_column: str | None = None
    max_samples: int | None = None  # the first rows of the source (before checks)
    streaming: bool = False
    batch_size: int = 256  # images per encoder call
    shard_size: int = 5000  # source rows per shard
    augmentations: int = 0  # 0: centre crop, no flip; N: N random crop + flip views per image
    seed: int = 0
    num_processes: int = 1  # local worker processes (not with accelerate launch)
    text_encoder: str | None = None  # a local transformers model folder, to cache its outputs
    max_text_length: int = 32
    dtype: str = "fp32"
    # write into a folder that holds something else (a pipeline, an imagefolder, a dataset, model weights)
    overwrite: bool = False

    def validate(self) -> None:
        for name in ("vqgan", "data", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"ExportConfig.{name} is required")
        for name, low in (("batch_size", 1), ("shard_size", 1), ("augmentations", 0), ("num_processes", 1),
                          ("max_text_length", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {self.max_samples}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
