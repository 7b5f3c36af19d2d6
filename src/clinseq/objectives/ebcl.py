"""EBCL: event-based contrastive learning — pre- and post-event windows around an index event.

Jeong, Oufattole et al. 2024, "Event-based contrastive learning for medical time series" (MLHC 2024,
arXiv 2312.10308). For each of B index events (e.g. an inpatient admission) the patient's data in a window
before the event and in a window after it are encoded; the pre/post embeddings of the same event are a
positive pair and the windows around other patients' events are negatives, with CLIP's symmetric loss
(see :mod:`clinseq.objectives.clip`):

    L = ½ [ mean_i CE(softmax_j pre_i·post_j/τ, i) + mean_j CE(softmax_i pre_i·post_j/τ, j) ]

on l2-normalised projections. The paper does not fix the temperature in a form we could confirm; we fix
τ = 0.1 (as the other objectives here), not learnable by default (``learnable_temperature=True`` learns it
as CLIP does). Pass ``patient_ids`` when a batch may hold two events of one patient, so that they are not
treated as negatives of each other.
"""

from __future__ import annotations

from clinseq.objectives.clip import CLIPObjective

__all__ = ["EBCL"]


class EBCL(CLIPObjective):
    """``forward(z_pre (B, D), z_post (B, D), patient_ids=None) -> LossOutput`` (symmetric CLIP)."""

    _names = ("z_pre", "z_post")

    def __init__(self, temperature: float = 0.1, learnable_temperature: bool = False, **kwargs) -> None:
        super().__init__(temperature, learnable_temperature, **kwargs)
