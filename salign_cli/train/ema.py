"""An exponential moving average of a network's weights (the "EMA" and the mean teacher).

After every optimiser step, ``average = d · average + (1 − d) · weights`` for each parameter,
with ``d = min(decay, (1 + n) / (10 + n))`` after n updates: the warm-up of TensorFlow's
``ExponentialMovingAverage(num_updates=…)``, without which a short run would export an average
still dominated by the random initialisation (0.99⁶⁰ = 0.55 after 60 steps). Buffers (batch-norm running statistics) are copied, as timm's ``ModelEmaV2`` and the
mean-teacher papers do, because a running mean of running means lags behind the weights it
belongs to. The average is a frozen copy inside the training module, so it is saved and restored
with every checkpoint and resumes exactly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage(nn.Module):
    """A frozen copy of ``model`` that follows it with `update`.

    Example::

        average = WeightAverage(unet, decay=0.99)
        ...  # optimizer.step()
        average.update(unet)
        average.model(x)   # predictions of the averaged weights
    """

    updates: torch.Tensor

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        # a buffer, so a resumed run continues the warm-up where it was
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def current_decay(self) -> float:
        """The decay the next update uses (see the module docstring)."""
        done = int(self.updates)
        return min(self.decay, (1 + done) / (10 + done))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s current weights."""
        decay = self.current_decay()
        for average, current in zip(self.model.parameters(), model.parameters(), strict=True):
            average.lerp_(current.detach(), 1.0 - decay)
        for average_buffer, buffer in zip(self.model.buffers(), model.buffers(), strict=True):
            average_buffer.copy_(buffer)
        self.updates += 1

    def train(self, mode: bool = True) -> WeightAverage:
        """The average always stays in eval mode (its norms use running statistics)."""
        super().train(False)
        return self
