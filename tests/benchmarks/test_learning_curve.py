"""benchmarks.learning_curve: a tiny prior run's snapshots judged end to end (table, plot, per-snapshot cache),
every K-th snapshot, the tokenizer ceiling, and a run without snapshots refused."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from benchmarks.emoji_quality import EmojiJudge
from benchmarks.learning_curve import Snapshot, every_kth, main
from tessera.pipelines.training.prior import train_prior
from tests.benchmarks.test_emoji_quality import write_split
from tests.training.conftest import make_tiny_config, tokens  # noqa: F401  (tokens: the module fixture)

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")


@pytest.fixture()
def snapshot_run(tokens, tmp_path):  # noqa: F811
    vqgan, token_dir = tokens
    train_prior(make_tiny_config(tmp_path / "run", vqgan, token_dir, "masked", max_train_steps=10, snapshot_steps=5,
                                 validation_steps=1000))
    return tmp_path / "run", vqgan


@pytest.fixture()
def emoji_data(tmp_path):
    write_split(tmp_path / "data" / "train", ["red apple", "red apple", "cat face", "pizza", "flag: Japan"])
    write_split(tmp_path / "data" / "test", ["hot beverage", "rocket"])
    return tmp_path / "data"


def test_every_snapshot_is_judged_once_and_plotted(snapshot_run, emoji_data, tmp_path, capsys, monkeypatch):
    pytest.importorskip("efficientnet_lite_pytorch")
    run, vqgan = snapshot_run
    argv = [str(run), "--names", "tiny", "--data", str(emoji_data), "--num_prompts", "3", "--output_dir",
            str(tmp_path / "curve"), "--cache_dir", str(tmp_path / "cache"), "--ceiling", str(vqgan)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "curve" / "learning_curve.json").read_text())
    assert [point["step"] for point in result["points"]] == [5, 10]
    hours = [point["cpu_hours"] for point in result["points"]]
    assert 0 < hours[0] <= hours[1]
    for point in result["points"]:
        assert 0 <= point["training_names/top1"] <= point["training_names/top5"] <= 1 and point["fd"] > 0
        assert point["fd_seen"] > 0
    assert 0 <= result["ceiling"]["held_out_emoji/top5"] <= 1 and result["ceiling"]["fd"] > 0
    table = (tmp_path / "curve" / "learning_curve.md").read_text()
    assert "| tiny | 5 |" in table and "tokenizer ceiling" in table
    assert Image.open(tmp_path / "curve" / "learning_curve.png").size == (980, 380)
    cache = run / "snapshots" / "step-0000005" / "judged.json"
    stamp = cache.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv[:-2]) == 0  # judged again with the same settings: read from the cache beside the snapshot
    assert cache.stat().st_mtime_ns == stamp
    assert main([*argv[:-2], "--num_prompts", "2"]) == 0  # other settings: judged anew
    assert json.loads(cache.read_text())["settings"]["num_prompts"] == 2
    stamp = cache.stat().st_mtime_ns
    judge, seen = EmojiJudge.judge, []
    monkeypatch.setattr(EmojiJudge, "judge",
                        lambda self, pipe, **kw: seen.append(kw["options"]) or judge(self, pipe, **kw))
    assert main([*argv[:-2], "--num_prompts", "2", "--sampling", "guidance_scale=1,temperature=0.5"]) == 0
    assert seen and all(options == {"guidance_scale": 1, "temperature": 0.5} for options in seen)  # reach the calls
    [other] = (run / "snapshots" / "step-0000005").glob("judged-*.json")  # kept apart from the default's
    assert json.loads(other.read_text())["settings"]["sampling"] == {"guidance_scale": 1, "temperature": 0.5}
    assert cache.stat().st_mtime_ns == stamp


def test_every_kth_keeps_the_last_snapshot():
    snapshots = [Snapshot("run", None, step, step / 10) for step in (5, 10, 15, 20, 25)]
    assert [snapshot.step for snapshot in every_kth(snapshots, 2)] == [5, 15, 25]
    assert [snapshot.step for snapshot in every_kth(snapshots, 3)] == [5, 20, 25]


def test_a_run_without_snapshots_is_refused(emoji_data, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main([str(tmp_path / "run"), "--data", str(emoji_data), "--output_dir", str(tmp_path / "out")]) == 2
    assert "--snapshot_steps" in capsys.readouterr().err
