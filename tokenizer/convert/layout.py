"""The ``VQGANConfig`` that weights in Tessera's (taming's) layout describe, read from their names and shapes.

Widths come from the convolutions, block counts from the indices, attention levels from where ``attn`` blocks
are; what weights cannot say (the image resolution, which places the attention levels; the group-norm group
count; l2-normalised lookup; the pixel range) is passed in. A structure Tessera cannot build -- a decoder whose
widths or attention differ from the encoder's, an encoder that outputs twice ``z_channels`` -- is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tessera.tokenizer.config import QuantizerConfig, VQGANConfig
from tessera.tokenizer.convert.files import UnsupportedCheckpointError

Shapes = Mapping[str, tuple[int, ...]]


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    """Sorted distinct values of the first group of ``pattern`` (matched at the start of each key)."""
    return sorted({int(match.group(1)) for key in shapes if (match := re.match(pattern, key))})


def _shape(shapes: Shapes, key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise UnsupportedCheckpointError(f"the checkpoint has no {key}; it is not a taming-style VQ-GAN")
    return shapes[key]


def _level_structure(shapes: Shapes, side: str, num_levels: int) -> tuple[list[int], list[bool]]:
    """Residual blocks and whether there is attention, per level of ``encoder.down`` or ``decoder.up``."""
    stack = "down" if side == "encoder" else "up"
    blocks, attention = [], []
    for level in range(num_levels):
        count = len(_indices(shapes, rf"{side}\.{stack}\.{level}\.block\.(\d+)\."))
        attns = len(_indices(shapes, rf"{side}\.{stack}\.{level}\.attn\.(\d+)\."))
        if attns not in (0, count):
            raise UnsupportedCheckpointError(
                f"{side} level {level} has {attns} attention blocks for {count} residual blocks; Tessera puts one "
                "after every residual block of a level or none")
        blocks.append(count)
        attention.append(attns > 0)
    return blocks, attention


def infer_vqgan_config(shapes: Shapes, *, resolution: int, norm_groups: int = 32, l2_normalize: bool = False,
                       pixel_range: tuple[int, int] = (-1, 1)) -> VQGANConfig:
    """The config of the model whose (Tessera-named) weights have these ``shapes``."""
    ch, in_channels = _shape(shapes, "encoder.conv_in.weight")[:2]
    num_levels = len(_indices(shapes, r"encoder\.down\.(\d+)\."))
    if num_levels == 0 or len(_indices(shapes, r"decoder\.up\.(\d+)\.")) != num_levels:
        raise UnsupportedCheckpointError("encoder and decoder have different numbers of resolution levels")
    widths = [_shape(shapes, f"encoder.down.{level}.block.0.conv1.weight")[0] for level in range(num_levels)]
    if any(width % ch for width in widths):
        raise UnsupportedCheckpointError(f"level widths {widths} are not multiples of conv_in's {ch} channels")
    decoder_widths = [_shape(shapes, f"decoder.up.{level}.block.0.conv1.weight")[0] for level in range(num_levels)]
    if decoder_widths != widths:
        raise UnsupportedCheckpointError(
            f"decoder level widths {decoder_widths} differ from the encoder's {widths}; Tessera's VQ-GAN has one "
            "ch_mult for both")
    encoder_blocks, encoder_attention = _level_structure(shapes, "encoder", num_levels)
    decoder_blocks, decoder_attention = _level_structure(shapes, "decoder", num_levels)
    if decoder_blocks != [count + 1 for count in encoder_blocks]:
        raise UnsupportedCheckpointError(
            f"decoder residual blocks per level {decoder_blocks} are not the encoder's {encoder_blocks} plus one")
    if decoder_attention != encoder_attention:
        raise UnsupportedCheckpointError(
            f"attention levels differ: encoder {encoder_attention}, decoder {decoder_attention} (finest first)")
    mid_attention = "encoder.mid.attn_1.q.weight" in shapes
    if ("decoder.mid.attn_1.q.weight" in shapes) != mid_attention:
        raise UnsupportedCheckpointError("only one of encoder and decoder has a middle attention block")
    z_channels = _shape(shapes, "encoder.conv_out.weight")[0]
    decoder_z = _shape(shapes, "decoder.conv_in.weight")[1]
    if z_channels != decoder_z:
        raise UnsupportedCheckpointError(
            f"the encoder outputs {z_channels} channels but the decoder takes {decoder_z} (a double_z encoder "
            "is a KL autoencoder's, not a VQ-GAN's)")
    codebook_size, code_dim = _shape(shapes, "quantizer.codebook")
    factor = 2 ** (num_levels - 1)
    if resolution % factor:
        raise UnsupportedCheckpointError(f"--resolution {resolution} is not a multiple of the model's "
                                         f"downsampling factor {factor}")
    blocks = encoder_blocks[0] if len(set(encoder_blocks)) == 1 else tuple(encoder_blocks)
    return VQGANConfig(
        resolution=resolution, in_channels=in_channels, ch=ch, ch_mult=tuple(width // ch for width in widths),
        num_res_blocks=blocks,
        attn_resolutions=tuple(resolution // 2**level for level in range(num_levels) if encoder_attention[level]),
        z_channels=z_channels, norm_groups=norm_groups, mid_attention=mid_attention, pixel_range=pixel_range,
        quantizer=QuantizerConfig(codebook_size=codebook_size, code_dim=code_dim, l2_normalize=l2_normalize,
                                  always_project="quantizer.in_proj.weight" in shapes),
    )
