"""The text side of the prior: a text tokenizer and a text encoder that turn prompts into a ``TextContext``.

Two kinds of text encoder, chosen by ``TextEncoderConfig.pretrained``:

- ``None`` (default): a small BERT-style encoder built from the config and trained jointly with the prior. Its
  text tokenizer is a byte-level BPE trained on the training captions (``train_text_tokenizer``), so any text in
  any language encodes without unknown tokens.
- a local folder of a pretrained ``transformers`` encoder (``AutoTokenizer`` + ``AutoModel``, never downloaded).
  It is frozen (no gradients, always in eval mode), so its outputs can be cached in the tokenized dataset.

Prompts (and the captions a scratch text tokenizer is trained on) are read as people type them first
(``prior.prompt_text``: emoji spelled out as their names, invalid Unicode refused with an error naming the prompt);
a prompt with text a pretrained tokenizer maps to its unknown token is warned about. Prompts are padded on the right to the longest prompt of the batch (``padding="max_length"`` pads to
``max_length``) and truncated at ``max_length`` tokens, special tokens included, with one warning per batch.
Padding is masked: the hidden states of a prompt's real tokens do not depend on what it is batched with, and the
hidden states at padded positions are zero.

A saved conditioner is three entries of a folder: ``text_config.json``, ``text_tokenizer/`` and ``text_encoder/``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from torch import nn

from tessera.core.config import CheckpointMismatchError, JSONConfig
from tessera.core.hashing import state_dict_sha256
from tessera.core.io import apply_umask_modes
from tessera.prior.context import TextContext
from tessera.prior.prompt_text import prompt_text, prompt_texts
from tessera.prior.text_sources import (
    is_package_reference,
    load_pretrained_text_encoder,
    quiet_transformers_bars,
    resolve_pretrained_folder,
    transformers_model_folder,
)
from tessera.prior.text_tokenizer import (
    add_text_normalizer,
    reset_backend_state,
    train_text_tokenizer,
    wrap_text_tokenizer,
)
from tessera.prior.text_vocabulary import extend_bpe_tokenizer

logger = logging.getLogger(__name__)

TEXT_CONFIG_NAME = "text_config.json"
TOKENIZER_FOLDER = "text_tokenizer"
TOKENIZER_FILE = "tokenizer.json"  # every saved text tokenizer is a fast one: its whole vocabulary is here
ENCODER_FOLDER = "text_encoder"
# TextEncoderConfig fields that describe the encoder's architecture, and their names in a transformers config.
ARCHITECTURE_FIELDS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
}


@dataclasses.dataclass
class TextEncoderConfig(JSONConfig):
    # None: small encoder trained jointly; else a local folder of a transformers encoder, or "package:<module>" for
    # one an installed Python package ships (a saved pipeline then refers to the package instead of copying it)
    pretrained: str | None = None
    hidden_size: int = 256  # the architecture fields are filled in from the model when ``pretrained`` is set
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    max_length: int = 32  # text context length in tokens, special tokens included; longer prompts are truncated
    vocab_size: int = 2048  # BPE vocabulary size when training the text tokenizer (the trained one may be smaller)
    dropout: float = 0.0  # hidden and attention dropout of the scratch encoder
    trainable: bool | None = None  # None: True for the scratch encoder, False (frozen) for a pretrained one
    encoder_sha256: str | None = None  # package references: the weights' hash, checked when the pipeline loads
    # Text normalisation (prior.text_tokenizer.text_normalizer) before tokenizing. New text sides have it; a
    # config saved before it existed has none and its pipeline reads text exactly as it did.
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"max_length must leave room for the special tokens (>= 2), got {self.max_length}")
        if self.pretrained is None and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def is_trainable(self) -> bool:
        return self.pretrained is None if self.trainable is None else self.trainable


def build_scratch_encoder(config: TextEncoderConfig, tokenizer: transformers.PreTrainedTokenizerBase
                          ) -> transformers.BertModel:
    """A small BERT encoder for ``tokenizer``'s vocabulary, without pooling layer, positions up to max_length."""
    bert = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_length, type_vocab_size=1, hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout, pad_token_id=tokenizer.pad_token_id,
    )
    return transformers.BertModel(bert, add_pooling_layer=False)


def _architecture_mismatches(config: TextEncoderConfig, encoder_config: transformers.PretrainedConfig
                             ) -> list[str]:
    problems = [
        f"{field}: text config {getattr(config, field)} vs encoder {getattr(encoder_config, name)}"
        for field, name in ARCHITECTURE_FIELDS.items()
        if getattr(encoder_config, name, None) is not None and getattr(encoder_config, name) != getattr(config, field)
    ]
    positions = getattr(encoder_config, "max_position_embeddings", None)
    if positions is not None and config.max_length > positions:
        problems.append(f"max_length {config.max_length} > encoder max_position_embeddings {positions}")
    return problems


def swap_in_saved(component, folder: Path) -> None:
    """``component.save_pretrained`` into a folder beside ``folder``, then swapped in: an interrupted save
    leaves the old folder."""
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    with quiet_transformers_bars():
        component.save_pretrained(staging)
    apply_umask_modes(staging)  # transformers' safetensors files are written 0600
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)


def load_text_tokenizer(directory: str | os.PathLike, config: TextEncoderConfig | None = None
                        ) -> transformers.PreTrainedTokenizerBase:
    """The text tokenizer of a saved folder (``text_tokenizer/``), offline, with the text normaliser when the
    folder's ``text_config.json`` (or ``config``) says so; without the encoder (e.g. for the captioner)."""
    directory = Path(directory)
    if config is None and (directory / TEXT_CONFIG_NAME).is_file():
        config = TextEncoderConfig.load(directory / TEXT_CONFIG_NAME)
    if not (directory / TOKENIZER_FOLDER).is_dir():
        raise FileNotFoundError(f"{directory} has no {TOKENIZER_FOLDER}/ (the text tokenizer)")
    path = directory / TOKENIZER_FOLDER / TOKENIZER_FILE
    if not path.is_file():  # transformers would fall back to a vocabulary of special tokens alone
        raise FileNotFoundError(f"{path} is missing: the text tokenizer's vocabulary is in that file, so without it "
                                "every prompt would read as unknown tokens. Restore the folder from its source.")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory / TOKENIZER_FOLDER, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - tokenizers raises a bare Exception for a damaged file
        raise CheckpointMismatchError(f"{path} (the text tokenizer) cannot be read ({error}); it may be truncated "
                                      "by an interrupted copy or save. Restore it from its source.") from None
    if config is not None and config.normalize:  # transformers may rebuild a pretrained tokenizer's normaliser
        add_text_normalizer(tokenizer)
    return tokenizer


class TextConditioner(nn.Module):
    """Text tokenizer + text encoder: ``list[str]`` -> ``TextContext`` (hidden states (B, L, D), mask (B, L))."""

    def __init__(self, config: TextEncoderConfig, tokenizer: transformers.PreTrainedTokenizerBase,
                 encoder: transformers.PreTrainedModel) -> None:
        super().__init__()
        problems = _architecture_mismatches(config, encoder.config)
        vocab = encoder.get_input_embeddings().num_embeddings
        if len(tokenizer) > vocab:
            problems.append(f"text tokenizer has {len(tokenizer)} tokens but the encoder embeds only {vocab}")
        if config.pretrained is None and tokenizer.pad_token_id is None:
            problems.append("text tokenizer has no pad token")
        if problems:
            raise CheckpointMismatchError("text encoder does not match its config/tokenizer: " + "; ".join(problems))
        self.config = config
        self.text_tokenizer = tokenizer
        self.encoder = encoder
        if config.normalize:  # transformers may rebuild a pretrained tokenizer's normaliser when it loads one
            add_text_normalizer(tokenizer)
        reset_backend_state(tokenizer, config.max_length)
        self.encoder.requires_grad_(self.trainable)
        self.train(self.training)

    @property
    def trainable(self) -> bool:
        """False for a frozen encoder: no gradients, always in eval mode, outputs can be cached."""
        return self.config.is_trainable

    @property
    def hidden_size(self) -> int:
        """Width D of the encoder's hidden states."""
        return self.encoder.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def train(self, mode: bool = True) -> TextConditioner:
        super().train(mode)
        if not self.trainable:
            self.encoder.eval()  # a frozen encoder never runs dropout, whatever its owner's mode
        return self

    @classmethod
    def from_captions(cls, captions: Iterable[str], config: TextEncoderConfig) -> TextConditioner:
        """Scratch: trains the BPE text tokenizer on ``captions`` and builds a fresh encoder (seeded by torch's
        global RNG). Pretrained: loads tokenizer and encoder from ``config.pretrained`` (captions unused) and
        fills the config's architecture fields in from the model."""
        config = dataclasses.replace(config, normalize=True)
        if config.pretrained is None:
            tokenizer = train_text_tokenizer((prompt_text(caption, "caption") for caption in captions),
                                             config.vocab_size, max_length=config.max_length)
            return cls(config, tokenizer, build_scratch_encoder(config, tokenizer))
        tokenizer, encoder = load_pretrained_text_encoder(resolve_pretrained_folder(config.pretrained))
        filled = {field: getattr(encoder.config, name) for field, name in ARCHITECTURE_FIELDS.items()
                  if getattr(encoder.config, name, None) is not None}
        if is_package_reference(config.pretrained):
            filled["encoder_sha256"] = state_dict_sha256(encoder.state_dict())
        return cls(dataclasses.replace(config, **filled), tokenizer, encoder)

    def enable_normalization(self) -> None:
        """Normalise text from now on (``prior.text_tokenizer.text_normalizer``), e.g. before fine-tuning a text
        side saved before normalisation existed; saved with the tokenizer and the config."""
        self.config = dataclasses.replace(self.config, normalize=True)
        add_text_normalizer(self.text_tokenizer)

    @torch.no_grad()
    def extend_vocabulary(self, captions: Iterable[str], max_new_tokens: int, min_frequency: int = 2) -> list[str]:
        """Fine-tuning on captions in a new language or style: make their frequent words single tokens (see
        ``prior.text_vocabulary``), grow the encoder's embedding table to match, and start each new row at the
        mean of the rows of the pieces it joins. Returns the words added. Only the scratch (BPE) text side
        can grow, and only while it is trainable."""
        if self.config.pretrained is not None or not self.trainable:
            raise ValueError("only the jointly trained scratch text tokenizer and encoder can grow a vocabulary; "
                             f"this text side is {'a pretrained encoder' if self.config.pretrained else 'frozen'}")
        captions = (prompt_text(caption, "caption") for caption in captions)  # as ``tokenize`` will read them
        extension = extend_bpe_tokenizer(self.text_tokenizer.backend_tokenizer, captions, max_new_tokens, min_frequency)
        if not extension.words:
            return []
        self.text_tokenizer = wrap_text_tokenizer(extension.tokenizer, self.config.max_length)
        if self.config.normalize:
            add_text_normalizer(self.text_tokenizer)
        embeddings = self.encoder.resize_token_embeddings(len(self.text_tokenizer), mean_resizing=False).weight
        for token_id, piece_ids in extension.pieces.items():
            embeddings[token_id] = embeddings[piece_ids].mean(0)
        logger.info("added %d text tokens for %d new words (e.g. %s)", len(extension.pieces), len(extension.words),
                    ", ".join(repr(self.text_tokenizer.convert_tokens_to_string([w])) for w in extension.words[:5]))
        return extension.words

    def tokenize(self, prompts: list[str], padding: str = "longest") -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` (B, L): padded on the right to the longest prompt (or with
        ``padding="max_length"`` to max_length), truncated at max_length tokens with one warning."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("tokenize needs at least one prompt")
        wrong = [type(prompt).__name__ for prompt in prompts if not isinstance(prompt, str)]
        if wrong:
            raise TypeError(f"prompts must be strings, got {sorted(set(wrong))}")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        given, prompts = prompts, prompt_texts(prompts)  # emoji spelled out, invalid Unicode refused
        limit = self.config.max_length
        batch = self.text_tokenizer(prompts, padding=padding, truncation=True, max_length=limit,
                               return_overflowing_tokens=True, return_tensors="pt")
        # A truncated prompt gives extra rows with its overflow; keep each prompt's first row.
        rows = batch["overflow_to_sample_mapping"]  # (rows,) prompt index of each row
        first = torch.ones_like(rows, dtype=torch.bool)
        first[1:] = rows[1:] != rows[:-1]
        truncated = len(torch.unique(rows[~first]))
        if truncated:
            logger.warning("%d of %d prompts are longer than max_length=%d text tokens and were truncated.",
                           truncated, len(prompts), limit)
        input_ids, attention_mask = batch["input_ids"][first], batch["attention_mask"][first]  # (B, L)
        self._warn_about_unknown_text(given, input_ids)
        if padding == "longest":  # overflow rows cannot be longer than a first row, but trim to be sure
            length = int(attention_mask.sum(1).max())
            input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _warn_about_unknown_text(self, prompts: list[str], input_ids: torch.Tensor) -> None:
        """One warning naming the prompts with text the text tokenizer maps to its unknown token."""
        unknown_id = self.text_tokenizer.unk_token_id
        if unknown_id is None:  # the scratch byte-level BPE encodes every string
            return
        rows = (input_ids == unknown_id).any(dim=1).nonzero().flatten().tolist()
        if rows:
            logger.warning("%d of %d prompts have text the text tokenizer does not know (read as %s, so it does "
                           "not steer the image): %s", len(rows), len(prompts), self.text_tokenizer.unk_token,
                           ", ".join(repr(prompts[row]) for row in rows[:5]))

    def encode_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextContext:
        """Run the encoder on token ids (B, L); hidden states at padded positions are zeroed."""
        device = self.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        if self.trainable:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            self.encoder.eval()
            with torch.no_grad():
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.bool()  # (B, L)
        return TextContext(hidden.masked_fill(~mask[..., None], 0.0), mask)  # (B, L, D)

    def forward(self, prompts: list[str]) -> TextContext:
        return self.encode_ids(**self.tokenize(prompts))

    @property
    def refers_to_package(self) -> bool:
        """A frozen encoder from an installed package: saved folders name the package instead of copying it."""
        return is_package_reference(self.config.pretrained) and not self.trainable

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``text_tokenizer/``, ``text_encoder/`` (safetensors; not for a package reference) and
        ``text_config.json`` into ``directory``. Each subfolder is written beside its target, then swapped in;
        the config comes last."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        reset_backend_state(self.text_tokenizer, self.config.max_length)
        components = [(TOKENIZER_FOLDER, self.text_tokenizer)]
        if self.refers_to_package:
            shutil.rmtree(directory / ENCODER_FOLDER, ignore_errors=True)
        else:
            components.append((ENCODER_FOLDER, self.encoder))
        for name, component in components:
            swap_in_saved(component, directory / name)
        self.config.save(directory / TEXT_CONFIG_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> TextConditioner:
        """Load a folder written by ``save_pretrained``, strictly and offline: the encoder's architecture must
        match ``text_config.json`` and its weights must match the model exactly."""
        directory = Path(directory)
        config_path = directory / TEXT_CONFIG_NAME
        config = TextEncoderConfig.load(config_path) if config_path.is_file() else None
        packaged = config is not None and is_package_reference(config.pretrained) and not config.is_trainable
        paths = [config_path, directory / TOKENIZER_FOLDER] + ([] if packaged else [directory / ENCODER_FOLDER])
        missing = [path.name for path in paths if not path.exists()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a saved TextConditioner: it has no {missing}.")
        encoder_dir = resolve_pretrained_folder(config.pretrained) if packaged else directory / ENCODER_FOLDER
        if packaged:
            encoder_dir = transformers_model_folder(encoder_dir)
        encoder_config = transformers.AutoConfig.from_pretrained(encoder_dir, local_files_only=True)
        problems = _architecture_mismatches(config, encoder_config)
        if problems:
            raise CheckpointMismatchError(f"{encoder_dir} does not match {TEXT_CONFIG_NAME}: " + "; ".join(problems))
        tokenizer = load_text_tokenizer(directory, config)
        extra = {"add_pooling_layer": False} if config.pretrained is None else {}
        try:
            with quiet_transformers_bars():
                encoder, info = transformers.AutoModel.from_pretrained(  # float32 whatever dtype it was saved in
                    encoder_dir, config=encoder_config, local_files_only=True, output_loading_info=True,
                    dtype=torch.float32, **extra)
        except RuntimeError as error:  # transformers refuses weights of the wrong shape
            raise CheckpointMismatchError(f"{encoder_dir} weights do not match its config: {error}") from error
        except SafetensorError as error:
            raise CheckpointMismatchError(
                f"{encoder_dir / 'model.safetensors'} (the text encoder weights) is truncated or not a safetensors "
                f"file ({error}). Re-save or re-download it; an interrupted copy or save leaves such a file."
            ) from error
        wrong = {kind: sorted(map(str, info[kind]))
                 for kind in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[kind]}
        if wrong:
            raise CheckpointMismatchError(f"{encoder_dir} weights do not match {type(encoder).__name__}: {wrong}")
        if packaged and state_dict_sha256(encoder.state_dict()) != config.encoder_sha256:
            raise CheckpointMismatchError(
                f"the text encoder in {encoder_dir} (package {config.pretrained!r}) is not the one {directory} was "
                "trained with (its weights hash differs): install the version of the package the pipeline was "
                "made with.")
        return cls(config, tokenizer, encoder).eval()
