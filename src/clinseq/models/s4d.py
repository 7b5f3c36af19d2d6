"""S4D: the diagonal state-space layer (Gu, Gupta, Goel & Ré 2022, "On the Parameterization and
Initialization of Diagonal State Space Models", NeurIPS; arXiv 2206.11893), applied by FFT convolution.

Each of the H channels is a single-input single-output linear system with a diagonal complex state of
N/2 modes (N real dimensions: the modes come in conjugate pairs, hence the factor 2 below):

    x'(τ) = A x(τ) + B u(τ),    y(τ) = 2 · Re(C x(τ)) + D u(τ),     A = diag(A_1 … A_{N/2}), Re A_n < 0.

Discretised with zero-order hold at a learnable step Δ = exp(log_dt) (per channel, in units of one
sample: the mode's time constant is 1 / (Δ · |Re A_n|) samples),

    Ā = exp(Δ A),   B̄ = (exp(Δ A) − 1) / A · B,   x_t = Ā x_{t−1} + B̄ u_t,   y_t = 2 · Re(C x_t) + D u_t,

the recurrence unrolls into a convolution y = K * u + D u with the kernel (a Vandermonde product)

    K[l] = 2 · Re( Σ_n C_n B̄_n Ā_n^l ),   l = 0, 1, …, L − 1,

computed here for the sequence length L (or the first ``kernel_len`` taps) and applied by
:func:`clinseq.models.fft_conv.fft_conv` in O(L log L). The taps do not depend on L, so the output at t
is the same whatever the length of the input after t (causal mode), which is what makes chunked
(overlap-save) inference exact when ``kernel_len`` bounds the reach.

Initialisation (paper §4): Re A_n = −1/2 for every mode, stored as log(1/2) so that it stays negative;
Im A_n = π n ("S4D-Lin") or (N/π)(N/(2n + 1) − 1) ("S4D-Inv"), n = 0 … N/2 − 1; B_n = 1; C ~ complex
normal (variance 1); log Δ ~ U[log dt_min, log dt_max]; D ~ N(0, 1). The paper trains A, B and Δ with a
smaller learning rate and no weight decay; clinseq's optimiser uses one group (not reproduced).

Bidirectional (as in S4): a second C gives a second kernel K⁻ applied to the future, at lags
−1 … −L (tap K⁻[j] at lag −(j + 1)); A, B and Δ are shared by both directions.

Shapes: u (B, H, L) → y (B, H, L); the kernel is (2, H, L) bidirectional, (1, H, L) otherwise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clinseq.errors import ConfigError
from clinseq.models.base import check_choice, check_positive
from clinseq.models.fft_conv import GlobalConvLayer

__all__ = ["S4D", "s4d_imag_init"]

# Complex kernel values produced per step of the Vandermonde product: bounds its complex temporary.
_VANDERMONDE_ELEMENTS = 1 << 22


def s4d_imag_init(d_state: int, init: str) -> torch.Tensor:
    """Im A_n for n = 0 … d_state/2 − 1: π n ("lin") or (N/π)(N/(2n + 1) − 1) ("inv"), N = d_state."""
    n = torch.arange(d_state // 2, dtype=torch.float64)
    if init == "lin":
        return (math.pi * n).float()
    if init == "inv":
        return (d_state / math.pi * (d_state / (2 * n + 1) - 1)).float()
    raise ConfigError(f"init must be 'lin' or 'inv', got {init!r}")


def _vandermonde(c_tilde: torch.Tensor, dt_a: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """2 · Re(Σ_n c̃[c, h, n] · exp(ΔA[h, n] · l)) for l = start … start + length − 1 → (dirs, H, length).

    Lag l = start + q·S + r (S = ceil(√length)) factors as exp(ΔA (start + qS)) · exp(ΔA r): two small
    tables of complex exponentials, (H, N/2, Q) and (H, N/2, S), and one batched complex matrix product
    (H, dirs·Q, N/2) @ (H, N/2, S). Only O(H · N · √length) exponentials instead of H · N · length.
    """
    dirs, h, modes = c_tilde.shape
    side = max(1, math.isqrt(length - 1) + 1)
    n_outer = -(-length // side)
    real = dt_a.real.dtype
    inner = torch.exp(dt_a.unsqueeze(-1) * torch.arange(side, device=dt_a.device, dtype=real))
    outer_lags = start + side * torch.arange(n_outer, device=dt_a.device, dtype=real)
    outer = torch.exp(dt_a.unsqueeze(-1) * outer_lags)  # (H, N/2, Q)
    left = (c_tilde.unsqueeze(-1) * outer).permute(1, 0, 3, 2).reshape(h, dirs * n_outer, modes)
    k = torch.bmm(left, inner).real  # (H, dirs·Q, S)
    k = k.reshape(h, dirs, n_outer * side)[..., :length]
    return 2 * k.transpose(0, 1)


class S4D(GlobalConvLayer):
    """Diagonal state-space convolution layer; ``forward(u: (B, H, L)) -> (B, H, L)``.

    Args:
        channels: H, the number of independent channels (the model width).
        d_state: N, real state size per channel (N/2 complex modes); even.
        init: "lin" (S4D-Lin) or "inv" (S4D-Inv) initialisation of Im A.
        dt_min, dt_max: range of the initial step Δ, in samples (log-uniform).
        bidirectional: add an anticausal kernel (the output at t sees the whole sequence).
        kernel_len: keep only the first ``kernel_len`` taps of each kernel (None: as long as the input).
            A bound makes the layer's reach finite (``reach()``), as chunked inference needs.
    """

    def __init__(
        self,
        channels: int,
        d_state: int = 64,
        init: str = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        kernel_len: int | None = None,
    ) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_positive("d_state", d_state)
        check_choice("init", init, ("lin", "inv"))
        if d_state % 2:
            raise ConfigError(f"d_state must be even (N/2 conjugate pairs of modes), got {d_state}")
        if not 0 < dt_min <= dt_max:
            raise ConfigError(f"S4D needs 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if kernel_len is not None:
            check_positive("kernel_len", kernel_len)
        self.channels = channels
        self.d_state = d_state
        self.bidirectional = bidirectional
        self.kernel_len = kernel_len
        dirs = 2 if bidirectional else 1
        modes = d_state // 2
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_a_real = nn.Parameter(torch.full((channels, modes), math.log(0.5)))
        self.a_imag = nn.Parameter(s4d_imag_init(d_state, init).repeat(channels, 1))
        # Complex B (H, N/2) and C (dirs, H, N/2), stored as (…, 2) real tensors (re, im).
        self.b = nn.Parameter(torch.view_as_real(torch.ones(channels, modes, dtype=torch.cfloat)).clone())
        self.c = nn.Parameter(torch.view_as_real(torch.randn(dirs, channels, modes, dtype=torch.cfloat)))
        self.d = nn.Parameter(torch.randn(channels))

    def reach(self) -> tuple[int, int] | None:
        """(past, future) samples an output can see, or None when the kernel is as long as the input."""
        if self.kernel_len is None:
            return None
        return self.kernel_len - 1, self.kernel_len if self.bidirectional else 0

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Ā (H, N/2), B̄ (H, N/2), C (dirs, H, N/2)) complex: the ZOH-discretised system of the docstring."""
        a = torch.complex(-torch.exp(self.log_a_real), self.a_imag)
        dt_a = torch.exp(self.log_dt).unsqueeze(-1) * a
        a_bar = torch.exp(dt_a)
        b_bar = (a_bar - 1) / a * torch.view_as_complex(self.b)
        return a_bar, b_bar, torch.view_as_complex(self.c)

    def kernel(self, length: int) -> torch.Tensor:
        """The (dirs, H, min(length, kernel_len)) real kernel K[l] = 2 Re(Σ_n C_n B̄_n Ā_n^l).

        float32 (float64 when the parameters are float64), whatever autocast is active.
        """
        check_positive("length", length)
        n_taps = length if self.kernel_len is None else min(length, self.kernel_len)
        work = torch.float64 if self.log_dt.dtype == torch.float64 else torch.float32
        a = torch.complex(-torch.exp(self.log_a_real.to(work)), self.a_imag.to(work))
        dt_a = torch.exp(self.log_dt.to(work)).unsqueeze(-1) * a  # (H, N/2)
        b = torch.view_as_complex(self.b.to(work))
        c_tilde = torch.view_as_complex(self.c.to(work)) * ((torch.exp(dt_a) - 1) / a * b)  # (dirs, H, N/2)
        step = max(1, _VANDERMONDE_ELEMENTS // (self.channels * c_tilde.shape[0]))
        parts = [_vandermonde(c_tilde, dt_a, a, min(step, n_taps - a)) for a in range(0, n_taps, step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
