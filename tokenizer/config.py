"""Configuration of the VQ-GAN image tokenizer, and its named size presets.

The encoder/decoder follow the taming-transformers / LlamaGen topology (``ch``, ``ch_mult``, ``num_res_blocks``,
``attn_resolutions``, ``z_channels``), so their checkpoints map onto ours by renaming keys. One extension:
``num_res_blocks`` may be a tuple with one entry per resolution level, which lets CPU presets keep the
full-resolution levels thin (those dominate CPU time) while staying in the same family.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from pipelines.pretrained import JSONConfig, dataclass_from_dict
from tokenizer.quantizers import QuantizerConfig


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

    def __post_init__(self) -> None:
        self.ch_mult = tuple(self.ch_mult)
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
    # 64x64 -> 8x8 codes (f8).
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
