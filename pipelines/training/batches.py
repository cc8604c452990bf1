"""Batches indexed by global step, so that a resumed run sees exactly the batches an uninterrupted run would
have seen, and each process and each gradient-accumulation micro-batch takes its own slice.

Epoch ``e`` visits the rows in ``randperm(num_rows)`` seeded by ``(seed, e)``; these orders, one after the
other, form an endless sequence of rows. With ``weights`` (one per row), an epoch is instead ``num_rows`` rows
drawn with replacement in proportion to them (``torch.multinomial``, seeded the same way): e.g. groups of
near-copies weighted down to the share of one row. With ``weights_from_step`` the steps before it take their rows
from the unweighted orders (a run that changes its weights at that step is the same run as one resumed there with
the new weights). Optimizer step ``s`` takes ``batch_size * accumulation * processes``
consecutive rows of it: micro-batch ``m`` of process ``p`` takes the ``batch_size`` rows at position
``((s * accumulation + m) * processes + p) * batch_size``. So one process with ``accumulation = 2`` sees the
same rows per step as two processes without accumulation.

The samplers yield *virtual* row indices ``epoch * num_rows + row``. ``EpochDataset`` turns them back into the
row and hands the epoch to the data layer, so random crops and flips (a function of ``(seed, epoch,
source_id)``) change every epoch, in the main process and in DataLoader workers alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class StepBatchSampler:
    """Yields this process's ``batch_size`` virtual row indices for each micro-batch of each optimizer step
    from ``start_step`` to ``end_step`` (``accumulation`` micro-batches per step)."""

    def __init__(self, num_rows: int, batch_size: int, *, seed: int, start_step: int, end_step: int,
                 process_index: int = 0, num_processes: int = 1, accumulation: int = 1,
                 weights: torch.Tensor | None = None, weights_from_step: int = 0):
        if num_rows <= 0:
            raise ValueError("cannot sample batches from an empty dataset")
        if weights is not None and (weights.shape != (num_rows,) or not bool((weights >= 0).all())
                                    or not float(weights.sum()) > 0):
            raise ValueError(f"weights must be {num_rows} non-negative numbers, not all 0")
        self.num_rows, self.batch_size, self.seed, self.weights = num_rows, batch_size, seed, weights
        self.weights_from_step = weights_from_step
        self.start_step, self.end_step = start_step, end_step
        self.process_index, self.num_processes, self.accumulation = process_index, num_processes, accumulation

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step) * self.accumulation

    def _epoch_order(self, epoch: int, weighted: bool) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if weighted:
            return torch.multinomial(self.weights.double(), self.num_rows, replacement=True, generator=generator)
        return torch.randperm(self.num_rows, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        cached, order = None, None
        for micro in range(self.start_step * self.accumulation, self.end_step * self.accumulation):
            first = (micro * self.num_processes + self.process_index) * self.batch_size
            weighted = self.weights is not None and micro // self.accumulation >= self.weights_from_step
            rows = []
            for position in range(first, first + self.batch_size):
                epoch = position // self.num_rows
                if (epoch, weighted) != cached:
                    cached, order = (epoch, weighted), self._epoch_order(epoch, weighted)
                rows.append(epoch * self.num_rows + int(order[position % self.num_rows]))
            yield rows


class MixedBatchSampler:
    """Batches of ``StepBatchSampler`` rows with ``round(fraction * batch_size)`` of each replaced by rows of a
    second dataset stored after the first: fine-tuning on new data while replaying a share of the original.
    Both parts are step-indexed, so resuming stays exact. Yields plain row indices into the concatenation."""

    def __init__(self, base: StepBatchSampler, num_replay_rows: int, fraction: float):
        num_replay = round(base.batch_size * fraction)
        if not 0 <= num_replay < base.batch_size:
            raise ValueError(f"a replay fraction of {fraction} leaves no new rows in a batch of {base.batch_size}")
        self.seed = base.seed
        self.offset = base.num_rows
        common = dict(seed=base.seed, start_step=base.start_step, end_step=base.end_step,
                      process_index=base.process_index, num_processes=base.num_processes,
                      accumulation=base.accumulation)
        self.new = StepBatchSampler(base.num_rows, base.batch_size - num_replay, weights=base.weights,
                                    weights_from_step=base.weights_from_step, **common)
        self.replay = (StepBatchSampler(num_replay_rows, num_replay, **{**common, "seed": base.seed + 1})
                       if num_replay else None)

    def __len__(self) -> int:
        return len(self.new)

    def __iter__(self) -> Iterator[list[int]]:
        replay = iter(self.replay) if self.replay is not None else itertools.repeat([])
        for rows, replayed in zip(self.new, replay):
            yield ([row % self.new.num_rows for row in rows]
                   + [self.offset + row % self.replay.num_rows for row in replayed])


class EpochDataset(Dataset):
    """Map-style view of ``dataset`` addressed by virtual indices ``epoch * len(dataset) + row``. With
    ``get_row`` (``(row, epoch) -> example``) each row is made for its epoch (new crops and flips); without,
    ``dataset[row]``."""

    def __init__(self, dataset: Any, get_row: Callable[[int, int], dict] | None = None):
        self.dataset, self.num_rows, self.get_row = dataset, len(dataset), get_row

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, index: int) -> dict:
        epoch, row = divmod(int(index), self.num_rows)
        return self.dataset[row] if self.get_row is None else self.get_row(row, epoch)


def step_loader(dataset, sampler: StepBatchSampler | MixedBatchSampler, collate_fn, num_workers: int = 0
                ) -> DataLoader:
    """A DataLoader over ``sampler``'s batches with a generator of its own: creating its iterator must not
    draw from the global RNG, or a resumed run (whose RNG state was restored) would drift from the original."""
    generator = torch.Generator().manual_seed(sampler.seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                      generator=generator)
