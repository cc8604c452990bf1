"""Masked prior (MaskGIT; absorbing-state discrete diffusion): bidirectional attention over the code grid
with some positions replaced by a [MASK] token (id ``codebook_size``), text context as a prefix.

Training masks a cosine-schedule fraction of each grid and scores only the masked positions. Sampling
starts from an all-masked grid (or a partly given one) and reveals it in ``num_steps`` parallel steps; the
context's keys/values are computed once and cached, since context tokens never attend to the grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from tessera.prior.context import TextContext
from tessera.prior.sampling import cosine_mask_ratio, guided_log_probs, masked_decode
from tessera.prior.transformer import GridPrior, KVCache, PriorLossOutput, sampling_method


class MaskedPrior(GridPrior):
    kind = "masked"

    @property
    def mask_token_id(self) -> int:
        return self.config.codebook_size

    def forward(self, tokens: torch.Tensor, context: TextContext) -> torch.Tensor:
        """Logits (B, N, V) over the codebook at every grid position; ``tokens`` (B, h, w) hold codes or
        ``mask_token_id``."""
        tokens = tokens.flatten(1).long()  # (B, N)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.backbone(tokens, positions, context=context, causal=False)

    def random_mask(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, h, w) bool, True = masked: per sample ``ceil(cosine_mask_ratio(u) * N)`` positions (at least
        one), ``u ~ U(0, 1)``, chosen uniformly at random with torch's global RNG."""
        num_codes = self.config.num_codes
        ratio = cosine_mask_ratio(torch.rand(batch_size, device=device))  # (B,)
        num_masked = torch.ceil(ratio * num_codes).long().clamp(1, num_codes)  # (B,)
        ranks = torch.rand(batch_size, num_codes, device=device).argsort(dim=1).argsort(dim=1)  # (B, N)
        masked = ranks < num_masked[:, None]  # (B, N)
        return masked.view(batch_size, self.config.grid_size, self.config.grid_size)  # (B, h, w)

    def loss(self, codes: torch.Tensor, context: TextContext, *, drop_context: torch.Tensor | None = None,
             masked_positions: torch.Tensor | None = None) -> PriorLossOutput:
        """Label-smoothed cross-entropy on the masked positions only. ``masked_positions`` (B, h, w) bool
        fixes which positions are masked (e.g. for a deterministic held-out loss); by default
        ``random_mask``."""
        self.check_codes(codes)
        self.check_context(context, codes.shape[0])
        context = self.condition(context, drop_context)  # caption dropout draws first, then the mask
        if masked_positions is None:
            masked_positions = self.random_mask(codes.shape[0], codes.device)
        elif masked_positions.shape != codes.shape or not masked_positions.any():
            raise ValueError(f"masked_positions {tuple(masked_positions.shape)} must match codes "
                             f"{tuple(codes.shape)} and mask at least one position")
        masked = masked_positions.flatten(1).to(codes.device, torch.bool)  # (B, N)
        targets = codes.flatten(1).long()  # (B, N)
        logits = self(torch.where(masked, self.mask_token_id, targets), context)  # (B, N, V)
        logits, targets = logits[masked], targets[masked]  # (M, V), (M,)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.config.label_smoothing)
        accuracy = (logits.argmax(dim=-1) == targets).float().mean()
        return PriorLossOutput(loss=loss, accuracy=accuracy, num_tokens=masked.sum())

    @sampling_method
    def sample(self, context: TextContext, *, negative_context: TextContext | None = None,
               guidance_scale: float = 1.0, guidance_schedule: str = "constant", temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, num_steps: int = 8,
               generator: torch.Generator | None = None, initial_codes: torch.Tensor | None = None,
               initial_mask: torch.Tensor | None = None, choice_temperature: float = 4.5) -> torch.Tensor:
        """Codes (B, grid_size, grid_size) in ``num_steps`` parallel steps. ``initial_mask`` (B, h, w), True
        where ``initial_codes`` is given: those positions are kept; the others are generated."""
        device = self.null_hidden_states.device
        batch, size = context.batch_size, self.config.grid_size
        initial_tokens, known = self.initial_grid(batch, initial_codes, initial_mask)  # (B, N), (B, N)

        contexts = self.guidance_contexts(context.to(device), negative_context, guidance_scale)
        logits_fn = self._cached_logits_fn(contexts)
        codes = masked_decode(
            logits_fn, initial_tokens=initial_tokens, initial_known_mask=known,
            num_steps=num_steps, mask_token_id=self.mask_token_id, guidance_scale=guidance_scale,
            guidance_schedule=guidance_schedule, temperature=temperature, top_k=top_k, top_p=top_p,
            generator=generator, choice_temperature=choice_temperature,
        )
        return codes.view(batch, size, size)  # (B, h, w)

    @sampling_method
    def code_log_probs(self, codes: torch.Tensor, context: TextContext, *,
                       negative_context: TextContext | None = None, guidance_scale: float = 1.0,
                       group_stride: int = 1, chain: bool = False) -> torch.Tensor:
        """How likely the prior finds each of ``codes`` (B, h, w) for the text: float32 log-probabilities
        (B, h, w), guided as in ``sample``. A code is scored with its *group* masked: the codes whose row and
        column agree with it modulo ``group_stride``. ``group_stride=1`` masks the whole grid (each code given
        the text alone); ``grid_size`` masks one code at a time (given the text and every other code, the
        pseudo-likelihood); in between, a code is judged from the text and the codes around it. One forward
        per group, ``group_stride ** 2`` in all, after one cached context.

        ``chain=True`` decodes the groups in order instead: each group is scored given the text and the groups
        before it only (the later ones stay masked), so the scores of an image sum to its log-likelihood under
        that decoding order, a proper joint likelihood of the whole grid."""
        self.check_codes(codes)
        size = self.config.grid_size
        if not 1 <= group_stride <= size:
            raise ValueError(f"group_stride must lie in [1, {size}], got {group_stride}")
        device = self.null_hidden_states.device
        contexts = self.guidance_contexts(context.to(device), negative_context, guidance_scale)
        logits_fn = self._cached_logits_fn(contexts)
        targets = codes.to(device).flatten(1).long()  # (B, N)
        position = torch.arange(self.config.num_codes, device=device)
        rows, cols = position // size, position % size
        group = (rows % group_stride) * group_stride + cols % group_stride  # (N,)
        scores = torch.zeros(targets.shape, device=device)
        for index in range(group_stride ** 2):
            masked = group == index  # (N,)
            hidden = group >= index if chain else masked  # (N,)
            tokens = torch.where(hidden, self.mask_token_id, targets)  # (B, N)
            log_probs = guided_log_probs(logits_fn, tokens, targets, guidance_scale)  # (B, N)
            scores[:, masked] = log_probs[:, masked]
        return scores.view(codes.shape)  # (B, h, w)

    def _cached_logits_fn(self, contexts: TextContext) -> Callable[[torch.Tensor], torch.Tensor]:
        """Prefills ``contexts`` into a KV cache once; then (B', N) grid tokens -> (B', N, V) logits."""
        device = self.null_hidden_states.device
        cache = KVCache(self.config.num_layers, contexts.hidden_states.shape[1] + self.config.num_codes)
        no_tokens = torch.zeros(contexts.batch_size, 0, dtype=torch.long, device=device)
        self.backbone(no_tokens, no_tokens[0], context=contexts, cache=cache, causal=False)  # prefill
        positions = torch.arange(self.config.num_codes, device=device)

        def logits_fn(tokens: torch.Tensor) -> torch.Tensor:  # (B', N) -> (B', N, V)
            return self.backbone(tokens, positions, cache=cache, causal=False, commit=False)

        return logits_fn
