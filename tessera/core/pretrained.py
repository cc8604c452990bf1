"""Saving and loading components as folders of ``config.json`` + ``model.safetensors``.

Loading is strict: a config key the class does not know, a missing or unexpected weight, or a weight of the
wrong shape is an error that says which file and which keys, never a warning. ``from_pretrained`` takes a local
folder or, when online, a Hub repository id (resolved with ``huggingface_hub.snapshot_download``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tessera.core.config import CheckpointMismatchError, JSONConfig
from tessera.core.io import atomic_save_safetensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound="PretrainedMixin")


def load_safetensors(path: str | os.PathLike, *, component: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; a truncated or corrupt file is a ``CheckpointMismatchError``
    naming the file and the component (safetensors itself only says "incomplete metadata")."""
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointMismatchError(
            f"{path} (the {component} weights) is truncated or not a safetensors file ({error}). "
            "Re-save or re-download it; an interrupted copy or save leaves such a file.") from error


def resolve_folder(name_or_path: str | os.PathLike, *, local_files_only: bool = False) -> Path:
    """A local folder as is; otherwise a Hub repository id downloaded (or found in the cache) as a folder."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).startswith((".", "/")):
        raise FileNotFoundError(f"{name_or_path} is not a folder with {CONFIG_NAME} and {WEIGHTS_NAME}.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), local_files_only=local_files_only))
    except Exception as error:  # network, missing repo, offline mode: one clear message
        raise FileNotFoundError(
            f"Could not find {name_or_path!r} as a local folder, and fetching it from the Hugging Face Hub "
            f"failed ({type(error).__name__}: {error}). Pass the path of a saved folder."
        ) from error


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built from one ``JSONConfig``."""

    config_class: type[JSONConfig]
    config: JSONConfig

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        module = getattr(self, "module", self)  # unwrap DDP
        self.config.save(directory / CONFIG_NAME)
        atomic_save_safetensors(module.state_dict(), directory / WEIGHTS_NAME)
        return directory

    @classmethod
    def from_pretrained(
        cls: type[M], name_or_path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
        local_files_only: bool = False,
    ) -> M:
        directory = resolve_folder(name_or_path, local_files_only=local_files_only)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} has no {name}; it is not a saved {cls.__name__}.")
        config = cls.config_class.load(directory / CONFIG_NAME)
        model = cls(config)
        device = torch.device(map_location)
        # safetensors takes "cpu" or "cuda:N", not accelerate's "cpu:0"
        state = load_safetensors(directory / WEIGHTS_NAME, component=cls.__name__,
                                 device="cpu" if device.type == "cpu" else str(device))
        load_state_dict_strict(model, state, source=directory / WEIGHTS_NAME)
        return model.to(device).eval()


def list_head(items: list[str], limit: int = 8) -> str:
    """The first ``limit`` items, comma-separated, and how many there are in all when some are left out."""
    return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: Any) -> None:
    """``load_state_dict(strict=True)`` with one readable error listing every mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if state[key].shape != expected[key].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = [
            f"missing {list_head(missing)}" if missing else "",
            f"unexpected {list_head(unexpected)}" if unexpected else "",
            f"wrong shape {list_head(wrong_shape)}" if wrong_shape else "",
        ]
        raise CheckpointMismatchError(
            f"{source} does not match {type(model).__name__}: " + "; ".join(p for p in problems if p)
        )
    model.load_state_dict(state, strict=True)
