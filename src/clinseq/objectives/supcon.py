"""SupCon: supervised contrastive learning — items with the same label are positives.

Khosla et al. 2020, "Supervised contrastive learning" (arXiv 2004.11362), L^sup_out (eq. 2). The V views
of B items are stacked into N = B·V rows (anchors: every row, the paper's ``contrast_mode="all"``); with
s_ij = z_i·z_j / τ on l2-normalised projections,

    ℓ_i = −(1/|P(i)|) Σ_{p ∈ P(i)} log( exp(s_ip) / Σ_{a ≠ i} exp(s_ia) ),   P(i) = { p ≠ i : y_p = y_i }
    L   = mean of ℓ_i over rows with |P(i)| ≥ 1

(the other views of the same item are positives too, since they share its label). τ = 0.1 (the paper's
best value); the reference code's extra factor τ / τ_base is 1 for τ_base = τ and is omitted.
"""

from __future__ import annotations

import torch

from clinseq.errors import ShapeError
from clinseq.models import l2_normalize
from clinseq.objectives._common import check_embeddings, check_ids
from clinseq.objectives.base import ContrastiveObjective, LossOutput

__all__ = ["SupCon"]


class SupCon(ContrastiveObjective):
    """``forward(z (B, V, D) or (B, D), labels (B,)) -> LossOutput``; a 2-D z is one view per item.

    Labels are integer class ids (one label per item; multi-label targets need a single id per label
    set). Metrics: ``loss``, ``pos_cosine`` (same-label pairs), ``top1`` (nearest other row has the label).
    """

    def __init__(self, temperature: float = 0.1, **kwargs) -> None:
        super().__init__(temperature, **kwargs)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        if isinstance(z, torch.Tensor) and z.ndim == 2:
            z = z[:, None]
        if isinstance(z, torch.Tensor) and z.ndim not in (2, 3):
            raise ShapeError(f"SupCon expects z of shape (B, V, D) or (B, D), got {tuple(z.shape)}")
        check_embeddings("SupCon", "z", z, "(B, V, D)", 3)
        b, v, d = z.shape
        y = check_ids("SupCon", "labels", labels, b, z)
        u = l2_normalize(z.reshape(b * v, d))
        ids = y.repeat_interleave(v)
        return self._self_contrast(u, ids)
