"""An exponential moving average of a model's weights, checkpointed with the rest of the run."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Exponential moving average of a model: ``ema.model`` is a frozen copy used for validation and saving."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        step = int(self.num_updates)
        decay = min(self.decay, (1 + step) / (10 + step))  # warm up: early weights are forgotten fast
        source = model.state_dict()
        for name, average in self.model.state_dict().items():
            if average.dtype.is_floating_point:
                average.lerp_(source[name].to(average.dtype), 1 - decay)
            else:
                average.copy_(source[name])
