"""Writing into folders that may already hold something: what a folder holds, the refusal to write over what
the user did not ask to overwrite, and replacing a set of entries as a whole (write beside, then swap).

    holds = folder_contents(path)          # ["a saved pipeline (pipeline.json)", ...]; [] for a new folder
    refuse_to_overwrite(path, holds, what="the generated images", flag="--overwrite")
    replace_entries(path, ["vqgan", "prior", "pipeline.json"], write=lambda staging: ...)
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from tessera.core.io import apply_umask_modes

logger = logging.getLogger(__name__)

# What a folder is, told by the file that marks it: (marker file, description). The first match describes it.
FOLDER_MARKERS: tuple[tuple[str, str], ...] = (
    ("pipeline.json", "a saved pipeline (pipeline.json)"),
    ("tokenized_dataset.json", "a tokenized dataset (tokenized_dataset.json)"),
    ("tokenized_dataset.partial.json", "a tokenized dataset being exported (tokenized_dataset.partial.json)"),
    ("dataset_dict.json", "a saved dataset (dataset_dict.json)"),
    ("dataset_info.json", "a saved dataset (dataset_info.json)"),
    ("state.json", "a saved dataset (state.json)"),
    ("metadata.jsonl", "an imagefolder (metadata.jsonl)"),
    ("metadata.csv", "an imagefolder (metadata.csv)"),
    ("model.safetensors", "saved model weights (model.safetensors)"),
)


class FolderInUseError(FileExistsError):
    """A command was asked to write into a folder that holds something it would overwrite."""


def folder_kind(path: Path) -> str | None:
    """What ``path`` is by its marker file (``FOLDER_MARKERS``), or None."""
    return next((description for marker, description in FOLDER_MARKERS if (path / marker).is_file()), None)


def refuse_to_overwrite(path: Path, holds: str, *, what: str, override: str) -> None:
    """``FolderInUseError``: ``path`` holds ``holds``; writing ``what`` there would overwrite it."""
    raise FolderInUseError(f"{path} already holds {holds}; writing {what} there would overwrite it. Choose "
                           f"another folder, or pass {override} to write there anyway. Nothing was written.")


def check_output_folder(path: Path, *, what: str, override: str, overwrite: bool = False) -> None:
    """``FolderInUseError`` when ``path`` is a folder that ``folder_kind`` recognises (a pipeline, a dataset, an
    imagefolder) and ``overwrite`` is not set; a file at ``path`` is a ``FileExistsError``."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a folder: {what} is written into a folder")
    kind = folder_kind(path) if path.is_dir() else None
    if kind is not None and not overwrite:
        refuse_to_overwrite(path, kind, what=what, override=override)


def _make_writable(function, path, _excinfo) -> None:
    """``shutil.rmtree``'s error handler: a read-only folder or file is made writable, then removed."""
    parent = os.path.dirname(path)
    os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR | stat.S_IXUSR)
    function(path)


def remove_tree(path: Path) -> None:
    """Remove a file or folder, read-only parts included; what cannot be removed is logged, not raised."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, onerror=_make_writable)  # onexc from Python 3.12
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError as error:
        logger.warning("could not remove %s (%s); delete it by hand", path, error)


def replace_entries(directory: Path, entries: list[str], write: Callable[[Path], None], *,
                    remove: Iterable[str] = (), marker: str | None = None) -> Path:
    """Replace ``entries`` (files or folders) of ``directory`` as a whole; other entries are left alone.

    ``write(staging)`` writes every entry into a new sibling folder. When it fails, the staging folder is
    removed and ``directory`` is untouched. Then the old entries are renamed aside (``marker``, the file that
    says the folder is complete, e.g. ``pipeline.json``, first) and the new ones moved in (``marker`` last), so
    an interrupted swap never leaves a marked folder of mixed parts; ``remove`` are old entries with no new
    counterpart. A failure while swapping moves every old entry back, and the error says so."""
    directory = Path(directory)
    remove = [name for name in remove if name not in entries]
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f".{directory.name}.saving-{os.getpid()}")
    remove_tree(staging)
    staging.mkdir()
    try:
        write(staging)
    except BaseException as error:
        remove_tree(staging)
        _add_note(error, f"nothing in {directory} was changed: what it held is intact")
        raise
    apply_umask_modes(staging)
    written = [name for name in entries if (staging / name).exists()]
    remove = [*remove, *(name for name in entries if name not in written)]  # e.g. a component no longer saved
    ordered = sorted(written, key=lambda name: name == marker)
    if not directory.exists():
        os.replace(staging, directory)
        return directory
    set_aside: list[tuple[Path, Path]] = []  # (entry, its old version)
    moved_in: list[Path] = []
    try:
        for name in sorted([*remove, *written], key=lambda name: name != marker):  # the marker first
            target, aside = directory / name, directory / f".{name}.replaced-{os.getpid()}"
            if target.exists() or target.is_symlink():
                remove_tree(aside)
                os.replace(target, aside)
                set_aside.append((target, aside))
        for name in ordered:  # the marker last
            os.replace(staging / name, directory / name)
            moved_in.append(directory / name)
    except BaseException as error:
        for target in reversed(moved_in):
            remove_tree(target)
        for target, aside in reversed(set_aside):
            os.replace(aside, target)
        remove_tree(staging)
        _add_note(error, f"the save was undone: {directory} holds what it held before")
        raise
    for _, aside in set_aside:
        remove_tree(aside)
    remove_tree(staging)
    return directory


def _add_note(error: BaseException, note: str) -> None:
    """Append ``note`` to the error's message (its first argument), so the one-line CLI error says it."""
    if isinstance(error, OSError) and error.strerror:
        error.strerror = f"{error.strerror} ({note})"
    elif error.args and isinstance(error.args[0], str):
        error.args = (f"{error.args[0]} ({note})", *error.args[1:])
    else:
        error.add_note(note)
