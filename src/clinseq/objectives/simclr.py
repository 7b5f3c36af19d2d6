"""SimCLR / NT-Xent: two augmented views of each item; the other view is the only positive.

Chen et al. 2020, "A simple framework for contrastive learning of visual representations" (arXiv
2002.05709), eq. 1. For a batch of B items and their two views z¹, z² (projections, l2-normalised here),
stack u = [z¹; z²] (2B rows) and, with s_ij = u_i·u_j / τ,

    ℓ_i = −log( exp(s_{i,p(i)}) / Σ_{j ≠ i} exp(s_ij) ),      p(i) = the other view of item i
    L   = (1 / 2B) Σ_i ℓ_i

Every other row of the stacked batch (both views of the other B − 1 items) is a negative. Default τ =
0.1 (design §5). Under DDP the negatives are the views of the global batch (see ``distributed``).
"""

from __future__ import annotations

import torch

from clinseq.models import l2_normalize
from clinseq.objectives._common import check_embeddings, check_same_shape, mean_pair_cosine, retrieval_top1
from clinseq.objectives.base import ContrastiveObjective, LossOutput

__all__ = ["SimCLR"]


class SimCLR(ContrastiveObjective):
    """NT-Xent over two views. ``forward(z1 (B, D), z2 (B, D)) -> LossOutput``.

    Metrics: ``loss``, ``pos_cosine`` (mean cosine of the paired views), ``top1`` (fraction of rows
    whose nearest other row is their other view; with ``track_accuracy``).
    """

    def __init__(self, temperature: float = 0.1, **kwargs) -> None:
        super().__init__(temperature, **kwargs)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_embeddings("SimCLR", "z1", z1, "(B, D)", 2)
        check_embeddings("SimCLR", "z2", z2, "(B, D)", 2)
        check_same_shape("SimCLR", "z1", z1, "z2", z2)
        b = z1.shape[0]
        u = l2_normalize(torch.cat([z1, z2]))
        idx = torch.arange(b, device=u.device)
        ids = torch.cat([idx, idx])
        # Local-first gathering (under DDP) keeps row i of u at key column i, so exclude_self stays valid.
        keys, key_ids = self._gather_instances(u, ids, b)
        loss = self._nce(u, keys, ids, key_ids, exclude_self=True, normalized=True)
        metrics = {"loss": loss.detach(), "pos_cosine": mean_pair_cosine(z1, z2)}
        if self.track_accuracy:
            metrics["top1"] = retrieval_top1(u, u, ids, ids, exclude_self=True)
        return LossOutput(loss, metrics)
