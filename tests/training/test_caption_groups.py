"""--group_pattern: captions grouped by what is left once the pattern's matches are removed, each group drawn as
often as one row, by step-indexed (resumable) weighted epochs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tessera.pipelines.training.batches import StepBatchSampler
from tessera.pipelines.training.caption_groups import group_weights
from tessera.pipelines.training.prior import PriorStage
from tessera.pipelines.training.prior_options import PriorDataOptions
from tests.training.conftest import make_tiny_config

SKIN_TONES = r"(:|,)? ?(light|medium-light|medium|medium-dark|dark) skin tone|(:|,)? ?(red|curly|white|blond) hair"


def test_variants_of_one_caption_share_one_rows_weight():
    captions = ["waving hand", "waving hand: dark skin tone", "waving hand: light skin tone", "red apple",
                "red apple", "person: medium skin tone, blond hair", "person"]
    weights = group_weights(captions, SKIN_TONES)
    assert weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 2, 1 / 2, 1 / 2])
    assert float(weights.sum()) == pytest.approx(3)  # three groups


def test_weighted_epochs_follow_the_weights_and_resume_exactly():
    weights = torch.tensor([0.0, 1.0, 1.0, 2.0])
    sampler = StepBatchSampler(4, 8, seed=0, start_step=0, end_step=400, weights=weights)
    batches = list(sampler)
    counts = Counter(row % 4 for batch in batches for row in batch)
    assert counts[0] == 0 and 1.7 < counts[3] / counts[1] < 2.3
    resumed = list(StepBatchSampler(4, 8, seed=0, start_step=250, end_step=400, weights=weights))
    assert resumed == batches[250:]


def test_weights_from_a_step_on_are_a_run_resumed_there_with_the_weights():
    weights = torch.tensor([0.0, 1.0, 1.0, 2.0])
    plain = list(StepBatchSampler(4, 3, seed=0, start_step=0, end_step=10))  # 3 rows a step: epochs straddle steps
    weighted = list(StepBatchSampler(4, 3, seed=0, start_step=0, end_step=10, weights=weights))
    switched = list(StepBatchSampler(4, 3, seed=0, start_step=0, end_step=10, weights=weights, weights_from_step=5))
    assert switched == plain[:5] + weighted[5:] and plain[:5] != weighted[:5]
    accumulated = StepBatchSampler(4, 3, seed=0, start_step=0, end_step=10, weights=weights, weights_from_step=5,
                                   accumulation=2)
    micro = list(accumulated)
    assert all(row % 4 != 0 for batch in micro[10:] for row in batch)  # micro-batches of step 5 on are weighted
    assert list(StepBatchSampler(4, 3, seed=0, start_step=7, end_step=10, weights=weights,
                                 weights_from_step=5)) == switched[7:]


def test_group_from_step_needs_a_pattern():
    with pytest.raises(ValueError, match="group_from_step"):
        PriorDataOptions(group_from_step=100)
    with pytest.raises(ValueError, match="group_from_step"):
        PriorDataOptions(group_pattern="x", group_from_step=-1)


@pytest.mark.parametrize("weights", [torch.zeros(4), torch.ones(3), torch.tensor([1.0, -1.0, 1.0, 1.0])])
def test_unusable_weights_are_refused(weights):
    with pytest.raises(ValueError, match="non-negative"):
        StepBatchSampler(4, 2, seed=0, start_step=0, end_step=1, weights=weights)


def test_a_pattern_that_is_no_regular_expression_is_refused():
    with pytest.raises(ValueError, match="group_pattern.*regular expression"):
        PriorDataOptions(group_pattern="(skin tone")


def test_the_prior_stage_draws_its_rows_by_group(tokens, tmp_path, caplog):
    vqgan, token_dir = tokens
    config = make_tiny_config(tmp_path / "run", vqgan, token_dir, "masked")
    config.data.group_pattern = r"\b(small|large) "  # scenes that differ only in size: one group
    stage = PriorStage(config)
    stage.load_data()
    captions = stage.train_rows["caption"]
    sampler = stage.train_sampler(StepBatchSampler(len(captions), 4, seed=0, start_step=0, end_step=1))
    groups = {caption.replace("small ", "").replace("large ", "") for caption in captions}
    assert sampler.weights is not None and float(sampler.weights.sum()) == pytest.approx(len(groups))
    assert len(groups) < len(captions) and sampler.weights_from_step == 0
    config.data.group_from_step = 30
    later = PriorStage(config)
    later.load_data()
    assert later.train_sampler(StepBatchSampler(len(captions), 4, seed=0, start_step=0, end_step=1)) \
        .weights_from_step == 30
    assert "never weighted" not in caplog.text  # the tiny run has 40 steps
    config.data.group_from_step = 40
    too_late = PriorStage(config)
    too_late.load_data()
    too_late.train_sampler(StepBatchSampler(len(captions), 4, seed=0, start_step=0, end_step=1))
    assert "group_from_step 40 is at or past the run's last step (40)" in caplog.text
