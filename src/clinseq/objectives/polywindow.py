"""Poly-window contrast: M windows of one recording are mutual positives.

Yuan et al. 2025, "Learning ECG representations via poly-window contrastive learning" (arXiv
2508.15225): several temporal windows are cut from each ECG (``PolyWindowSampler``: R recordings × M
windows, default M = 4 windows of 2.5 s, overlap allowed) and their agreement is maximised; the abstract
reports PTB-XL superclass AUROC 0.891 vs 0.888 for two-view training with 4× fewer epochs. The paper
maximises agreement "via statistics" and its exact loss was not available to us (design §5), so two
variants are provided; both use l2-normalised projections z and s = z·z' / τ, τ = 0.1.

``variant="all_pairs"`` (default): multi-positive InfoNCE over all N = R·M windows (SupCon's L_out with
ids = recording ids),

    ℓ_i = log Σ_{j ≠ i} exp(s_ij) − (1/|P(i)|) Σ_{p ∈ P(i)} s_ip,   P(i) = other windows of i's recording

so each window is pulled towards the other M − 1 and pushed from every window of the other recordings.

``variant="loo_mean"``: each window is contrasted with a *statistic* of its recording, the
leave-one-out mean of the other windows, m_i = normalise( Σ_{j ∈ r(i), j ≠ i} z_j / (M_r − 1) ). Window
i's only positive is m_i; its negatives are the leave-one-out means of the windows at the same position
(order of appearance within the recording) of the *other* recordings — comparing like with like and never
contrasting a window with a mean that contains it. The loss is symmetric (CLIP form):

    L = ½ [ mean_i ( log Σ_{j ∈ pos(i)} exp(z_i·m_j/τ) − z_i·m_i/τ )
          + mean_i ( log Σ_{j ∈ pos(i)} exp(m_i·z_j/τ) − m_i·z_i/τ ) ]

where pos(i) are the windows at i's position. Recordings with a single window in the batch have no
leave-one-out mean and are skipped (for ``all_pairs`` they act as negatives only).
"""

from __future__ import annotations

import torch

from clinseq.models import l2_normalize
from clinseq.objectives._common import (
    check_choice,
    check_embeddings,
    check_ids,
    group_structure,
    retrieval_top1,
)
from clinseq.objectives.base import ContrastiveObjective, LossOutput

__all__ = ["PolyWindow"]

VARIANTS = ("all_pairs", "loo_mean")


class PolyWindow(ContrastiveObjective):
    """``forward(z (N, D), recording_ids (N,)) -> LossOutput`` for N windows (M per recording).

    Args:
        temperature: τ (default 0.1).
        variant: "all_pairs" or "loo_mean" (see the module docstring).

    Metrics: ``loss``, ``pos_cosine`` (all_pairs: mean cosine of window pairs of one recording;
    loo_mean: mean cosine of each window with its leave-one-out mean), ``top1``.
    """

    def __init__(self, temperature: float = 0.1, variant: str = "all_pairs", **kwargs) -> None:
        super().__init__(temperature, **kwargs)
        check_choice("variant", variant, VARIANTS)
        self.variant = variant

    def forward(self, z: torch.Tensor, recording_ids: torch.Tensor) -> LossOutput:
        check_embeddings("PolyWindow", "z", z, "(N, D)", 2)
        rec = check_ids("PolyWindow", "recording_ids", recording_ids, z.shape[0], z, "N")
        u = l2_normalize(z)
        if self.variant == "all_pairs":
            return self._self_contrast(u, rec)

        rep, position, count = group_structure(rec)
        sums = torch.zeros_like(u).index_add_(0, rep, u)
        has_mean = count > 1
        loo = (sums[rep] - u) / (count - 1).clamp_min(1).to(u.dtype)[:, None]
        m = l2_normalize(loo)  # singletons: 0 / 1 = 0, normalised to 0 and excluded below
        # Windows of singleton recordings get key group -1 (no query is in it): never a candidate.
        key_groups = torch.where(has_mean, position, -1)
        loss = self._cross_view(u, m, rec, rec, a_groups=position, b_groups=key_groups)
        cos = (u * m).sum(dim=-1).detach().float()
        pos_cos = (cos * has_mean).sum() / has_mean.sum().clamp_min(1)
        metrics = {"loss": loss.detach(), "pos_cosine": pos_cos}
        if self.track_accuracy:
            metrics["top1"] = retrieval_top1(
                u, m, rec, rec, exclude_self=False, q_groups=position, k_groups=key_groups
            )
        return LossOutput(loss, metrics)
