"""EHR patient-window contrast: two windows of one patient's event timeline are positives.

The patient-level contrast of design §5 for EHR event streams (e.g. MIMIC-IV in MEDS form): for each of
B patients two windows of its timeline (``clinseq.data.event_sequences``) are encoded by the
``EventTransformer`` and projected; as in SimCLR/PCLR (Chen et al. 2020; Diamant et al. 2022) the 2B
l2-normalised rows are stacked and, with s_ij = z_i·z_j / τ,

    ℓ_i = log Σ_{j ≠ i} exp(s_ij) − (1/|P(i)|) Σ_{p ∈ P(i)} s_ip,   P(i) = other windows of i's patient
    L   = mean_i ℓ_i,   τ = 0.1

The positive set is defined by patient id, so a batch that holds a patient twice (or more windows per
patient, pass them stacked as ``z`` (N, D)) treats all of that patient's windows as positives rather than
as false negatives.
"""

from __future__ import annotations

import torch

from clinseq.models import l2_normalize
from clinseq.objectives._common import (
    check_embeddings,
    check_ids,
    check_same_shape,
)
from clinseq.objectives.base import ContrastiveObjective, LossOutput

__all__ = ["PatientWindowContrast"]


class PatientWindowContrast(ContrastiveObjective):
    """``forward(z1 (B, D), z2 (B, D), patient_ids (B,))`` — two windows per patient — or
    ``forward(z (N, D), None, patient_ids (N,))`` for any number of windows per patient.

    Metrics: ``loss``, ``pos_cosine`` (same-patient window pairs), ``top1``.
    """

    def __init__(self, temperature: float = 0.1, **kwargs) -> None:
        super().__init__(temperature, **kwargs)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor | None, patient_ids: torch.Tensor) -> LossOutput:
        name = "PatientWindowContrast"
        check_embeddings(name, "z1", z1, "(B, D)", 2)
        if z2 is not None:
            check_embeddings(name, "z2", z2, "(B, D)", 2)
            check_same_shape(name, "z1", z1, "z2", z2)
            pid = check_ids(name, "patient_ids", patient_ids, z1.shape[0], z1)
            z, ids = torch.cat([z1, z2]), torch.cat([pid, pid])
        else:
            z, ids = z1, check_ids(name, "patient_ids", patient_ids, z1.shape[0], z1, "N")
        u = l2_normalize(z)
        return self._self_contrast(u, ids)
