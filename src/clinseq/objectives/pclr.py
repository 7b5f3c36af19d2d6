"""PCLR: patient contrastive learning — different recordings of one patient are positives.

Diamant et al. 2022, "Patient contrastive learning: a performant, expressive, and practical approach to
electrocardiogram modeling", PLOS Comput. Biol. 18(2):e1009862. SimCLR's NT-Xent with the views replaced
by *different ECGs of the same patient* (no augmentation). The paper's batches hold pairs of ECGs of
distinct patients, so each row has exactly one positive; here any number of recordings per patient is
allowed and a row's positives are all other rows of its patient (SupCon's L_out, Khosla et al. 2020):

    ℓ_i = log Σ_{j ≠ i} exp(s_ij) − (1/|P(i)|) Σ_{p ∈ P(i)} s_ip,   P(i) = { j ≠ i : pid_j = pid_i }
    L   = mean of ℓ_i over rows with |P(i)| ≥ 1

with s_ij = z_i·z_j / τ on l2-normalised projections, τ = 0.1 (the paper's value). With exactly two
recordings per patient this is the paper's loss. Rows whose patient has no other recording in the batch
are skipped (they still act as negatives). The paper's encoder is a Ribeiro-style ResNet (kernel 16,
320-d, global average pooling) with a 320 → 320 projection on 10 s 12-lead ECGs
(``clinseq.models.resnet1d_pclr``, ``ProjectionHead(320, 320, 320, n_layers=1, norm=None)``).
"""

from __future__ import annotations

import torch

from clinseq.models import l2_normalize
from clinseq.objectives._common import check_embeddings, check_ids
from clinseq.objectives.base import ContrastiveObjective, LossOutput

__all__ = ["PCLR"]


class PCLR(ContrastiveObjective):
    """Patient-level NT-Xent. ``forward(z (N, D), patient_ids (N,)) -> LossOutput``.

    Metrics: ``loss``, ``pos_cosine`` (mean cosine over same-patient pairs), ``top1`` (fraction of rows
    whose nearest other row is of the same patient, among rows that have one).
    """

    def __init__(self, temperature: float = 0.1, **kwargs) -> None:
        super().__init__(temperature, **kwargs)

    def forward(self, z: torch.Tensor, patient_ids: torch.Tensor) -> LossOutput:
        check_embeddings("PCLR", "z", z, "(N, D)", 2)
        ids = check_ids("PCLR", "patient_ids", patient_ids, z.shape[0], z, "N")
        u = l2_normalize(z)
        return self._self_contrast(u, ids)  # patient ids are global: no offset
