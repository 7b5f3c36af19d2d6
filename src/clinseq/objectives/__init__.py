"""Contrastive objectives (design §5): one small module per objective, all over one primitive.

Every similarity/softmax computation goes through :func:`clinseq.kernels.grouped_info_nce` (fused Triton
on CUDA, chunked torch elsewhere); every ``forward`` returns :class:`LossOutput` ``(loss, metrics)`` with
detached tensor metrics (no host sync). Embeddings are l2-normalised inside where the objective uses
cosine similarity.

=========================  =====================================================================
``SimCLR``                 NT-Xent over two views (Chen et al. 2020); τ = 0.1
``PCLR``                   recordings of one patient are positives (Diamant et al. 2022); τ = 0.1
``PolyWindow``             M windows of one recording: all-pairs or leave-one-out-mean (Yuan et al. 2025)
``COMET``                  observation / sample / trial / patient levels (Wang et al. 2023)
``PMQ``                    momentum keys + patient memory queue, L = τ(L_inst + L_pat) (Sun et al. 2025)
``CPC``                    K linear predictors of future frames, batch negatives (van den Oord et al. 2018)
``CLOCS``                  CMSC / CMLC / CMSMLC, positives share the patient (Kiyasseh et al. 2021)
``SupCon``                 labels as ids (Khosla et al. 2020)
``MoCo``                   momentum keys + FIFO queue (He et al. 2020)
``PatientWindowContrast``  EHR: two windows of one patient's timeline are positives
``EBCL``                   EHR: pre-/post-event windows, symmetric CLIP (Jeong et al. 2024)
``CrossModalCLIP``         ECG ↔ EHR-context alignment, symmetric CLIP (Radford et al. 2021)
``KeyQueue``               ring buffer of keys (+ ids) for MoCo/PMQ, saved in ``state_dict``
``MomentumEncoder``        EMA copy of an encoder; ``ema_update(online, target, m)``
``gather_with_grad``       all-gather of keys with gradient for DDP (``objectives.distributed``)
=========================  =====================================================================
"""

from clinseq.objectives.base import ContrastiveObjective, LossOutput
from clinseq.objectives.clip import CLIPObjective, CrossModalCLIP
from clinseq.objectives.clocs import CLOCS
from clinseq.objectives.comet import COMET, LEVELS
from clinseq.objectives.cpc import CPC
from clinseq.objectives.distributed import gather_with_grad
from clinseq.objectives.ebcl import EBCL
from clinseq.objectives.ehr import PatientWindowContrast
from clinseq.objectives.moco import MoCo
from clinseq.objectives.momentum import MomentumEncoder, ema_update
from clinseq.objectives.pclr import PCLR
from clinseq.objectives.pmq import PMQ
from clinseq.objectives.polywindow import PolyWindow
from clinseq.objectives.queue import KeyQueue
from clinseq.objectives.simclr import SimCLR
from clinseq.objectives.supcon import SupCon

__all__ = [
    "CLIPObjective",
    "CLOCS",
    "COMET",
    "CPC",
    "ContrastiveObjective",
    "CrossModalCLIP",
    "EBCL",
    "KeyQueue",
    "LEVELS",
    "LossOutput",
    "MoCo",
    "MomentumEncoder",
    "PCLR",
    "PMQ",
    "PatientWindowContrast",
    "PolyWindow",
    "SimCLR",
    "SupCon",
    "ema_update",
    "gather_with_grad",
]
