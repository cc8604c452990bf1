"""Growing a trained byte-level BPE text tokenizer with the frequent words of new captions (fine-tuning).

The scratch text tokenizer (``prior.text.train_text_tokenizer``) only merges what its training captions held, so
captions in a new language or style fall apart into many byte-level pieces: French shapes captions average
32 tokens under the English tokenizer against 10 in English, more than the text context holds.
``extend_bpe_tokenizer`` adds each frequent new word as one token, by appending the merges that join its
current pieces left to right. Appended merges rank after every existing one, so text the old tokenizer already
encoded as whole words is encoded exactly as before, and each added word is guaranteed to become one token.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Tokenizer


@dataclass
class VocabularyExtension:
    tokenizer: Tokenizer  # the extended backend tokenizer
    pieces: dict[int, list[int]]  # each new token id -> the ids of its pieces under the original tokenizer
    words: list[str]  # the words added, most frequent first


def frequent_split_words(backend: Tokenizer, captions: Iterable[str], min_frequency: int) -> list[str]:
    """Pre-tokenized words of ``captions`` that occur ``min_frequency`` times or more and are not one token
    yet, most frequent first (ties in string order, so the result depends only on the captions)."""
    counts: Counter[str] = Counter()
    for text in captions:
        counts.update(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    vocab = backend.get_vocab()
    words = [word for word, count in counts.items() if count >= min_frequency and word not in vocab]
    return sorted(words, key=lambda word: (-counts[word], word))


def extend_bpe_tokenizer(backend: Tokenizer, captions: Iterable[str], max_new_tokens: int,
                         min_frequency: int = 2) -> VocabularyExtension:
    """A copy of ``backend`` (a BPE ``tokenizers.Tokenizer``) with up to ``max_new_tokens`` new tokens that
    make the frequent words of ``captions`` single tokens. A word needing more new tokens than are left is
    skipped. Intermediate pieces (a word of k pieces adds k - 1 tokens) count against the budget."""
    state = json.loads(backend.to_str())
    if state["model"]["type"] != "BPE":
        raise ValueError(f"only a BPE text tokenizer can be extended, this one is {state['model']['type']}")
    original = Tokenizer.from_str(backend.to_str())
    model = state["model"]
    vocab: dict[str, int] = model["vocab"]
    merges: list = model["merges"]
    known_merges = {tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in merges}
    next_id = max([*vocab.values(), *(token["id"] for token in state.get("added_tokens", []))]) + 1
    current = original
    pieces: dict[int, list[int]] = {}
    words: list[str] = []
    for word in frequent_split_words(backend, captions, min_frequency):
        parts = [token.value for token in current.model.tokenize(word)]
        if len(parts) - 1 > max_new_tokens - len(pieces):
            continue
        joined = parts[0]
        for part in parts[1:]:
            if (joined, part) not in known_merges:
                known_merges.add((joined, part))
                merges.append([joined, part])
            joined += part
            if joined not in vocab:
                vocab[joined] = next_id
                pieces[next_id] = [token.id for token in original.model.tokenize(joined)]
                next_id += 1
        words.append(word)
        current = Tokenizer.from_str(json.dumps(state))
    return VocabularyExtension(current, pieces, words)
