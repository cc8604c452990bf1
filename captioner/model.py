"""The captioner: a grid of VQ-GAN codes -> a caption, and how likely a caption is given a grid.

A ``transformers`` causal language model (Llama blocks: RoPE, RMSNorm, SwiGLU) reads the embedded code grid as a
prefix of ``inputs_embeds`` and then writes the caption token by token, so ``generate()`` gives greedy search,
beam search and sampling. Sequence layout::

    [code (0,0) ... code (h-1,w-1) ; BOS ; caption tokens ... ; EOS]

Code slots are the VQ-GAN's own vector for each code (``code_features``: the quantised latent the decoder reads,
copied from the VQ-GAN when training starts and saved with the captioner) through a small MLP, plus learned row
and column embeddings (2-D positions; the language model's RoPE adds the 1-D order on top). Reading the code
vectors rather than learning one embedding per code id lets codes that were rare or absent in training (e.g. in
images of unseen colour-shape pairs) still say what they look like. The captioner reads and writes the text tokens of the pipeline's own text
tokenizer, but only those that occur in its training captions (``CaptionerConfig.text_token_ids``): its
vocabulary is ``[BOS, EOS, UNK] + text_token_ids``, so a pretrained tokenizer's 30,000-token vocabulary does not
cost 30,000 output rows. A caption token outside that set maps to UNK, which training never targets, so a
caption with words the captioner never saw scores low.

**Image guidance** (classifier-free guidance for captioning): trained with a share of its grids replaced by a
learned null image (``image_dropout``), the captioner is also a plain language model of captions. Decoding with
``guidance_scale`` g > 1 scores each next token by ``log p(w | image, words) + (g - 1) * (log p(w | image, words)
- log p(w | null image, words))``: what the image adds over the wording alone is amplified, so word pairs the
training captions never showed together (a colour with a shape it never had) can still be read off the image.

``log_likelihood`` is length-normalised: the mean log-probability per caption token, EOS included (natural log,
<= 0). Comparing captions of different lengths by it does not favour the shorter ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import transformers
from torch import nn

from tessera.core.config import JSONConfig
from tessera.core.pretrained import PretrainedMixin

BOS, EOS, UNK = 0, 1, 2  # captioner vocabulary indices; text token i of the config is index NUM_SPECIAL + i
NUM_SPECIAL = 3


@dataclass
class CaptionerConfig(JSONConfig):
    codebook_size: int = 512
    grid_size: int = 8  # the VQ-GAN's latent size h = w
    code_dim: int = 64  # the VQ-GAN's z_channels: the width of its code vectors
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_caption_tokens: int = 32  # text tokens of a caption, EOS included; longer captions are truncated
    dropout: float = 0.0
    guidance_scale: float = 1.0  # the decoding default (1: no image guidance); needs training with image_dropout
    text_token_ids: tuple[int, ...] = ()  # the text tokenizer's ids this captioner reads and writes

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.max_caption_tokens < 2:
            raise ValueError(f"max_caption_tokens must be >= 2 (a token and EOS), got {self.max_caption_tokens}")
        if len(set(self.text_token_ids)) != len(self.text_token_ids):
            raise ValueError("text_token_ids has repeated ids")

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + len(self.text_token_ids)


CAPTIONER_PRESETS: dict[str, CaptionerConfig] = {
    # Unit tests: a few thousand parameters.
    "tiny": CaptionerConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
    # CPU default for 8x8 grids: 0.9M parameters with a 31-token vocabulary (1.7 MB in float16).
    "cpu-small": CaptionerConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384),
}


def caption_vocabulary(tokenizer, captions: Iterable[str]) -> tuple[int, ...]:
    """The sorted text-token ids (special tokens excluded) of ``captions`` under ``tokenizer`` (a transformers
    tokenizer: its normaliser runs, as it does for the prior)."""
    ids: set[int] = set()
    batch = list(dict.fromkeys(captions))
    for start in range(0, len(batch), 4096):
        for row in tokenizer(batch[start:start + 4096], add_special_tokens=False)["input_ids"]:
            ids.update(row)
    return tuple(sorted(ids))


@dataclass
class CaptionBatch:
    """Captions in the captioner's vocabulary: ``ids`` (B, T) with EOS after each caption and EOS padding,
    ``mask`` (B, T) True at the caption's tokens and its EOS."""

    ids: torch.Tensor
    mask: torch.Tensor


@dataclass
class CaptionerOutput:
    loss: torch.Tensor  # mean negative log-likelihood per caption token over the batch
    log_likelihood: torch.Tensor  # (B,) mean log-probability per caption token of each caption (EOS included)
    accuracy: torch.Tensor  # share of caption tokens predicted exactly (teacher forcing)


class Captioner(PretrainedMixin, nn.Module):
    config_class = CaptionerConfig

    def __init__(self, config: CaptionerConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        # the VQ-GAN's vector of each code (set_code_features); a buffer: saved, loaded, never trained
        self.register_buffer("code_features", torch.randn(config.codebook_size, config.code_dim))
        self.code_projection = nn.Sequential(nn.Linear(config.code_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.null_image = nn.Parameter(torch.randn(hidden) * 0.02)  # every cell of a dropped (null) grid
        self.row_embedding = nn.Embedding(config.grid_size, hidden)
        self.column_embedding = nn.Embedding(config.grid_size, hidden)
        self.language_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=config.vocab_size, hidden_size=hidden, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
            max_position_embeddings=config.grid_size ** 2 + 1 + config.max_caption_tokens,
            attention_dropout=config.dropout, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS,
            tie_word_embeddings=False,  # the vocabulary is small; untied weights save as plain safetensors
        ))
        for embedding in (self.row_embedding, self.column_embedding):
            nn.init.normal_(embedding.weight, std=0.02)
        # text-token id -> captioner index (UNK for ids it does not know), and back
        ids = torch.tensor(config.text_token_ids, dtype=torch.long)
        self.register_buffer("text_ids", ids, persistent=False)  # (V - NUM_SPECIAL,)
        self._index_of = {int(token): NUM_SPECIAL + i for i, token in enumerate(config.text_token_ids)}

    @property
    def device(self) -> torch.device:
        return self.row_embedding.weight.device

    @torch.no_grad()
    def set_code_features(self, code_vectors: torch.Tensor) -> None:
        """Copy in the VQ-GAN's vector of every code, (codebook_size, code_dim) (e.g. ``vqgan.codes_to_vectors``
        of all codes), before training."""
        if tuple(code_vectors.shape) != tuple(self.code_features.shape):
            raise ValueError(f"code vectors of shape {tuple(code_vectors.shape)}; this captioner reads "
                             f"{tuple(self.code_features.shape)} (codebook_size, code_dim)")
        self.code_features.copy_(code_vectors)

    # -- text <-> captioner vocabulary ----------------------------------------------------------------------

    def caption_batch(self, token_ids: Sequence[Sequence[int]]) -> CaptionBatch:
        """Text-tokenizer ids of each caption (no special tokens) -> ``CaptionBatch`` (truncated to
        ``max_caption_tokens`` with EOS)."""
        limit = self.config.max_caption_tokens - 1
        rows = [[self._index_of.get(int(token), UNK) for token in row[:limit]] + [EOS] for row in token_ids]
        length = max(len(row) for row in rows)
        ids = torch.full((len(rows), length), EOS, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = True
        return CaptionBatch(ids.to(self.device), mask.to(self.device))

    def text_token_ids(self, sequences: torch.Tensor) -> list[list[int]]:
        """Generated captioner indices (N, T) -> text-tokenizer ids per caption, cut at the first EOS; UNK and
        other specials are dropped."""
        captions = []
        for row in sequences.tolist():
            row = row[:row.index(EOS)] if EOS in row else row
            captions.append([int(self.text_ids[index - NUM_SPECIAL]) for index in row if index >= NUM_SPECIAL])
        return captions

    # -- the network ----------------------------------------------------------------------------------------

    def prefix(self, codes: torch.Tensor, drop_image: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (B, h, w) -> the embedded grid followed by the BOS token embedding, (B, h*w + 1, D); rows where
        ``drop_image`` (B,) is True get the null image instead of their grid."""
        batch, height, width = codes.shape
        if height != self.config.grid_size or width != self.config.grid_size:
            raise ValueError(f"the captioner reads {self.config.grid_size}x{self.config.grid_size} code grids, got "
                             f"{height}x{width}")
        rows = self.row_embedding.weight[:, None, :]  # (h, 1, D)
        columns = self.column_embedding.weight[None, :, :]  # (1, w, D)
        features = self.code_features[codes.to(self.device)].to(self.row_embedding.weight.dtype)  # (B, h, w, C)
        cells = self.code_projection(features)  # (B, h, w, D)
        if drop_image is not None:
            cells = torch.where(drop_image.to(self.device)[:, None, None, None], self.null_image, cells)
        grid = cells + rows + columns  # (B, h, w, D)
        bos = self.language_model.get_input_embeddings()(torch.full((batch, 1), BOS, device=self.device))
        return torch.cat([grid.reshape(batch, height * width, -1), bos], dim=1)  # (B, h*w + 1, D)

    def forward(self, codes: torch.Tensor, captions: CaptionBatch, input_noise: float = 0.0,
                image_dropout: float = 0.0) -> CaptionerOutput:
        """Teacher-forced log-likelihood of ``captions`` given ``codes`` (B, h, w). ``input_noise``: the share of
        the caption tokens read as input (not the targets) replaced by random text tokens, so that the next word
        is read from the image rather than guessed from the words before it; ``image_dropout``: the share of
        grids replaced by the null image (for image guidance). Both draw from torch's global RNG."""
        drop = None
        if image_dropout > 0:
            drop = torch.rand(codes.shape[0], device=self.device) < image_dropout
        prefix = self.prefix(codes, drop)  # (B, P, D), P = h*w + 1
        previous = captions.ids[:, :-1]  # (B, T-1): what each position reads
        if input_noise > 0 and len(self.config.text_token_ids):
            replace = torch.rand(previous.shape, device=previous.device) < input_noise
            random_tokens = torch.randint(NUM_SPECIAL, self.config.vocab_size, previous.shape, device=previous.device)
            previous = torch.where(replace & (previous != EOS), random_tokens, previous)
        inputs = self.language_model.get_input_embeddings()(previous)  # (B, T-1, D)
        attention = torch.cat([torch.ones(prefix.shape[:2], dtype=torch.bool, device=self.device),
                               captions.mask[:, :-1]], dim=1)  # (B, P + T - 1)
        logits = self.language_model(inputs_embeds=torch.cat([prefix, inputs], dim=1),
                                     attention_mask=attention.long()).logits  # (B, P + T - 1, V)
        logits = logits[:, prefix.shape[1] - 1:].float()  # (B, T, V): BOS predicts token 0, ...
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, captions.ids[..., None])[..., 0]  # (B, T)
        mask = captions.mask.float()
        per_caption = (log_probs * mask).sum(1) / mask.sum(1)  # (B,)
        loss = -(log_probs * mask).sum() / mask.sum()
        correct = (logits.argmax(-1) == captions.ids).float()
        accuracy = (correct * mask).sum() / mask.sum()
        return CaptionerOutput(loss=loss, log_likelihood=per_caption, accuracy=accuracy)

    @torch.no_grad()
    def log_likelihood(self, codes: torch.Tensor, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B,) length-normalised log-likelihood of each caption (text-tokenizer ids) given its grid, float32."""
        return self(codes, self.caption_batch(token_ids)).log_likelihood.float()

    @torch.no_grad()
    def generate(self, codes: torch.Tensor, *, max_new_tokens: int | None = None, guidance_scale: float | None = None,
                 **generate_kwargs) -> torch.Tensor:
        """Captioner indices (B * num_return_sequences, T) for codes (B, h, w), through
        ``transformers``' ``generate`` (``num_beams``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``,
        ``num_return_sequences``, ...); rows are image-major, padded with EOS. ``guidance_scale``: image
        guidance (default: the config's)."""
        prefix = self.prefix(codes)
        limit = self.config.max_caption_tokens if max_new_tokens is None else max_new_tokens
        scale = self.config.guidance_scale if guidance_scale is None else float(guidance_scale)
        processors = transformers.LogitsProcessorList([ImageGuidance(self, scale)] if scale != 1.0 else [])
        return self.language_model.generate(
            inputs_embeds=prefix, attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device),
            max_new_tokens=limit, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS, logits_processor=processors,
            **generate_kwargs)


class ImageGuidance(transformers.LogitsProcessor):
    """Image guidance inside ``generate`` (see the module docstring): for each row's words so far, the null-image
    log-probabilities come from a forward pass of the same captioner over the null grid; works with greedy search,
    beams and sampling alike, since it only rescores each row's next token."""

    def __init__(self, captioner: Captioner, guidance_scale: float):
        self.captioner, self.guidance_scale = captioner, guidance_scale

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        captioner = self.captioner
        rows = scores.shape[0]
        cells = torch.zeros((rows, captioner.config.grid_size, captioner.config.grid_size), dtype=torch.long)
        null = captioner.prefix(cells, drop_image=torch.ones(rows, dtype=torch.bool))  # (R, P, D)
        words = captioner.language_model.get_input_embeddings()(input_ids.to(captioner.device))  # (R, t, D)
        logits = captioner.language_model(inputs_embeds=torch.cat([null, words], dim=1)).logits[:, -1]  # (R, V)
        conditional = torch.log_softmax(scores.float(), dim=-1)
        unconditional = torch.log_softmax(logits.float(), dim=-1)
        return conditional + (self.guidance_scale - 1.0) * (conditional - unconditional)


def tokenize_captions(tokenizer, captions: list[str]) -> list[list[int]]:
    """Captions -> text-tokenizer ids without special tokens (the captioner adds its own BOS/EOS)."""
    return tokenizer(list(captions), add_special_tokens=False)["input_ids"]
