"""Tokenized datasets: image-caption data encoded once by a VQ-GAN into parquet shards (``export``, one
process's share in ``shards``), and the reading side with its checks (``dataset``).

    from tessera.pipelines.tokens import ExportConfig, export_tokenized_dataset, load_tokenized_dataset
"""

from tessera.pipelines.tokens.dataset import (
    check_tokenizer_matches,
    collate_tokenized,
    load_tokenized_dataset,
    read_export_info,
)
from tessera.pipelines.tokens.export import ExportConfig, export_tokenized_dataset

__all__ = ["ExportConfig", "check_tokenizer_matches", "collate_tokenized", "export_tokenized_dataset",
           "load_tokenized_dataset", "read_export_info"]
