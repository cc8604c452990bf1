"""The transformer both priors are built on, and what the two priors share around it.

One sequence layout serves both: ``[text context (L tokens, padding included) ; grid slots (T tokens)]``.

- Context tokens carry no position (the text encoder's hidden states already do); they attend to the real
  context tokens only, so their keys/values do not depend on the grid and can be cached once per prompt.
- Grid slots are a token embedding (``codebook_size`` codes + one special id, ``codebook_size``, which is
  the start token of the autoregressive prior and the [MASK] token of the masked prior) plus learned row and
  column embeddings of the grid position. They attend to the real context tokens and to the grid slots:
  causally (autoregressive) or all of them (masked).
- Every token may also attend to itself, so no attention row is empty and padding stays finite; padding is
  never attended by a real token, so padding the context does not change the logits.

``KVCache`` holds per-layer keys/values for incremental decoding; the cached and the full forward build their
attention masks with the same ``attention_mask`` function, so they give the same logits.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tessera.core.pretrained import PretrainedMixin
from tessera.prior.config import PriorConfig, uses_guidance
from tessera.prior.context import TextContext


class KVCache:
    """Per-layer key/value buffers of ``max_length`` positions, allocated on first use.

    ``length`` positions are committed. A forward pass writes its keys/values at ``[length, length + T)`` and
    attends over ``[0, length + T)``; ``commit=True`` then advances ``length`` by ``T``, ``commit=False`` leaves
    it (the masked prior re-runs its whole grid after a fixed, cached context).
    """

    def __init__(self, num_layers: int, max_length: int):
        self.max_length = max_length
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.length = 0
        self.context_mask: torch.Tensor | None = None  # (B, L), set when the context is prefilled
        self.biases: dict[tuple[int, int, bool], torch.Tensor] = {}  # attention biases of uncommitted passes

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` (B, H, T, Dh) after the committed positions; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions, {end} were asked for")
        if self.keys[layer] is None:
            batch, heads, _, head_dim = k.shape
            self.keys[layer] = k.new_empty(batch, heads, self.max_length, head_dim)
            self.values[layer] = v.new_empty(batch, heads, self.max_length, head_dim)
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]  # (B, H, end, Dh)


def attention_mask(context_mask: torch.Tensor, query_positions: torch.Tensor, num_keys: int, *,
                   causal: bool) -> torch.Tensor:
    """Boolean mask (B, 1, T, K), True = may attend, for queries at ``query_positions`` (T,) of the sequence
    ``[context (L) ; grid slots]`` over its first ``num_keys`` positions (see the module docstring)."""
    length = context_mask.shape[1]
    q = query_positions[:, None]  # (T, 1)
    k = torch.arange(num_keys, device=context_mask.device)[None, :]  # (1, K)
    grid_allowed = (q >= length) & (k >= length)  # grid keys: for grid queries only
    if causal:
        grid_allowed = grid_allowed & (k <= q)
    key_valid = F.pad(context_mask, (0, num_keys - length), value=False)  # (B, K): real context keys
    allowed = key_valid[:, None, :] | grid_allowed[None] | (k == q)[None]  # (B, T, K)
    return allowed[:, None]  # (B, 1, T, K), broadcast over heads


def attention_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive form of a boolean ``attention_mask``: 0 where allowed, -inf elsewhere. It is what
    ``scaled_dot_product_attention`` makes of a boolean mask itself, in every layer; made once per forward
    instead (and once per sampling call for the masked prior's repeated grid passes)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, -math.inf)


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, width // self.num_heads)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, Dh)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, K, Dh)
        dropout = self.dropout if self.training else 0.0
        bias = bias.to(q.dtype)  # (B, 1, T, K) additive; a no-op unless autocast made q narrower
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)  # (B, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))  # (B, T, D)


class MLP(nn.Module):
    def __init__(self, hidden_size: int, mlp_ratio: float, activation: str = "gelu"):
        super().__init__()
        inner = int(hidden_size * mlp_ratio)
        self.fc1 = nn.Linear(hidden_size, inner)
        self.fc2 = nn.Linear(inner, hidden_size)
        self.approximate = "tanh" if activation == "gelu_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``, with residual dropout."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, dropout: float,
                 activation: str = "gelu"):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.attn = SelfAttention(hidden_size, num_heads, dropout)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.mlp = MLP(hidden_size, mlp_ratio, activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), bias, cache, layer))
        return x + self.dropout(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """A stack of ``TransformerBlock`` and a final norm."""

    def __init__(self, hidden_size: int, num_layers: int, num_heads: int, mlp_ratio: float, dropout: float,
                 activation: str = "gelu"):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, mlp_ratio, dropout, activation) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, cache: KVCache | None = None,
                commit: bool = True) -> torch.Tensor:
        for layer, block in enumerate(self.blocks):
            x = block(x, bias, cache, layer)
        if cache is not None and commit:
            cache.length += x.shape[1]
        return self.norm(x)


class GridTransformer(nn.Module):
    """Context projection, grid embeddings, the transformer and a zero-initialised head over the codebook."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        width = config.hidden_size
        self.context_norm = nn.LayerNorm(config.context_dim)
        self.context_proj = nn.Linear(config.context_dim, width)
        self.token_embedding = nn.Embedding(config.codebook_size + 1, width)  # + start / [MASK]
        self.row_embedding = nn.Embedding(config.grid_size, width)
        self.col_embedding = nn.Embedding(config.grid_size, width)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.transformer = Transformer(width, config.num_layers, config.num_heads, config.mlp_ratio,
                                       config.dropout, config.mlp_activation)
        self.head = nn.Linear(width, config.codebook_size)
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * config.num_layers)  # GPT-2: residual branches scaled by depth
        for block in self.transformer.blocks:
            nn.init.normal_(block.attn.proj.weight, std=residual_std)
            nn.init.normal_(block.mlp.fc2.weight, std=residual_std)
        nn.init.zeros_(self.head.weight)  # start from the uniform distribution over codes
        nn.init.zeros_(self.head.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def embed_grid(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Tokens (B, T) at flat grid positions (T,) -> (B, T, D)."""
        rows, cols = positions // self.config.grid_size, positions % self.config.grid_size
        return self.token_embedding(tokens) + self.row_embedding(rows) + self.col_embedding(cols)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, *, context: TextContext | None = None,
                cache: KVCache | None = None, causal: bool, commit: bool = True) -> torch.Tensor:
        """Logits (B, T, codebook_size) of grid slots ``tokens`` (B, T) at flat grid ``positions`` (T,).

        Without a cache ``context`` is the prefix. With a cache, pass ``context`` on the first call (it is
        prefilled, its mask kept in the cache) and ``None`` afterwards.
        """
        parts = []
        if context is not None:
            states = context.hidden_states.to(self.context_proj.weight.dtype)
            parts.append(self.context_proj(self.context_norm(states)))  # (B, L, D)
            context_mask = context.mask
            if cache is not None:
                cache.context_mask = context_mask
        elif cache is None or cache.context_mask is None:
            raise ValueError("a context is needed: pass it, or prefill the cache with it first")
        else:
            context_mask = cache.context_mask
        num_slots = tokens.shape[1]
        if num_slots:
            parts.append(self.embed_grid(tokens, positions))  # (B, T, D)
        x = self.embed_dropout(torch.cat(parts, dim=1))  # (B, L + T, D), or (B, T, D) after a prefill
        start = cache.length if cache is not None else 0
        key = (start, x.shape[1], causal)  # the bias of an uncommitted pass is kept: it recurs every step
        bias = cache.biases.get(key) if cache is not None else None
        if bias is None:
            query_positions = torch.arange(start, start + x.shape[1], device=x.device)
            mask = attention_mask(context_mask, query_positions, start + x.shape[1], causal=causal)
            bias = attention_bias(mask, x.dtype)  # (B, 1, T, K)
            if cache is not None and not commit:
                cache.biases[key] = bias
        hidden = self.transformer(x, bias, cache, commit)
        return self.head(hidden[:, hidden.shape[1] - num_slots:])  # (B, T, V): grid slots only


@dataclass
class PriorLossOutput:
    loss: torch.Tensor  # scalar
    accuracy: torch.Tensor  # scalar, top-1 accuracy on the positions the loss covers
    num_tokens: torch.Tensor  # positions the loss covers


def sampling_method(method):
    """Run a ``sample`` method in eval mode (restoring the mode after) under ``torch.inference_mode``; the
    codes returned are ordinary tensors (usable later as training targets)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                codes = method(self, *args, **kwargs)
        finally:
            self.train(was_training)
        return codes.clone()

    return wrapper


class GridPrior(nn.Module, PretrainedMixin):
    """What both priors share: the backbone, the learned null context, caption dropout and input checks."""

    config_class = PriorConfig
    kind: str

    def __init__(self, config: PriorConfig):
        super().__init__()
        if config.kind != self.kind:
            raise ValueError(f"{type(self).__name__} needs a config of kind {self.kind!r}, got {config.kind!r}")
        self.config = config
        self.backbone = GridTransformer(config)
        self.null_hidden_states = nn.Parameter(torch.randn(config.context_length, config.context_dim) * 0.02)

    def null_context(self, batch_size: int) -> TextContext:
        """The learned null context, (B, context_length, context_dim) with a mask all True: caption dropout
        in ``loss`` and classifier-free guidance in ``sample`` both use this."""
        states = self.null_hidden_states[None].expand(batch_size, -1, -1)  # (B, Lc, Dc)
        mask = torch.ones(batch_size, self.config.context_length, dtype=torch.bool, device=states.device)
        return TextContext(states, mask)

    def check_context(self, context: TextContext, batch_size: int | None = None) -> None:
        if context.hidden_states.shape[-1] != self.config.context_dim:
            raise ValueError(f"context width {context.hidden_states.shape[-1]} != config.context_dim "
                             f"{self.config.context_dim}")
        if batch_size is not None and context.batch_size != batch_size:
            raise ValueError(f"context batch {context.batch_size} != codes batch {batch_size}")

    def check_codes(self, codes: torch.Tensor, name: str = "codes") -> None:
        size = self.config.grid_size
        if codes.ndim != 3 or tuple(codes.shape[1:]) != (size, size):
            raise ValueError(f"expected {name} of shape (B, {size}, {size}), got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"{name} must be integer, got {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.codebook_size):
            raise ValueError(f"{name} must lie in [0, {self.config.codebook_size}), "
                             f"got [{int(codes.min())}, {int(codes.max())}]")

    def initial_grid(self, batch_size: int, initial_codes: torch.Tensor | None,
                     initial_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked ``initial_codes`` and ``initial_mask`` (B, h, w) of ``sample`` (True = given, kept) as flat
        (B, N) tensors on the prior's device; no mask means nothing is given. Only the given codes are checked."""
        device, size = self.null_hidden_states.device, self.config.grid_size
        if initial_mask is None:
            initial_mask = torch.zeros(batch_size, size, size, dtype=torch.bool, device=device)
        if initial_codes is None:
            if initial_mask.any():
                raise ValueError("initial_mask marks given positions but no initial_codes were passed")
            initial_codes = torch.zeros(batch_size, size, size, dtype=torch.long, device=device)
        if tuple(initial_codes.shape) != (batch_size, size, size) or initial_mask.shape != initial_codes.shape:
            raise ValueError(f"initial_codes {tuple(initial_codes.shape)} and initial_mask "
                             f"{tuple(initial_mask.shape)} must both be ({batch_size}, {size}, {size})")
        initial_mask = initial_mask.to(device, torch.bool)
        initial_codes = torch.where(initial_mask, initial_codes.to(device).long(), 0)
        self.check_codes(initial_codes, "initial_codes")
        return initial_codes.flatten(1), initial_mask.flatten(1)  # (B, N), (B, N)

    def condition(self, context: TextContext, drop_context: torch.Tensor | None = None) -> TextContext:
        """Caption dropout: rows where ``drop_context`` (B,) is True get ``null_context``. With
        ``drop_context=None`` rows are drawn with probability ``config.caption_dropout`` in training mode
        (torch's global RNG), and none are dropped in eval mode."""
        batch = context.batch_size
        if drop_context is None:
            if not self.training or self.config.caption_dropout == 0:
                return context
            drop_context = torch.rand(batch, device=context.mask.device) < self.config.caption_dropout
        drop_context = drop_context.to(context.mask.device, torch.bool)
        if drop_context.shape != (batch,):
            raise ValueError(f"drop_context must have shape ({batch},), got {tuple(drop_context.shape)}")
        if not drop_context.any():
            return context
        both = TextContext.cat([context, self._null_like(context, batch)])  # (2B, L', Dc): same length
        (cond_states, null_states), (cond_mask, null_mask) = both.hidden_states.chunk(2), both.mask.chunk(2)
        states = torch.where(drop_context[:, None, None], null_states, cond_states)  # (B, L', Dc)
        mask = torch.where(drop_context[:, None], null_mask, cond_mask)  # (B, L')
        return TextContext(states, mask)

    def guidance_contexts(self, context: TextContext, negative_context: TextContext | None,
                          guidance_scale: float) -> TextContext:
        """``context`` alone when ``guidance_scale == 1``, else ``[context ; negative or null context]``
        (2B rows, padded to one length): the samplers run both halves in one batch."""
        self.check_context(context)
        if not uses_guidance(guidance_scale):
            return context
        batch = context.batch_size
        if negative_context is None:
            uncond = self._null_like(context, batch)
        else:
            if negative_context.batch_size == 1 and batch > 1:
                negative_context = negative_context.repeat_interleave(batch)
            self.check_context(negative_context, batch)
            uncond = negative_context.to(context.mask.device, context.hidden_states.dtype)
        return TextContext.cat([context, uncond])

    def _null_like(self, context: TextContext, batch: int) -> TextContext:
        return self.null_context(batch).to(context.mask.device, context.hidden_states.dtype)
