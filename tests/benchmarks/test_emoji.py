"""The emoji imagefolder builder (benchmarks/emoji.py, emoji_names.py, emoji_art.py) on a tiny hand-made OpenMoji +
Twemoji sample: no download."""

import json
import shutil

import pytest
from PIL import Image

from benchmarks import emoji, emoji_art
from benchmarks.emoji import BuildOptions, build
from benchmarks.emoji_art import EmojiDataError, find_rasteriser
from benchmarks.emoji_names import base_group, is_test
from tessera.pipelines.data import load_image_caption_data

RED, BLUE, GREEN = "#ff0000", "#0000ff", "#00c000"


def disc(fill: str, box: int = 72, radius: int = 20) -> str:
    """An OpenMoji-like SVG: a disc in the middle of a ``box``-unit square, transparent around it."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {box} {box}">'
            f'<circle cx="{box / 2}" cy="{box / 2}" r="{radius}" fill="{fill}"/></svg>')


def full_square(fill: str) -> str:
    """A Twemoji-like SVG: paint to the edges of its 36-unit box."""
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36"><rect width="36" height="36" fill="{fill}"/></svg>'


def entry(hexcode, annotation, tags="", group="people-body", subgroup="hand-fingers-open", skintone_base=""):
    characters = "".join(chr(int(part, 16)) for part in hexcode.split("-"))
    return {"emoji": characters, "hexcode": hexcode, "group": group, "subgroups": subgroup,
            "annotation": annotation, "tags": tags, "openmoji_tags": "", "skintone_base_hexcode": skintone_base}


ENTRIES = [
    entry("1F44B", "waving hand", "hand, wave, waving"),
    entry("1F44B-1F3FB", "waving hand: light skin tone", skintone_base="1F44B"),
    entry("1F44B-1F3FF", "waving hand: dark skin tone", skintone_base="1F44B"),
    entry("1F3C3", "person running", "marathon, running", subgroup="person-activity"),
    entry("1F3C3-200D-2640-FE0F", "woman running", "marathon, running, woman", subgroup="person-activity"),
    entry("1F34E", "red apple", "apple, fruit, red", group="food-drink", subgroup="food-fruit"),
    entry("2764-FE0F", "red heart", "heart", group="smileys-emotion", subgroup="heart"),
    entry("1F4A9", "pile of poo", "poo", group="smileys-emotion", subgroup="face-costume"),  # broken SVG
    entry("1F47B", "ghost", "ghost", group="smileys-emotion", subgroup="face-costume"),  # blank SVG
    entry("1F680", "rocket", "space", group="travel-places", subgroup="transport-air"),  # no SVG
    entry("1F4AF", "  ", group="smileys-emotion", subgroup="emotion"),  # no name
    entry("E000", "openmoji brand", group="extras-openmoji", subgroup="brand"),
]
OPENMOJI_SVGS = {"1F44B": disc(RED), "1F44B-1F3FB": disc(RED), "1F44B-1F3FF": disc(RED), "1F3C3": disc(BLUE),
                 "1F3C3-200D-2640-FE0F": disc(BLUE), "1F34E": disc(RED), "2764-FE0F": disc(RED),
                 "1F4A9": "<svg this is not xml", "1F47B": '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72"/>',
                 "1F4AF": disc(GREEN), "E000": disc(GREEN)}
TWEMOJI_SVGS = {"1f44b": full_square(GREEN), "1f44b-1f3ff": full_square(GREEN), "1f3c3-200d-2640-fe0f": full_square(BLUE),
                "1f34e": full_square(RED), "2764": full_square(RED),  # Twemoji drops the FE0F of "red heart"
                "1f1e6": full_square(BLUE),  # a regional indicator: no CLDR name in openmoji.json
                "readme": full_square(BLUE)}


@pytest.fixture
def sources(tmp_path):
    openmoji_dir, twemoji_dir = tmp_path / "openmoji" / "package", tmp_path / "twemoji" / "package"
    (openmoji_dir / "data").mkdir(parents=True)
    (openmoji_dir / "color" / "svg").mkdir(parents=True)
    twemoji_dir.mkdir(parents=True)
    (openmoji_dir / "data" / "openmoji.json").write_text(json.dumps(ENTRIES), encoding="utf-8")
    (openmoji_dir / "package.json").write_text('{"name": "openmoji", "version": "0.0.1-test"}')
    for hexcode, svg in OPENMOJI_SVGS.items():
        (openmoji_dir / "color" / "svg" / f"{hexcode}.svg").write_text(svg)
    for stem, svg in TWEMOJI_SVGS.items():
        (twemoji_dir / f"{stem}.svg").write_text(svg)
    return openmoji_dir, twemoji_dir


def built(root, sources, **options):
    return build(root, BuildOptions(**options), openmoji_dir=sources[0], twemoji_dir=sources[1], progress=False)


def read_rows(root):
    return {split: [json.loads(line) for line in (root / split / "metadata.jsonl").read_text().splitlines()]
            for split in ("train", "test")}


@pytest.mark.parametrize("hexcode, base", [
    ("1F44B-1F3FB", "1F44B"),  # skin tone
    ("1F3C3-1F3FF-200D-2640-FE0F", "1F3C3"),  # skin tone + gender
    ("1F3C3-200D-2642-FE0F", "1F3C3"),
    ("1F469-200D-2695-FE0F", "1F9D1-200D-2695"),  # woman health worker -> health worker
    ("1F468-1F3FB-200D-1F9B0", "1F9D1"),  # man: red hair -> person
    ("1F6B6-200D-27A1-FE0F", "1F6B6"),  # facing right
    ("1F469-200D-2764-FE0F-200D-1F48B-200D-1F468", "1F48F"),  # kiss: woman, man -> kiss
    ("1F468-200D-1F469-200D-1F467", "1F9D1-200D-1F9D1-200D-1F9D2"),  # family: man, woman, girl
    ("1F3FB", "1F3FB"),  # the modifier alone stays itself
    ("2640-FE0F", "2640"),  # the female sign alone stays itself
    ("1F1E9-1F1EA", "1F1E9-1F1EA"),  # flags keep both letters
])
def test_base_group(hexcode, base):
    assert base_group(hexcode) == base


def test_base_group_follows_openmoji_skintone_base():
    assert base_group("1FAF1-1F3FB-200D-1FAF2-1F3FC", skintone_base="1F91D") == "1F91D"


def test_split_is_deterministic_and_about_the_fraction():
    bases = [f"{0x1F300 + index:04X}" for index in range(3000)]
    held = [base for base in bases if is_test(base)]
    assert held == [base for base in bases if is_test(base)]
    assert 0.08 < len(held) / len(bases) < 0.12
    assert held != [base for base in bases if is_test(base, seed=1)]


def split_seed_separating(*bases):
    """A split seed that puts the first base in test and the others in train (the test needs both splits)."""
    return next(seed for seed in range(1000) if is_test(bases[0], 0.5, seed)
                and not any(is_test(base, 0.5, seed) for base in bases[1:]))


@pytest.mark.parametrize("resolution", [16, 32])
def test_build_groups_splits_by_base_and_captions_every_row(tmp_path, sources, resolution):
    seed = split_seed_separating("1F44B", "1F3C3", "1F34E", "2764")
    info = built(tmp_path / "out", sources, resolution=resolution, test_fraction=0.5, split_seed=seed, oversample=2)
    rows = read_rows(tmp_path / "out")
    # every skin tone and both styles of "waving hand" are in test, nothing else is
    assert sorted((row["hexcode"], row["style"]) for row in rows["test"]) == [
        ("1F44B", "openmoji"), ("1F44B", "twemoji"), ("1F44B-1F3FB", "openmoji"), ("1F44B-1F3FF", "openmoji"),
        ("1F44B-1F3FF", "twemoji")]
    assert {row["base"] for row in rows["test"]} == {"1F44B"}
    assert "1F44B" not in {row["base"] for row in rows["train"]}
    by_key = {(row["hexcode"], row["style"]): row for split in rows for row in rows[split]}
    tone = by_key[("1F44B-1F3FF", "twemoji")]
    assert tone["text"] == "waving hand: dark skin tone" and tone["emoji"] == "\U0001F44B\U0001F3FF"
    assert tone["keywords"] == ["hand", "wave", "waving"]  # a skin tone takes its base emoji's keywords
    assert (tone["group"], tone["subgroup"]) == ("people-body", "hand-fingers-open")
    assert tone["file_name"] == "images/twemoji/1F44B-1F3FF.png"
    heart = by_key[("2764-FE0F", "twemoji")]  # matched without the variation selector, named as OpenMoji names it
    assert heart["text"] == "red heart" and heart["emoji"] == "\u2764\ufe0f"
    assert by_key[("1F3C3-200D-2640-FE0F", "openmoji")]["base"] == "1F3C3"
    assert info["counts"]["images"] == {"train": 7, "test": 5}
    assert info["counts"]["images_by_style"]["test"] == {"openmoji": 3, "twemoji": 2}
    assert info["counts"]["emoji"] == {"train": 4, "test": 3}
    assert info["counts"]["base_groups"] == {"train": 3, "test": 1}
    for split in rows:
        for row in rows[split]:
            with Image.open(tmp_path / "out" / split / row["file_name"]) as image:
                assert image.mode == "RGB" and image.size == (resolution, resolution)
        data = load_image_caption_data(str(tmp_path / "out"), split=split, resolution=resolution,
                                       caption_column="text")
        assert len(data.dataset) == len(rows[split])
        assert sorted(data.dataset[index]["caption"] for index in range(len(rows[split]))) == sorted(
            row["text"] for row in rows[split])
    settings = info["settings"]
    assert settings["resolution"] == resolution and settings["split"]["seed"] == seed
    assert settings["sources"]["openmoji"]["version"] == "0.0.1-test"
    assert "CC BY-SA 4.0" in settings["sources"]["openmoji"]["attribution"]
    assert json.loads((tmp_path / "out" / "build.json").read_text()) == info


def test_images_are_composited_on_white_at_the_styles_scale(tmp_path, sources):
    built(tmp_path / "out", sources, resolution=32, test_fraction=0.0)
    folder = tmp_path / "out" / "train" / "images"
    with Image.open(folder / "openmoji" / "1F34E.png") as apple:
        assert apple.getpixel((0, 0)) == (255, 255, 255) and apple.getpixel((31, 31)) == (255, 255, 255)
        red = apple.getpixel((16, 16))
        assert red[0] > 240 and red[1] < 15 and red[2] < 15
    with Image.open(folder / "twemoji" / "1F34E.png") as apple:  # full bleed in its box, drawn at 7/8: white rim
        assert apple.getpixel((0, 0)) == (255, 255, 255) and apple.getpixel((16, 0)) == (255, 255, 255)
        assert apple.getpixel((16, 3))[1] < 15 and apple.getpixel((3, 16))[1] < 15


def test_every_left_out_emoji_is_counted_with_its_hexcode(tmp_path, sources):
    info = built(tmp_path / "out", sources, resolution=16, oversample=1)
    assert info["skipped"] == {"no_name": 1, "openmoji:blank": 1, "openmoji:no_svg": 1, "openmoji:rasterise_failed": 1,
                               "openmoji_extra": 1, "twemoji:no_name": 1, "twemoji:not_a_hexcode_file_name": 1}
    assert info["skipped_hexcodes"]["openmoji:rasterise_failed"] == ["1F4A9"]
    assert info["skipped_hexcodes"]["openmoji:blank"] == ["1F47B"]
    assert info["skipped_hexcodes"]["openmoji:no_svg"] == ["1F680"]
    assert info["skipped_hexcodes"]["twemoji:no_name"] == ["1f1e6"]
    assert sum(info["counts"]["images"].values()) == 12


def test_a_build_is_reused_resumed_and_refused_with_other_settings(tmp_path, sources):
    out = tmp_path / "out"
    info = built(out, sources, resolution=16, oversample=1)
    assert info["reused_images"] == 0
    assert built(out, sources, resolution=16, oversample=1) == info  # finished: returned as it is
    with pytest.raises(EmojiDataError, match="other settings"):
        built(out, sources, resolution=32, oversample=1)
    # an interrupted build (no build.json yet) keeps the images it finished
    (out / "build.json").unlink()
    (out / "build.partial.json").write_text(json.dumps(info["settings"]))
    resumed = built(out, sources, resolution=16, oversample=1)
    assert resumed["reused_images"] == 12 and resumed["counts"] == info["counts"]
    assert not (out / "build.partial.json").exists()


def test_without_a_rasteriser_the_error_says_what_to_install(tmp_path, sources, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cairosvg(name, *args, **kwargs):
        if name == "cairosvg":
            raise ImportError("No module named 'cairosvg'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cairosvg)
    monkeypatch.setattr(emoji_art.shutil, "which", lambda name: None)
    with pytest.raises(EmojiDataError, match=r"pip install cairosvg.*librsvg2-bin"):
        built(tmp_path / "out", sources)
    with pytest.raises(EmojiDataError, match="rsvg-convert is not on the PATH"):
        find_rasteriser("rsvg-convert")
    assert not (tmp_path / "out").exists()


def test_without_npm_the_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(emoji, "find_rasteriser", lambda choice: emoji_art.Rasteriser("cairosvg", "test"))
    monkeypatch.setattr(emoji_art.shutil, "which", lambda name: None)
    with pytest.raises(EmojiDataError, match="npm is needed.*--openmoji_dir"):
        build(tmp_path / "out", BuildOptions(), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out").exists()


def test_a_cached_tarball_is_unpacked_without_npm(tmp_path, sources, monkeypatch):
    import tarfile

    cache = tmp_path / "cache"
    cache.mkdir()
    with tarfile.open(cache / "twemoji-svg-15.0.0.tgz", "w:gz") as archive:
        archive.add(sources[1], arcname="package")
    monkeypatch.setattr(emoji_art.shutil, "which", lambda name: None)
    folder, digest = emoji_art.fetch_npm_package("@twemoji/svg", "15.0.0", cache)
    assert folder == cache / "twemoji-svg-15.0.0" / "package" and (folder / "1f34e.svg").is_file()
    assert len(digest) == 64


@pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="librsvg2-bin (rsvg-convert) is not installed")
def test_rsvg_convert_draws_the_same_images(tmp_path, sources):
    built(tmp_path / "rsvg", sources, resolution=16, rasteriser="rsvg-convert", test_fraction=0.0)
    with Image.open(tmp_path / "rsvg" / "train" / "images" / "openmoji" / "1F34E.png") as apple:
        assert apple.getpixel((0, 0)) == (255, 255, 255) and apple.getpixel((8, 8))[0] > 240


def test_the_command_line_reports_errors_without_a_traceback(tmp_path, capsys):
    assert emoji.main(["build", str(tmp_path / "out"), "--openmoji_dir", str(tmp_path / "missing"),
                       "--twemoji_dir", str(tmp_path)]) == 1
    assert "data/openmoji.json" in capsys.readouterr().err
