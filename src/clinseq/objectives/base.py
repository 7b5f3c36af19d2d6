"""What every objective returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    """A scalar ``loss`` to backpropagate and detached ``metrics`` (floats or 0-d tensors) to log.

    Metrics stay tensors in the hot path (no ``.item()`` host syncs); the train loop converts them
    when it logs.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
