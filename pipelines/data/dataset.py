"""Image-caption data: one loader for every source, and a report of everything it skipped or converted.

    data = load_image_caption_data("path/to/imagefolder", resolution=64, random_flip=True)
    print(data.report.summary())
    loader = DataLoader(data.dataset, batch_size=32, shuffle=True, collate_fn=collate_image_captions)
    for epoch in range(num_epochs):
        data.set_epoch(epoch)            # new random flips / crops each epoch
        for batch in loader: ...         # {"pixel_values": (B, 3, R, R) in [-1, 1], "caption", "source_id"}

Sources (details in ``pipelines.data.sources``): an imagefolder with ``metadata.jsonl`` /
``metadata.csv``, a ``save_to_disk`` folder, parquet files (file, glob or folder), a Hub dataset
name, or ``"shapes[:key=value,...]"``. A flat imagefolder is the "train" split in full.

Bad rows never crash a job and are never dropped silently. Each row is either used (maybe after a
mode conversion, see ``pipelines.data.images``) or skipped under one reason:

    missing_file     the image file does not exist
    missing_image    the row has no image bytes or path
    missing_caption  no caption (absent key, null)
    empty_caption    a blank caption
    unreadable       not an image, truncated, corrupt
    too_large        more than ``max_image_pixels`` pixels (read from the header, never decoded), or a
                     Pillow decompression bomb
    too_small        shorter side < ``min_size``
    bad_metadata     a metadata row that does not parse
    no_metadata      an imagefolder image no metadata row names
    outside_folder   an imagefolder ``file_name`` that leads out of its folder (``..``, an absolute path, a
                     symbolic link to elsewhere): never read

Map-style data (``streaming=False``) is checked up front in one pass (a progress bar; JPEGs are
decoded at reduced scale, so it is quick), so the report is complete before training starts and
the dataset holds only usable rows (a row that passed the check but fails later, because the
files changed on disk, raises ``DataSourceError``). With ``streaming=True`` rows are checked while iterating and
the report holds running totals: ``num_rows`` / ``num_usable`` count the rows iterated so far in
*this* process. DataLoader workers keep their own counts; they log the first skipped rows of each
reason. Native streams (parquet / Hub with ``streaming=True``) have no row ids, so ``source_id`` is
the row's position in the stream; when a multi-worker DataLoader splits a multi-shard stream, it is
``"<position>@worker<k>"``, the position within worker k's share (with ``split_dataset_by_node``,
positions are per node). Use ``streaming=False`` where exact provenance matters.

``source_id`` is the file name relative to the folder (imagefolder), the sample index (shapes) or
the row index in the selected split (other sources); ``max_samples`` keeps the first rows of the
source (before checks), so ``num_usable <= max_samples``. Random crops and flips are a function
of ``(seed, epoch, source_id)``: reproducible, and for map-style data the same with any number of
DataLoader workers; ``ImageCaptionData.set_epoch`` draws new ones.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm

from tessera.pipelines.data.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    RowSkipped,
    open_image,
    preprocess_image,
    to_rgb,
)
from tessera.pipelines.data.sources import DataSourceError, RawSource, RowLayout, caption_text, open_source

__all__ = [
    "DataReport", "DataSourceError", "ImageCaptionData", "RowProcessor", "collate_image_captions",
    "default_min_size", "load_image_caption_data", "preprocess_image", "to_rgb",
]

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5  # row ids kept per skip reason / conversion
OUTPUT_COLUMNS = ["pixel_values", "caption", "source_id"]
_CHECK_BATCH_SIZE = 64
_LOCAL_STREAM_SHARDS = 8  # a local table streamed with streaming=True: shards that DataLoader workers share
_SKIP_COLUMN = "_skip_reason"


def default_min_size(resolution: int) -> int:
    """Images whose shorter side is below this are skipped: they would need more than 4x upscaling."""
    return max(1, resolution // 4)


@dataclass
class DataReport:
    """What a source held and what became of each row.

    ``num_rows == num_usable + sum(skipped.values())`` always holds. ``converted`` counts the
    usable rows whose image needed a conversion (label such as ``"I;16->RGB"``); ``examples`` maps
    each skip reason and conversion label to the first ``MAX_EXAMPLES`` row ids (``source_id``).
    """

    source: str
    num_rows: int = 0
    num_usable: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def _add_example(self, key: str, row_id: str) -> bool:
        """Keep ``row_id`` as an example of ``key``; whether it was kept (one of the first few)."""
        kept = self.examples.setdefault(key, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(row_id)
            return True
        return False

    def record_usable(self, row_id: str, conversion: str | None = None) -> None:
        self.num_rows += 1
        self.num_usable += 1
        if conversion is not None:
            self.converted[conversion] = self.converted.get(conversion, 0) + 1
            self._add_example(conversion, row_id)

    def record_skip(self, reason: str, row_id: str) -> bool:
        """Count a skipped row; whether it is among the first few of its reason (worth logging)."""
        self.num_rows += 1
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        return self._add_example(reason, row_id)

    def summary(self) -> str:
        lines = [f"{self.source}: {self.num_usable} of {self.num_rows} rows usable"]
        for verb, counts in (("skipped", self.skipped), ("converted", self.converted)):
            for key, count in sorted(counts.items()):
                lines.append(f"  {verb} {count} {key}: e.g. {', '.join(self.examples.get(key, []))}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RowProcessor:
    """One raw row -> ``{"pixel_values", "caption", "source_id"}``, or ``RowSkipped``.

    Shared by the up-front check, the map-style transform and the streaming map, so all three
    agree on what is usable. Random crops/flips use ``random.Random(f"{seed}:{epoch}:{source_id}")``.
    """

    resolution: int
    min_size: int
    center_crop: bool = True
    random_flip: bool = False
    seed: int = 0
    allow_empty_captions: bool = False
    epoch: int = 0
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS

    def check(self, image_value: Any, caption_value: Any) -> tuple[Any, str, str | None]:
        """The RGB image, the caption and the conversion label; ``RowSkipped`` for a bad row.
        Captions are checked first: they cost nothing, images cost a decode."""
        text = caption_text(caption_value)
        if text is None or not text.strip():
            if not self.allow_empty_captions:
                raise RowSkipped("missing_caption" if text is None else "empty_caption")
            text = ""
        image = open_image(image_value, draft_size=self.resolution, min_size=self.min_size,
                           max_pixels=self.max_image_pixels)
        try:
            rgb, conversion = to_rgb(image)
        except Exception as error:  # an exotic mode Pillow cannot convert
            raise RowSkipped("unreadable", f"cannot convert mode {image.mode} to RGB: {error}") from error
        return rgb, text.strip(), conversion

    def __call__(self, image_value: Any, caption_value: Any, source_id: str) -> tuple[dict, str | None]:
        """The model inputs of one row and its conversion label."""
        rgb, text, conversion = self.check(image_value, caption_value)
        rng = random.Random(f"{self.seed}:{self.epoch}:{source_id}")
        pixel_values = preprocess_image(rgb, self.resolution, center_crop=self.center_crop,
                                        random_flip=self.random_flip, rng=rng)  # (3, R, R)
        return {"pixel_values": pixel_values, "caption": text, "source_id": source_id}, conversion


@dataclass
class _TableTransform:
    """``Dataset.with_transform`` hook: raw batches -> model inputs. Rows were checked when the data
    was loaded, so a failure here means the data changed since; it is an error, not a skip."""

    processor: RowProcessor
    layout: RowLayout

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {name: [] for name in OUTPUT_COLUMNS}
        for image, caption, source_id, _ in self.layout.batch(batch):
            try:
                row, _ = self.processor(image, caption, source_id)
            except RowSkipped as error:
                raise DataSourceError(f"row {source_id} passed the check at load time but now fails ({error}); "
                                      "did the data change on disk?") from error
            for name in OUTPUT_COLUMNS:
                out[name].append(row[name])
        return out


@dataclass
class _StreamTransform:
    """``IterableDataset.map`` hook: checks and processes one row, counting skips in ``report``
    (a bad row comes out marked, to be filtered away by ``_is_usable``)."""

    processor: RowProcessor
    layout: RowLayout
    report: DataReport
    num_shards: int = 1  # DataLoader workers split a stream only when it has several shards

    def __call__(self, row: dict, position: int) -> dict:
        image, caption, source_id, _ = self.layout.row(row, position)
        worker = torch.utils.data.get_worker_info()
        if self.layout.id_column is None and self.num_shards > 1 and worker is not None and worker.num_workers > 1:
            source_id = f"{source_id}@worker{worker.id}"  # positions restart in each worker's share
        try:
            out, conversion = self.processor(image, caption, source_id)
        except RowSkipped as error:
            if self.report.record_skip(error.reason, source_id):
                logger.warning("%s: skipped row %s (%s)", self.report.source, source_id, error)
            return {"pixel_values": None, "caption": "", "source_id": source_id, _SKIP_COLUMN: error.reason}
        self.report.record_usable(source_id, conversion)
        return {**out, _SKIP_COLUMN: None}


def _is_usable(row: dict) -> bool:
    return row[_SKIP_COLUMN] is None


@dataclass
class ImageCaptionData:
    """The dataset (rows ``{"pixel_values": (3, R, R) in [-1, 1], "caption": str, "source_id": str}``)
    and its report. For map-style data, ``table`` and ``layout`` are the checked raw rows behind
    ``dataset``, so ``example(row, epoch)`` can make a row with the random crop / flip of any epoch."""

    dataset: datasets.Dataset | datasets.IterableDataset
    report: DataReport
    processor: RowProcessor | None = field(default=None, repr=False)
    table: datasets.Dataset | None = field(default=None, repr=False)
    layout: RowLayout | None = field(default=None, repr=False)

    def set_epoch(self, epoch: int) -> None:
        """Draw new random crops/flips for ``epoch`` (they depend on ``(seed, epoch, source_id)``).

        Call it before iterating an epoch; DataLoader workers see it when they start, so not with
        ``persistent_workers=True``. Affects ``self.dataset`` (not copies made from it before). Training
        uses ``example(row, epoch)`` instead, which needs no state.
        """
        if self.processor is not None:
            self.processor.epoch = epoch
        if isinstance(self.dataset, datasets.IterableDataset):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def example(self, row: int, epoch: int) -> dict:
        """Row ``row`` of map-style data as the model input of ``epoch`` (its own random crop and flip)."""
        if self.table is None or self.processor is None:
            raise TypeError("example() needs map-style data (streaming=False)")
        transform = _TableTransform(dataclasses.replace(self.processor, epoch=epoch), self.layout)
        return {name: values[0] for name, values in transform(self.table[row:row + 1]).items()}

    def select(self, rows: range | list[int]) -> ImageCaptionData:
        """The same data restricted to ``rows`` (map-style), sharing the report."""
        if self.table is None:
            raise TypeError("select() needs map-style data (streaming=False)")
        return dataclasses.replace(self, dataset=self.dataset.select(rows), table=self.table.select(rows))


def collate_image_captions(rows: list[dict]) -> dict:
    """DataLoader ``collate_fn``: ``{"pixel_values": (B, 3, R, R), "caption": [...], "source_id": [...]}``."""
    if not rows:
        raise ValueError("collate_image_captions got an empty batch")
    return {"pixel_values": torch.stack([row["pixel_values"] for row in rows]),  # (B, 3, R, R)
            "caption": [row["caption"] for row in rows],
            "source_id": [row["source_id"] for row in rows]}


def _check_rows(raw: RawSource, processor: RowProcessor, report: DataReport) -> list[int]:
    """One pass over a table: count every row in ``report``; the positions of the usable ones."""
    table = raw.dataset
    usable = []
    with tqdm(total=len(table), desc="Checking images", unit="img", disable=None) as bar:
        for start in range(0, len(table), _CHECK_BATCH_SIZE):
            batch = table[start:start + _CHECK_BATCH_SIZE]
            for position, (image, caption, source_id, _) in enumerate(raw.layout.batch(batch, start), start):
                try:
                    _, _, conversion = processor.check(image, caption)
                except RowSkipped as error:
                    report.record_skip(error.reason, source_id)
                    logger.debug("%s: skipped row %s (%s)", report.source, source_id, error)
                else:
                    report.record_usable(source_id, conversion)
                    usable.append(position)
            bar.update(min(_CHECK_BATCH_SIZE, len(table) - start))
    return usable


def _checked_table(raw: RawSource, processor: RowProcessor, report: DataReport) -> datasets.Dataset:
    """The usable raw rows (an index over the source; nothing is copied)."""
    usable = _check_rows(raw, processor, report)
    if not usable:
        raise DataSourceError(f"no usable rows in {report.source}\n{report.summary()}")
    table = raw.dataset
    if len(usable) < len(table):
        table = table.select(usable, keep_in_memory=True)
    return table


def _stream_data(raw: RawSource, processor: RowProcessor, report: DataReport) -> datasets.IterableDataset:
    stream, layout = raw.dataset, raw.layout
    if isinstance(stream, datasets.Dataset):
        stream = stream.to_iterable_dataset(num_shards=max(1, min(_LOCAL_STREAM_SHARDS, len(stream))))
    if layout.transform is not None:
        stream = stream.map(layout.transform, batched=True)
        layout = dataclasses.replace(layout, transform=None)
    stream = stream.map(_StreamTransform(processor, layout, report, stream.num_shards), with_indices=True)
    return stream.filter(_is_usable).select_columns(OUTPUT_COLUMNS)


def load_image_caption_data(source: str, *, resolution: int = 32, split: str = "train",
                            image_column: str | None = None, caption_column: str | None = None,
                            center_crop: bool = True, random_flip: bool = False, streaming: bool = False,
                            max_samples: int | None = None, seed: int = 0, min_size: int | None = None,
                            allow_empty_captions: bool = False,
                            max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> ImageCaptionData:
    """Image-caption pairs from ``source`` as model inputs, with a report (see the module docstring).

    Args:
        source: an imagefolder, a ``save_to_disk`` folder, parquet file / glob / folder, a Hub
            dataset name, or ``"shapes[:key=value,...]"``.
        resolution: side R of the square output images.
        split: split of a ``DatasetDict``, Hub dataset, split imagefolder or shapes; sources
            without splits are all "train".
        image_column, caption_column: column names; guessed when ``None`` ("image", "img", "jpg",
            ... / "text", "caption", "prompt", ...). For an imagefolder, ``image_column`` is the
            metadata key holding each image's relative path ("file_name").
        center_crop: square crop at the centre, else at a random offset.
        random_flip: mirror left-right with probability 1/2.
        streaming: an ``IterableDataset`` checked lazily instead of a ``Dataset`` checked up front.
        max_samples: read only the first ``max_samples`` rows of the source.
        seed: seeds random crops and flips (with the epoch and the row's ``source_id``).
        min_size: skip images whose shorter side is smaller; default ``default_min_size(resolution)``
            (resolution // 4); 0 keeps every size.
        allow_empty_captions: keep rows without caption, with caption "" (unconditional training).
        max_image_pixels: skip images with more pixels ("too_large"), checked from the file's header before
            decoding; default 64 megapixels (``DEFAULT_MAX_IMAGE_PIXELS``); ``None``: only Pillow's
            decompression-bomb limit (twice ``PIL.Image.MAX_IMAGE_PIXELS``) applies.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    min_size = default_min_size(resolution) if min_size is None else min_size
    if max_image_pixels is not None and max_image_pixels < 1:
        raise ValueError(f"max_image_pixels must be >= 1 or None, got {max_image_pixels}")
    processor = RowProcessor(resolution, min_size, center_crop, random_flip, seed, allow_empty_captions,
                             max_image_pixels=max_image_pixels)
    raw = open_source(source, split=split, image_column=image_column, caption_column=caption_column,
                      streaming=streaming, resolution=resolution, max_rows=max_samples)
    report = DataReport(source)
    for reason, row_id in raw.skipped:
        report.record_skip(reason, row_id)
    if streaming:
        dataset = _stream_data(raw, processor, report)
        logger.info("%s: streaming; rows are checked while iterating (data.report keeps running counts)", source)
        return ImageCaptionData(dataset, report, processor)
    table = _checked_table(raw, processor, report)
    logger.log(logging.WARNING if report.skipped else logging.INFO, "%s", report.summary())
    return ImageCaptionData(table.with_transform(_TableTransform(processor, raw.layout)), report, processor, table,
                            raw.layout)

