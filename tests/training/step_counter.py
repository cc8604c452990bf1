"""Counting (and interrupting) a stage's training steps, for the resume tests."""

from __future__ import annotations

import pytest

from tessera.pipelines.training.prior import PriorStage


def counting_train_steps(patch: pytest.MonkeyPatch, crash_after: int | None = None, stage: type = PriorStage
                         ) -> list[int]:
    """Count a stage's micro-batch steps (the list grows by one per step; the prior stage by default); with
    ``crash_after``, raise ``KeyboardInterrupt`` on the step after that many, as a kill would stop the run."""
    original, calls = stage.train_step, []

    def counted(self, loop, batch, step):
        calls.append(step)
        if crash_after is not None and len(calls) > crash_after:
            raise KeyboardInterrupt(f"simulated crash after {crash_after} steps")
        return original(self, loop, batch, step)

    patch.setattr(stage, "train_step", counted)
    return calls
