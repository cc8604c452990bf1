"""One process's share of a tokenized-dataset export: raw rows -> checked, preprocessed images -> VQ-GAN
codes (+ cached text-encoder outputs) -> one parquet shard and its record per ``shard_size`` source rows.

The settings, resume checks, process launching and the sidecar live in ``pipelines.tokens.export``; its
docstring describes the format. Here:

- ``ShardedSource``: a source's *raw* rows (``pipelines.data.sources.open_source``, unchecked) cut into
  shards of ``shard_size`` consecutive rows. Map-style sources are read by random access (a process
  reads only its shards); streams are read in full by every process (cheap: rows it does not own are
  never decoded) so shard boundaries and source positions are the same everywhere.
- ``ShardEncoder``: checks and preprocesses rows with the data layer's ``RowProcessor`` /
  ``preprocess_image`` (one decode per image, however many augmented views), encodes them in
  batches under ``torch.inference_mode``, and keeps the data report of the shard.
- ``write_shard``: parquet to ``<name>.<pid>.tmp``, fsync, rename; then the record, the same way. The
  record is the commit mark: a shard is done iff its record exists.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from tessera.core.io import durable_replace, temporary_path, write_json_durably
from tessera.pipelines.data.dataset import (
    MAX_EXAMPLES,
    DataReport,
    RowProcessor,
    default_min_size,
    preprocess_image,
)
from tessera.pipelines.data.images import RowSkipped
from tessera.pipelines.data.sources import RawRow, RawSource, open_source
from tessera.pipelines.tokens.config import ExportConfig
from tessera.pipelines.tokens.dataset import ALTERNATIVES_COLUMN, DATA_DIR, RECORDS_DIR
from tessera.pipelines.tokens.text_cache import CaptionEncoder
from tessera.tokenizer.model import VQGAN

logger = logging.getLogger(__name__)

MAX_CODE = np.iinfo(np.int16).max  # codes are stored as int16


class ExportMismatchError(ValueError):
    """An output folder already holds (part of) an export made with other settings."""


# ---------------------------------------------------------------------------------------------
# Files


def shard_file_name(index: int, num_shards: int | None) -> str:
    """``data/train-00003-of-00010.parquet``; ``data/train-00003.parquet`` while a stream's length is unknown."""
    total = f"-of-{num_shards:05d}" if num_shards is not None else ""
    return f"{DATA_DIR}/train-{index:05d}{total}.parquet"


def record_path(output_dir: Path, index: int) -> Path:
    return output_dir / RECORDS_DIR / f"{index:05d}.json"


def remove_temporary_files(output_dir: Path) -> int:
    """Delete leftovers of interrupted writes (``*.tmp``); how many there were."""
    leftovers = [path for folder in (output_dir, output_dir / DATA_DIR, output_dir / RECORDS_DIR)
                 if folder.is_dir() for path in folder.glob("*.tmp")]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def read_records(output_dir: Path, fingerprint: str) -> dict[int, dict]:
    """The records of finished shards by index; ``ExportMismatchError`` for one made with other settings."""
    records = {}
    for path in sorted((output_dir / RECORDS_DIR).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("fingerprint") != fingerprint:
            raise ExportMismatchError(
                f"{path} belongs to an export with other settings (fingerprint {record.get('fingerprint')} vs "
                f"{fingerprint}). Use another --output_dir, or delete {output_dir} to start over.")
        records[record["index"]] = record
    return records


def write_shard(output_dir: Path, columns: dict[str, Any], features: datasets.Features, record: dict) -> None:
    """The shard's parquet file (unless it has no rows: ``datasets`` cannot read empty parquet
    files), then its record; each written to a temporary name and renamed."""
    start = time.perf_counter()
    if record["file"] is not None:
        path = output_dir / record["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path)
        pq.write_table(datasets.Dataset.from_dict(columns, features=features).data.table, tmp)
        durable_replace(tmp, path)
    record["timings"]["write_seconds"] = time.perf_counter() - start  # the record's own write is not counted
    write_json_durably(record_path(output_dir, record["index"]), record)


# ---------------------------------------------------------------------------------------------
# Reading the source in shards


class ShardedSource:
    """A source's raw rows in shards of ``shard_size`` consecutive rows (see the module docstring)."""

    def __init__(self, raw: RawSource, shard_size: int, batch_size: int):
        self.raw, self.shard_size, self.batch_size = raw, shard_size, batch_size
        self.is_stream = isinstance(raw.dataset, datasets.IterableDataset)
        self.num_rows: int | None = None if self.is_stream else len(raw.dataset)  # a stream's: once read

    @property
    def num_shards(self) -> int | None:
        return None if self.num_rows is None else math.ceil(self.num_rows / self.shard_size)

    def shard_rows(self, index: int) -> int:
        """Raw rows in shard ``index`` (map-style sources)."""
        return max(0, min(self.shard_size, self.num_rows - index * self.shard_size))

    def batches(self, wanted: Callable[[int], bool]) -> Iterator[tuple[int, list[RawRow]]]:
        """``(shard index, [RawRow(image value, caption value, source_id, alternatives), ...])`` for the shards ``wanted``
        picks, in order; each list holds at most ``batch_size`` rows of one shard."""
        layout, size = self.raw.layout, self.shard_size
        if not self.is_stream:
            table = self.raw.dataset
            for index in filter(wanted, range(self.num_shards)):
                stop = index * size + self.shard_rows(index)
                for start in range(index * size, stop, self.batch_size):
                    yield index, layout.batch(table[start:min(start + self.batch_size, stop)], start)
            return
        position = 0
        for batch in self.raw.dataset.iter(batch_size=self.batch_size):
            length = len(next(iter(batch.values())))
            offset = 0
            while offset < length:  # cut the batch at shard boundaries
                index = position // size
                take = min(length - offset, (index + 1) * size - position)
                if wanted(index):
                    piece = {name: values[offset:offset + take] for name, values in batch.items()}
                    yield index, layout.batch(piece, position)
                position, offset = position + take, offset + take
        self.num_rows = position


# ---------------------------------------------------------------------------------------------
# Encoding


def default_device(process_index: int = 0) -> torch.device:
    """The best available device: CUDA (one per process, round robin), Apple MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", process_index % torch.cuda.device_count())
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start


@dataclass
class ShardEncoder:
    """Rows of one shard -> its columns and record fields (report, skipped rows, counts, timings).

    View ``k`` of an image is ``preprocess_image`` with ``random.Random(f"{seed}:{k}:{source_id}")``:
    exactly the data layer's row at epoch ``k`` (``RowProcessor``), decoded once for all views.
    """

    vqgan: torch.nn.Module
    processor: RowProcessor
    augmentations: int
    batch_size: int
    device: torch.device
    bf16: bool = False
    text_encoder: CaptionEncoder | None = None
    source: str = ""
    alternatives: bool = False  # write the rows' alternative captions (ALTERNATIVES_COLUMN)
    _logged: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vqgan.codebook_size > MAX_CODE + 1:
            raise ValueError(f"codebook of {self.vqgan.codebook_size} codes does not fit the int16 codes column")

    @property
    def views(self) -> int:
        return max(1, self.augmentations)

    @property
    def features(self) -> datasets.Features:
        side = self.vqgan.config.latent_size
        features = {"codes": datasets.Array2D((side, side), "int16"), "caption": datasets.Value("string"),
                    "source_id": datasets.Value("string")}
        if self.augmentations:
            features["augmentation"] = datasets.Value("int16")
        if self.alternatives:
            features[ALTERNATIVES_COLUMN] = datasets.Sequence(datasets.Value("string"))
        if self.text_encoder is not None:
            length = self.text_encoder.max_length
            features["text_hidden_states"] = datasets.Array2D((length, self.text_encoder.hidden_size), "float16")
            features["text_mask"] = datasets.Sequence(datasets.Value("bool"), length=length)
        return datasets.Features(features)

    def _views(self, rgb: Any, source_id: str) -> list[torch.Tensor]:
        p = self.processor
        return [preprocess_image(rgb, p.resolution, center_crop=p.center_crop, random_flip=p.random_flip,
                                 rng=random.Random(f"{p.seed}:{view}:{source_id}"))  # (3, R, R)
                for view in range(self.views)]

    def _encode(self, pixels: list[torch.Tensor], timer: _Timer) -> np.ndarray:
        images = torch.stack(pixels)  # (B, 3, R, R)
        with timer("encode"), torch.inference_mode():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                codes = self.vqgan.encode(images.to(self.device, non_blocking=True))  # (B, h, w)
            return codes.to(torch.int16).cpu().numpy()  # .cpu() waits for the device: timings are honest

    def _skip(self, report: DataReport, error: RowSkipped, source_id: str) -> dict:
        report.record_skip(error.reason, source_id)
        if self._logged.get(error.reason, 0) < MAX_EXAMPLES:
            self._logged[error.reason] = self._logged.get(error.reason, 0) + 1
            logger.warning("%s: skipped row %s (%s)", self.source, source_id, error)
        return {"source_id": source_id, "reason": error.reason, "detail": error.detail[:200]}

    def encode(self, batches: Iterable[list[RawRow]], progress: tqdm | None = None
               ) -> tuple[dict[str, Any], dict]:
        report, skipped, timer = DataReport(self.source), [], _Timer()
        captions, alternatives, ids, codes, pending = [], [], [], [], []
        batches = iter(batches)
        while True:
            with timer("data"):
                rows = next(batches, None)
                if rows is None:
                    break
                for image, caption, source_id, others in rows:
                    try:
                        rgb, text, conversion = self.processor.check(image, caption)
                    except RowSkipped as error:
                        skipped.append(self._skip(report, error, source_id))
                        continue
                    report.record_usable(source_id, conversion)
                    captions.append(text)
                    alternatives.append(list(others))
                    ids.append(source_id)
                    pending.extend(self._views(rgb, source_id))
            while len(pending) >= self.batch_size:
                codes.append(self._encode(pending[:self.batch_size], timer))
                del pending[:self.batch_size]
            if progress is not None:
                progress.update(len(rows))
                total = sum(timer.seconds.values())
                progress.set_postfix(encoder=f"{timer.seconds.get('encode', 0) / max(total, 1e-9):.0%}", refresh=False)
        if pending:
            codes.append(self._encode(pending, timer))
        side, views = self.vqgan.config.latent_size, self.views
        columns: dict[str, Any] = {
            "codes": np.concatenate(codes) if codes else np.zeros((0, side, side), np.int16),  # (N * views, h, w)
            "caption": [text for text in captions for _ in range(views)],
            "source_id": [source_id for source_id in ids for _ in range(views)],
        }
        if self.augmentations:
            columns["augmentation"] = [view for _ in ids for view in range(views)]
        if self.alternatives:
            columns[ALTERNATIVES_COLUMN] = [texts for texts in alternatives for _ in range(views)]
        if self.text_encoder is not None:
            with timer("text"):
                encoded = [self.text_encoder(captions[start:start + self.batch_size])
                           for start in range(0, len(captions), self.batch_size)]
            length, width = self.text_encoder.max_length, self.text_encoder.hidden_size
            hidden = np.concatenate([h for h, _ in encoded]) if encoded else np.zeros((0, length, width), np.float16)
            mask = np.concatenate([m for _, m in encoded]) if encoded else np.zeros((0, length), bool)
            columns["text_hidden_states"] = np.repeat(hidden, views, axis=0)  # (N * views, L, D)
            columns["text_mask"] = np.repeat(mask, views, axis=0)  # (N * views, L)
        record = {"num_images": len(ids), "num_rows": len(ids) * views, "report": report.to_dict(),
                  "skipped_items": skipped, "timings": {f"{key}_seconds": value for key, value in timer.seconds.items()}}
        return columns, record


# ---------------------------------------------------------------------------------------------
# One process's work


@dataclass
class WorkerStats:
    """What one process did in this run (summed into the sidecar's ``timings.this_run``)."""

    process_index: int
    device: str
    source_skipped: list[tuple[str, str]]  # rows lost while reading the source itself
    num_shards: int | None = None  # of the whole export; None if this process could not tell
    shards_written: list[int] = field(default_factory=list)
    images: int = 0
    rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # data / encode / text / write / setup / total


def run_worker(config: ExportConfig, fingerprint: str, process_index: int = 0, num_processes: int = 1, *,
               device: str | torch.device | None = None, threads: int | None = None,
               on_shard_written: Callable[[int, dict], None] | None = None, show_progress: bool = True,
               stop_with_parent: bool = False) -> WorkerStats:
    """Write the unfinished shards ``k`` with ``k % num_processes == process_index``."""
    started = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(device) if device is not None else default_device(process_index)
    if device.type == "cpu":
        device = torch.device("cpu")  # accelerate says "cpu:0", which safetensors' loader rejects
    output = Path(config.output_dir)
    vqgan = VQGAN.from_pretrained(config.vqgan, map_location=device)
    resolution = vqgan.config.resolution
    raw = open_source(config.data, split=config.split, image_column=config.image_column,
                      caption_column=config.caption_column, streaming=config.streaming, resolution=resolution,
                      max_rows=config.max_samples, alternative_caption_column=config.alternative_caption_column)
    source = ShardedSource(raw, config.shard_size, config.batch_size)
    processor = RowProcessor(resolution, default_min_size(resolution), center_crop=not config.augmentations,
                             random_flip=bool(config.augmentations), seed=config.seed)
    text = CaptionEncoder(config.text_encoder, config.max_text_length, device) if config.text_encoder else None
    encoder = ShardEncoder(vqgan, processor, config.augmentations, config.batch_size, device,
                           bf16=config.dtype == "bf16", text_encoder=text, source=config.data,
                           alternatives=config.alternative_caption_column is not None)
    done = set(read_records(output, fingerprint))

    def mine(index: int) -> bool:
        return index % num_processes == process_index and index not in done

    stats = WorkerStats(process_index, str(device), [tuple(item) for item in raw.skipped])
    stats.seconds["setup"] = time.perf_counter() - started
    total = None if source.is_stream else sum(source.shard_rows(k) for k in filter(mine, range(source.num_shards)))
    parent = os.getppid()
    with tqdm(total=total, unit="img", desc=f"tokenize [{process_index + 1}/{num_processes}]",
              position=process_index, disable=None if show_progress else True) as bar:
        for index, group in itertools.groupby(source.batches(mine), key=lambda item: item[0]):
            if stop_with_parent and os.getppid() != parent:
                raise RuntimeError(f"process {process_index}: the launching process is gone; stopping")
            columns, record = encoder.encode((rows for _, rows in group), progress=bar)
            start = index * config.shard_size
            record.update(index=index, fingerprint=fingerprint, process_index=process_index, device=str(device),
                          source_rows=[start, start + record["report"]["num_rows"]],
                          source_num_rows=None if source.is_stream else source.num_rows,  # a stream's: unknown yet
                          file=shard_file_name(index, None if source.is_stream else source.num_shards)
                          if record["num_rows"] else None)
            write_shard(output, columns, encoder.features, record)
            stats.shards_written.append(index)
            stats.images += record["num_images"]
            stats.rows += record["num_rows"]
            for key, value in record["timings"].items():
                stats.seconds[key.removesuffix("_seconds")] = stats.seconds.get(key.removesuffix("_seconds"), 0.0) + value
            if on_shard_written is not None:
                on_shard_written(index, record)
    stats.num_shards = source.num_shards
    stats.seconds["total"] = time.perf_counter() - started
    seconds = stats.seconds
    logger.info("process %d/%d: %d shards, %d images (%d rows) in %.1f s; encoder %.1f s (%.0f%%), data %.1f s, "
                "text %.1f s, writing %.1f s, setup %.1f s", process_index + 1, num_processes, len(stats.shards_written),
                stats.images, stats.rows, seconds["total"], seconds.get("encode", 0.0),
                100 * seconds.get("encode", 0.0) / max(seconds["total"], 1e-9), seconds.get("data", 0.0),
                seconds.get("text", 0.0), seconds.get("write", 0.0), seconds["setup"])
    return stats
