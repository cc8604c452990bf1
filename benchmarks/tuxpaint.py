"""Tux Paint's stamps as a captioned imagefolder: the real images of ``benchmarks/real_images.py``.

The Debian package ``tuxpaint-stamps-default`` ships about 950 stamps (photographs of objects and drawings) under
``usr/share/tuxpaint/stamps/``, each an image with a ``.txt`` beside it: the English description on the first
line without a locale prefix, then translations as ``<locale>.utf8=...`` lines. Here:

- the package is fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (no root install) into a cache;
- every PNG stamp with a description becomes one row (``*_mirror.png`` are Tux Paint's mirrored variants of
  another stamp, and SVG-only stamps would need a rasteriser: both are left out and counted);
- images are composited on white where they have alpha, padded to a square on white (stamps are objects: a
  centre crop would cut them) and resized to ``resolution`` here, so the data layer's resize/crop is a no-op;
- the held-out split is by file: a stamp is held out when a hash of its path falls in the first ``fraction``
  of buckets, so the split is the same on every machine and does not move when other stamps come or go.

The result is ``<root>/train`` and ``<root>/heldout``, each an imagefolder (``metadata.jsonl`` with
``file_name`` and ``text``) that ``pipelines.data`` reads.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

PACKAGE = "tuxpaint-stamps-default"
STAMPS_IN_PACKAGE = Path("usr/share/tuxpaint/stamps")
LOCALE_LINE = re.compile(r"^[A-Za-z]{2,3}(_[A-Za-z]{2})?(@\w+)?\.utf8=")
SPLITS = ("train", "heldout")


class DataSourceError(RuntimeError):
    """The stamps could not be fetched or read (the message says what to do)."""


def english_description(text: str) -> str | None:
    """The English line of a stamp's ``.txt`` (the first line that is not ``<locale>.utf8=...``), whitespace
    collapsed; None when there is none."""
    for line in text.splitlines():
        line = " ".join(line.replace("\ufeff", "").split())
        if line and not LOCALE_LINE.match(line):
            return line
    return None


def is_held_out(name: str, fraction: float = 0.1, buckets: int = 1000) -> bool:
    """Whether the stamp at relative path ``name`` belongs to the held-out split (deterministic, by hash)."""
    bucket = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % buckets
    return bucket < round(fraction * buckets)


def square_on_white(image: Image.Image, resolution: int) -> Image.Image:
    """RGB ``resolution``x``resolution``: alpha composited on white, padded to a square on white, resized."""
    rgba = image.convert("RGBA")
    side = max(rgba.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas.convert("RGB").resize((resolution, resolution), Image.Resampling.LANCZOS)


@dataclass
class Stamp:
    name: str  # path under the stamps folder, without suffix ("animals/birds/owl")
    image_path: Path
    caption: str


@dataclass
class StampScan:
    stamps: list[Stamp]
    skipped: Counter = field(default_factory=Counter)  # reason -> count


def scan_stamps(stamps_dir: Path) -> StampScan:
    """Every PNG stamp with an English description under ``stamps_dir``, sorted by name; the rest counted."""
    scan = StampScan(stamps=[])
    for description in sorted(stamps_dir.rglob("*.txt")):
        name = description.relative_to(stamps_dir).with_suffix("").as_posix()
        png, svg = description.with_suffix(".png"), description.with_suffix(".svg")
        if not png.is_file():
            scan.skipped["svg_only" if svg.is_file() else "no_image"] += 1
            continue
        try:
            caption = english_description(description.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            caption = None
        if caption is None:
            scan.skipped["no_english_description"] += 1
            continue
        scan.stamps.append(Stamp(name, png, caption))
    described = {stamp.image_path for stamp in scan.stamps}
    for png in stamps_dir.rglob("*.png"):
        if png not in described and not png.with_suffix(".txt").is_file():
            scan.skipped["mirror_variant" if png.stem.endswith("_mirror") else "no_description"] += 1
    return scan


def write_imagefolders(scan: StampScan, root: Path, resolution: int = 64, heldout_fraction: float = 0.1) -> dict:
    """``root/train`` and ``root/heldout`` imagefolders from the scanned stamps; returns a summary (also written
    to ``root/data_info.json``, whose presence marks the folders complete)."""
    counts: Counter = Counter(scan.skipped)
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
    for stamp in scan.stamps:
        split = "heldout" if is_held_out(stamp.name, heldout_fraction) else "train"
        try:
            with Image.open(stamp.image_path) as image:
                square = square_on_white(image, resolution)
        except (OSError, ValueError):
            counts["undecodable"] += 1
            continue
        file_name = "images/" + stamp.name.replace("/", "__") + ".png"
        square.save(root / split / file_name)
        rows[split].append({"file_name": file_name, "text": stamp.caption})
    for split in SPLITS:
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows[split])
        (root / split / "metadata.jsonl").write_text(lines, encoding="utf-8")
    info = {"source": f"Debian package {PACKAGE}", "resolution": resolution, "heldout_fraction": heldout_fraction,
            "rows": {split: len(rows[split]) for split in SPLITS}, "skipped": dict(sorted(counts.items()))}
    (root / "data_info.json").write_text(json.dumps(info, indent=2))
    return info


def fetch_package(cache_dir: Path) -> Path:
    """Download and unpack the Debian package into ``cache_dir`` (once); returns its stamps folder."""
    stamps_dir = cache_dir / "unpacked" / STAMPS_IN_PACKAGE
    if stamps_dir.is_dir():
        return stamps_dir
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise DataSourceError(f"apt-get and dpkg are needed to fetch the Debian package {PACKAGE}; on another "
                              f"system, unpack the package yourself and pass its {STAMPS_IN_PACKAGE} folder "
                              "with --stamps_dir")
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"downloading the Debian package {PACKAGE} (about 160 MB) into {cache_dir}", flush=True)
    download = subprocess.run(["apt-get", "download", PACKAGE], cwd=cache_dir, capture_output=True, text=True)
    debs = sorted(cache_dir.glob(f"{PACKAGE}_*.deb"))
    if download.returncode != 0 or not debs:
        raise DataSourceError(f"`apt-get download {PACKAGE}` failed ({download.stderr.strip()[-300:]}); run "
                              "`apt-get update` first, or pass an unpacked stamps folder with --stamps_dir")
    unpacked = cache_dir / "unpacked"
    extract = subprocess.run(["dpkg", "-x", str(debs[-1]), str(unpacked)], capture_output=True, text=True)
    if extract.returncode != 0 or not stamps_dir.is_dir():
        raise DataSourceError(f"`dpkg -x {debs[-1]}` did not give {STAMPS_IN_PACKAGE}: {extract.stderr.strip()}")
    return stamps_dir


def build_tuxpaint_imagefolders(root: Path, cache_dir: Path, stamps_dir: Path | None = None,
                                resolution: int = 64, heldout_fraction: float = 0.1) -> dict:
    """The train/held-out imagefolders under ``root`` (reused when ``root/data_info.json`` exists)."""
    info_file = root / "data_info.json"
    if info_file.is_file():
        return json.loads(info_file.read_text())
    scan = scan_stamps(stamps_dir or fetch_package(cache_dir))
    if not scan.stamps:
        raise DataSourceError(f"no PNG stamps with an English description found under {stamps_dir}")
    return write_imagefolders(scan, root, resolution, heldout_fraction)
