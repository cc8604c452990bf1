"""The speed benchmarks run on CPU with tiny sizes: peers built at our size, FLOPs counted right, clear errors."""

import json

import pytest
import torch

from benchmarks import peer_speed, prior_train_mfu, prompt_robustness
from tessera.prior.config import prior_preset
from tessera.prior.kinds import build_prior


def last_json(text: str) -> dict:
    return json.loads(text[: text.rindex("}") + 1])


def test_peers_match_our_mlp_weights():
    config = prior_preset("cpu-small")
    inner = peer_speed.gated_inner_size(config)
    assert 3 * config.hidden_size * inner == 2 * config.hidden_size * int(config.hidden_size * config.mlp_ratio)
    llama = peer_speed.llama_model(config)
    assert (llama.config.hidden_size, llama.config.num_hidden_layers, llama.config.num_attention_heads) == (
        config.hidden_size, config.num_layers, config.num_heads)


def test_peer_speed_runs_every_case(capsys):
    assert peer_speed.main(["--preset", "tiny", "--repeats", "1", "--batch_size", "2", "--train_batch_size", "2"]) == 0
    out = capsys.readouterr().out
    results = last_json(out)["results"]
    assert [row["case"].split(",")[0] for row in results] == [
        "masked sampling", "autoregressive sampling", "masked training step", "autoregressive training step"]
    for row in results:
        assert row["ours_images_per_s"] > 0 and row["peer_images_per_s"] > 0 and row["ours_parameters"] > 0
    assert "| masked sampling, 8 steps |" in out


def test_peer_speed_refuses_unknown_cases(capsys):
    with pytest.raises(SystemExit):
        peer_speed.main(["--preset", "tiny", "--cases", "sampling,speed"])
    assert "unknown cases" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["autoregressive", "masked"])
def test_model_flops_are_the_flop_counter_plus_attention(kind):
    """On CPU torch's FlopCounterMode does not see the attention kernel: the rest must match exactly."""
    config = prior_preset("tiny", kind=kind)
    batch, context_tokens = 3, 5
    step = prior_train_mfu.make_step(build_prior(config), batch, context_tokens, torch.device("cpu"), torch.float32)
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        step()
    sequence = context_tokens + config.num_codes
    attention = 3 * batch * config.num_layers * 4 * sequence * sequence * config.hidden_size
    flops = prior_train_mfu.model_flops_per_step(config, batch, context_tokens)
    assert counter.get_total_flops() == flops - attention


def test_mfu_runs_on_cpu_without_a_peak(capsys):
    assert prior_train_mfu.main(["--preset", "tiny", "--steps", "1", "--warmup", "0", "--batch_size", "2"]) == 0
    results = last_json(capsys.readouterr().out)["results"]
    assert [row["kind"] for row in results] == ["autoregressive", "masked"]
    assert all("mfu" not in row and row["seconds_per_step"] > 0 for row in results)
    assert prior_train_mfu.peak_flops(torch.device("cpu"), torch.bfloat16, None) is None
    assert prior_train_mfu.peak_flops(torch.device("cpu"), torch.bfloat16, 100.0) == 100e12


def test_prompt_robustness_gives_one_seeded_prompt_per_scene_of_each_family():
    test, holdout = (prompt_robustness.scenes(split, 12, seed=0) for split in ("test", "holdout"))
    families = prompt_robustness.FAMILIES + prompt_robustness.ATTRIBUTE_FAMILIES
    for family in families:
        specs = prompt_robustness.specs_of(family, test, holdout)
        prompts = prompt_robustness.prompts_of(family, specs, seed=0)
        assert len(prompts) == len(specs) and all(isinstance(prompt, str) and prompt for prompt in prompts)
        assert prompts == prompt_robustness.prompts_of(family, specs, seed=0), family
    assert prompt_robustness.specs_of("holdout", test, holdout) == holdout
    training = prompt_robustness.prompts_of("training", test, seed=0)
    assert training != prompt_robustness.prompts_of("template", test, seed=0)


def test_prompt_robustness_underspecified_prompts_name_what_they_leave_unsaid():
    test = prompt_robustness.scenes("test", 40, seed=0)
    unsaid = prompt_robustness.unsaid_of("underspecified", test, seed=0)
    assert [len(u) for u in unsaid] == [1] * len(test)
    assert {u[0] for u in unsaid} == {"size", "color", "shape", "position", "relation"}
    assert prompt_robustness.unsaid_of("template", test, seed=0) == [()] * len(test)
    singles = prompt_robustness.specs_of("underspecified:position", test, [])
    assert singles and all(len(spec.objects) == 1 for spec in singles)
    prompts = prompt_robustness.prompts_of("underspecified:position", singles, seed=0)
    assert not any(word in prompt for prompt in prompts for word in ("left", "right", "top", "bottom", "middle", "center"))
