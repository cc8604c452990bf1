"""Content hashes: of a file's bytes, and of tensors (names, dtypes, shapes and bytes, independent of the file
format, so a re-saved copy of the same weights has the same hash)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import torch


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of tensors' names, dtypes, shapes and bytes, in name order (independent of the file format)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
