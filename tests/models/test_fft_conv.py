"""fft_conv: the zero-padded FFT convolution equals direct convolution (F.conv1d) and is causal."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clinseq.errors import ShapeError
from clinseq.models.fft_conv import fast_fft_length, fft_conv


def _direct(u: torch.Tensor, k_causal: torch.Tensor, k_anti: torch.Tensor | None) -> torch.Tensor:
    """Depthwise F.conv1d with the flipped two-sided kernel (lags −Ka … Kc − 1), zero padding."""
    h, n_c = k_causal.shape
    n_a = 0 if k_anti is None else k_anti.shape[1]
    # Two-sided kernel indexed by lag + Ka: lags −Ka … −1 hold k_anti[Ka − 1] … k_anti[0].
    two_sided = torch.zeros(h, n_a + n_c, dtype=u.dtype)
    two_sided[:, n_a:] = k_causal
    if k_anti is not None:
        two_sided[:, :n_a] = k_anti.flip(-1)
    # conv1d correlates: out[t] = Σ_m w[m] · x_pad[t + m]; w = the kernel flipped so lag s meets u[t − s].
    weight = two_sided.flip(-1)[:, None, :]
    return F.conv1d(F.pad(u, (n_c - 1, n_a)), weight, groups=h)


@pytest.mark.parametrize(("length", "n_causal", "n_anti"), [(1, 1, None), (17, 5, None), (64, 64, None),
                                                            (33, 50, None), (40, 7, 3), (25, 25, 24),
                                                            (12, 30, 30), (1, 4, 4)])  # fmt: skip
def test_fft_conv_equals_conv1d_with_flipped_kernel(length: int, n_causal: int, n_anti: int | None) -> None:
    g = torch.Generator().manual_seed(length * 100 + n_causal)
    u = torch.randn(3, 4, length, generator=g, dtype=torch.float64)
    kc = torch.randn(4, n_causal, generator=g, dtype=torch.float64)
    ka = None if n_anti is None else torch.randn(4, n_anti, generator=g, dtype=torch.float64)
    # Taps beyond the signal never reach an output: the direct reference gets them truncated.
    ka_used = None if ka is None or length == 1 else ka[:, : length - 1]
    expected = _direct(u, kc[:, :length], ka_used)
    got = fft_conv(u, kc, ka)
    assert got.shape == u.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_fft_conv_float32_matches_and_keeps_dtype() -> None:
    g = torch.Generator().manual_seed(1)
    u, kc, ka = (
        torch.randn(2, 3, 300, generator=g),
        torch.randn(3, 300, generator=g),
        torch.randn(3, 299, generator=g),
    )
    got = fft_conv(u, kc, ka)
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got.double(), _direct(u.double(), kc.double(), ka.double()), rtol=1e-5, atol=1e-4
    )


def test_causal_output_never_sees_a_later_input() -> None:
    g = torch.Generator().manual_seed(2)
    u, k = (
        torch.randn(2, 3, 200, generator=g, dtype=torch.float64),
        torch.randn(3, 200, generator=g, dtype=torch.float64),
    )
    base = fft_conv(u, k)
    for t0 in (0, 1, 99, 199):
        v = u.clone()
        v[..., t0] += 10.0
        diff = (fft_conv(v, k) - base).abs()
        if t0:
            assert diff[..., :t0].max().item() < 1e-9
        assert diff[..., t0].min().item() > 0  # the perturbation reaches its own and later outputs


def test_anticausal_taps_see_only_the_future() -> None:
    u = torch.zeros(1, 1, 10, dtype=torch.float64)
    u[..., 5] = 1.0
    y = fft_conv(
        u, torch.tensor([[0.0]], dtype=torch.float64), torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    )
    # Lag −1 (tap 1.0) puts the impulse at t = 4, lag −2 at t = 3, lag −3 at t = 2.
    expected = torch.tensor([0, 0, 3.0, 2.0, 1.0, 0, 0, 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(y[0, 0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7, 11, 97, 1000, 1025, 65537])
def test_fast_fft_length_is_the_smallest_5_smooth_size(n: int) -> None:
    def smooth(m: int) -> bool:
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    m = fast_fft_length(n)
    assert m >= n and smooth(m)
    assert not any(smooth(j) for j in range(n, m))


def test_bad_kernel_shapes_raise() -> None:
    with pytest.raises(ShapeError, match=r"\(H, K\)"):
        fft_conv(torch.randn(1, 3, 8), torch.randn(2, 4))
    with pytest.raises(ShapeError, match=r"\(B, H, L\)"):
        fft_conv(torch.randn(3, 8), torch.randn(3, 4))
