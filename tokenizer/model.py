"""The VQ-GAN image tokenizer: a convolutional encoder, a quantizer, and a convolutional decoder.

Module names follow taming-transformers (``encoder.down.0.block.0.conv1`` ...): taming's checkpoints, LlamaGen's
and diffusers' ``VQModel`` map onto ours by renaming keys; ``tokenizer.convert`` does it strictly and its tests
compare codes and pixels with each project's own code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tessera.core.hashing import state_dict_sha256
from tessera.core.pretrained import PretrainedMixin
from tessera.tokenizer.config import VQGANConfig
from tessera.tokenizer.quantizers import build_quantizer


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(groups, channels), num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        # (B, C, h, w) -> (B, 1, h*w, C): one head over the flattened grid
        q, k, v = (proj(normed).flatten(2).transpose(1, 2).unsqueeze(1) for proj in (self.q, self.k, self.v))
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.squeeze(1).transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
        return x + self.proj_out(attended)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad as in taming: (H, W) -> (H/2, W/2)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: residual blocks, optional attention after each, optional resampling."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module], resample: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)
        if resample is not None:
            self.add_module(name, resample)
        self.resample_name = name if resample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.block):
            x = block(x)
            if self.attn:
                x = self.attn[index](x)
        if self.resample_name is not None:
            x = getattr(self, self.resample_name)(x)
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, dropout: float, attention: bool = True):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups, dropout)
        self.attn_1 = AttnBlock(channels, groups) if attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, groups, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """(B, 3, H, W) images -> (B, z_channels, H/f, W/f) latents."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        groups, dropout = config.norm_groups, config.dropout
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1)
        widths = [config.ch * m for m in (1, *config.ch_mult)]
        resolution = config.resolution
        self.down = nn.ModuleList()
        for level in range(len(config.ch_mult)):
            blocks, attns = [], []
            width_in, width_out = widths[level], widths[level + 1]
            for _ in range(config.res_blocks_at(level)):
                blocks.append(ResnetBlock(width_in, width_out, groups, dropout))
                width_in = width_out
                if resolution in config.attn_resolutions:
                    attns.append(AttnBlock(width_out, groups))
            last = level == len(config.ch_mult) - 1
            self.down.append(Level(blocks, attns, None if last else Downsample(width_out), "downsample"))
            resolution //= 1 if last else 2
        self.mid = MidBlock(widths[-1], groups, dropout, config.mid_attention)
        self.norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], config.z_channels, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(images)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """(B, z_channels, h, w) latents -> (B, 3, h*f, w*f) images (unbounded; ~[-1, 1] after training)."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        groups, dropout = config.norm_groups, config.dropout
        widths = [config.ch * m for m in config.ch_mult]
        resolution = config.latent_size
        self.conv_in = nn.Conv2d(config.z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1], groups, dropout, config.mid_attention)
        # taming builds levels from the coarsest up and stores them by level index (up.0 = finest).
        levels: list[Level] = []
        width_in = widths[-1]
        for level in reversed(range(len(config.ch_mult))):
            blocks, attns = [], []
            for _ in range(config.res_blocks_at(level) + 1):
                blocks.append(ResnetBlock(width_in, widths[level], groups, dropout))
                width_in = widths[level]
                if resolution in config.attn_resolutions:
                    attns.append(AttnBlock(width_in, groups))
            first = level == 0
            levels.insert(0, Level(blocks, attns, None if first else Upsample(width_in), "upsample"))
            resolution *= 1 if first else 2
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(width_in, groups)
        self.conv_out = nn.Conv2d(width_in, config.in_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(latents))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class VQGANOutput:
    reconstruction: torch.Tensor  # (B, 3, H, W) in the [-1, 1] range, not clamped
    codes: torch.Tensor  # (B, h, w) long
    quantizer_loss: torch.Tensor  # codebook + beta * commitment
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    usage: torch.Tensor  # fraction of the codebook used in this batch
    perplexity: torch.Tensor


class VQGAN(nn.Module, PretrainedMixin):
    """Image tokenizer: ``encode`` images to code grids, ``decode`` code grids to images in [-1, 1]."""

    config_class = VQGANConfig

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = build_quantizer(config.quantizer, config.z_channels)
        self.decoder = Decoder(config)

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def codes_sha256(self) -> str:
        """What the codes mean, as a hash: the config and the quantizer's learned weights (the codebook and its
        projections, always float32), so a half-precision copy of the VQ-GAN hashes the same and another
        VQ-GAN of the same size does not. A prior records the hash of the VQ-GAN it was trained with
        (``PriorConfig.vqgan_sha256``); usage statistics and the encoder and decoder weights are left out."""
        learned = {name for name, _ in self.quantizer.named_parameters()} | {"codebook"}
        tensors = {name: tensor.float() for name, tensor in self.quantizer.state_dict().items() if name in learned}
        config = json.dumps(self.config.to_dict(), sort_keys=True)
        return hashlib.sha256(f"{config}|{state_dict_sha256(tensors)}".encode()).hexdigest()

    @property
    def last_layer_weight(self) -> torch.Tensor:
        """The decoder's output convolution: the adaptive GAN weight compares gradients here."""
        return self.decoder.conv_out.weight

    def check_images(self, images: torch.Tensor) -> None:
        expected = (self.config.in_channels, self.config.resolution, self.config.resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, expected))}), got {tuple(images.shape)}")

    def to_network_range(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the range the encoder works in (``config.pixel_range``)."""
        return images if self.config.pixel_range == (-1, 1) else (images + 1) / 2

    def from_network_range(self, pixels: torch.Tensor) -> torch.Tensor:
        """Decoder outputs in ``config.pixel_range`` -> [-1, 1] images (not clamped)."""
        return pixels if self.config.pixel_range == (-1, 1) else pixels * 2 - 1

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, h, w) long codes."""
        self.check_images(images)
        return self.quantizer.vectors_to_codes(self.encoder(self.to_network_range(images)))

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) codes -> (B, z_channels, h, w) quantised latents."""
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got [{codes.min()}, {codes.max()}]")
        return self.quantizer.codes_to_vectors(codes.long())

    def vectors_to_codes(self, latents: torch.Tensor) -> torch.Tensor:
        return self.quantizer.vectors_to_codes(latents)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) codes -> (B, 3, H, W) images clamped to [-1, 1]."""
        return self.from_network_range(self.decoder(self.codes_to_vectors(codes))).clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> VQGANOutput:
        self.check_images(images)
        quantized = self.quantizer(self.encoder(self.to_network_range(images)))
        return VQGANOutput(
            reconstruction=self.from_network_range(self.decoder(quantized.quantized)),
            codes=quantized.codes,
            quantizer_loss=quantized.loss,
            commitment_loss=quantized.commitment_loss,
            codebook_loss=quantized.codebook_loss,
            usage=quantized.usage,
            perplexity=quantized.perplexity,
        )
