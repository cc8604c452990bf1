"""Reading tokenized datasets (written by ``pipelines.tokens.export``), and checking which image tokenizer made them.

    info = read_export_info("data/tokenized")                 # the sidecar, a dict
    check_tokenizer_matches("data/tokenized", "runs/vqgan")   # TokenizerMismatchError if another VQ-GAN made it
    dataset = load_tokenized_dataset("data/tokenized", vqgan="runs/vqgan")  # checks, then loads
    loader = DataLoader(dataset, batch_size=64, shuffle=True, collate_fn=collate_tokenized)
    for batch in loader: ...   # {"codes": (B, h, w) long, "caption": [...], "source_id": [...]}
                               # (+ "text_hidden_states" (B, L, D) and "text_mask" (B, L) bool when cached)

The same data opens without Tessera in one ``datasets`` call:
``datasets.load_dataset("parquet", data_files="DIR/data/*.parquet", split="train")`` (or
``datasets.load_dataset("DIR", split="train")``). Layout of DIR:

    tokenized_dataset.json          the sidecar, written last: the export is complete iff it exists
    tokenized_dataset.partial.json  the settings of an export in progress (removed when complete)
    data/train-00003-of-00010.parquet   shard 3 (``train-00003.parquet`` for streamed sources)
    shards/00003.json               shard 3's record (row counts, skipped rows, timings), its commit mark

A weights hash compares tensors, not files (``state_dict_sha256``: names, dtypes, shapes and bytes
in name order), so a re-saved copy of the same weights matches; the sidecar also keeps the sha256
of the ``model.safetensors`` bytes, used as a fast path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import datasets
import torch
from safetensors.torch import load_file

from tessera.core.hashing import file_sha256, state_dict_sha256
from tessera.core.pretrained import CONFIG_NAME, WEIGHTS_NAME
from tessera.tokenizer.config import VQGANConfig

__all__ = [
    "ALTERNATIVES_COLUMN", "DATA_DIR", "IncompleteExportError", "PARTIAL_NAME", "RECORDS_DIR", "SIDECAR_NAME", "TokenizerMismatchError",
    "check_tokenizer_matches", "collate_tokenized", "dict_differences", "file_sha256", "load_tokenized_dataset",
    "read_export_info", "state_dict_sha256", "tokenizer_identity",
]

FORMAT_VERSION = 1
SIDECAR_NAME = "tokenized_dataset.json"
PARTIAL_NAME = "tokenized_dataset.partial.json"
DATA_DIR = "data"
RECORDS_DIR = "shards"
TEXT_COLUMNS = ("text_hidden_states", "text_mask")
ALTERNATIVES_COLUMN = "alternative_captions"  # with --alternative_caption_column: a list of strings per row


class IncompleteExportError(FileNotFoundError):
    """A folder holds no finished tokenized dataset (interrupted, still running, or files missing)."""


class TokenizerMismatchError(ValueError):
    """A tokenized dataset was made with another image tokenizer than the one given (config or weights)."""


# ---------------------------------------------------------------------------------------------
# Hashes and identities


def _json_ready(value: Any) -> Any:
    """Tuples -> lists, as the value reads back from JSON (so configs compare equal)."""
    return json.loads(json.dumps(value))


def comparable_vqgan_config(config: dict) -> dict:
    """A VQ-GAN config as it loads: fields added after it was written appear with their defaults (which keep the
    old behaviour), so a folder saved before and after they existed compare equal."""
    try:
        return _json_ready(VQGANConfig.from_dict(config).to_dict())
    except (TypeError, ValueError):  # not a config this version reads: compare it as written
        return _json_ready(config)


def tokenizer_identity(vqgan: Any) -> dict:
    """``{"config", "state_dict_sha256", "weights_sha256"}`` of a saved VQ-GAN folder or a ``VQGAN``
    (``weights_sha256``, the file's bytes, only for a folder)."""
    if isinstance(vqgan, (str, os.PathLike)):
        folder = Path(vqgan)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} has no {name}; it is not a saved VQ-GAN folder")
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        return {"config": _json_ready(config), "state_dict_sha256": state_dict_sha256(load_file(folder / WEIGHTS_NAME)),
                "weights_sha256": file_sha256(folder / WEIGHTS_NAME)}
    module = getattr(vqgan, "module", vqgan)  # unwrap DDP
    return {"config": _json_ready(module.config.to_dict()), "state_dict_sha256": state_dict_sha256(module.state_dict())}


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {key: leaf for name, item in value.items() for key, leaf in _flat(item, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): value}


def dict_differences(old: dict, new: dict) -> list[str]:
    """``"key: a -> b"`` for each (dotted) key whose value differs between two nested dicts."""
    old_flat, new_flat = _flat(_json_ready(old)), _flat(_json_ready(new))

    def show(flat: dict, key: str) -> str:
        return repr(flat[key]) if key in flat else "absent"

    return [f"{key}: {show(old_flat, key)} -> {show(new_flat, key)}" for key in sorted(set(old_flat) | set(new_flat))
            if key not in old_flat or key not in new_flat or old_flat[key] != new_flat[key]]


# ---------------------------------------------------------------------------------------------
# Reading


def read_export_info(directory: str | os.PathLike) -> dict:
    """The sidecar of a finished export; ``IncompleteExportError`` (saying how to finish it) otherwise."""
    directory = Path(directory)
    sidecar = directory / SIDECAR_NAME
    if sidecar.is_file():
        return json.loads(sidecar.read_text(encoding="utf-8"))
    partial = directory / PARTIAL_NAME
    if partial.is_file():
        command = json.loads(partial.read_text(encoding="utf-8")).get("command") or "python train.py tokenize ..."
        raise IncompleteExportError(
            f"{directory} holds an unfinished tokenized dataset (no {SIDECAR_NAME}; the export was interrupted or "
            f"is still running). Re-run the export command, which resumes where it stopped:\n    {command}")
    raise IncompleteExportError(f"{directory} is not a tokenized dataset (no {SIDECAR_NAME}); "
                                "create one with `python train.py tokenize --vqgan ... --data ... --output_dir ...`")


def check_tokenizer_matches(tokenized: str | os.PathLike | dict, vqgan: Any) -> None:
    """Raise ``TokenizerMismatchError`` unless ``vqgan`` (a saved folder or a ``VQGAN``) is the image
    tokenizer that made the tokenized dataset ``tokenized`` (its folder, or its sidecar dict).

    Configs must be equal and weights must hash equal; the message names what differs.
    """
    info = tokenized if isinstance(tokenized, dict) else read_export_info(tokenized)
    where = "the tokenized dataset" if isinstance(tokenized, dict) else str(tokenized)
    expected = info["tokenizer"]
    if isinstance(vqgan, (str, os.PathLike)) and (Path(vqgan) / "model.safetensors").is_file() \
            and file_sha256(Path(vqgan) / "model.safetensors") == expected.get("weights_sha256"):
        given = {"config": _json_ready(json.loads((Path(vqgan) / "config.json").read_text(encoding="utf-8"))),
                 "state_dict_sha256": expected["state_dict_sha256"]}  # same bytes, same tensors
    else:
        given = tokenizer_identity(vqgan)
    problems = []
    config_diffs = dict_differences(comparable_vqgan_config(expected["config"]),
                                    comparable_vqgan_config(given["config"]))
    if config_diffs:
        problems.append("config differs (exported -> given): " + "; ".join(config_diffs))
    if given["state_dict_sha256"] != expected["state_dict_sha256"]:
        problems.append(f"weights differ: state_dict_sha256 {expected['state_dict_sha256'][:12]}... (exported) vs "
                        f"{given['state_dict_sha256'][:12]}... (given)")
    if problems:
        name = vqgan if isinstance(vqgan, (str, os.PathLike)) else type(vqgan).__name__
        raise TokenizerMismatchError(
            f"{where} was tokenized with a different image tokenizer than {name} "
            f"(it was made with {info.get('tokenizer_path', 'an unknown folder')}): " + "; ".join(problems)
            + ". Use the VQ-GAN it was made with, or re-export the data with this one (train.py tokenize).")


def shard_files(directory: str | os.PathLike, info: dict | None = None) -> list[Path]:
    """The parquet files of a finished export, in row order (empty shards have none);
    ``IncompleteExportError`` if any is missing."""
    directory = Path(directory)
    info = info if info is not None else read_export_info(directory)
    files = [directory / shard["file"] for shard in info["shards"] if shard["file"] is not None]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise IncompleteExportError(f"{directory}: {len(missing)} shard file(s) listed in {SIDECAR_NAME} are missing "
                                    f"(e.g. {missing[0]}); the folder was changed after the export. Export again.")
    return files


def load_tokenized_dataset(directory: str | os.PathLike, *, vqgan: Any = None,
                           cache_dir: str | None = None) -> datasets.Dataset:
    """A finished tokenized dataset, rows in source order, ``codes`` (and cached text columns) as
    torch tensors. With ``vqgan`` (a VQ-GAN folder or model) it is checked first
    (``check_tokenizer_matches``). One ``datasets.load_dataset("parquet", ...)`` call underneath."""
    info = read_export_info(directory)
    files = shard_files(directory, info)
    if vqgan is not None:
        check_tokenizer_matches(info, vqgan)
    if not files:
        raise ValueError(f"{directory} holds no rows (every source row was skipped; see {SIDECAR_NAME})")
    dataset = datasets.load_dataset("parquet", data_files=[str(file) for file in files], split="train",
                                    cache_dir=cache_dir)
    if len(dataset) != info["num_rows"]:
        raise IncompleteExportError(f"{directory}: the shards hold {len(dataset)} rows, {SIDECAR_NAME} says "
                                    f"{info['num_rows']}; the folder was changed after the export. Export again.")
    tensors = [name for name in ("codes", *TEXT_COLUMNS) if name in dataset.column_names]
    return dataset.with_format("torch", columns=tensors, output_all_columns=True)


def collate_tokenized(rows: list[dict]) -> dict:
    """DataLoader ``collate_fn`` for tokenized rows: ``{"codes": (B, h, w) long, "caption": [...],
    "source_id": [...]}`` plus ``"text_hidden_states"`` (B, L, D) float and ``"text_mask"`` (B, L)
    bool when the export cached text-encoder outputs."""
    if not rows:
        raise ValueError("collate_tokenized got an empty batch")
    batch = {"codes": torch.stack([torch.as_tensor(row["codes"]) for row in rows]).long(),  # (B, h, w)
             "caption": [row["caption"] for row in rows],
             "source_id": [row["source_id"] for row in rows]}
    if "augmentation" in rows[0]:
        batch["augmentation"] = torch.tensor([int(row["augmentation"]) for row in rows])  # (B,)
    if "text_hidden_states" in rows[0]:
        batch["text_hidden_states"] = torch.stack([torch.as_tensor(row["text_hidden_states"]) for row in rows])
        batch["text_mask"] = torch.stack([torch.as_tensor(row["text_mask"]) for row in rows]).bool()  # (B, L)
    return batch
