"""The objective registry: name → objective class (the one place objective names are written).

The pretraining methods (:mod:`clinseq.train.methods`) hold their objective class itself; this mapping
names every objective for listings, benchmarks and tests (each method's objective is one of these).
"""

from __future__ import annotations

from torch import nn

from clinseq.objectives.clip import CrossModalCLIP
from clinseq.objectives.clocs import CLOCS
from clinseq.objectives.comet import COMET
from clinseq.objectives.cpc import CPC
from clinseq.objectives.ebcl import EBCL
from clinseq.objectives.ehr import PatientWindowContrast
from clinseq.objectives.moco import MoCo
from clinseq.objectives.pclr import PCLR
from clinseq.objectives.pmq import PMQ
from clinseq.objectives.polywindow import PolyWindow
from clinseq.objectives.simclr import SimCLR
from clinseq.objectives.supcon import SupCon

__all__ = ["OBJECTIVES"]

#: Objective name → class.
OBJECTIVES: dict[str, type[nn.Module]] = {
    "simclr": SimCLR,
    "pclr": PCLR,
    "polywindow": PolyWindow,
    "comet": COMET,
    "pmq": PMQ,
    "cpc": CPC,
    "clocs": CLOCS,
    "supcon": SupCon,
    "moco": MoCo,
    "patient_window_contrast": PatientWindowContrast,
    "ebcl": EBCL,
    "cross_modal_clip": CrossModalCLIP,
}
