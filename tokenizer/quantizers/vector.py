"""``VectorQuantizer`` ("vq"): nearest-neighbour lookup in a learned codebook, with optional factorised
low-dimensional lookup, l2-normalised codes, EMA codebook updates, k-means initialisation and dead-code
re-seeding (statistics summed over processes, new codes broadcast from rank 0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tessera.tokenizer.codebook_stats import code_histogram, stats_from_histogram
from tessera.tokenizer.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    all_reduce_sum_,
    broadcast_,
    from_tokens,
    project_fp32,
    projection,
    to_tokens,
)


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
    code_dim == C, unless `always_project`), optionally l2-normalised together with the codebook, and replaced by its nearest
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
        always_project: bool = False,
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

        self.in_proj = projection(in_channels, code_dim, always=always_project)
        self.out_proj = projection(code_dim, in_channels, always=always_project)
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
        centroids = broadcast_(flat[_sample_rows(flat.shape[0], num_codes, flat.device)].clone())  # (K, D)
        for _ in range(self.kmeans_iters):
            assign = _nearest(flat, centroids, self.l2_normalize)  # (N,)
            counts = all_reduce_sum_(code_histogram(assign, num_codes).float())  # (K,)
            sums = all_reduce_sum_(flat.new_zeros(num_codes, flat.shape[1]).index_add_(0, assign, flat))
            means = sums / counts.clamp_min(1.0).unsqueeze(1)  # (K, D)
            centroids = torch.where(counts.unsqueeze(1) > 0, means, centroids)  # empty clusters stay
            if self.l2_normalize:
                centroids = F.normalize(centroids, dim=1)
        self._write_codes(torch.ones(num_codes, dtype=torch.bool, device=flat.device), centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_state(self, flat: torch.Tensor, codes: torch.Tensor, histogram: torch.Tensor) -> None:
        counts = all_reduce_sum_(histogram.float())  # (K,) global counts of this step
        self.steps += 1
        if int(self.steps) == 1:
            self.usage_ema.copy_(counts)
        else:
            self.usage_ema.lerp_(counts.to(self.usage_ema.dtype), 1.0 - self.usage_ema_decay)
        if self.ema:
            sums = flat.new_zeros(self.codebook_size, self.code_dim).index_add_(0, codes, flat)  # (K, D)
            all_reduce_sum_(sums)
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
        new_codes = broadcast_(flat[_sample_rows(flat.shape[0], num_dead, flat.device)].clone())  # (M, D)
        self._write_codes(dead, new_codes)
        # A grace period: the new codes start at the average usage (at least the threshold).
        self.usage_ema[dead] = max(float(self.usage_ema.mean()), self.dead_code_threshold)
