"""Saving and loading components as folders of ``config.json`` + ``model.safetensors``.

Loading is strict: a config key the class does not know, a missing or unexpected weight, or a weight of the
wrong shape is an error that says which file and which keys, never a warning. ``from_pretrained`` takes a local
folder or, when online, a Hub repository id (resolved with ``huggingface_hub.snapshot_download``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

C = TypeVar("C", bound="JSONConfig")
M = TypeVar("M", bound="PretrainedMixin")


class CheckpointMismatchError(ValueError):
    """A saved folder does not match the model class or config it is loaded into."""


@dataclasses.dataclass
class JSONConfig:
    """Base for config dataclasses that round-trip through JSON, nested dataclasses and tuples included."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        return dataclass_from_dict(cls, data)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls: type[C], path: str | os.PathLike) -> C:
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))


def dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from JSON data, strictly: unknown keys are an error; nested dataclasses and
    tuples (stored as JSON lists) are rebuilt."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointMismatchError(
            f"{cls.__name__} got unknown keys {unknown}; known keys are {sorted(known)}. "
            "The config was written by a different version or for a different model."
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = dataclass_from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}, str(tmp))
    os.replace(tmp, path)


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
        state = load_file(str(directory / WEIGHTS_NAME), device="cpu" if device.type == "cpu" else str(device))
        load_state_dict_strict(model, state, source=directory / WEIGHTS_NAME)
        return model.to(device).eval()


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
        def head(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "")

        problems = [
            f"missing {head(missing)}" if missing else "",
            f"unexpected {head(unexpected)}" if unexpected else "",
            f"wrong shape {head(wrong_shape)}" if wrong_shape else "",
        ]
        raise CheckpointMismatchError(
            f"{source} does not match {type(model).__name__}: " + "; ".join(p for p in problems if p)
        )
    model.load_state_dict(state, strict=True)
