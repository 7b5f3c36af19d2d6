"""Symmetric CLIP loss between two paired sets of embeddings, and cross-modal ECG ↔ EHR alignment.

Radford et al. 2021, "Learning transferable visual models from natural language supervision" (arXiv
2103.00020): for B pairs (a_i, b_i) of l2-normalised embeddings of two modalities and s_ij = a_i·b_j / τ,

    L = ½ [ mean_i CE(softmax_j s_ij, i) + mean_j CE(softmax_i s_ij, j) ]

CLIP learns τ as a logit scale log(1/τ) initialised at 1/0.07 and clipped at 100; ``learnable_temperature``
does the same (τ ≥ 0.01), else τ is fixed. Positives are given by ids: the pair index by default, or
patient ids (``patient_ids=``), so that two pairs of the same patient in a batch are positives of each
other instead of false negatives (rows then average over their positives, SupCon's L_out).

:class:`CrossModalCLIP` aligns an ECG embedding with the embedding of the same patient's EHR context
(events before the ECG, from the same timeline store: design §2) — e.g. ``ResNet1d`` + projection for the
ECG and ``EventTransformer`` + projection for the EHR side, both projected to the same D. Defaults follow
CLIP: τ = 0.07, learnable.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clinseq.errors import ConfigError
from clinseq.models import l2_normalize
from clinseq.objectives._common import (
    check_embeddings,
    check_ids,
    check_same_shape,
    mean_pair_cosine,
    retrieval_top1,
)
from clinseq.objectives.base import ContrastiveObjective, LossOutput
from clinseq.objectives.distributed import rank

__all__ = ["CLIPObjective", "CrossModalCLIP"]

#: CLIP clips the logit scale 1/τ at 100.
MAX_LOGIT_SCALE = 100.0


class CLIPObjective(ContrastiveObjective):
    """Symmetric CLIP loss over paired embeddings; base of :class:`CrossModalCLIP` and ``EBCL``.

    ``forward(a (B, D), b (B, D), patient_ids=None) -> LossOutput``. Metrics: ``loss``,
    ``pos_cosine`` (mean cosine of the pairs), ``top1`` (a → b retrieval accuracy), ``temperature``.
    """

    _names = ("a", "b")

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = True, **kwargs) -> None:
        super().__init__(temperature, **kwargs)
        self.learnable_temperature = bool(learnable_temperature)
        if self.learnable_temperature:
            if temperature < 1.0 / MAX_LOGIT_SCALE:
                raise ConfigError(
                    f"a learnable temperature starts at >= {1.0 / MAX_LOGIT_SCALE} (CLIP clips 1/τ at "
                    f"{MAX_LOGIT_SCALE:g}), got {temperature}; raise it or pass learnable_temperature=False"
                )
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        else:
            self.register_parameter("logit_scale", None)

    def tau(self) -> float | torch.Tensor:
        if self.logit_scale is None:
            return self.temperature
        return torch.exp(-self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)))

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, patient_ids: torch.Tensor | None = None
    ) -> LossOutput:
        owner, (na, nb) = type(self).__name__, self._names
        check_embeddings(owner, na, a, "(B, D)", 2)
        check_embeddings(owner, nb, b, "(B, D)", 2)
        check_same_shape(owner, na, a, nb, b)
        n = a.shape[0]
        ua, ub = l2_normalize(a), l2_normalize(b)
        if patient_ids is None:
            ids = torch.arange(n, device=a.device)
            if self._distributed:  # pair indices must stay distinct across ranks
                ids = ids + rank() * n
        else:
            ids = check_ids(owner, "patient_ids", patient_ids, n, a)
        tau = self.tau()
        if isinstance(tau, torch.Tensor):
            tau = tau.to(a.device)
        loss = self._cross_view(ua, ub, ids, ids, temperature=tau)
        metrics = {
            "loss": loss.detach(),
            "pos_cosine": mean_pair_cosine(a, b),
            "temperature": tau.detach() if isinstance(tau, torch.Tensor) else tau,
        }
        if self.track_accuracy:
            metrics["top1"] = retrieval_top1(ua, ub, ids, ids, exclude_self=False)
        return LossOutput(loss, metrics)


class CrossModalCLIP(CLIPObjective):
    """ECG ↔ EHR-context alignment: ``forward(z_ecg (B, D), z_ehr (B, D), patient_ids=None)``.

    Row i of both inputs must come from the same patient (the ECG and the EHR context up to its time).
    Defaults: τ = 0.07, learnable (CLIP).
    """

    _names = ("z_ecg", "z_ehr")

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = True, **kwargs) -> None:
        super().__init__(temperature, learnable_temperature, **kwargs)
