"""A GPU run's results packed into what the lent machine can send back (at most 8 files under ``$OUT``, 16 MiB
each, 64 MiB in all), and unpacked on the CPU into the run folder ``train.py prior`` would have left.

Packed (``pack_result``, beside the script's ``train.log``):

- ``pipeline.tar``: the final pipeline, its prior's weights in float16 as the shipped pipelines keep them,
  without ``vqgan/`` (the repository's VQ-GAN; the hash of its weights as loaded is recorded) and without
  ``text_encoder/``: ``text_config.json`` names the frozen encoder as the CPU pipelines do (the bundle's package
  reference and the original weights' hash), not the GPU machine's rebuilt folder;
- ``run.tar``: ``metrics.jsonl``, ``run_config.json``, the validation sample grids;
- ``snapshots-K.tar``: each snapshot's prior (float16 weights) with its ``snapshot.json``; when they do not
  all fit, evenly spaced ones (the last always), the others listed as left out;
- ``result.json``: what was packed, the VQ-GAN's hash, the device and the wall-clock seconds.

A snapshot's ``cpu_seconds`` is the GPU machine's process CPU time; its ``wall_seconds`` (the training process's
wall clock, setup included) is the figure that means something there.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tessera.core.hashing import state_dict_sha256
from tessera.core.pretrained import CONFIG_NAME, WEIGHTS_NAME
from tessera.pipelines.pipeline_folder import PipelineConfig
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.prior.text import TEXT_CONFIG_NAME, TextEncoderConfig
from tessera.tokenizer.model import VQGAN

RESULT = "result.json"
PIPELINE_TAR = "pipeline.tar"
RUN_TAR = "run.tar"
SNAPSHOT_RECORD = "snapshot.json"
MAX_FILES = 8
FILE_LIMIT = 16 * 2**20
MARGIN = 2**20  # for the log that grows while packing, and the result record
LEFT_BEHIND = ("vqgan", "text_encoder")  # pipeline components that do not travel back
RUN_FILES = ("metrics.jsonl", "run_config.json", "samples")
SNAPSHOT_SHARED = ("pipeline.json", TEXT_CONFIG_NAME, "text_tokenizer")  # a snapshot's parts that are the final's


def vqgan_weights_sha256(folder: Path) -> str:
    """The hash of a VQ-GAN's weights as loaded (float32): a re-saved copy matches, whatever dtype it was stored in."""
    return state_dict_sha256(VQGAN.from_pretrained(folder).state_dict())


def half_weights(source: Path, destination: Path) -> None:
    """``source``'s safetensors weights with every floating-point tensor in float16, written to ``destination``."""
    save_file({name: tensor.half() if tensor.is_floating_point() else tensor
               for name, tensor in load_file(source).items()}, destination)


def snapshot_folders(run_dir: Path) -> list[Path]:
    """The run's complete snapshots, by step."""
    records = sorted((run_dir / "snapshots").glob(f"step-*/{SNAPSHOT_RECORD}"))
    return [record.parent for record in records]


def final_pipeline(run_dir: Path) -> Path:
    """The run's final pipeline: ``run_dir`` once the run saved it, else its newest snapshot (a run stopped
    before its final save)."""
    if (run_dir / "pipeline.json").is_file():
        return run_dir
    snapshots = snapshot_folders(run_dir)
    if not snapshots:
        raise FileNotFoundError(f"{run_dir} holds neither a final pipeline nor a snapshot: nothing to pack")
    return snapshots[-1]


def tar_folder(tar_path: Path, root: Path, names: list[str]) -> Path:
    with tarfile.open(tar_path, "w") as tar:
        for name in names:
            if (root / name).exists():
                tar.add(root / name, arcname=name)
    return tar_path


def packed_pipeline(source: Path, stage: Path, manifest: dict) -> list[str]:
    """``source``'s pipeline files in ``stage`` without the components left behind, the text encoder named by the
    bundle's package reference; the names written."""
    components = [name for key, name in PipelineConfig.read(source).components.items() if key not in LEFT_BEHIND]
    names = ["pipeline.json", TEXT_CONFIG_NAME, *[name for name in components if (source / name).is_dir()]]
    for name in names:
        (shutil.copytree if (source / name).is_dir() else shutil.copyfile)(source / name, stage / name)
    half_weights(source / "prior" / WEIGHTS_NAME, stage / "prior" / WEIGHTS_NAME)
    config = TextEncoderConfig.load(stage / TEXT_CONFIG_NAME)
    config.pretrained, config.encoder_sha256 = manifest["text_encoder"], manifest["encoder_sha256"]
    config.save(stage / TEXT_CONFIG_NAME)
    return names


def half_prior(snapshot: Path, stage: Path) -> int:
    """``snapshot``'s prior (float16 weights) and record in ``stage/step-N``; its size in bytes."""
    folder = stage / snapshot.name / "prior"
    folder.mkdir(parents=True)
    shutil.copyfile(snapshot / "prior" / CONFIG_NAME, folder / CONFIG_NAME)
    half_weights(snapshot / "prior" / WEIGHTS_NAME, folder / WEIGHTS_NAME)
    shutil.copyfile(snapshot / SNAPSHOT_RECORD, stage / snapshot.name / SNAPSHOT_RECORD)
    return sum(path.stat().st_size for path in (stage / snapshot.name).rglob("*") if path.is_file())


def evenly_spaced(count: int, keep: int) -> list[int]:
    """``keep`` indices of ``count`` items, evenly spaced, the last always among them."""
    if keep >= count:
        return list(range(count))
    if keep <= 1:
        return [count - 1] if keep == 1 else []
    return sorted({round(index * (count - 1) / (keep - 1)) for index in range(keep)})


def pack_snapshots(snapshots: list[Path], out: Path, stage: Path, budget: int, max_tars: int) -> list[int]:
    """The snapshots that fit ``budget`` bytes in at most ``max_tars`` tars of under 16 MiB, written as
    ``snapshots-K.tar``; the indices packed."""
    sizes = [half_prior(snapshot, stage) + 10240 for snapshot in snapshots]  # + tar headers
    size = max(sizes, default=1)
    per_tar = (FILE_LIMIT - MARGIN) // size
    chosen = evenly_spaced(len(snapshots), min(budget // size, max_tars * per_tar))
    for tar_index, start in enumerate(range(0, len(chosen), max(1, per_tar))):
        names = [snapshots[index].name for index in chosen[start:start + per_tar]]
        tar_folder(out / f"snapshots-{tar_index}.tar", stage, names)
    return chosen


def pack_result(run_dir: Path, out: Path, manifest: dict, limit: int = 64 * 2**20) -> list[Path]:
    """Pack ``run_dir`` into ``out`` (files already there count towards the limits); the files written."""
    out.mkdir(parents=True, exist_ok=True)
    source = final_pipeline(run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        stage = Path(scratch)
        (stage / "pipeline").mkdir()
        (stage / "snapshots").mkdir()
        written = [tar_folder(out / PIPELINE_TAR, stage / "pipeline",
                              packed_pipeline(source, stage / "pipeline", manifest)),
                   tar_folder(out / RUN_TAR, run_dir, list(RUN_FILES))]
        used = sum(path.stat().st_size for path in out.iterdir() if path.is_file())
        files_left = MAX_FILES - sum(1 for _ in out.iterdir()) - 1  # result.json comes last
        snapshots = snapshot_folders(run_dir)
        chosen = pack_snapshots(snapshots, out, stage / "snapshots", limit - used - MARGIN, files_left)
    written += sorted(out.glob("snapshots-*.tar"))
    records = [json.loads((snapshot / SNAPSHOT_RECORD).read_text()) for snapshot in snapshots]
    result = {
        "pipeline_from": "final save" if source == run_dir else f"snapshot {source.name} (no final save)",
        "vqgan_sha256": vqgan_weights_sha256(source / "vqgan"),
        "text_encoder": manifest["text_encoder"], "encoder_sha256": manifest["encoder_sha256"],
        "run_arguments": manifest["run_arguments"],
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "snapshots": [records[index] for index in chosen],
        "snapshots_left_out": [record["step"] for index, record in enumerate(records) if index not in chosen],
        "files": [path.name for path in written],
    }
    (out / RESULT).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return [*written, out / RESULT]


def extract(tar_path: Path, destination: Path) -> None:
    with tarfile.open(tar_path) as tar:
        tar.extractall(destination, filter="data")


def link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def unpack_result(result_dir: Path, run_dir: Path, vqgan: Path) -> Path:
    """``run_dir`` as ``train.py prior`` leaves it (priors in float16), from a packed result and the VQ-GAN it was
    trained with: the final pipeline, ``metrics.jsonl``, ``samples/``, and every packed snapshot as a loadable
    pipeline with its ``snapshot.json``. Both the final pipeline and the last snapshot are loaded as a check."""
    result = json.loads((result_dir / RESULT).read_text(encoding="utf-8"))
    if vqgan_weights_sha256(vqgan) != result["vqgan_sha256"]:
        raise ValueError(f"{vqgan} is not the VQ-GAN the run was trained with (weights hash differs from "
                         f"{result['vqgan_sha256']})")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} is not empty; unpack into a new folder")
    extract(result_dir / PIPELINE_TAR, run_dir)
    extract(result_dir / RUN_TAR, run_dir)
    shutil.copytree(vqgan, run_dir / "vqgan")
    for tar_path in sorted(result_dir.glob("snapshots-*.tar")):
        extract(tar_path, run_dir / "snapshots")
    for record in result["snapshots"]:
        folder = run_dir / "snapshots" / f"step-{record['step']:07d}"
        for name in SNAPSHOT_SHARED:
            (shutil.copytree if (run_dir / name).is_dir() else shutil.copyfile)(run_dir / name, folder / name)
        shutil.copytree(run_dir / "vqgan", folder / "vqgan", copy_function=link_or_copy)
    TextToImagePipeline.from_pretrained(run_dir)
    if result["snapshots"]:
        TextToImagePipeline.from_pretrained(run_dir / "snapshots" / f"step-{result['snapshots'][-1]['step']:07d}")
    return run_dir
