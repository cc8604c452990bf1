"""Quantizers of the VQ-GAN image tokenizer: encoder vectors <-> integer codes.

Two kinds, chosen by `QuantizerConfig.kind` and built by `build_quantizer`:

- `VectorQuantizer` ("vq"): nearest-neighbour lookup in a learned codebook, with optional factorised
  low-dimensional lookup, l2-normalised codes, EMA codebook updates, k-means initialisation and
  dead-code re-seeding.
- `FiniteScalarQuantizer` ("fsq", in `tokenizer/fsq.py`): rounding on a fixed per-channel grid.

Both return a `QuantizerOutput`, run in float32 even under autocast, and give codes in
[0, codebook_size). Codebook statistics (`tokenizer.codebook_stats`) are plain
functions so validation can accumulate a histogram over many batches.
"""

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tokenizer.codebook_stats import code_histogram, stats_from_histogram

QUANTIZER_KINDS = ("vq", "fsq")


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


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes in place (no-op without torch.distributed)."""
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _broadcast_(tensor: torch.Tensor) -> torch.Tensor:
    """Replace with rank 0's values in place (no-op without torch.distributed)."""
    if _distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def projection(in_channels: int, out_channels: int) -> nn.Module:
    """1x1 convolution between channel counts; Identity when they are equal."""
    if in_channels == out_channels:
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


# --------------------------------------------------------------------------- vector quantizer


def _sample_rows(num_rows: int, num_samples: int, device: torch.device) -> torch.Tensor:
    """Random row indices from the global RNG (reproducible under torch.manual_seed)."""
    if num_rows >= num_samples:
        return torch.randperm(num_rows, device=device)[:num_samples]
    return torch.randint(num_rows, (num_samples,), device=device)


def _nearest(x: torch.Tensor, codebook: torch.Tensor, normalized: bool) -> torch.Tensor:
    """Index of the nearest codebook row for each row of x: (N, D), (K, D) -> (N,) long.

    When both are unit vectors the nearest row is the one with the largest dot product. Rows are
    processed in chunks so the (chunk, K) score matrix stays around 64 MB.
    """
    sq_norms = None if normalized else codebook.square().sum(1)  # (K,)
    chunk = max(1, 2**24 // codebook.shape[0])
    codes = []
    for start in range(0, x.shape[0], chunk):
        scores = x[start : start + chunk] @ codebook.t()  # (chunk, K)
        if sq_norms is not None:
            scores = 2 * scores - sq_norms  # -|x - c|^2 + |x|^2
        codes.append(scores.argmax(dim=1))
    return torch.cat(codes) if codes else x.new_zeros(0, dtype=torch.long)


class VectorQuantizer(Quantizer):
    """Nearest-neighbour vector quantizer (VQ-VAE) with the usual training aids.

    z (B, C, h, w) is projected by a 1x1 conv to `code_dim` (factorised lookup; Identity when
    code_dim == C), optionally l2-normalised together with the codebook, and replaced by its nearest
    code. Loss = |sg[z] - q|^2 + beta * |z - sg[q]|^2 in the lookup space (beta weighs the encoder
    side); the output passes gradients straight through to z and is projected back to C channels.

    Training-mode side effects (never in eval mode, never in `vectors_to_codes`):
    - `kmeans_init`: Lloyd iterations on the first training batch set the codebook; the `initialized`
      buffer records it, so a loaded checkpoint never re-runs it.
    - `ema`: the codebook is a buffer moved by exponential moving averages of assigned vectors
      (Laplace-smoothed counts), and the codebook loss term is dropped.
    - usage: `usage_ema` is an EMA of per-code counts (global over processes), started at the first
      batch's counts. With `dead_code_threshold > 0`, every `reseed_every` training steps the codes
      whose usage EMA is below the threshold are replaced by random encoder outputs of the batch.
    Under torch.distributed, counts and sums are all-reduced and random choices come from rank 0.
    """

    def __init__(
        self,
        in_channels: int,
        codebook_size: int = 1024,
        code_dim: int = 8,
        *,
        l2_normalize: bool = True,
        beta: float = 0.25,
        ema: bool = False,
        ema_decay: float = 0.99,
        ema_eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        usage_ema_decay: float = 0.99,
        reseed_every: int = 1,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.l2_normalize = l2_normalize
        self.beta = beta
        self.ema = ema
        self.ema_decay = ema_decay
        self.ema_eps = ema_eps
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.usage_ema_decay = usage_ema_decay
        self.reseed_every = reseed_every

        self.in_proj = projection(in_channels, code_dim)
        self.out_proj = projection(code_dim, in_channels)
        codebook = torch.randn(codebook_size, code_dim)  # unit scale, like the encoder's outputs
        if ema:
            # Each code starts as if it had been seen once where it was initialised.
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
            self.register_buffer("ema_embed_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("usage_ema", torch.zeros(codebook_size))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training forwards seen

    # ---- lookup-space helpers (all float32)

    def _lookup_vectors(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) float32 -> (B*h*w, code_dim) vectors compared with the codebook."""
        flat = to_tokens(project_fp32(self.in_proj, z))  # (N, D)
        return F.normalize(flat, dim=1) if self.l2_normalize else flat

    def _search_codebook(self) -> torch.Tensor:
        codebook = self.codebook.detach().float()  # (K, D)
        return F.normalize(codebook, dim=1) if self.l2_normalize else codebook

    def _code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """(N,) codes -> (N, D) lookup-space vectors, differentiable w.r.t. a learned codebook."""
        q = F.embedding(codes, self.codebook.float())  # (N, D); saves indices, not the weight
        return F.normalize(q, dim=1) if self.l2_normalize else q

    def _output_vectors(self, q: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        return project_fp32(self.out_proj, from_tokens(q, batch, height, width))  # (B, C, h, w)

    # ---- public API

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        self._check_vectors(z)
        batch, _, height, width = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = self._lookup_vectors(z.float())  # (N, D)
            if self.training and not bool(self.initialized):
                self._kmeans_init(flat.detach())
            codes = _nearest(flat.detach(), self._search_codebook(), self.l2_normalize)  # (N,)
            q = self._code_vectors(codes)  # (N, D)

            codebook_loss = F.mse_loss(q, flat.detach())
            commitment_loss = F.mse_loss(flat, q.detach())
            loss = self.beta * commitment_loss
            if not self.ema:
                loss = loss + codebook_loss
            q_st = flat + (q - flat).detach()  # (N, D) straight-through: value q, gradient to z
            quantized = self._output_vectors(q_st, batch, height, width)  # (B, C, h, w)

            histogram = code_histogram(codes, self.codebook_size)  # (K,)
            usage, perplexity = stats_from_histogram(histogram)
            if self.training:
                self._update_state(flat.detach(), codes, histogram)
        return QuantizerOutput(
            quantized=quantized.to(z.dtype),
            codes=codes.reshape(batch, height, width),  # (B, h, w)
            loss=loss,
            commitment_loss=commitment_loss.detach(),
            codebook_loss=codebook_loss.detach(),
            usage=usage,
            perplexity=perplexity,
        )

    @torch.no_grad()
    def vectors_to_codes(self, z: torch.Tensor) -> torch.Tensor:
        self._check_vectors(z)
        batch, _, height, width = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = self._lookup_vectors(z.float())  # (N, D)
            codes = _nearest(flat, self._search_codebook(), self.l2_normalize)  # (N,)
        return codes.reshape(batch, height, width)  # (B, h, w)

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        self._check_codes(codes)
        batch, height, width = codes.shape
        with torch.autocast(device_type=codes.device.type, enabled=False):
            q = self._code_vectors(codes.reshape(-1).long())  # (N, D)
            vectors = self._output_vectors(q, batch, height, width)  # (B, C, h, w)
        return vectors.to(self.codebook.dtype)

    # ---- training-mode state updates

    @torch.no_grad()
    def _write_codes(self, mask: torch.Tensor, vectors: torch.Tensor) -> None:
        """Set the codes selected by `mask` (K,) bool to `vectors` (M, D), EMA state included."""
        self.codebook[mask] = vectors.to(self.codebook.dtype)  # in place; autograd saved no copy of it
        if self.ema:
            self.ema_embed_sum[mask] = vectors.to(self.ema_embed_sum.dtype)
            self.ema_cluster_size[mask] = 1.0

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        """Lloyd's algorithm on this batch's lookup vectors (N, D); spherical when l2-normalised."""
        num_codes = self.codebook_size
        centroids = _broadcast_(flat[_sample_rows(flat.shape[0], num_codes, flat.device)].clone())  # (K, D)
        for _ in range(self.kmeans_iters):
            assign = _nearest(flat, centroids, self.l2_normalize)  # (N,)
            counts = _all_reduce_sum_(code_histogram(assign, num_codes).float())  # (K,)
            sums = _all_reduce_sum_(flat.new_zeros(num_codes, flat.shape[1]).index_add_(0, assign, flat))
            means = sums / counts.clamp_min(1.0).unsqueeze(1)  # (K, D)
            centroids = torch.where(counts.unsqueeze(1) > 0, means, centroids)  # empty clusters stay
            if self.l2_normalize:
                centroids = F.normalize(centroids, dim=1)
        self._write_codes(torch.ones(num_codes, dtype=torch.bool, device=flat.device), centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_state(self, flat: torch.Tensor, codes: torch.Tensor, histogram: torch.Tensor) -> None:
        counts = _all_reduce_sum_(histogram.float())  # (K,) global counts of this step
        self.steps += 1
        if int(self.steps) == 1:
            self.usage_ema.copy_(counts)
        else:
            self.usage_ema.lerp_(counts.to(self.usage_ema.dtype), 1.0 - self.usage_ema_decay)
        if self.ema:
            sums = flat.new_zeros(self.codebook_size, self.code_dim).index_add_(0, codes, flat)  # (K, D)
            _all_reduce_sum_(sums)
            self.ema_cluster_size.lerp_(counts.to(self.codebook.dtype), 1.0 - self.ema_decay)  # (K,)
            self.ema_embed_sum.lerp_(sums.to(self.codebook.dtype), 1.0 - self.ema_decay)  # (K, D)
            # Laplace smoothing keeps rarely used codes from dividing by ~0; the total is unchanged.
            size, eps = self.ema_cluster_size, self.ema_eps
            smoothed = (size + eps) / (size.sum() + self.codebook_size * eps) * size.sum()  # (K,)
            self.codebook.copy_(self.ema_embed_sum / smoothed.unsqueeze(1))  # (K, D)
        if self.dead_code_threshold > 0 and int(self.steps) % self.reseed_every == 0:
            self._reseed_dead_codes(flat)

    @torch.no_grad()
    def _reseed_dead_codes(self, flat: torch.Tensor) -> None:
        dead = self.usage_ema < self.dead_code_threshold  # (K,) bool, identical on every process
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        new_codes = _broadcast_(flat[_sample_rows(flat.shape[0], num_dead, flat.device)].clone())  # (M, D)
        self._write_codes(dead, new_codes)
        # A grace period: the new codes start at the average usage (at least the threshold).
        self.usage_ema[dead] = max(float(self.usage_ema.mean()), self.dead_code_threshold)


# --------------------------------------------------------------------------- config and factory


@dataclass
class QuantizerConfig:
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


def build_quantizer(config: QuantizerConfig, in_channels: int) -> Quantizer:
    """The quantizer described by `config`, for encoder outputs with `in_channels` channels."""
    if config.kind == "fsq":
        from tokenizer.fsq import FiniteScalarQuantizer  # fsq.py imports this module

        return FiniteScalarQuantizer(in_channels, config.fsq_levels)
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
    )
