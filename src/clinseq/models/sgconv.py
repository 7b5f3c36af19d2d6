"""SGConv: structured global convolution (Li, Cai, Zhang, Chen & Dey 2023, "What Makes Convolutional
Models Great on Long Sequence Modeling?", ICLR; arXiv 2210.09298), applied by FFT convolution.

The kernel of each channel is built from S sub-kernels w_0 … w_{S−1} of ``kernel_dim`` = d learned taps
each. Sub-kernel i is stretched by interpolation to d · 2^max(i−1, 0) taps, weighted by a decay α^i
(0 < α ≤ 1), and the pieces are concatenated:

    k = (1 / ‖k₀‖) · [ α⁰·w_0 ,  α¹·Up₁(w_1) ,  α²·Up₂(w_2) ,  … ,  α^{S−1}·Up_{2^{S−2}}(w_{S−1}) ]

so that scale i covers lags d · 2^{i−1} … d · 2^i − 1 (scale 0 lags 0 … d − 1) with the same number of
parameters per scale: the kernel is smooth at long lags and decays with the lag — the two properties the
paper names. Parameters: S · d per channel for a kernel of d · 2^{S−1} taps.

- ``max_length`` sets S = 1 + ceil(log2(max_length / d)): the kernel reaches max_length lags (beyond, it is
  zero). For an input of L samples only the first scales covering min(L, kernel_len) lags are built,
  so the kernel costs O(H · L) and its taps do not depend on L.
- ‖k₀‖ is the per-channel norm of the full kernel (all S scales) at initialisation, kept as a fixed
  buffer as in the paper's code: the kernel starts at unit norm and is then learned freely.
- α: the paper's code multiplies scale i by 2^{S−1−i}, i.e. α = 1/2 up to the normalisation.
- Bidirectional: a second set of sub-kernels gives the anticausal kernel (taps at lags −1, −2, …; the
  S4 convention of :func:`clinseq.models.fft_conv.fft_conv`).

y = k * u + D u, shapes u (B, H, L) → y (B, H, L); the kernel is (dirs, H, L) with dirs = 2 when
bidirectional.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clinseq.errors import ConfigError
from clinseq.models.base import check_choice, check_positive
from clinseq.models.fft_conv import GlobalConvLayer

__all__ = ["SGConv", "sgconv_scales"]


def sgconv_scales(length: int, kernel_dim: int) -> int:
    """Number of scales S whose kernel (d · 2^{S−1} taps, d = kernel_dim) covers ``length`` lags."""
    check_positive("length", length)
    check_positive("kernel_dim", kernel_dim)
    return 1 + max(0, math.ceil(math.log2(length / kernel_dim)))


def _stretched_sq_norm(w: torch.Tensor, factor: int, mode: str) -> torch.Tensor:
    """‖F.interpolate(w, scale_factor=factor, mode)‖² over the last axis, without building it (keepdim).

    nearest: each tap repeated ``factor`` times. linear (align_corners=False): output j reads the source
    at x = (j + ½)/f − ½, clamped to [0, d − 1]; the first and last f/2 outputs are w_0 and w_{d−1}, and
    between taps m and m + 1 the f outputs have weights λ_r = (r + ½)/f, r = 0 … f − 1, so
        ‖·‖² = (f/2)(w_0² + w_{d−1}²) + Σ_m [a w_m² + 2b w_m w_{m+1} + a w_{m+1}²],
    a = Σ_r λ_r², b = Σ_r λ_r (1 − λ_r) (Σ (1 − λ_r)² = Σ λ_r² by symmetry).
    """
    if factor == 1 or mode == "nearest":
        return factor * w.pow(2).sum(-1, keepdim=True)
    lam = (torch.arange(factor, dtype=torch.float64) + 0.5) / factor
    a, b = float(lam.pow(2).sum()), float((lam * (1 - lam)).sum())
    ends = factor / 2 * (w[..., :1].pow(2) + w[..., -1:].pow(2))
    pairs = a * (w[..., :-1].pow(2) + w[..., 1:].pow(2)) + 2 * b * w[..., :-1] * w[..., 1:]
    return ends + pairs.sum(-1, keepdim=True)


class SGConv(GlobalConvLayer):
    """Multi-scale decaying global convolution; ``forward(u: (B, H, L)) -> (B, H, L)``.

    Args:
        channels: H, independent channels (the model width).
        kernel_dim: d, learned taps per scale (the paper uses 32–64).
        max_length: longest lag the kernel reaches, in samples; sets the number of scales.
        decay: α in (0, 1], the weight ratio of consecutive scales.
        bidirectional: add an anticausal kernel.
        interpolation: "linear" or "nearest" stretching of the sub-kernels.
        kernel_len: keep only the first ``kernel_len`` taps (None: up to the input length).
    """

    def __init__(
        self,
        channels: int,
        kernel_dim: int = 32,
        max_length: int = 1 << 20,
        decay: float = 0.5,
        bidirectional: bool = False,
        interpolation: str = "linear",
        kernel_len: int | None = None,
    ) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_positive("kernel_dim", kernel_dim)
        check_positive("max_length", max_length)
        check_choice("interpolation", interpolation, ("linear", "nearest"))
        if not 0.0 < decay <= 1.0:
            raise ConfigError(f"decay must be in (0, 1], got {decay}")
        if kernel_len is not None:
            check_positive("kernel_len", kernel_len)
        self.channels = channels
        self.kernel_dim = kernel_dim
        self.decay = decay
        self.bidirectional = bidirectional
        self.interpolation = interpolation
        self.kernel_len = kernel_len
        self.n_scales = sgconv_scales(max_length, kernel_dim)
        self.max_taps = kernel_dim * 2 ** (self.n_scales - 1)
        dirs = 2 if bidirectional else 1
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(dirs, channels, kernel_dim)) for _ in range(self.n_scales)
        )
        self.d = nn.Parameter(torch.randn(channels))
        with torch.no_grad():
            # ‖k₀‖² = Σ_i α^{2i} ‖Up_i(w_i)‖², in closed form: the 2^20-tap kernel is never built here.
            sq = sum(
                self.decay ** (2 * i) * _stretched_sq_norm(w, 2 ** max(i - 1, 0), interpolation)
                for i, w in enumerate(self.weights)
            )
        self.register_buffer("kernel_norm", torch.as_tensor(sq).sqrt())

    def _scale(self, i: int) -> torch.Tensor:
        """Scale i: α^i · w_i stretched to d · 2^max(i−1, 0) taps → (dirs, H, taps)."""
        w = self.weights[i]
        factor = 2 ** max(i - 1, 0)
        if factor > 1:
            w = F.interpolate(w, scale_factor=factor, mode=self.interpolation)
        return w * self.decay**i

    def reach(self) -> tuple[int, int]:
        """(past, future) samples an output can see (the kernel is finite: at most ``max_taps`` taps)."""
        taps = self.max_taps if self.kernel_len is None else min(self.kernel_len, self.max_taps)
        return taps - 1, taps if self.bidirectional else 0

    def kernel(self, length: int) -> torch.Tensor:
        """The (dirs, H, min(length, kernel_len, max_taps)) kernel of the docstring (parameter dtype)."""
        check_positive("length", length)
        n_taps = min(length, self.max_taps, self.kernel_len or length)
        scales = min(self.n_scales, sgconv_scales(n_taps, self.kernel_dim))
        k = torch.cat([self._scale(i) for i in range(scales)], dim=-1)[..., :n_taps]
        return k / self.kernel_norm
