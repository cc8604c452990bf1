"""Sampling, written once for both priors: logits filters, classifier-free guidance, schedules, and the two
decoding loops.

The loops are functions of a *logits function* (LlamaGen ``generate.py``, maskgit ``parallel_decode.py``):
they know nothing about the network, its KV cache or its context. With guidance on, they pass the logits
function a doubled batch ``[tokens ; tokens]``; the prior's logits function pairs the first half with the
text context and the second with the null (or negative) context, in one forward, and the loop combines the
two halves with ``guided_logits``.

Progress through decoding is ``(step + 1) / num_steps``: the fraction done once the current step is taken.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from tessera.prior.config import GUIDANCE_SCHEDULES, uses_guidance


def filter_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Float32 logits (..., V) divided by ``temperature`` (unless it is 0, i.e. greedy), then the tokens
    outside the ``top_k`` largest and outside the smallest set whose probability reaches ``top_p`` set to
    -inf. The most likely token is always kept. Ties at the k-th value are all kept. ``top_k`` None or 0 and
    ``top_p`` None or 1 are off (the same meaning as in the pipeline and ``SamplingConfig``)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits = logits.float()
    if temperature > 0 and temperature != 1:
        logits = logits / temperature
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if top_k:
        if top_k < logits.shape[-1]:
            kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
            logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None:
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        if top_p < 1:
            sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V)
            probs = sorted_logits.softmax(dim=-1)
            mass_before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
            remove_sorted = mass_before >= top_p  # the first token has mass_before 0: always kept
            remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)  # vocabulary order
            logits = logits.masked_fill(remove, -math.inf)
    return logits


def sample_from_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                       top_p: float | None = None, generator: torch.Generator | None = None,
                       with_probs: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tokens (...) drawn from ``filter_logits(logits)`` (..., V), and the probability each has under the
    model, ``softmax(logits)`` before temperature and filtering (MaskGIT's confidence: it does not depend on
    the filters, so greedy and ``top_k=1`` give the same); None with ``with_probs=False``. ``temperature=0``
    is greedy: the argmax."""
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    unfiltered = temperature == 1 and not top_k and (top_p is None or top_p == 1)
    sampling_probs = None
    if temperature == 0:
        tokens = filtered.argmax(dim=-1)
    else:
        sampling_probs = filtered.softmax(dim=-1)  # (..., V)
        flat = sampling_probs.reshape(-1, filtered.shape[-1])  # (prod(...), V): multinomial is 2-D
        tokens = torch.multinomial(flat, 1, generator=generator).view(filtered.shape[:-1])
    if not with_probs:
        return tokens, None
    model_probs = sampling_probs if unfiltered else logits.float().softmax(dim=-1)  # the same when unfiltered
    return tokens, model_probs.gather(-1, tokens[..., None])[..., 0]  # (...), (...)


def guided_logits(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``uncond + scale * (cond - uncond)``; ``cond_logits`` itself when scale is 1."""
    if scale == 1.0:
        return cond_logits
    uncond = uncond_logits.float()
    return uncond + scale * (cond_logits.float() - uncond)


def guidance_scale_at(schedule: str, scale: float, progress: float) -> float:
    """The guidance scale at ``progress`` in [0, 1] through decoding.

    ``constant``: ``scale`` throughout. ``linear``: from 1 (no guidance) at progress 0 up to ``scale`` at 1.
    ``cosine``: the same ramp, eased, ``1 + (scale - 1) * (1 - cos(pi * progress)) / 2``. Every schedule is 1
    throughout when ``scale`` is 1, so scale 1 is conditional sampling whatever the schedule.
    """
    if schedule == "constant":
        return scale
    if schedule == "linear":
        return 1.0 + (scale - 1.0) * progress
    if schedule == "cosine":
        return 1.0 + (scale - 1.0) * (1.0 - math.cos(math.pi * progress)) / 2.0
    raise ValueError(f"unknown guidance schedule {schedule!r}; choose one of {GUIDANCE_SCHEDULES}")


def cosine_mask_ratio(progress: float | torch.Tensor) -> float | torch.Tensor:
    """MaskGIT's cosine schedule ``cos(pi/2 * progress)``: the fraction still masked, 1 at 0 and 0 at 1.
    Masked training draws ``cosine_mask_ratio(U(0, 1))``; masked decoding re-masks this fraction."""
    if isinstance(progress, torch.Tensor):
        return torch.cos(progress * (math.pi / 2))
    return math.cos(progress * math.pi / 2)


def _check_guidance(guidance_scale: float, guidance_schedule: str) -> bool:
    guidance_scale_at(guidance_schedule, guidance_scale, 0.0)  # validates the name
    return uses_guidance(guidance_scale)


def _step_logits(logits_fn: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, guided: bool,
                 scale: float) -> torch.Tensor:
    if not guided:
        return logits_fn(tokens)
    cond, uncond = logits_fn(torch.cat([tokens, tokens])).chunk(2)  # (2B, ...) -> 2 x (B, ...)
    return guided_logits(cond, uncond, scale)


def autoregressive_decode(logits_fn: Callable[[torch.Tensor], torch.Tensor], *, batch_size: int,
                          num_tokens: int, device: torch.device | str = "cpu", guidance_scale: float = 1.0,
                          guidance_schedule: str = "constant", temperature: float = 1.0,
                          top_k: int | None = None, top_p: float | None = None,
                          generator: torch.Generator | None = None, initial_tokens: torch.Tensor | None = None,
                          initial_known_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Tokens (B, num_tokens), one per step. ``logits_fn(prefix)`` gets the tokens so far, (B', t) with
    B' = 2B under guidance, and returns the logits of token t, (B', V); it may feed the network only the
    tokens of the prefix it has not seen yet when it keeps a KV cache.

    Positions where ``initial_known_mask`` (B, num_tokens) is True are *forced* to ``initial_tokens``: the
    token is not sampled, and when every row's token at a step is known ``logits_fn`` is not called at all
    (the next call then gets several new tokens at once). Forcing conditions each sampled token on the known
    tokens *before* it in order only; a known token after it is reached later and cannot steer it.
    """
    guided = _check_guidance(guidance_scale, guidance_schedule)
    tokens = torch.zeros(batch_size, num_tokens, dtype=torch.long, device=device)
    known = torch.zeros(batch_size, num_tokens, dtype=torch.bool, device=device)
    if initial_known_mask is not None:
        if initial_tokens is None or initial_tokens.shape != initial_known_mask.shape \
                or tuple(initial_tokens.shape) != (batch_size, num_tokens):
            raise ValueError(f"initial tokens and known mask must both be ({batch_size}, {num_tokens})")
        known = initial_known_mask.to(device, torch.bool)
        tokens = torch.where(known, initial_tokens.to(device).long(), tokens)
    for step in range(num_tokens):
        if known[:, step].all():
            continue
        scale = guidance_scale_at(guidance_schedule, guidance_scale, (step + 1) / num_tokens)
        logits = _step_logits(logits_fn, tokens[:, :step], guided, scale)  # (B, V)
        sampled, _ = sample_from_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                        generator=generator, with_probs=False)
        tokens[:, step] = torch.where(known[:, step], tokens[:, step], sampled)
    return tokens


def masked_decode(logits_fn: Callable[[torch.Tensor], torch.Tensor], *, initial_tokens: torch.Tensor,
                  initial_known_mask: torch.Tensor, num_steps: int, mask_token_id: int,
                  guidance_scale: float = 1.0, guidance_schedule: str = "constant", temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
                  choice_temperature: float = 4.5) -> torch.Tensor:
    """MaskGIT parallel decoding of tokens (B, N); positions where ``initial_known_mask`` is True keep
    ``initial_tokens`` throughout.

    ``logits_fn(tokens)`` gets (B', N) tokens with ``mask_token_id`` at unknown positions (B' = 2B under
    guidance) and returns logits (B', N, V). Each step samples every unknown position, then re-masks the
    least confident so that ``floor(n * cosine_mask_ratio(progress))`` stay masked (n = unknown positions at
    the start; at least one is revealed per step and all by the last). Confidence is the log-probability of
    the sampled token plus Gumbel noise scaled by ``choice_temperature * (1 - progress)``, annealed to 0.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if initial_tokens.shape != initial_known_mask.shape or initial_tokens.ndim != 2:
        raise ValueError(f"initial tokens {tuple(initial_tokens.shape)} and known mask "
                         f"{tuple(initial_known_mask.shape)} must both be (B, N)")
    guided = _check_guidance(guidance_scale, guidance_schedule)
    unknown = ~initial_known_mask.bool()  # (B, N)
    tokens = torch.where(unknown, mask_token_id, initial_tokens.long())  # (B, N)
    num_unknown = unknown.sum(dim=1)  # (B,)
    for step in range(num_steps):
        if not unknown.any():
            break
        progress = (step + 1) / num_steps
        scale = guidance_scale_at(guidance_schedule, guidance_scale, progress)
        logits = _step_logits(logits_fn, tokens, guided, scale)  # (B, N, V)
        sampled, probs = sample_from_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                            generator=generator)  # (B, N), (B, N)
        sampled = torch.where(unknown, sampled, tokens)
        if step == num_steps - 1:
            return sampled
        confidence = probs.clamp_min(1e-30).log()
        if choice_temperature > 0:
            uniform = torch.rand(probs.shape, generator=generator, device=probs.device).clamp_min(1e-20)
            confidence = confidence - choice_temperature * (1 - progress) * torch.log(-torch.log(uniform))
        confidence = confidence.masked_fill(~unknown, math.inf)  # known and revealed: never re-masked
        remaining = unknown.sum(dim=1)  # (B,)
        keep_masked = torch.floor(num_unknown * cosine_mask_ratio(progress)).long()
        keep_masked = torch.minimum(keep_masked.clamp_min(1), remaining - 1).clamp_min(0)  # (B,)
        ranks = confidence.argsort(dim=1).argsort(dim=1)  # (B, N): 0 = least confident
        unknown = ranks < keep_masked[:, None]
        tokens = torch.where(unknown, mask_token_id, sampled)
    return tokens


def guided_log_probs(logits_fn: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor,
                     targets: torch.Tensor, guidance_scale: float = 1.0) -> torch.Tensor:
    """Float32 log-probabilities (B, N) of ``targets`` (B, N) under ``logits_fn(tokens)`` (B', N, V), combined
    by classifier-free guidance as in sampling (B' = 2B unless ``guidance_scale`` is 1); no temperature or
    filters. Used to score given codes (which ones the prior finds unlikely for a prompt)."""
    guided = _check_guidance(guidance_scale, "constant")
    logits = _step_logits(logits_fn, tokens, guided, guidance_scale)  # (B, N, V)
    return logits.float().log_softmax(dim=-1).gather(-1, targets.long()[..., None])[..., 0]
