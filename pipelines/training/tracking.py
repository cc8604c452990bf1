"""What a run shows besides weights: metrics in ``metrics.jsonl``, and tensorboard when installed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class CpuClock:
    """The run's CPU time in seconds: this process's (all its threads; a data-loader worker process is not
    counted), added to what the run had spent before it was resumed (``spent_before``)."""

    def __init__(self, spent_before: float = 0.0):
        self.spent_before = spent_before
        self.started = time.process_time()

    def seconds(self) -> float:
        return self.spent_before + time.process_time() - self.started


def resolve_trackers(report_to: str) -> list[str]:
    if report_to == "auto":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return []
        return ["tensorboard"]
    return [] if report_to in ("none", "") else [report_to]


class MetricsLog:
    """Appends one JSON line per logged step to ``output_dir/metrics.jsonl`` (main process only)."""

    def __init__(self, output_dir: str | os.PathLike, enabled: bool):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.enabled = enabled

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": step, "wall_time": round(time.time(), 3), **values}) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines from steps the resumed run will redo."""
        if self.enabled and self.path.exists():
            lines = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
            self.path.write_text("".join(line + "\n" for line in lines))
