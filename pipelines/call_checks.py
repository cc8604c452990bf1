"""Checks of the arguments every pipeline call shares (prompts, counts), with errors that say what was expected."""

from __future__ import annotations

from collections.abc import Iterable


def prompt_list(prompt: str | list[str], name: str) -> list[str]:
    if prompt is None or isinstance(prompt, bytes) or not isinstance(prompt, (str, Iterable)):
        hint = ' (use "" for an unconditional image)' if prompt is None else ""
        raise TypeError(f"{name} must be a string or a list of strings, got {type(prompt).__name__}{hint}")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError(f"{name} must be a string or a non-empty list of strings")
    wrong = sorted({type(p).__name__ for p in prompts if not isinstance(p, str)})
    if wrong:
        raise TypeError(f"{name} must be a string or a list of strings, got items of type {wrong}")
    return prompts


def positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value
