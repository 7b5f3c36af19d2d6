"""A single-channel encoder applied to every lead of a multi-lead signal (CLOCS' lead views)."""

from __future__ import annotations

import torch
from torch import nn

from clinseq.models.base import Encoder

__all__ = ["PerLeadEncoder"]


class PerLeadEncoder(Encoder):
    """A single-channel encoder applied to every lead; the embedding is the mean over leads.

    CLOCS' multi-lead modes encode each lead on its own; for the probe, the recording's embedding is the
    average of its leads' embeddings. ``embed`` is :meth:`Encoder.embed` (eval mode, no gradients).
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.embed_dim = inner.embed_dim

    def per_lead(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, C, D): each lead encoded as a 1-channel signal."""
        b, c, t = x.shape
        return self.inner(x.reshape(b * c, 1, t)).view(b, c, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, D): the mean of the leads' embeddings."""
        return self.per_lead(x).mean(dim=1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)
