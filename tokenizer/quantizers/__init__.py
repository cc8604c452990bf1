"""Quantizers of the VQ-GAN image tokenizer: encoder vectors <-> integer codes.

Two kinds, chosen by `QuantizerConfig.kind` and built by `build_quantizer`:

- `VectorQuantizer` ("vq", in `vector.py`): nearest-neighbour lookup in a learned codebook, with optional factorised
  low-dimensional lookup, l2-normalised codes, EMA codebook updates, k-means initialisation and
  dead-code re-seeding.
- `FiniteScalarQuantizer` ("fsq", in `fsq.py`): rounding on a fixed per-channel grid.

Both return a `QuantizerOutput`, run in float32 even under autocast, and give codes in
[0, codebook_size). Codebook statistics (`tokenizer.codebook_stats`) are plain
functions so validation can accumulate a histogram over many batches.
"""

from __future__ import annotations

from tessera.tokenizer.config import QuantizerConfig
from tessera.tokenizer.quantizers.base import Quantizer, QuantizerOutput
from tessera.tokenizer.quantizers.fsq import FiniteScalarQuantizer
from tessera.tokenizer.quantizers.vector import VectorQuantizer

__all__ = ["FiniteScalarQuantizer", "Quantizer", "QuantizerConfig", "QuantizerOutput", "VectorQuantizer",
           "build_quantizer"]


def build_quantizer(config: QuantizerConfig, in_channels: int) -> Quantizer:
    """The quantizer described by `config`, for encoder outputs with `in_channels` channels."""
    if config.kind == "fsq":
        return FiniteScalarQuantizer(in_channels, config.fsq_levels, always_project=config.always_project)
    return VectorQuantizer(
        in_channels,
        config.codebook_size,
        config.code_dim,
        l2_normalize=config.l2_normalize,
        beta=config.beta,
        ema=config.ema,
        ema_decay=config.ema_decay,
        kmeans_init=config.kmeans_init,
        kmeans_iters=config.kmeans_iters,
        dead_code_threshold=config.dead_code_threshold,
        usage_ema_decay=config.usage_ema_decay,
        reseed_every=config.reseed_every,
        always_project=config.always_project,
    )
