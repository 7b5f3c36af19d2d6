"""CPC encoder: a strided convolution stack g (frames z) and a causal recurrent context network (c).

van den Oord et al. 2018, "Representation learning with contrastive predictive coding" (arXiv
1807.03748): z_t = g(x) on down-sampled frames, c_t = g_ar(z_≤t). The default configuration is the ECG
setup of Mehari & Strodthoff 2022 ("Self-supervised representation learning from 12-lead ECG data",
Comput. Biol. Med. 141:105114): four convolutions of kernel 1 and stride 1 with 512 filters and batch
norm (one frame per input sample, total stride 1), then a two-layer LSTM with 512 hidden units. The
audio setup of the CPC paper is ``kernel_sizes=(10, 8, 4, 4, 4), strides=(5, 4, 2, 2, 2)`` (stride 160).

The context network is unidirectional, so c_t sees z_1..z_t only, as CPC's prediction of z_{t+k}
requires. Batch norm in g mixes statistics over batch and time (as in the reference setups); use
``norm="ln"`` (per-frame layer norm over channels) to keep every frame independent of the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from clinseq.errors import ConfigError
from clinseq.models.base import Encoder, check_choice, check_positive, check_signal

__all__ = ["CPCEncoder", "CPCOutput", "cpc_mehari2022"]


class CPCOutput(NamedTuple):
    """``z``: (B, T', D) encoder frames; ``c``: (B, T', Dc) causal context vectors."""

    z: torch.Tensor
    c: torch.Tensor


class _FrameLayerNorm(nn.Module):
    """Layer norm over channels of each frame of a (B, D, T) map (no mixing across time)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class CPCEncoder(Encoder):
    """Strided conv stack + GRU/LSTM; ``forward(x: (B, C, T)) -> CPCOutput(z, c)``.

    Args:
        in_channels: input channels C.
        channels: filters of each convolution (D = channels[-1]).
        kernel_sizes: kernel of each convolution, in samples (frames of the previous layer).
        strides: stride of each convolution; total stride = their product.
        norm: "bn" (batch norm), "ln" (per-frame layer norm) or None, after each convolution.
        context: "gru" or "lstm".
        context_dim: hidden size Dc of the recurrent network (``embed_dim``).
        context_layers: stacked recurrent layers.
        dropout: dropout between recurrent layers (PyTorch's ``dropout`` argument).

    Convolutions are un-padded ("valid"), so frame t covers input samples
    [t · S, t · S + R) with S the total stride and R the receptive field; ``frames(T)`` gives T' and the
    minimum T is R (one frame). ``embed(x)`` is the mean of c over the T' frames.
    """

    def __init__(
        self,
        in_channels: int = 12,
        channels: Sequence[int] = (512, 512, 512, 512),
        kernel_sizes: Sequence[int] = (1, 1, 1, 1),
        strides: Sequence[int] = (1, 1, 1, 1),
        norm: str | None = "bn",
        context: str = "lstm",
        context_dim: int = 512,
        context_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, kernel_sizes, strides = tuple(channels), tuple(kernel_sizes), tuple(strides)
        check_positive("in_channels", in_channels)
        check_positive("context_dim", context_dim)
        check_positive("context_layers", context_layers)
        check_choice("norm", norm, ("bn", "ln", None))
        check_choice("context", context, ("gru", "lstm"))
        if not (len(channels) == len(kernel_sizes) == len(strides) >= 1):
            raise ConfigError(
                "CPCEncoder needs one channel count, kernel and stride per convolution, got "
                f"channels={channels}, kernel_sizes={kernel_sizes}, strides={strides}; e.g. "
                "channels=(512,) * 4, kernel_sizes=(1,) * 4, strides=(1,) * 4"
            )
        for n in (*channels, *kernel_sizes, *strides):
            check_positive("every entry of channels, kernel_sizes and strides", n)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.kernel_sizes = kernel_sizes
        self.strides = strides
        layers: list[nn.Module] = []
        width = in_channels
        for c, k, s in zip(channels, kernel_sizes, strides, strict=True):
            # Bias is redundant before a normalisation that re-centres.
            layers.append(nn.Conv1d(width, c, k, stride=s, bias=norm is None))
            if norm == "bn":
                layers.append(nn.BatchNorm1d(c))
            elif norm == "ln":
                layers.append(_FrameLayerNorm(c))
            layers.append(nn.ReLU())
            width = c
        self.encoder = nn.Sequential(*layers)
        rnn = nn.GRU if context == "gru" else nn.LSTM
        self.context = rnn(
            width,
            context_dim,
            num_layers=context_layers,
            batch_first=True,
            dropout=dropout if context_layers > 1 else 0.0,
        )
        self.z_dim = width
        self.embed_dim = context_dim

    @property
    def total_stride(self) -> int:
        """Input samples between consecutive frames."""
        s = 1
        for stride in self.strides:
            s *= stride
        return s

    @property
    def receptive_field(self) -> int:
        """Input samples that one frame sees (the minimum input length)."""
        r, jump = 1, 1
        for k, s in zip(self.kernel_sizes, self.strides, strict=True):
            r += (k - 1) * jump
            jump *= s
        return r

    def frames(self, n_samples: int) -> int:
        """T', the number of frames for ``n_samples`` input samples (0 when shorter than one frame)."""
        n = n_samples
        for k, s in zip(self.kernel_sizes, self.strides, strict=True):
            n = (n - k) // s + 1 if n >= k else 0
        return n

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = g(x): (B, T', D) frames."""
        check_signal(x, self.in_channels, type(self).__name__, min_samples=self.receptive_field)
        return self.encoder(x).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> CPCOutput:
        """z (B, T', D) and the causal context c (B, T', Dc) of x (B, C, T)."""
        z = self.encode(x)
        c, _ = self.context(z)
        return CPCOutput(z, c)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of the context vectors over time: (1/T') Σ_t c_t, shape (B, Dc)."""
        return self.forward(x).c.mean(dim=1)


def cpc_mehari2022(in_channels: int = 12, context: str = "lstm") -> CPCEncoder:
    """Mehari & Strodthoff 2022's ECG CPC: 4 × (conv k=1, s=1, 512, BN, ReLU), 2-layer LSTM of 512."""
    return CPCEncoder(in_channels, (512,) * 4, (1,) * 4, (1,) * 4, "bn", context, 512, 2)
