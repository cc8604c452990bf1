"""Step-indexed batches: processes and accumulation micro-batches slice one sequence; epochs reach the data
layer, so random flips change from epoch to epoch (also in DataLoader workers)."""

from __future__ import annotations

import torch

from tessera.pipelines.data import collate_image_captions, load_image_caption_data
from tessera.pipelines.training.batches import EpochDataset, MixedBatchSampler, StepBatchSampler, step_loader


def rows(sampler) -> list[list[int]]:
    return list(sampler)


def test_two_processes_and_two_micro_batches_see_the_same_rows():
    one = rows(StepBatchSampler(10, 3, seed=1, start_step=0, end_step=4, accumulation=2))
    ranks = [rows(StepBatchSampler(10, 3, seed=1, start_step=0, end_step=4, process_index=p, num_processes=2))
             for p in (0, 1)]
    assert one == [batch for step in zip(*ranks) for batch in step]


def test_resuming_at_a_step_gives_the_remaining_batches():
    full = rows(StepBatchSampler(7, 4, seed=0, start_step=0, end_step=6, accumulation=2))
    assert rows(StepBatchSampler(7, 4, seed=0, start_step=2, end_step=6, accumulation=2)) == full[4:]


def test_indices_carry_the_epoch_and_cover_each_epoch_once():
    indices = [i for batch in StepBatchSampler(5, 5, seed=0, start_step=0, end_step=3) for i in batch]
    for epoch in range(3):
        assert sorted(indices[5 * epoch: 5 * epoch + 5]) == list(range(5 * epoch, 5 * epoch + 5))


def test_mixed_batches_index_the_concatenation():
    mixed = MixedBatchSampler(StepBatchSampler(6, 4, seed=0, start_step=0, end_step=5), 3, 0.25)
    for batch in mixed:
        assert all(0 <= i < 6 for i in batch[:3]) and all(6 <= i < 9 for i in batch[3:])


def test_random_flips_change_with_the_epoch_in_dataloader_workers(isolated_datasets_cache):
    data = load_image_caption_data("shapes:num_samples=16", resolution=16, random_flip=True, seed=0)
    dataset = EpochDataset(data, data.example)
    sampler = StepBatchSampler(16, 16, seed=0, start_step=0, end_step=3)
    loader = step_loader(dataset, sampler, collate_image_captions, num_workers=1)
    epochs = [batch for batch in loader]  # one batch = one epoch, rows in another order each time
    by_id = [dict(zip(batch["source_id"], batch["pixel_values"])) for batch in epochs]
    flipped = [sum(not torch.equal(by_id[0][key], by_id[e][key]) for key in by_id[0]) for e in (1, 2)]
    assert all(count > 0 for count in flipped)  # some rows flip differently in later epochs
    again = data.example(3, 1)
    assert torch.equal(again["pixel_values"], by_id[1][again["source_id"]])  # (row, epoch) decides it
