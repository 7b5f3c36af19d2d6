"""CLOCS: contrastive learning of cardiac signals across space, time and patients.

Kiyasseh, Zhu & Clifton 2021, "CLOCS: Contrastive learning of cardiac signals across space, time, and
patients", ICML 2021 (arXiv 2005.13249). Each ECG gives V views without augmentation:

- ``"cmsc"`` (contrastive multi-segment coding): V temporally adjacent, non-overlapping segments of one
  recording (the paper: 2 × 2500 samples);
- ``"cmlc"`` (multi-lead coding): V leads of the same segment, each encoded on its own (the paper: 4
  leads);
- ``"cmsmlc"`` (multi-segment multi-lead): every (segment, lead) combination is a view, V = S·L; pass
  z as (B, V, D) or (B, S, L, D).

For every pair of views (A, B) the loss contrasts the B × B cosine-similarity matrix s_ij = cos(v_i^A,
v_j^B) / τ (τ = 0.1), and *positives share the patient id*: the diagonal (the same ECG) and every other
ECG of the same patient in the batch (paper's eqs. 2–3). In the grouped form used here,

    ℓ^{AB}_i = log Σ_j exp(s_ij) − (1/|P(i)|) Σ_{p ∈ P(i)} s_ip,    P(i) = { j : pid_j = pid_i } ∋ i
    L = mean over ordered view pairs (A ≠ B) of mean_i ℓ^{AB}_i         (= mean of ½(ℓ^{AB} + ℓ^{BA}))

The paper averages its diagonal and off-diagonal terms separately; here each row averages over all of
its positives (SupCon's L_out), which coincides with the paper when no patient repeats in the batch. All
view pairs are computed in one grouped-InfoNCE launch (groups = ordered view pair).

The official code (github.com/danikiyasseh/CLOCS, ``obtain_contrastive_loss``) does not average over view
pairs for these modes: inside its loop over view pairs it *assigns* the CMSC/CMLC/CMSMLC loss
(``loss = loss_diag1 + loss_diag2``, not ``+=``) and divides by the number of pairs at the end, so only
the last pair counts, scaled by 1/(number of pairs). With CMSC's two segments (one pair) that is the
mean over pairs written above; with CMLC's 4 leads (6 pairs) or CMSMLC it is not, and figures of the
official CMLC/CMSMLC are not comparable with this module's (nor with the paper's definition) there.
"""

from __future__ import annotations

import torch

from clinseq.errors import ShapeError
from clinseq.models import l2_normalize
from clinseq.objectives._common import check_choice, check_embeddings, check_ids, retrieval_top1
from clinseq.objectives.base import ContrastiveObjective, LossOutput

__all__ = ["CLOCS"]

MODES = ("cmsc", "cmlc", "cmsmlc")


class CLOCS(ContrastiveObjective):
    """``forward(z (B, V, D) [or (B, S, L, D) for cmsmlc], patient_ids (B,)) -> LossOutput``.

    Metrics: ``loss``, ``pos_cosine`` (mean cosine between the views of the same ECG), ``top1`` (the
    nearest key of the other view belongs to the same patient).
    """

    def __init__(self, mode: str = "cmsc", temperature: float = 0.1, **kwargs) -> None:
        super().__init__(temperature, **kwargs)
        check_choice("mode", mode, MODES)
        self.mode = mode

    def forward(self, z: torch.Tensor, patient_ids: torch.Tensor) -> LossOutput:
        if self.mode == "cmsmlc" and isinstance(z, torch.Tensor) and z.ndim == 4:
            z = z.flatten(1, 2)  # (B, S, L, D) -> (B, S·L, D): every (segment, lead) is a view
        check_embeddings("CLOCS", "z", z, "(B, V, D)", 3)
        b, v, d = z.shape
        if v < 2:
            raise ShapeError(
                f"CLOCS ({self.mode}) needs at least 2 views per ECG (segments and/or leads), got V={v} in "
                f"z of shape {tuple(z.shape)}"
            )
        pid = check_ids("CLOCS", "patient_ids", patient_ids, b, z)
        u = l2_normalize(z)
        # Ordered pairs (a, b), a ≠ b: queries view a, keys view b, one group per pair.
        va, vb = torch.meshgrid(torch.arange(v), torch.arange(v), indexing="ij")
        off = va != vb
        va, vb = va[off].to(z.device), vb[off].to(z.device)
        n_pairs = va.shape[0]
        q = u[:, va].transpose(0, 1).reshape(n_pairs * b, d)  # row (pair, item)
        k = u[:, vb].transpose(0, 1).reshape(n_pairs * b, d)
        groups = torch.arange(n_pairs, device=z.device).repeat_interleave(b)
        ids = pid.repeat(n_pairs)
        keys, key_ids, key_groups = self._gather(k, ids, groups)
        loss = self._nce(
            q, keys, ids, key_ids, exclude_self=False, q_groups=groups, k_groups=key_groups, normalized=True
        )
        with torch.no_grad():
            pos_cos = (q.float() * k.float()).sum(dim=-1).mean()
        metrics = {"loss": loss.detach(), "pos_cosine": pos_cos}
        if self.track_accuracy:
            metrics["top1"] = retrieval_top1(
                q, k, ids, ids, exclude_self=False, q_groups=groups, k_groups=groups
            )
        return LossOutput(loss, metrics)
