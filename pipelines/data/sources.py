"""Where image-caption rows come from: a source string -> ``RawSource`` (rows as given, unchecked).

Source strings, tried in this order:

``"shapes"`` / ``"shapes:key=value,..."``
    the built-in synthetic dataset (``pipelines.shapes.shapes_dataset``). Keys: ``num_samples``
    (default ``DEFAULT_SHAPES_SAMPLES``), ``seed`` (default 0; independent of the loader's flip
    seed, so the source string alone fixes the data), ``split`` (overrides the ``split`` argument),
    ``caption_style``, ``resolution`` (default: the requested resolution). Use ``"./shapes"`` for a
    local folder of that name.
a glob (``*``, ``?``, ``[``)
    parquet files matching it (``**`` recurses).
a folder
    a ``save_to_disk`` folder (``Dataset`` or ``DatasetDict``); else an imagefolder: a
    ``metadata.jsonl`` or ``metadata.csv`` in the folder or in a ``<split>/`` subfolder; else
    parquet files below it (split names inferred from file names as ``datasets`` does).
a file
    ``*.parquet``, or a ``metadata.jsonl`` / ``metadata.csv`` (the imagefolder is its folder).
anything else shaped like ``name`` or ``owner/name``
    a Hugging Face Hub dataset (``datasets.load_dataset``), unless ``owner/`` is a folder here: then it is
    a local path that does not exist (an error at once, not a Hub request).

Sources without splits (a single saved ``Dataset``, a flat imagefolder, parquet files named by
hand) are the "train" split in full; asking them for another split is an error, so evaluation
never silently runs on training data.

With ``alternative_caption_column``, each row also carries **alternative captions**: other texts for the same
image from that column (a list such as CLDR keywords or several captions, or one string), as a tuple of strings
(``caption_texts``); the tokenized export keeps them (``pipelines.tokens``) for caption variation in training.

Imagefolders are read here rather than by ``datasets``' imagefolder loader, which drops metadata
rows naming missing files and decodes lazily: every metadata row becomes a row (bad ones are
reported later, not lost), and image files that no row names are counted as "no_metadata". A
``file_name`` that leads out of the folder (``../x.png``, an absolute path, a symbolic link to a file
elsewhere) is never read: the row is counted as "outside_folder".
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import datasets

from tessera.pipelines.data.folder_files import inside_folder, read_metadata, unlisted_images
from tessera.pipelines.data.hub_errors import hub_error_message
from tessera.pipelines.shapes import shapes_dataset

__all__ = [
    "CAPTION_COLUMN_CANDIDATES", "DEFAULT_SHAPES_SAMPLES", "IMAGE_COLUMN_CANDIDATES", "DataSourceError",
    "RawRow", "RawSource", "RowLayout", "caption_text", "caption_texts", "open_source",
]

IMAGE_COLUMN_CANDIDATES = ("image", "img", "jpg", "jpeg", "png", "webp")
CAPTION_COLUMN_CANDIDATES = ("text", "caption", "prompt", "txt")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
FILE_NAME_KEY = "file_name"  # the imagefolder metadata key naming each image, as in ``datasets``
DEFAULT_SHAPES_SAMPLES = 10_000
ID_COLUMN = "__source_id__"  # added to tables whose rows have no id of their own
ALTERNATIVES = "alternatives"  # an imagefolder's alternative captions, as a list of strings
_SHAPES_OPTIONS: dict[str, type] = {"num_samples": int, "seed": int, "split": str, "caption_style": str,
                                     "resolution": int}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FILE_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json", ".csv", ".txt", ".png", ".jpg", ".jpeg")

logger = logging.getLogger(__name__)


class DataSourceError(ValueError):
    """A data source cannot be found, read or understood; the message says what to do instead."""


class RawRow(NamedTuple):
    """One source row's parts before any checking."""

    image: Any
    caption: Any
    source_id: str
    alternatives: tuple[str, ...] = ()  # alternative captions (empty without an alternatives column)


@dataclass
class RowLayout:
    """Where a source's rows keep their parts (picklable: it travels inside dataset transforms).

    ``image_column`` holds a PIL image, bytes, a path or a ``{"bytes", "path"}`` dict;
    ``caption_column`` the caption; ``id_column`` each row's ``source_id``, or ``None`` (native
    streams) for the row's position in the stream. ``transform`` is the source's own batch
    transform, which must run first (the shapes dataset draws its images in one).
    ``alternatives_column``: the column of alternative captions, or ``None``.
    """

    image_column: str
    caption_column: str
    id_column: str | None
    transform: Callable[[dict], dict] | None = None
    alternatives_column: str | None = None

    def row(self, row: dict, position: int) -> RawRow:
        """The image value, caption value, ``source_id`` and alternative captions of one row (already through
        ``transform``)."""
        source_id = row[self.id_column] if self.id_column is not None else position
        alternatives = caption_texts(row[self.alternatives_column]) if self.alternatives_column else ()
        return RawRow(row[self.image_column], row[self.caption_column], str(source_id), alternatives)

    def batch(self, batch: dict, first_position: int = 0) -> list[RawRow]:
        """``row`` for each row of a batch (a dict of columns), after ``transform``."""
        if self.transform is not None:
            batch = self.transform(batch)
        rows = (dict(zip(batch, values)) for values in zip(*batch.values()))
        return [self.row(row, first_position + offset) for offset, row in enumerate(rows)]


@dataclass
class RawSource:
    """A source's rows before any checking, and ``(reason, row id)`` for rows already lost while
    reading the source itself (unparseable metadata, image files no metadata row names)."""

    dataset: datasets.Dataset | datasets.IterableDataset
    layout: RowLayout
    skipped: list[tuple[str, str]] = field(default_factory=list)


def caption_text(value: Any) -> str | None:
    """The text of a caption value: strings as they are, the first non-blank string of a list
    (multi-caption datasets), other scalars via ``str``, ``None`` for no caption."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        texts = [text for text in value if isinstance(text, str)]
        return next((text for text in texts if text.strip()), texts[0] if texts else None)
    return str(value)


def caption_texts(value: Any) -> tuple[str, ...]:
    """Every non-blank text of a caption value, stripped, in order: the strings of a list, or the one string
    (other scalars via ``str``); ``()`` for none."""
    values = value if isinstance(value, (list, tuple)) else [value]
    texts = (text if isinstance(text, str) else str(text) for text in values if text is not None)
    return tuple(text.strip() for text in texts if text.strip())


def open_source(source: str, *, split: str, image_column: str | None, caption_column: str | None,
                streaming: bool, resolution: int, max_rows: int | None,
                alternative_caption_column: str | None = None) -> RawSource:
    """Resolve ``source`` (see the module docstring) into its unchecked rows, at most ``max_rows``."""
    columns = {"image_column": image_column, "caption_column": caption_column, "max_rows": max_rows,
               "alternative_caption_column": alternative_caption_column}
    if source == "shapes" or source.startswith("shapes:"):
        return _shapes_source(source, split=split, resolution=resolution, **columns)
    if any(char in source for char in "*?["):
        return _parquet_source(_glob_parquet(source), split=split, streaming=streaming, **columns)
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder_source(path, split=split, streaming=streaming, **columns)
    if path.is_file():
        if path.name in METADATA_FILES:
            _require_train(split, path.parent)
            return _imagefolder_source(path, **columns)
        if path.suffix == ".parquet":
            return _parquet_source([str(path)], split=split, streaming=streaming, **columns)
        raise DataSourceError(f"{source}: not a data file; expected a .parquet file or {' / '.join(METADATA_FILES)}")
    if not _HUB_ID.match(source) or source.lower().endswith(_FILE_SUFFIXES):
        raise DataSourceError(f"{source}: no such file or directory")
    if path.parent != Path(".") and path.parent.is_dir():  # "data/nope" beside a data/ folder: a typo, not the Hub
        raise DataSourceError(f"{source}: no such file or directory (read as a local path, not a Hub dataset name, "
                              f"because {path.parent}/ is a folder here)")
    return _hub_source(source, split=split, streaming=streaming, **columns)


# ---------------------------------------------------------------------------------------------
# Tables (saved datasets, parquet, hub, shapes): pick and prepare the columns


def pick_column(kind: str, requested: str | None, available: list[str], candidates: Iterable[str],
                where: str, fallback: Iterable[str] = ()) -> str:
    """``requested`` if ``available`` has it, else the first candidate present (any case), else
    the first ``fallback``; a clear ``DataSourceError`` when none fits."""
    if requested is not None:
        if requested not in available:
            raise DataSourceError(f"{kind} column {requested!r} not found in {where}; available columns: {available}")
        return requested
    by_lower = {name.lower(): name for name in reversed(available)}
    found = next((by_lower[name] for name in candidates if name in by_lower), None) or next(iter(fallback), None)
    if found is None:
        raise DataSourceError(f"no {kind} column found in {where} (looked for {list(candidates)}); "
                              f"available columns: {available}; pass {kind}_column=...")
    return found


def _is_image_storage(feature: Any) -> bool:
    """Whether a column can hold images: an Image feature, bytes, paths or {bytes, path} structs."""
    if isinstance(feature, datasets.Image):
        return True
    if isinstance(feature, datasets.Value):
        return feature.dtype in ("binary", "large_binary", "string", "large_string")
    return isinstance(feature, dict) and ("bytes" in feature or "path" in feature)


def _first_row_columns(dataset: datasets.Dataset | datasets.IterableDataset, transform: Callable | None,
                       where: str) -> list[str]:
    """Column names as the rows will show them (after the source's own transform, if any)."""
    if transform is None and dataset.column_names is not None:
        return list(dataset.column_names)
    first = dataset[:1] if isinstance(dataset, datasets.Dataset) else next(iter(dataset.take(1)), None)
    if not first:
        raise DataSourceError(f"{where} is empty")
    first = first if isinstance(dataset, datasets.Dataset) else {name: [value] for name, value in first.items()}
    return list((transform(first) if transform else first).keys())


def _table_source(dataset: datasets.Dataset | datasets.IterableDataset, where: str, *, image_column: str | None,
                  caption_column: str | None, max_rows: int | None, alternative_caption_column: str | None = None,
                  id_column: str | None = None, transform: Callable | None = None) -> RawSource:
    """A ``RawSource`` from a table: columns picked and checked, images left undecoded, ids added."""
    available = _first_row_columns(dataset, transform, where)
    features = dataset.features or {}
    image_like = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    image = pick_column("image", image_column, available, IMAGE_COLUMN_CANDIDATES, where, image_like)
    caption = pick_column("caption", caption_column, available, CAPTION_COLUMN_CANDIDATES, where)
    if image == caption:
        raise DataSourceError(f"image and caption columns must differ (both are {image!r}) in {where}")
    alternatives = alternatives_column(alternative_caption_column, available, (image, caption), where)
    if image in features and not _is_image_storage(features[image]):
        raise DataSourceError(f"column {image!r} of {where} holds {features[image]}, not images; pass image_column=...")
    if isinstance(dataset, datasets.Dataset):
        dataset = dataset.with_format(None)  # a saved dataset may carry a format; rows must come raw
    if transform is None:  # a source transform may need every column; otherwise read only ours
        dataset = dataset.select_columns([image, caption, *([alternatives] if alternatives else [])])
    if isinstance(features.get(image), datasets.Image):
        dataset = dataset.cast_column(image, datasets.Image(decode=False))  # decoded by us, errors caught
    if max_rows is not None:
        is_table = isinstance(dataset, datasets.Dataset)
        dataset = dataset.select(range(min(max_rows, len(dataset)))) if is_table else dataset.take(max_rows)
    if id_column is None and isinstance(dataset, datasets.Dataset):
        id_column = ID_COLUMN
        dataset = dataset.add_column(ID_COLUMN, [str(index) for index in range(len(dataset))])
    return RawSource(dataset, RowLayout(image, caption, id_column, transform, alternatives))


def alternatives_column(requested: str | None, available: list[str], taken: tuple[str, ...], where: str) -> str | None:
    """The alternative-caption column ``requested`` (checked), or ``None``; never guessed."""
    if requested is None:
        return None
    column = pick_column("alternative caption", requested, available, (), where)
    if column in taken:
        raise DataSourceError(f"the alternative caption column must differ from the image and caption columns "
                              f"({taken}) in {where}")
    return column


def _require_train(split: str, where: Any) -> None:
    if split != "train":
        raise DataSourceError(f"{where} has no splits: all of it is the 'train' split, not {split!r}")


def _saved_source(path: Path, split: str, **columns: Any) -> RawSource:
    saved = datasets.load_from_disk(str(path))
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise DataSourceError(f"{path} has no split {split!r}; available splits: {list(saved)}")
        return _table_source(saved[split], f"{path} [{split}]", **columns)
    _require_train(split, f"{path} (a saved Dataset)")
    return _table_source(saved, str(path), **columns)


def _glob_parquet(pattern: str) -> list[str]:
    files = sorted(name for name in glob.glob(os.path.expanduser(pattern), recursive=True) if name.endswith(".parquet"))
    if not files:
        raise DataSourceError(f"no parquet files match {pattern!r}")
    return files


def _parquet_source(files: list[str] | Path, split: str, streaming: bool, **columns: Any) -> RawSource:
    """Parquet files (a list; split "train" only) or a folder of them (splits from file names)."""
    if isinstance(files, Path):
        where, kwargs = str(files), {"data_dir": str(files)}
    else:
        _require_train(split, f"parquet files {files[:3]}{'...' if len(files) > 3 else ''}")
        where, kwargs = f"parquet files {files[:3]}", {"data_files": files}
    try:
        dataset = datasets.load_dataset("parquet", split=split, streaming=streaming, **kwargs)
    except ValueError as error:  # e.g. an unknown split
        raise DataSourceError(f"cannot load split {split!r} of {where}: {error}") from error
    return _table_source(dataset, where, **columns)


def _hub_source(name: str, split: str, streaming: bool, **columns: Any) -> RawSource:
    logger.info("loading %r from the Hugging Face Hub (without network, HF_HUB_OFFLINE=1 fails fast)", name)
    try:
        dataset = datasets.load_dataset(name, split=split, streaming=streaming)
    except Exception as error:  # offline, not found, no such split, gated...: all reported the same way
        raise DataSourceError(hub_error_message(name, error)) from error
    return _table_source(dataset, f"hub dataset {name!r} [{split}]", **columns)


def _shapes_options(source: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in filter(None, source.partition(":")[2].split(",")):
        key, _, value = (part.strip() for part in item.partition("="))
        if key not in _SHAPES_OPTIONS:
            raise DataSourceError(f"unknown shapes option {key!r} in {source!r}; known: {sorted(_SHAPES_OPTIONS)}")
        try:
            options[key] = _SHAPES_OPTIONS[key](value)
        except ValueError as error:
            raise DataSourceError(f"bad value for shapes option {key!r} in {source!r}: {value!r}") from error
    return options


def _shapes_source(source: str, split: str, resolution: int, **columns: Any) -> RawSource:
    options = {"split": split, "resolution": resolution, **_shapes_options(source)}
    num_samples = options.pop("num_samples", DEFAULT_SHAPES_SAMPLES)
    if columns["max_rows"] is not None:
        num_samples = min(num_samples, columns["max_rows"])
    try:
        dataset = shapes_dataset(num_samples, **options)
    except ValueError as error:  # unknown split or caption style
        raise DataSourceError(f"{source}: {error}") from error
    transform = dataset.format["format_kwargs"].get("transform") if dataset.format["type"] == "custom" else None
    return _table_source(dataset.with_format(None), f"{source} [{options['split']}]", id_column="index",
                         transform=transform, **columns)


# ---------------------------------------------------------------------------------------------
# Folders and imagefolders


def _metadata_file(folder: Path) -> Path | None:
    found = [folder / name for name in METADATA_FILES if (folder / name).is_file()]
    if len(found) > 1:
        raise DataSourceError(f"{folder} has both {METADATA_FILES[0]} and {METADATA_FILES[1]}; keep one")
    return found[0] if found else None


def _folder_source(path: Path, split: str, streaming: bool, **columns: Any) -> RawSource:
    if (path / datasets.config.DATASETDICT_JSON_FILENAME).is_file() or (
            (path / datasets.config.DATASET_STATE_JSON_FILENAME).is_file()
            and (path / datasets.config.DATASET_INFO_FILENAME).is_file()):
        return _saved_source(path, split, **columns)
    split_folders = sorted(sub.name for sub in path.iterdir() if sub.is_dir() and _metadata_file(sub))
    if split in split_folders:
        return _imagefolder_source(_metadata_file(path / split), **columns)
    if (metadata := _metadata_file(path)) is not None:
        _require_train(split, f"imagefolder {path}")
        return _imagefolder_source(metadata, **columns)
    if split_folders:
        raise DataSourceError(f"imagefolder {path} has no split {split!r}; available splits: {split_folders}")
    if next(path.rglob("*.parquet"), None) is not None:
        return _parquet_source(path, split=split, streaming=streaming, **columns)
    raise DataSourceError(f"{path}: not a data folder: found no save_to_disk dataset, no {' / '.join(METADATA_FILES)} "
                          "(in it or in a split subfolder) and no parquet files")


def _imagefolder_source(metadata: Path, *, image_column: str | None, caption_column: str | None,
                        max_rows: int | None, alternative_caption_column: str | None = None) -> RawSource:
    """An imagefolder read from its metadata; ``image_column`` names the metadata key holding the
    image's relative path (default ``"file_name"``). ``source_id`` is that relative path; a path that leads
    out of the folder is skipped as "outside_folder" (its row id is the name as written)."""
    folder = metadata.parent
    records, skipped = read_metadata(metadata, max_rows)
    keys = list(dict.fromkeys(key for _, record in records for key in record if key is not None))
    file_key = pick_column("image", image_column, keys, (FILE_NAME_KEY,), str(metadata))
    caption_key = pick_column("caption", caption_column, keys, CAPTION_COLUMN_CANDIDATES, str(metadata))
    alternatives_key = alternatives_column(alternative_caption_column, keys, (file_key, caption_key), str(metadata))
    rows: dict[str, list] = {"image": [], "caption": [], ID_COLUMN: [], **({ALTERNATIVES: []} if alternatives_key else {})}
    refused: set[str] = set()  # named by a row, so not "no_metadata" either
    for row_id, record in records:
        name = record.get(file_key)
        if not isinstance(name, str) or not name.strip():
            skipped.append(("bad_metadata", row_id))
            continue
        path = inside_folder(folder, name)
        if path is None:
            skipped.append(("outside_folder", name))
            refused.add(name)
            continue
        rows["image"].append(str(path))
        rows["caption"].append(caption_text(record.get(caption_key)))
        rows[ID_COLUMN].append(name)
        if alternatives_key:
            rows[ALTERNATIVES].append(list(caption_texts(record.get(alternatives_key))))
    if max_rows is None:  # with max_rows the folder is deliberately not read in full
        skipped += [("no_metadata", name) for name in unlisted_images(folder, set(rows[ID_COLUMN]) | refused)]
    features = datasets.Features({name: datasets.Sequence(datasets.Value("string")) if name == ALTERNATIVES
                                  else datasets.Value("string") for name in rows})
    layout = RowLayout("image", "caption", ID_COLUMN, alternatives_column=ALTERNATIVES if alternatives_key else None)
    return RawSource(datasets.Dataset.from_dict(rows, features=features), layout, skipped)
