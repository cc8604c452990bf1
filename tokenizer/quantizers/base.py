"""What every quantizer shares: the typed output, the interface, 1x1 projections, (B, C, h, w) <-> token
reshapes, and the torch.distributed helpers that keep codebooks identical on every process."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------- outputs and statistics


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, C, h, w) straight-through quantised vectors (after out_proj), input dtype
    codes: torch.Tensor  # (B, h, w) long, in [0, codebook_size)
    loss: torch.Tensor  # scalar: codebook + beta * commitment (codebook part is 0 for EMA, all 0 for FSQ)
    commitment_loss: torch.Tensor  # scalar, unweighted, detached (logging)
    codebook_loss: torch.Tensor  # scalar, detached (logging)
    usage: torch.Tensor  # scalar: fraction of codebook entries used in this batch
    perplexity: torch.Tensor  # scalar: exp(entropy of this batch's code histogram)


# --------------------------------------------------------------------------- shared helpers


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes in place (no-op without torch.distributed)."""
    if distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: torch.Tensor) -> torch.Tensor:
    """Replace with rank 0's values in place (no-op without torch.distributed)."""
    if distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def projection(in_channels: int, out_channels: int, *, always: bool = False) -> nn.Module:
    """1x1 convolution between channel counts; Identity when they are equal, unless ``always``."""
    if in_channels == out_channels and not always:
        return nn.Identity()
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


def project_fp32(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a `projection` in float32 whatever dtype its parameters were cast to."""
    if isinstance(layer, nn.Identity):
        return x
    bias = None if layer.bias is None else layer.bias.float()
    return F.conv2d(x, layer.weight.float(), bias)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B*h*w, D)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # (B*h*w, D)


def from_tokens(x: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """(B*h*w, D) -> (B, D, h, w)."""
    return x.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()  # (B, D, h, w)


class Quantizer(nn.Module):
    """Common interface. Subclasses set `codebook_size` and `in_channels`."""

    codebook_size: int
    in_channels: int

    def forward(self, z: torch.Tensor) -> QuantizerOutput:  # z: (B, C, h, w)
        raise NotImplementedError

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:  # (B, h, w) -> (B, C, h, w)
        raise NotImplementedError

    def vectors_to_codes(self, z: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, h, w)
        raise NotImplementedError

    def _check_vectors(self, z: torch.Tensor) -> None:
        if z.dim() != 4 or z.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, h, w) vectors, got {tuple(z.shape)}")

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.dim() != 3 or codes.is_floating_point():
            raise ValueError(f"expected (B, h, w) integer codes, got {tuple(codes.shape)} {codes.dtype}")
