"""The synthetic shapes dataset: determinism, splits, captions and rendering."""

import itertools

import numpy as np
import pytest

from tessera.pipelines.shapes.dataset import (
    CAPTION_STYLES,
    COLORS,
    DEFAULT_HOLDOUT,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    TEST_FRACTION,
    SceneSpec,
    ShapeObject,
    caption,
    parse_caption,
    render,
    sample_spec,
    shapes_dataset,
    spec_split,
)


def all_specs() -> list[SceneSpec]:
    """Every scene ``sample_spec`` can draw."""
    objects = [ShapeObject(c, s, z) for c, s, z in itertools.product(COLORS, SHAPES, SIZES)]
    singles = [SceneSpec((o,), position=p) for o in objects for p in POSITIONS]
    pairs = [SceneSpec((a, b), relation=r) for a, b in itertools.permutations(objects, 2)
             if (a.color, a.shape) != (b.color, b.shape) for r in RELATIONS]
    return singles + pairs


ALL_SPECS = all_specs()
RED_LEFT = SceneSpec((ShapeObject("red", "circle", "small"),), position="left")
BLUE_ABOVE_GREEN = SceneSpec((ShapeObject("blue", "square", "large"), ShapeObject("green", "triangle", "small")),
                             relation="above")


def test_dataset_is_deterministic_and_rows_reproducible_in_isolation():
    a, b = shapes_dataset(6, seed=3), shapes_dataset(6, seed=3)
    longer = shapes_dataset(12, seed=3)
    for i in range(6):
        assert a[i]["caption"] == b[i]["caption"] == longer[i]["caption"]
        assert a[i]["spec"] == longer[i]["spec"]
        assert np.array_equal(np.asarray(a[i]["image"]), np.asarray(longer[i]["image"]))
    assert [r["caption"] for r in shapes_dataset(6, seed=4)] != [r["caption"] for r in a]


def test_dataset_columns_and_lazy_images():
    ds = shapes_dataset(4, resolution=64, split="test", caption_style="fr")
    assert ds.cache_files == []  # in memory: nothing written to the HF cache
    row = ds[2]
    assert set(row) == {"index", "caption", "spec", "image"} and row["index"] == 2
    assert row["image"].mode == "RGB" and row["image"].size == (64, 64)
    assert parse_caption(row["caption"]) == SceneSpec.from_json(row["spec"])


@pytest.mark.parametrize("resolution", [32, 64])
def test_render_size_background_and_colours(resolution):
    pixels = np.asarray(render(BLUE_ABOVE_GREEN, resolution))
    assert pixels.shape == (resolution, resolution, 3) and pixels.dtype == np.uint8
    assert (pixels[0, 0] == 0).all() and (pixels[-1, -1] == 0).all()
    for name in ("blue", "green"):
        assert (pixels == COLORS[name]).all(axis=-1).sum() > 10


def test_render_jitter_is_small_and_seeded():
    canonical = np.asarray(render(RED_LEFT, 64))
    jittered = [np.asarray(render(RED_LEFT, 64, rng=np.random.default_rng(s))) for s in (0, 0, 1)]
    assert np.array_equal(jittered[0], jittered[1]) and not np.array_equal(jittered[0], jittered[2])
    assert not np.array_equal(canonical, jittered[0])
    assert (canonical > 0).sum() == pytest.approx((jittered[0] > 0).sum(), rel=0.1)


def test_train_and_test_never_hold_out_pairs_and_holdout_always_does():
    held = set(DEFAULT_HOLDOUT)
    rng = np.random.default_rng(0)
    for split in ("train", "test", "holdout"):
        pairs = [{(o.color, o.shape) for o in sample_spec(rng, split).objects} for _ in range(200)]
        assert all(bool(p & held) == (split == "holdout") for p in pairs)


def test_test_scenes_never_appear_in_train_under_any_caption():
    splits = {spec: spec_split(spec) for spec in ALL_SPECS}
    train_captions = {caption(s, style) for s, split in splits.items() if split == "train" for style in CAPTION_STYLES}
    test_specs = [s for s, split in splits.items() if split == "test"]
    assert not train_captions & {caption(s, style) for s in test_specs for style in CAPTION_STYLES}
    # the converse caption ("b below a") of a test scene is a test scene too
    assert all(splits[s.canonical()] == splits[s] for s in ALL_SPECS)
    share = len(test_specs) / sum(split != "holdout" for split in splits.values())
    assert share == pytest.approx(TEST_FRACTION, abs=0.03)


def test_sample_spec_rejects_bad_splits():
    with pytest.raises(ValueError, match="unknown split"):
        sample_spec(np.random.default_rng(0), "validation")
    with pytest.raises(ValueError, match="empty"):
        sample_spec(np.random.default_rng(0), "holdout", holdout=())


def test_examples_of_each_style():
    assert caption(RED_LEFT) == "a small red circle on the left"
    assert caption(BLUE_ABOVE_GREEN) == "a large blue square above a small green triangle"
    assert caption(RED_LEFT, "en_alt") == "on the left side there is a tiny disk in red"
    assert caption(RED_LEFT, "fr") == "un petit cercle rouge à gauche"
    assert caption(BLUE_ABOVE_GREEN, "fr") == "un grand carré bleu au-dessus d'un petit triangle vert"


@pytest.mark.parametrize("style", CAPTION_STYLES)
def test_every_caption_is_unique_and_parses_back(style):
    captions = [caption(spec, style) for spec in ALL_SPECS]
    assert len(set(captions)) == len(captions)
    assert all(parse_caption(text) == spec for text, spec in zip(captions, ALL_SPECS))


def test_parse_is_lenient_about_case_spacing_and_apostrophes():
    assert parse_caption("  A small RED circle   on the left. ") == RED_LEFT
    assert parse_caption("Un grand carré bleu au-dessus d\u2019un petit triangle vert") == BLUE_ABOVE_GREEN


@pytest.mark.parametrize("text", ["", "a red circle", "a small red circle on the moon", "a small pink circle on the left"])
def test_parse_rejects_other_text_with_a_clear_message(text):
    with pytest.raises(ValueError, match="cannot parse shapes caption"):
        parse_caption(text)


def test_spec_json_round_trip_and_validation():
    for spec in (RED_LEFT, BLUE_ABOVE_GREEN):
        assert SceneSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError):
        SceneSpec((ShapeObject("red", "circle", "small"),), relation="above")
    with pytest.raises(ValueError):
        ShapeObject("pink", "circle", "small")
    with pytest.raises(ValueError):
        SceneSpec.from_json('{"objects": [], "position": "left", "colour": "red"}')
