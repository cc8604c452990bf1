"""Autoregressive prior: the text context as a prefix, then the codes in raster order, causal attention.

Slot ``j`` of the grid part of the sequence holds the start token (``j = 0``) or code ``j - 1``, plus the
row/column embedding of position ``j``, and predicts code ``j``. Sampling prefills the context and the start
slot into a KV cache, then feeds one code per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from tessera.prior.context import TextContext
from tessera.prior.sampling import autoregressive_decode, guided_log_probs
from tessera.prior.transformer import GridPrior, KVCache, PriorLossOutput, sampling_method


class AutoregressivePrior(GridPrior):
    kind = "autoregressive"

    @property
    def start_token_id(self) -> int:
        return self.config.codebook_size

    def forward(self, codes: torch.Tensor, context: TextContext) -> torch.Tensor:
        """Teacher-forced logits (B, N, V): row ``j`` predicts code ``j`` of the raster-order grid."""
        targets = codes.flatten(1).long()  # (B, N)
        start = targets.new_full((targets.shape[0], 1), self.start_token_id)
        tokens = torch.cat([start, targets[:, :-1]], dim=1)  # (B, N): shifted right by one
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.backbone(tokens, positions, context=context, causal=True)

    def loss(self, codes: torch.Tensor, context: TextContext, *,
             drop_context: torch.Tensor | None = None) -> PriorLossOutput:
        """Cross-entropy of every code given the codes before it and the (possibly dropped) context."""
        self.check_codes(codes)
        self.check_context(context, codes.shape[0])
        logits = self(codes, self.condition(context, drop_context))  # (B, N, V)
        targets = codes.flatten(1).long()  # (B, N)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        accuracy = (logits.argmax(dim=-1) == targets).float().mean()
        return PriorLossOutput(loss=loss, accuracy=accuracy, num_tokens=torch.tensor(targets.numel(), device=targets.device))

    @sampling_method
    def sample(self, context: TextContext, *, negative_context: TextContext | None = None,
               guidance_scale: float = 1.0, guidance_schedule: str = "constant", temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
               initial_codes: torch.Tensor | None = None, initial_mask: torch.Tensor | None = None,
               use_cache: bool = True) -> torch.Tensor:
        """Codes (B, grid_size, grid_size), one per step in raster order. ``initial_mask`` (B, h, w), True where
        ``initial_codes`` is given: those codes are forced (not sampled) when their turn comes, so each
        generated code is conditioned on the text and on every code before it in raster order (the given ones
        above it and to its left), never on given codes after it (below, or to its right in its row)."""
        device = self.null_hidden_states.device
        initial_tokens, known = self.initial_grid(context.batch_size, initial_codes, initial_mask)  # (B, N) x 2
        contexts = self.guidance_contexts(context.to(device), negative_context, guidance_scale)
        make = self._cached_logits_fn if use_cache else self._full_logits_fn
        codes = autoregressive_decode(
            make(contexts), batch_size=context.batch_size, num_tokens=self.config.num_codes, device=device,
            guidance_scale=guidance_scale, guidance_schedule=guidance_schedule, temperature=temperature,
            top_k=top_k, top_p=top_p, generator=generator, initial_tokens=initial_tokens,
            initial_known_mask=known,
        )
        return codes.view(-1, self.config.grid_size, self.config.grid_size)  # (B, h, w)

    @sampling_method
    def code_log_probs(self, codes: torch.Tensor, context: TextContext, *,
                       negative_context: TextContext | None = None, guidance_scale: float = 1.0) -> torch.Tensor:
        """How likely the prior finds each of ``codes`` (B, h, w) for the text: float32 log-probabilities
        (B, h, w) of each code given the text and the codes before it in raster order (teacher forcing, one
        forward), guided as in ``sample``."""
        self.check_codes(codes)
        device = self.null_hidden_states.device
        contexts = self.guidance_contexts(context.to(device), negative_context, guidance_scale)
        targets = codes.to(device).flatten(1).long()  # (B, N)
        scores = guided_log_probs(lambda tokens: self(tokens, contexts), targets, targets, guidance_scale)
        return scores.view(codes.shape)  # (B, h, w)

    def _full_logits_fn(self, context: TextContext) -> Callable[[torch.Tensor], torch.Tensor]:
        """Re-runs the whole sequence every step: the reference the cached path must match."""

        def logits_fn(prefix: torch.Tensor) -> torch.Tensor:  # (B', t) -> (B', V)
            start = prefix.new_full((prefix.shape[0], 1), self.start_token_id)
            tokens = torch.cat([start, prefix], dim=1)  # (B', t + 1)
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            return self.backbone(tokens, positions, context=context, causal=True)[:, -1]

        return logits_fn

    def _cached_logits_fn(self, context: TextContext) -> Callable[[torch.Tensor], torch.Tensor]:
        """Prefills the context and the start slot on the first call, then feeds only the codes of the prefix
        that the cache has not seen (one per call, or a run of forced codes at once)."""
        length = context.hidden_states.shape[1]
        cache = KVCache(self.config.num_layers, length + self.config.num_codes)

        def logits_fn(prefix: torch.Tensor) -> torch.Tensor:  # (B', t) -> (B', V)
            step = prefix.shape[1]
            fed = 0 if cache.length == 0 else cache.length - length  # grid slots in the cache: start + codes
            if fed > step:
                raise RuntimeError(f"KV cache out of step: holds {fed} grid slots at step {step}")
            if fed == 0:  # slot 0 is the start token, slot j holds code j - 1
                start = prefix.new_full((prefix.shape[0], 1), self.start_token_id)
                tokens, first, given = torch.cat([start, prefix], dim=1), 0, context  # (B', t + 1)
            else:
                tokens, first, given = prefix[:, fed - 1:], fed, None  # (B', t + 1 - fed)
            positions = torch.arange(first, step + 1, device=prefix.device)
            return self.backbone(tokens, positions, context=given, cache=cache, causal=True)[:, -1]

        return logits_fn
