"""Tokenized datasets: image-caption data encoded once by a VQ-GAN, stored as parquet shards.

    python train.py tokenize --vqgan runs/vqgan --data path/to/imagefolder --output_dir data/tokenized
    python train.py tokenize ... --num_processes 4                 # 4 local worker processes
    accelerate launch --num_processes 4 train.py tokenize ...      # or one process per GPU / node

    from tessera.pipelines.tokens.export import ExportConfig, export_tokenized_dataset, load_tokenized_dataset
    export_tokenized_dataset(ExportConfig(vqgan="runs/vqgan", data="shapes", output_dir="data/tok"))
    dataset = load_tokenized_dataset("data/tok", vqgan="runs/vqgan")  # refuses another VQ-GAN
    # without Tessera: datasets.load_dataset("parquet", data_files="data/tok/data/*.parquet", split="train")

Rows and columns
    One row per usable source image (``augmentations`` rows with ``--augmentations N``), in source
    order: ``codes`` (``Array2D((h, w), "int16")``), ``caption``, ``source_id`` (file name for an
    imagefolder, sample index for shapes, row index or stream position otherwise, as in
    ``pipelines.data``); ``augmentation`` (view 0..N-1) with ``--augmentations``; ``text_hidden_states``
    (``Array2D((L, D), "float16")``, last hidden states padded to ``max_text_length``) and
    ``text_mask`` (L bools) with ``--text_encoder``; ``alternative_captions`` (a list of strings: the
    source's ``--alternative_caption_column``, e.g. keywords, blank ones dropped; the same for every view of an
    image) with ``--alternative_caption_column``, read by the prior stage's caption variation. Images are preprocessed at the VQ-GAN's
    resolution exactly as ``pipelines.data`` does (the same checks, skip reasons and conversions):
    centre crop without flip, or, with N augmentations, view k = the data layer's random crop + flip
    at epoch k (``random.Random(f"{seed}:{k}:{source_id}")``): deterministic, and each image is
    decoded once for all its views. ``--dtype bf16`` encodes under bf16 autocast (the quantizer stays
    float32); codes may then differ from float32 ones, so the dtype is part of the settings.

Shards
    Shard k holds the rows made from *raw* source rows [k*S, (k+1)*S) (``shard_size`` S, before
    checks, so bad rows are found by whoever encodes their shard and every image is decoded once).
    Files: ``data/train-0000k-of-0000n.parquet`` (``data/train-0000k.parquet`` for streamed sources,
    whose length is unknown until read), and the shard's record ``shards/0000k.json`` (row counts,
    data report, skipped rows, timings, settings fingerprint). Each is written to a ``*.tmp`` name,
    fsynced and renamed; the record comes last and marks the shard done. A shard with no usable rows
    has a record and no parquet file (``datasets`` cannot read empty parquet files).

Processes
    Process p of P writes the shards k with k % P == p: ``--num_processes P`` spawns P local workers
    (CPU threads split between them; GPUs round robin); under ``accelerate launch`` / ``torchrun``
    each launched process is one worker (``accelerate.PartialState``). Map-style sources are read by
    random access, so a process reads only its shards. Streaming sources (parquet / Hub with
    ``--streaming``) are read in full by every process and only its own shards are decoded and
    encoded; local sources without a streaming mode (imagefolder, saved datasets, shapes) are
    memory-mapped or built lazily and always read by random access. The result does not depend on
    P, the batch size or the device (up to floating-point ties in the nearest-code search).

Resume and safety
    ``tokenized_dataset.partial.json`` records the settings (image tokenizer config and weights
    hash, source, shard size, augmentations, seed, dtype, text encoder hash, format and tool
    versions) when an export starts. Re-running the same command skips finished shards (stale
    ``*.tmp`` files are deleted); other settings over a partial or finished export raise
    ``ExportMismatchError`` rather than mixing rows. When every shard is done the main process
    writes ``tokenized_dataset.json`` (the sidecar) and removes the partial file; re-running a
    finished export does nothing and says so. A resumed streaming export re-reads (without
    decoding) the rows of finished shards. A folder that holds something else (a pipeline, an
    imagefolder, a dataset, model weights: ``tessera.core.folders``) is refused before any work
    unless ``overwrite`` (``--overwrite``).

The sidecar
    The settings above plus: ``tokenizer_path``, ``tokenizer.weights_sha256`` (the
    ``model.safetensors`` bytes), ``resolution``, ``code_shape``, ``num_rows`` / ``num_images`` /
    ``num_shards``, ``shards`` (file, rows, source row range), ``columns``, the data ``report`` (the
    data layer's counts by skip reason and conversion, with examples), ``skipped_items`` (every
    skipped row: source_id, reason, detail), ``timings`` (``this_run``: wall seconds, images/s,
    encoder seconds and share of the workers' time, data / text / writing / setup seconds;
    ``all_shards``: per-phase seconds summed over every shard, across resumed runs), the command,
    ``tessera_version`` and how to load the data. Reading side, tokenizer checks and the prior
    trainer's loader: ``pipelines.tokens.dataset`` (re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from accelerate import PartialState

from tessera.core.folders import check_output_folder
from tessera.core.io import write_json_durably
from tessera.core.launch import launched_on_cpu, launched_processes
from tessera.core.version import tessera_version
from tessera.pipelines.data.dataset import MAX_EXAMPLES, DataReport, DataSourceError
from tessera.pipelines.tokens.config import ExportConfig
from tessera.pipelines.tokens.dataset import (
    ALTERNATIVES_COLUMN,
    FORMAT_VERSION,
    PARTIAL_NAME,
    RECORDS_DIR,
    SIDECAR_NAME,
    IncompleteExportError,
    TokenizerMismatchError,
    check_tokenizer_matches,
    collate_tokenized,
    dict_differences,
    load_tokenized_dataset,
    read_export_info,
    tokenizer_identity,
)
from tessera.pipelines.tokens.shards import (
    ExportMismatchError,
    WorkerStats,
    read_records,
    remove_temporary_files,
    run_worker,
)
from tessera.pipelines.tokens.text_cache import CaptionEncoder
from tessera.tokenizer.config import VQGANConfig

__all__ = [
    "ExportConfig", "ExportMismatchError", "ExportResult", "IncompleteExportError", "TokenizerMismatchError",
    "check_tokenizer_matches", "collate_tokenized", "export_spec", "export_tokenized_dataset",
    "load_tokenized_dataset", "read_export_info",
]

logger = logging.getLogger(__name__)

@dataclass
class ExportResult:
    output_dir: Path
    num_rows: int
    num_shards: int
    already_complete: bool  # nothing was done: the folder already held this finished export
    is_main_process: bool
    info: dict  # the sidecar


def _normalized_source(data: str) -> str:
    """Local paths as absolute paths (so ``./x`` and ``x`` are the same source); anything else as given."""
    path = Path(data).expanduser()
    return str(path.resolve()) if path.exists() else data


def export_spec(config: ExportConfig) -> dict:
    """The settings an export's rows depend on; resuming requires the same ones."""
    identity = tokenizer_identity(config.vqgan)
    vqgan_config = VQGANConfig.from_dict(identity["config"])
    # only when set, so that exports made before the option existed keep their fingerprint
    alternatives = ({"alternative_caption_column": config.alternative_caption_column}
                    if config.alternative_caption_column is not None else {})
    return {
        "format_version": FORMAT_VERSION,
        "tessera_version": tessera_version(),
        "tokenizer": {"config": identity["config"], "state_dict_sha256": identity["state_dict_sha256"],
                      "weights_sha256": identity["weights_sha256"]},
        "source": {"data": _normalized_source(config.data), "split": config.split, "image_column": config.image_column,
                   "caption_column": config.caption_column, **alternatives, "max_samples": config.max_samples,
                   "streaming": config.streaming},
        "resolution": vqgan_config.resolution,
        "code_shape": [vqgan_config.latent_size, vqgan_config.latent_size],
        "shard_size": config.shard_size,
        "augmentations": config.augmentations,
        "seed": config.seed,
        "dtype": config.dtype,
        "text_encoder": (CaptionEncoder(config.text_encoder, config.max_text_length).identity
                         if config.text_encoder else None),
    }


def spec_fingerprint(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _launched_state():
    """``accelerate.PartialState`` when started by ``accelerate launch`` / ``torchrun`` with several processes."""
    if launched_processes() <= 1:
        return None
    return PartialState(cpu=launched_on_cpu())


def _prepare_output(output: Path, spec: dict, fingerprint: str, command: str) -> bool:
    """Whether ``output`` already holds this finished export; otherwise make it ready to (re)start."""
    def refuse(what: str, existing: dict) -> None:
        changes = "; ".join(dict_differences(existing, spec))
        raise ExportMismatchError(f"{output} already holds {what} made with other settings (existing -> now: "
                                  f"{changes}). Use another --output_dir, or delete {output} to start over.")

    sidecar = output / SIDECAR_NAME
    if sidecar.is_file():  # a finished export made by another tessera version is still this export
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        existing = {key: info.get(key) for key in spec if key != "tessera_version"}
        if existing != {key: value for key, value in spec.items() if key != "tessera_version"}:
            refuse("a finished tokenized dataset", {**existing, "tessera_version": spec["tessera_version"]})
        return True
    partial = output / PARTIAL_NAME
    if partial.is_file():
        started = json.loads(partial.read_text(encoding="utf-8"))
        if started["spec"] != spec:
            refuse(f"an unfinished export (started by: {started.get('command')})", started["spec"])
    read_records(output, fingerprint)  # shards of other settings (a deleted partial file) are refused too
    removed = remove_temporary_files(output)
    done = len(list((output / RECORDS_DIR).glob("*.json"))) if output.is_dir() else 0
    if partial.is_file() or done:
        logger.info("resuming the export in %s: %d shards already done%s", output, done,
                    f", {removed} partial files removed" if removed else "")
    write_json_durably(partial, {"spec": spec, "fingerprint": fingerprint, "command": command,
                                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return False


def _configure_worker_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _spawn_workers(config: ExportConfig, fingerprint: str, show_progress: bool) -> list[WorkerStats]:
    """``config.num_processes`` local worker processes; their stats in process order."""
    count = config.num_processes
    threads = None if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // count)
    context = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(count, mp_context=context, initializer=_configure_worker_logging,
                             initargs=(logging.getLogger().getEffectiveLevel(),)) as pool:
        futures = [pool.submit(run_worker, config, fingerprint, index, count, threads=threads,
                               show_progress=show_progress, stop_with_parent=True) for index in range(count)]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and future.exception() is not None:
                for other in futures:
                    other.cancel()
                raise future.exception()
        return [future.result() for future in futures]


def _merge_report(report: DataReport, part: dict) -> None:
    report.num_rows += part["num_rows"]
    report.num_usable += part["num_usable"]
    for totals, counts in ((report.skipped, part["skipped"]), (report.converted, part["converted"])):
        for key, count in counts.items():
            totals[key] = totals.get(key, 0) + count
    for key, examples in part["examples"].items():
        kept = report.examples.setdefault(key, [])
        kept.extend(examples[:MAX_EXAMPLES - len(kept)])


def _run_timings(stats: list[WorkerStats], wall: float) -> dict:
    seconds = {key: sum(s.seconds.get(key, 0.0) for s in stats) for key in
               ("encode", "data", "text", "write", "setup", "total")}
    images, rows = sum(s.images for s in stats), sum(s.rows for s in stats)
    return {"wall_seconds": round(wall, 3), "num_processes": len(stats), "devices": sorted({s.device for s in stats}),
            "shards_written": sum(len(s.shards_written) for s in stats), "images": images, "rows": rows,
            "images_per_second": round(images / wall, 2) if wall else None,
            "rows_per_second": round(rows / wall, 2) if wall else None,
            "encoder_seconds": round(seconds["encode"], 3),
            "encoder_share": round(seconds["encode"] / seconds["total"], 4) if seconds["total"] else None,
            "data_seconds": round(seconds["data"], 3), "text_encoder_seconds": round(seconds["text"], 3),
            "write_seconds": round(seconds["write"], 3), "setup_seconds": round(seconds["setup"], 3),
            "process_seconds": round(seconds["total"], 3)}


def _finalize(output: Path, config: ExportConfig, spec: dict, fingerprint: str, stats: list[WorkerStats],
              wall: float, command: str) -> dict:
    """Check that every shard is done, then write the sidecar (see the module docstring)."""
    records = read_records(output, fingerprint)
    known = {s.num_shards for s in stats if s.num_shards is not None}
    if len(known) > 1:
        raise RuntimeError(f"processes disagree on the number of shards: {sorted(known)}")
    num_shards = known.pop() if known else max(records, default=-1) + 1  # streams: every process skipped to the end
    missing = [index for index in range(num_shards) if index not in records]
    if missing:
        raise IncompleteExportError(f"{len(missing)} shard(s) of {output} are missing after all processes finished "
                                    f"(e.g. {missing[:5]}); re-run the export command to write them")
    shards = [records[index] for index in range(num_shards)]
    sizes = {record.get("source_num_rows") for record in shards}
    if len(sizes) > 1 or any(index >= num_shards for index in records):
        raise ExportMismatchError(f"the source changed during the export of {output} (the shards disagree on its "
                                  f"size: {sorted(map(str, sizes))}); delete {output} and export again")
    source_skipped = stats[0].source_skipped
    report = DataReport(config.data)
    for reason, row_id in source_skipped:
        report.record_skip(reason, row_id)
    skipped_items = [{"source_id": row_id, "reason": reason, "detail": "while reading the source"}
                     for reason, row_id in source_skipped]
    for record in shards:
        _merge_report(report, record["report"])
        skipped_items.extend(record["skipped_items"])
    num_images, num_rows = sum(r["num_images"] for r in shards), sum(r["num_rows"] for r in shards)
    if num_images == 0:
        raise DataSourceError(f"no usable rows in {config.data}\n{report.summary()}")
    all_shards = {}
    for record in shards:
        for key, value in record["timings"].items():
            all_shards[key] = round(all_shards.get(key, 0.0) + value, 3)
    columns = ["codes", "caption", "source_id"] + (["augmentation"] if config.augmentations else []) \
        + ([ALTERNATIVES_COLUMN] if config.alternative_caption_column is not None else []) \
        + (["text_hidden_states", "text_mask"] if config.text_encoder else [])
    info = {
        **spec,
        "fingerprint": fingerprint,
        "tokenizer_path": str(Path(config.vqgan).resolve()),
        "text_encoder_path": str(Path(config.text_encoder).resolve()) if config.text_encoder else None,
        "command": command,
        "completed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_rows": num_rows, "num_images": num_images, "num_shards": num_shards, "columns": columns,
        "shards": [{"file": r["file"], "num_rows": r["num_rows"], "source_rows": r["source_rows"]} for r in shards],
        "report": report.to_dict(),
        "skipped_items": skipped_items,
        "timings": {"this_run": _run_timings(stats, wall), "all_shards": all_shards},
        "load": f"datasets.load_dataset('parquet', data_files='{output}/data/*.parquet', split='train')",
    }
    write_json_durably(output / SIDECAR_NAME, info)
    (output / PARTIAL_NAME).unlink(missing_ok=True)
    run = info["timings"]["this_run"]
    logger.log(logging.WARNING if report.skipped else logging.INFO, "%s", report.summary())
    logger.info("tokenized dataset complete: %d rows from %d images in %d shards at %s; this run: %d images in "
                "%.1f s = %.1f images/s, encoder %.1f s (%.0f%% of the workers' time)", num_rows, num_images,
                num_shards, output, run["images"], run["wall_seconds"], run["images_per_second"] or 0.0,
                run["encoder_seconds"], 100 * (run["encoder_share"] or 0.0))
    return info


def export_tokenized_dataset(config: ExportConfig, *, command: str | None = None, show_progress: bool = True,
                             on_shard_written=None) -> ExportResult:
    """Export (or resume, or confirm) the tokenized dataset ``config`` describes; see the module docstring.

    ``command`` is recorded to tell users how to resume; ``on_shard_written(index, record)`` is
    called after each shard this process writes (not with ``num_processes > 1``).
    """
    config.validate()
    started = time.perf_counter()
    output = Path(config.output_dir)
    if not ((output / SIDECAR_NAME).is_file() or (output / PARTIAL_NAME).is_file()):  # not this export's folder
        check_output_folder(output, what="a tokenized dataset", override="--overwrite", overwrite=config.overwrite)
    command = command or f"export_tokenized_dataset({config!r})"
    state = _launched_state()
    index, count = (state.process_index, state.num_processes) if state is not None else (0, 1)
    if count > 1 and config.num_processes > 1:
        raise ValueError("use either accelerate launch / torchrun or --num_processes, not both")
    if config.num_processes > 1 and on_shard_written is not None:
        raise ValueError("on_shard_written works in this process only: not with num_processes > 1")
    is_main = index == 0
    spec = export_spec(config)
    fingerprint = spec_fingerprint(spec)
    complete = _prepare_output(output, spec, fingerprint, command) if is_main else False
    if state is not None:
        state.wait_for_everyone()
        complete = (output / SIDECAR_NAME).is_file()
    if complete:
        info = read_export_info(output)
        if is_main:
            logger.info("already complete: %d rows in %s", info["num_rows"], output)
        return ExportResult(output, info["num_rows"], info["num_shards"], True, is_main, info)
    if config.num_processes > 1:
        stats = _spawn_workers(config, fingerprint, show_progress)
    else:
        stats = [run_worker(config, fingerprint, index, count, device=state.device if state is not None else None,
                            on_shard_written=on_shard_written, show_progress=show_progress)]
        if state is not None:
            from accelerate.utils import gather_object

            stats = sorted(gather_object(stats), key=lambda s: s.process_index)
    info = _finalize(output, config, spec, fingerprint, stats, time.perf_counter() - started, command) \
        if is_main else None
    if state is not None:
        state.wait_for_everyone()
        info = info or read_export_info(output)
    return ExportResult(output, info["num_rows"], info["num_shards"], False, is_main, info)
