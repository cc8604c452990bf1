"""The files of an imagefolder: its metadata rows, the images no row names, and paths kept inside the folder.

Plain file reading with no notion of sources or datasets; ``pipelines.data.sources`` builds imagefolder rows from it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image


def read_metadata(path: Path, max_rows: int | None) -> tuple[list[tuple[str, dict]], list[tuple[str, str]]]:
    """Metadata records as ``(row id, record)`` and unparseable rows as ``("bad_metadata", row id)``.

    A row id is ``"metadata.jsonl:<line>"``; at most ``max_rows`` rows (good or bad) are read. A row with
    bytes that are not UTF-8 (e.g. one Latin-1 byte) is unparseable like a row of invalid JSON: skipped,
    counted, and named by its row id; the other rows are read.
    """
    records: list[tuple[str, dict]] = []
    bad: list[tuple[str, str]] = []
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as file:  # bad bytes -> \udcXX
        if path.suffix == ".csv":
            lines: Iterable[tuple[int, Any]] = ((number, row) for number, row in enumerate(csv.DictReader(file), 2))
        else:
            lines = ((number, line) for number, line in enumerate(file, 1) if line.strip())
        for number, line in lines:
            if max_rows is not None and len(records) + len(bad) >= max_rows:
                break
            row_id = f"{path.name}:{number}"
            try:
                record = line if isinstance(line, dict) else json.loads(line)
            except json.JSONDecodeError:
                record = None
            if _undecodable(line):
                record = None
            if isinstance(record, dict):
                records.append((row_id, record))
            else:
                bad.append(("bad_metadata", row_id))
    return records, bad


def _undecodable(line: str | dict) -> bool:
    """Whether a line (or a csv row's fields) read with ``surrogateescape`` held bytes that are not UTF-8."""
    texts = [line] if isinstance(line, str) else [str(key) for key in line] + [str(value) for value in line.values()]
    return any("\udc80" <= char <= "\udcff" for text in texts for char in text)


def unlisted_images(folder: Path, listed: set[str]) -> list[str]:
    """Image files under ``folder`` (relative posix paths) that no metadata row names."""
    extensions = {extension for extension, kind in Image.registered_extensions().items() if kind in Image.OPEN}
    listed = {os.path.normpath(name) for name in listed}
    found = (os.path.relpath(file, folder) for file in folder.rglob("*") if file.suffix.lower() in extensions)
    return sorted(Path(name).as_posix() for name in found if os.path.normpath(name) not in listed)


def inside_folder(folder: Path, name: str) -> Path | None:
    """``folder / name`` with symbolic links resolved, or ``None`` when that leads out of ``folder``."""
    root = folder.resolve()
    path = (root / name).resolve()  # an absolute ``name`` replaces ``root``; ``..`` and links are followed
    return path if path.is_relative_to(root) else None
