"""Encoders and heads (design §7).

Waveform encoders take x (B, C, T) float and return a pooled (B, embed_dim) embedding (``CPCEncoder``
returns ``CPCOutput(z, c)``); ``embed(x)`` gives the pooled embedding in eval mode without gradients.
``EventTransformer`` takes the EHR batch dict of ``clinseq.data.event_sequences``.

=========================  =========================================================================
``ResNet1d``               Ribeiro/PCLR ResNet; preset ``resnet1d_pclr`` (kernel 16, 320-d, GAP)
``XResNet1d``              xresnet1d-like bottleneck ResNet; presets ``xresnet1d50``, ``xresnet1d101``
``CPCEncoder``             strided convs → z, GRU/LSTM → c; preset ``cpc_mehari2022``
``PatchTransformer``       patch tokens, SDPA blocks, RoPE/learned positions, ``embed_chunked``
``S4DEncoder``             S4D diagonal state-space stack (residual or WaveNet), ``embed_chunked``
``SGConvEncoder``          SGConv global-convolution stack, SL-S4Wave WaveNet shape, ``embed_chunked``
``EventTransformer``       EHR events: code + log time-delta + value embeddings, masked mean pool
``PerLeadEncoder``         a 1-channel encoder applied to every lead, mean over leads (CLOCS)
``ProjectionHead``         SimCLR projection MLP; ``PredictionHead`` BYOL/PMQ predictor; ``l2_normalize``
=========================  =========================================================================
"""

from clinseq.models.attention import SelfAttention, TransformerBlock, apply_rotary
from clinseq.models.base import Encoder
from clinseq.models.cpc import CPCEncoder, CPCOutput, cpc_mehari2022
from clinseq.models.event_transformer import EventTransformer, TimeDeltaEmbedding
from clinseq.models.heads import PredictionHead, ProjectionHead, l2_normalize
from clinseq.models.long_conv import LongConvEncoder, S4DEncoder, SGConvEncoder
from clinseq.models.patch_transformer import PatchTransformer
from clinseq.models.per_lead import PerLeadEncoder
from clinseq.models.pretrained import (
    ContractError,
    InputContract,
    check_input,
    load_pretrained,
    save_pretrained,
)
from clinseq.models.resnet1d import ResNet1d, XResNet1d, resnet1d_pclr, xresnet1d50, xresnet1d101
from clinseq.models.s4d import S4D
from clinseq.models.sgconv import SGConv

__all__ = [
    "CPCEncoder",
    "CPCOutput",
    "ContractError",
    "Encoder",
    "EventTransformer",
    "InputContract",
    "LongConvEncoder",
    "PatchTransformer",
    "PerLeadEncoder",
    "PredictionHead",
    "ProjectionHead",
    "ResNet1d",
    "S4D",
    "S4DEncoder",
    "SGConv",
    "SGConvEncoder",
    "SelfAttention",
    "TimeDeltaEmbedding",
    "TransformerBlock",
    "XResNet1d",
    "apply_rotary",
    "check_input",
    "cpc_mehari2022",
    "l2_normalize",
    "load_pretrained",
    "resnet1d_pclr",
    "save_pretrained",
    "xresnet1d50",
    "xresnet1d101",
]
