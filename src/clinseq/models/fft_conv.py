"""Long convolutions by FFT: zero-padded (linear, not circular), causal or bidirectional.

For a signal u (B, H, L) and per-channel kernels, ``fft_conv`` computes, for every channel h and sample t,

    y[b, h, t] = Σ_{s=0}^{Kc−1} k_causal[h, s] · u[b, h, t − s]
               + Σ_{j=0}^{Ka−1} k_anticausal[h, j] · u[b, h, t + 1 + j]

with u = 0 outside [0, L): ``k_causal[:, s]`` is the tap at lag s ≥ 0 (the past and the present), and
``k_anticausal[:, j]`` the tap at lag −(j + 1) (the future; S4's bidirectional convention). Without
``k_anticausal`` the output at t depends on u[..., :t + 1] only (causal).

Both kernels are placed in one buffer of n samples — causal taps at 0 … Kc − 1, anticausal ones at
n − Ka … n − 1 (negative lags wrap to the end) — and the product of the real FFTs of kernel and signal is
transformed back. n ≥ max(L + Kc − 1, L + Ka, Kc + Ka) keeps the circular convolution free of wrap-around
on the L kept outputs, so the result equals the linear convolution; n is rounded up to a 2·3·5-smooth size.
Cost O(B · H · n log n) time and O(B · H · n) memory, for any kernel length up to L (a kernel longer than
the signal is truncated: its further taps never reach an output).

The FFT runs in float32 (float64 for float64 inputs): half-precision FFTs lose the long kernels' small
taps, and torch's CPU FFT does not take bfloat16. The result has the input's dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from clinseq.errors import ConfigError, ShapeError

__all__ = ["fast_fft_length", "fft_conv"]


def fast_fft_length(n: int) -> int:
    """The smallest m ≥ n whose prime factors are 2, 3 and 5 (an FFT size pocketfft/cuFFT handle fast)."""
    if n < 1:
        raise ConfigError(f"fast_fft_length needs n >= 1, got {n}")
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # The smallest power of two that brings p35 to at least n.
            p2 = p35
            while p2 < n:
                p2 *= 2
            best = min(best, p2)
            p35 *= 3
        p5 *= 5
    return best


def _check_kernel(k: torch.Tensor, channels: int, name: str) -> None:
    if k.ndim != 2 or k.shape[0] != channels or k.shape[1] < 1:
        raise ShapeError(
            f"fft_conv: {name} must have shape (H, K) = (channels, taps) with H={channels} and K >= 1, got "
            f"{tuple(k.shape)}"
        )


def fft_conv(
    u: torch.Tensor, k_causal: torch.Tensor, k_anticausal: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-channel linear convolution of u (B, H, L) with a causal and an optional anticausal kernel.

    Args:
        u: signal (B, H, L), any float dtype.
        k_causal: (H, Kc) taps at lags 0 … Kc − 1 (output t reads u[t − s]).
        k_anticausal: (H, Ka) taps at lags −1 … −Ka (output t reads u[t + 1 + j]), or None (causal).

    Returns:
        y (B, H, L) in u's dtype (see the module docstring for the formula).
    """
    if u.ndim != 3:
        raise ShapeError(f"fft_conv expects u of shape (B, H, L), got {tuple(u.shape)}")
    _, h, length = u.shape
    _check_kernel(k_causal, h, "k_causal")
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    kc = k_causal[:, :length].to(work)
    ka = None
    if k_anticausal is not None:
        _check_kernel(k_anticausal, h, "k_anticausal")
        ka = k_anticausal[:, : length - 1].to(work) if length > 1 else None
    n_c = kc.shape[1]
    n_a = 0 if ka is None else ka.shape[1]
    n = fast_fft_length(max(length + n_c - 1, length + n_a, n_c + n_a))
    kernel = torch.nn.functional.pad(kc, (0, n - n_c))
    if ka is not None and n_a:
        # Lag −(j + 1) sits at index n − 1 − j: the anticausal taps reversed, at the end of the buffer.
        kernel = kernel + torch.nn.functional.pad(ka.flip(-1), (n - n_a, 0))
    k_f = torch.fft.rfft(kernel, n=n)
    u_f = torch.fft.rfft(u.to(work), n=n)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :length]
    return y.to(u.dtype)


class GlobalConvLayer(nn.Module):
    """Base of the long-kernel layers (S4D, SGConv): ``y = K * u + D u`` for u (B, H, L).

    A subclass sets ``channels`` (H), ``bidirectional`` and the skip ``d`` (H,), and defines
    ``kernel(length)``: the (1 or 2, H, taps) causal (and anticausal) kernels for an input of ``length``
    samples. The convolution is :func:`fft_conv`.
    """

    channels: int
    bidirectional: bool
    d: torch.Tensor

    def kernel(self, length: int) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """y = K * u + D u for u (B, H, L) (causal; plus the anticausal kernel when bidirectional)."""
        if u.ndim != 3 or u.shape[1] != self.channels:
            raise ShapeError(
                f"{type(self).__name__}({self.channels}) expects u of shape (B, {self.channels}, L), got "
                f"{tuple(u.shape)}"
            )
        k = self.kernel(u.shape[-1])
        y = fft_conv(u, k[0], k[1] if self.bidirectional else None)
        return y + self.d.to(y.dtype)[:, None] * u
