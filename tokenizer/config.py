"""Configuration of the VQ-GAN image tokenizer, and its named size presets.

The encoder/decoder follow the taming-transformers / LlamaGen topology (``ch``, ``ch_mult``, ``num_res_blocks``,
``attn_resolutions``, ``z_channels``), so their checkpoints map onto ours by renaming keys (``tokenizer.convert``
does it, strictly, for taming-transformers, LlamaGen and diffusers). Extensions:

- ``num_res_blocks`` may be a tuple with one entry per resolution level, which lets CPU presets keep the
  full-resolution levels thin (those dominate CPU time) while staying in the same family;
- ``mid_attention=False`` drops the attention block between the two middle residual blocks (aMUSEd's VQ);
- ``pixel_range`` is the range the network itself works in; ``VQGAN`` maps from and to [-1, 1] at its edge,
  so callers always pass and get [-1, 1] (aMUSEd's VQ works in [0, 1]);
- ``QuantizerConfig.always_project`` keeps the 1x1 projections around the quantizer even when ``code_dim``
  equals ``z_channels`` (taming's and diffusers' ``quant_conv`` / ``post_quant_conv``).

The defaults are the original behaviour: a config written before these fields existed loads unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

from tessera.core.config import JSONConfig, dataclass_from_dict

QUANTIZER_KINDS = ("vq", "fsq")
PIXEL_RANGES = ((-1, 1), (0, 1))


@dataclass
class QuantizerConfig(JSONConfig):
    """JSON-serialisable quantizer settings (nested in VQGANConfig).

    For kind "fsq" `codebook_size` is derived: it is always set to prod(fsq_levels), and `code_dim`,
    `l2_normalize`, `beta` and the EMA/k-means/reseeding fields are ignored.
    """

    kind: str = "vq"  # "vq" | "fsq"
    codebook_size: int = 1024
    code_dim: int = 8  # factorised lookup dim (vq)
    l2_normalize: bool = True
    beta: float = 0.25  # weight of the commitment (encoder-side) term
    ema: bool = False
    ema_decay: float = 0.99
    kmeans_init: bool = False
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.0  # 0 disables reseeding; usage-EMA count below which a code is reseeded
    usage_ema_decay: float = 0.99
    reseed_every: int = 1  # training steps between dead-code checks
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    always_project: bool = False  # 1x1 in/out projections even when code_dim == z_channels (imported models)

    def __post_init__(self):
        self.fsq_levels = tuple(int(level) for level in self.fsq_levels)  # JSON gives a list
        if self.kind not in QUANTIZER_KINDS:
            raise ValueError(f"unknown quantizer kind {self.kind!r}; expected one of {QUANTIZER_KINDS}")
        if not self.fsq_levels or min(self.fsq_levels) < 2:
            raise ValueError(f"fsq_levels must be non-empty integers >= 2, got {self.fsq_levels}")
        if self.kind == "fsq":
            self.codebook_size = math.prod(self.fsq_levels)
        for name in ("codebook_size", "code_dim", "kmeans_iters", "reseed_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.beta < 0 or self.dead_code_threshold < 0:
            raise ValueError("beta and dead_code_threshold must be non-negative")
        for name in ("ema_decay", "usage_ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class DiscriminatorConfig(JSONConfig):
    """PatchGAN discriminator (pix2pix / taming ``NLayerDiscriminator``)."""

    base_channels: int = 64
    num_layers: int = 3


@dataclass
class VQGANConfig(JSONConfig):
    resolution: int = 32
    in_channels: int = 3
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int | tuple[int, ...] = 2
    attn_resolutions: tuple[int, ...] = ()
    z_channels: int = 64
    dropout: float = 0.0
    norm_groups: int = 32
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    mid_attention: bool = True  # attention between the middle residual blocks (off in aMUSEd's VQ)
    pixel_range: tuple[int, int] = (-1, 1)  # what the network works in; callers always use [-1, 1]

    def __post_init__(self) -> None:
        self.ch_mult = tuple(self.ch_mult)
        self.pixel_range = tuple(self.pixel_range)  # JSON gives a list
        if self.pixel_range not in PIXEL_RANGES:
            raise ValueError(f"pixel_range must be one of {PIXEL_RANGES}, got {self.pixel_range}")
        self.attn_resolutions = tuple(self.attn_resolutions)
        if isinstance(self.num_res_blocks, (list, tuple)):
            self.num_res_blocks = tuple(self.num_res_blocks)
            if len(self.num_res_blocks) != len(self.ch_mult):
                raise ValueError(
                    f"num_res_blocks {self.num_res_blocks} needs one entry per ch_mult level {self.ch_mult}"
                )
        if isinstance(self.quantizer, dict):
            self.quantizer = dataclass_from_dict(QuantizerConfig, self.quantizer)
        if self.resolution % self.downsample_factor:
            raise ValueError(f"resolution {self.resolution} is not divisible by {self.downsample_factor}")
        for width in [self.ch * m for m in self.ch_mult] + [self.z_channels]:
            if width % self.norm_groups and width != self.z_channels:
                raise ValueError(f"channel width {width} is not divisible by norm_groups={self.norm_groups}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_size(self) -> int:
        """Side of the code grid: ``resolution // downsample_factor``."""
        return self.resolution // self.downsample_factor

    def res_blocks_at(self, level: int) -> int:
        blocks = self.num_res_blocks
        return blocks[level] if isinstance(blocks, tuple) else blocks

    def replace(self, **changes) -> VQGANConfig:
        return dataclasses.replace(copy.deepcopy(self), **changes)


VQGAN_PRESETS: dict[str, VQGANConfig] = {
    # Unit tests: 8x8 images -> 4x4 codes, a few thousand parameters.
    "tiny": VQGANConfig(
        resolution=8, ch=8, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, norm_groups=4,
        quantizer=QuantizerConfig(codebook_size=16, code_dim=4),
    ),
    # CPU default: 32x32 -> 8x8 codes. Thin full-resolution level, attention only on the 8x8 grid.
    "cpu-32": VQGANConfig(
        resolution=32, ch=32, ch_mult=(1, 2, 4), num_res_blocks=(1, 1, 2), attn_resolutions=(8,),
        z_channels=64, norm_groups=16,
        quantizer=QuantizerConfig(codebook_size=512, code_dim=8, dead_code_threshold=0.5, reseed_every=10),
    ),
    # CPU 64x64 -> 16x16 codes (f4, like cpu-32): cpu-32's topology at twice the resolution with its deepest
    # level at 64 channels instead of 128, so a step costs about 2.2x (before the GAN) to 2.6x (after) a cpu-32
    # step at equal batch. Chosen over an f8 design (64 -> 8x8, cpu-32's widths with one more level) by held-out
    # PSNR at equal wall time on Tux Paint stamps (benchmarks/real_images.py; README, "Real images").
    "cpu-64": VQGANConfig(
        resolution=64, ch=32, ch_mult=(1, 2, 2), num_res_blocks=(1, 1, 2), attn_resolutions=(),
        z_channels=64, norm_groups=16,
        quantizer=QuantizerConfig(codebook_size=512, code_dim=8, dead_code_threshold=0.5, reseed_every=10),
    ),
    # 64x64 -> 8x8 codes (f8), for GPUs (about 8.5 s a step on the 2-core CPU).
    "base-64": VQGANConfig(
        resolution=64, ch=64, ch_mult=(1, 1, 2, 4), num_res_blocks=(1, 1, 2, 2), attn_resolutions=(8,),
        z_channels=128, norm_groups=32,
        quantizer=QuantizerConfig(codebook_size=4096, code_dim=8, dead_code_threshold=0.25, reseed_every=10),
    ),
    # taming-transformers f16 shape at 256x256 -> 16x16 codes, for GPUs.
    "f16-256": VQGANConfig(
        resolution=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
        z_channels=256, norm_groups=32,
        quantizer=QuantizerConfig(codebook_size=16384, code_dim=8, dead_code_threshold=0.1, reseed_every=10),
    ),
}


def vqgan_preset(name: str) -> VQGANConfig:
    if name not in VQGAN_PRESETS:
        raise ValueError(f"unknown VQ-GAN preset {name!r}; choose one of {sorted(VQGAN_PRESETS)}")
    return copy.deepcopy(VQGAN_PRESETS[name])
