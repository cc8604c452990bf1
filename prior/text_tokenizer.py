"""The scratch text tokenizer: a byte-level BPE trained on the training captions, with a normaliser saved in its
``tokenizer.json`` so that training, inference and fine-tuning read text the same way by construction.

Normalisation (``text_normalizer``): Unicode NFKC, lower case, punctuation other than apostrophes and hyphens
replaced by spaces (symbols and emoji stay), runs of whitespace collapsed, ends stripped. "A Red Circle, on the LEFT!" and "a red
circle on the left" give the same ids. A tokenizer saved before normalisation existed has none and keeps
reading text exactly as it did (``add_text_normalizer`` adds it, e.g. before fine-tuning).
"""

from __future__ import annotations

from collections.abc import Iterable

import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "[PAD]", "[BOS]", "[EOS]"
PUNCTUATION = r"[\p{P}&&[^'\-]]"  # Unicode punctuation except apostrophes and hyphens (symbols and emoji stay)


def text_normalizer() -> normalizers.Normalizer:
    """NFKC, lower case, punctuation -> space, whitespace runs -> one space, stripped."""
    return normalizers.Sequence([
        normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(PUNCTUATION), " "),
        normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(),
    ])


def add_text_normalizer(tokenizer: transformers.PreTrainedTokenizerBase) -> None:
    """Put ``text_normalizer`` in front of the fast tokenizer's own normaliser (if it has one), in place; a
    tokenizer that has it already is left as it is."""
    if has_text_normalizer(tokenizer):
        return
    backend = tokenizer.backend_tokenizer
    steps = [text_normalizer()] + ([backend.normalizer] if backend.normalizer is not None else [])
    backend.normalizer = normalizers.Sequence(steps) if len(steps) > 1 else steps[0]


def has_text_normalizer(tokenizer: transformers.PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer applies ``text_normalizer`` (checked by its effect)."""
    normalizer = tokenizer.backend_tokenizer.normalizer
    return normalizer is not None and normalizer.normalize_str(" A  B! ") == "a b"


def train_text_tokenizer(
    captions: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2, *, max_length: int = 32
) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE text tokenizer trained on ``captions``: every unicode string encodes without unknown
    tokens, after ``text_normalizer`` (decoding gives the normalised text). ``[BOS] text [EOS]`` framing, ``[PAD]`` padding, ``model_max_length`` =
    ``max_length``. The same captions give the same tokenizer."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    special = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]
    if vocab_size < len(alphabet) + len(special):
        raise ValueError(f"vocab_size must be at least {len(alphabet) + len(special)} (256 bytes + "
                         f"{len(special)} special tokens), got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.normalizer = text_normalizer()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special,
                                  initial_alphabet=alphabet, show_progress=False)

    def checked(texts: Iterable[str]) -> Iterable[str]:
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"captions must be strings, got {type(text).__name__}: {text!r}")
            yield text

    backend.train_from_iterator(checked(captions), trainer)
    bos, eos = backend.token_to_id(BOS_TOKEN), backend.token_to_id(EOS_TOKEN)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}", special_tokens=[(BOS_TOKEN, bos), (EOS_TOKEN, eos)])
    return wrap_text_tokenizer(backend, max_length)


def wrap_text_tokenizer(backend: Tokenizer, max_length: int) -> transformers.PreTrainedTokenizerFast:
    """The ``transformers`` tokenizer around a scratch byte-level BPE ``tokenizers.Tokenizer``."""
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        model_max_length=max_length, padding_side="right", truncation_side="right",
        clean_up_tokenization_spaces=False,  # decoding must not touch spaces before punctuation
    )
    reset_backend_state(tokenizer, max_length)
    return tokenizer


def reset_backend_state(tokenizer: transformers.PreTrainedTokenizerBase, max_length: int) -> None:
    """``transformers`` leaves the last call's truncation and padding in the backend ``tokenizers.Tokenizer``,
    and ``save_pretrained`` writes them into ``tokenizer.json``; set them to this module's behaviour instead, so
    the saved file is the same whatever was tokenized before, and a bare ``tokenizer.json`` pads as we do."""
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(max_length=max_length)
    if tokenizer.pad_token_id is not None:
        backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
