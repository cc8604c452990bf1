"""benchmarks.emoji_grid: a row per prompt, the named real emoji beside seeded samples, reproducibly."""

from __future__ import annotations

from PIL import Image

from benchmarks.emoji_grid import draw_grid, read_prompts, real_images
from tests.benchmarks.test_emoji_quality import write_split
from tests.pipelines.tiny_pipelines import tiny_pipelines


def test_prompts_name_the_emoji_to_show(tmp_path):
    path = tmp_path / "prompts.tsv"
    path.write_text("a slice of pizza\tpizza\nred apple\n\n")
    assert read_prompts(path) == [("a slice of pizza", "pizza"), ("red apple", "red apple")]


def test_the_grid_shows_real_and_drawn_images_the_same_each_time(tmp_path):
    write_split(tmp_path / "train", ["red apple", "pizza"])
    write_split(tmp_path / "test", ["rocket"])
    reals = real_images(tmp_path, ["pizza", "rocket", "unicorn"])
    assert set(reals) == {"pizza", "rocket"} and reals["rocket"][1] and not reals["pizza"][1]
    pipe = tiny_pipelines()["masked"]
    pairs = [("a slice of pizza", "pizza"), ("rocket", "rocket"), ("a unicorn", "unicorn")]
    first = draw_grid(pipe, pairs, tmp_path, samples=3, seed=1, scale=2)
    again = draw_grid(pipe, pairs, tmp_path, samples=3, seed=1, scale=2)
    assert isinstance(first, Image.Image) and first.tobytes() == again.tobytes()
    assert first.height > 3 * 16  # three rows of 8x8 images scaled twice, and a header
