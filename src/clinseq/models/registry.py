"""The encoder registry: ``model.encoder`` name → encoder class (the one place encoder names are written).

The config schema (:mod:`clinseq.train.config`) validates ``model.encoder`` against it and the builders
construct from it; adding an encoder is one entry here.
"""

from __future__ import annotations

from torch import nn

from clinseq.models.cpc import CPCEncoder
from clinseq.models.event_transformer import EventTransformer
from clinseq.models.long_conv import S4DEncoder, SGConvEncoder
from clinseq.models.patch_transformer import PatchTransformer
from clinseq.models.resnet1d import ResNet1d, XResNet1d

__all__ = ["ENCODERS"]

#: ``model.encoder`` → class. Waveform encoders take ``in_channels``; ``event_transformer`` takes the
#: ``vocab_size`` of an EHR store.
ENCODERS: dict[str, type[nn.Module]] = {
    "resnet1d": ResNet1d,
    "xresnet1d": XResNet1d,
    "cpc": CPCEncoder,
    "patch_transformer": PatchTransformer,
    "event_transformer": EventTransformer,
    "s4d": S4DEncoder,
    "sgconv": SGConvEncoder,
}
