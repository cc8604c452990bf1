"""Config dataclasses that round-trip through JSON, strictly: an unknown key is an error, never ignored."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

from tessera.core.io import atomic_write_text

C = TypeVar("C", bound="JSONConfig")


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
        """Strict; a file that is empty, truncated or not a JSON object is a ``CheckpointMismatchError`` naming it."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointMismatchError(f"{path} is not valid JSON ({error}); it may be empty or truncated by an "
                                          "interrupted copy or save. Re-save or re-download it.") from None
        if not isinstance(data, dict):
            raise CheckpointMismatchError(f"{path} holds a JSON {type(data).__name__}, not an object of settings")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as error:  # unknown or missing keys, values out of range
            raise CheckpointMismatchError(f"{path}: {error}") from None


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
