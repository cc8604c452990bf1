"""The installed Tessera version, recorded in every file format the project writes."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def tessera_version() -> str:
    try:
        return version("tessera")
    except PackageNotFoundError:
        return "unknown"
