"""A frozen pretrained text encoder small enough to travel: its word-embedding matrix cut down to the rows of the
token ids that a known set of captions uses, every weight in float16; and the standard transformers folder
rebuilt from it (the full-size matrix with the unused rows zero, float32), which ``--text_encoder FOLDER``
loads. On those captions the rebuilt encoder gives the original's outputs up to the float16 rounding of the
weights; any other token id reads a zero row, so the rebuilt encoder is for those captions only.

    prune_encoder(text, captions, folder)  ->  folder/encoder.safetensors + tokenizer files + config.json
    rebuild_encoder(folder, destination)   ->  destination/ (config.json, model.safetensors, tokenizer files)

Used by ``benchmarks.gpu_bundle`` to take MiniLM (90 MB in float32, 45 MB in float16) to a GPU machine that
has no package index and a 64 MiB limit on what travels.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file

from tessera.prior.text import TextConditioner
from tessera.prior.text_sources import quiet_transformers_bars

WEIGHTS = "encoder.safetensors"
ROWS = "pruned.rows"  # the kept token ids, int64, ascending
RECORD = "pruned_encoder.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def embedding_key(encoder: transformers.PreTrainedModel) -> str:
    """The state-dict name of ``encoder``'s input-embedding matrix."""
    pointer = encoder.get_input_embeddings().weight.data_ptr()
    return next(name for name, tensor in encoder.state_dict().items() if tensor.data_ptr() == pointer)


def used_token_ids(text: TextConditioner, captions: Iterable[str], batch_size: int = 4096) -> torch.Tensor:
    """The token ids (ascending) that ``text`` feeds its encoder for ``captions`` (normalised and truncated as it
    does), with every special token of its tokenizer."""
    captions = list(captions)
    used = set(text.text_tokenizer.all_special_ids)
    for start in range(0, len(captions), batch_size):
        batch = text.tokenize(captions[start:start + batch_size])
        used.update(batch["input_ids"][batch["attention_mask"].bool()].tolist())
    return torch.tensor(sorted(used), dtype=torch.long)


def prune_encoder(text: TextConditioner, captions: Iterable[str], folder: str | os.PathLike) -> dict:
    """Write ``text``'s encoder pruned to the rows ``captions`` use (float16) with its tokenizer and config
    files into ``folder``; returns the record (also written as ``pruned_encoder.json``)."""
    source = Path(text.encoder.name_or_path)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"the text encoder was not loaded from a transformers folder ({source})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = used_token_ids(text, captions)
    key = embedding_key(text.encoder)
    state = {name: tensor.detach().to(torch.float16).contiguous() for name, tensor in text.encoder.state_dict().items()
             if name != key and tensor.is_floating_point()}
    if len(state) + 1 != len(text.encoder.state_dict()):
        raise ValueError("the encoder has integer buffers; pruning handles floating-point weights only")
    state[key] = text.encoder.state_dict()[key][rows].to(torch.float16).contiguous()  # (rows, D)
    state[ROWS] = rows
    save_file(state, folder / WEIGHTS)
    for name in (*TOKENIZER_FILES, "config.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    record = {"embedding_key": key, "kept_rows": len(rows),
              "vocab_size": text.encoder.get_input_embeddings().num_embeddings,
              "hidden_size": text.hidden_size, "source": str(source)}
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def kept_rows(folder: str | os.PathLike) -> torch.Tensor:
    """The token ids a pruned encoder keeps."""
    return load_file(Path(folder) / WEIGHTS)[ROWS]


def rebuild_encoder(folder: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """The standard transformers folder of a pruned encoder: float32 weights, the full-size embedding matrix with
    zeros in the rows not kept, the original tokenizer and config files."""
    folder, destination = Path(folder), Path(destination)
    record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    state = load_file(folder / WEIGHTS)
    rows = state.pop(ROWS)
    key = record["embedding_key"]
    matrix = torch.zeros(record["vocab_size"], record["hidden_size"])  # (vocab, D)
    matrix[rows] = state.pop(key).float()
    state = {name: tensor.float() for name, tensor in state.items()}
    state[key] = matrix
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    with quiet_transformers_bars():
        model = transformers.AutoModel.from_config(config)
        model.load_state_dict(state, strict=True)
        destination.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(destination)
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, destination / name)
    return destination
