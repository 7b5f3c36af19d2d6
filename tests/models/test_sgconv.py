"""SGConv: the multi-scale kernel's structure (lengths, decay, normalisation) and its convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clinseq.errors import ConfigError, ShapeError
from clinseq.models.sgconv import SGConv, sgconv_scales


def test_scale_count_and_kernel_length() -> None:
    # Scales cover d, d, 2d, 4d, … lags: S scales reach d · 2^(S−1).
    assert [sgconv_scales(n, 8) for n in (1, 8, 9, 16, 17, 64, 65)] == [1, 1, 2, 2, 3, 4, 5]
    layer = SGConv(3, kernel_dim=8, max_length=100)
    assert layer.n_scales == 5 and layer.max_taps == 128
    assert [w.shape for w in layer.weights] == [(1, 3, 8)] * 5
    assert layer.kernel(1).shape == (1, 3, 1)
    assert layer.kernel(50).shape == (1, 3, 50)
    assert layer.kernel(1000).shape == (1, 3, 128)  # zero beyond max_taps: never built
    assert layer.reach() == (127, 0)
    assert SGConv(3, kernel_dim=8, max_length=100, kernel_len=30, bidirectional=True).reach() == (29, 30)


def test_kernel_is_the_decaying_concatenation_and_starts_at_unit_norm() -> None:
    torch.manual_seed(0)
    layer = SGConv(2, kernel_dim=4, max_length=32, decay=0.5, interpolation="nearest")
    full = layer.kernel(10_000)
    torch.testing.assert_close(full.norm(dim=-1), torch.ones(1, 2))  # unit norm per channel at init
    with torch.no_grad():
        for w in layer.weights:
            w.fill_(1.0)
    k = layer.kernel(32)[0, 0] * layer.kernel_norm[0, 0]
    # Scale i covers lags [d · 2^(i−1), d · 2^i) (scale 0: [0, d)), constant α^i for constant weights.
    bounds = [(0, 4), (4, 8), (8, 16), (16, 32)]
    for i, (lo, hi) in enumerate(bounds):
        torch.testing.assert_close(k[lo:hi], torch.full((hi - lo,), 0.5**i))


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_initial_kernel_has_unit_norm_per_channel(interpolation: str, bidirectional: bool) -> None:
    # kernel_norm comes from a closed form (the full kernel is never built at init); the built kernel agrees.
    torch.manual_seed(6)
    layer = SGConv(5, kernel_dim=6, max_length=3000, interpolation=interpolation, bidirectional=bidirectional)
    with torch.no_grad():
        norms = layer.kernel(layer.max_taps).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=1e-5, atol=1e-5)


def test_linear_interpolation_stretches_each_sub_kernel() -> None:
    torch.manual_seed(1)
    layer = SGConv(3, kernel_dim=4, max_length=16)
    k = layer.kernel(16) * layer.kernel_norm
    w2 = layer.weights[2].detach()  # the last of 3 scales: lags 8 … 15
    expected = F.interpolate(w2, size=8, mode="linear") * 0.5**2
    torch.testing.assert_close(k[..., 8:16], expected)


def test_taps_do_not_depend_on_the_length() -> None:
    torch.manual_seed(2)
    layer = SGConv(3, kernel_dim=8, max_length=256, bidirectional=True)
    with torch.no_grad():
        torch.testing.assert_close(layer.kernel(40), layer.kernel(256)[..., :40])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_forward_is_the_direct_convolution_with_its_kernel(bidirectional: bool) -> None:
    torch.manual_seed(3)
    layer = SGConv(3, kernel_dim=4, max_length=64, bidirectional=bidirectional).double()
    u = torch.randn(2, 3, 50, dtype=torch.float64)
    with torch.no_grad():
        k = layer.kernel(50)
        got = layer(u)
    expected = layer.d.detach()[:, None] * u
    for t in range(50):  # y_t = Σ_s k[s] u[t − s] (+ Σ_j k⁻[j] u[t + 1 + j]) + D u_t, as plain sums
        for s in range(t + 1):
            expected[:, :, t] += k[0, :, s] * u[:, :, t - s]
        if bidirectional:
            for j in range(50 - t - 1):
                expected[:, :, t] += k[1, :, j] * u[:, :, t + 1 + j]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_causal_layer_never_lets_an_output_see_a_later_input() -> None:
    torch.manual_seed(4)
    layer = SGConv(3, kernel_dim=8, max_length=256).double()
    u = torch.randn(2, 3, 200, dtype=torch.float64)
    with torch.no_grad():
        base = layer(u)
        v = u.clone()
        v[..., 120:] += 5.0
        diff = (layer(v) - base).abs()
    assert diff[..., :120].max().item() < 1e-10
    assert diff[..., 120:].max().item() > 1e-2


def test_gradient_reaches_every_used_scale() -> None:
    torch.manual_seed(5)
    layer = SGConv(2, kernel_dim=4, max_length=32, bidirectional=True)
    (layer(torch.randn(1, 2, 32)) * torch.randn(1, 2, 32)).sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in layer.weights)
    assert "kernel_norm" in dict(layer.named_buffers())  # fixed, not learned


def test_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError, match="decay must be in"):
        SGConv(4, decay=1.5)
    with pytest.raises(ConfigError, match="interpolation must be one of"):
        SGConv(4, interpolation="cubic")
    with pytest.raises(ShapeError, match=r"expects u of shape \(B, 4, L\)"):
        SGConv(4, max_length=64)(torch.randn(1, 3, 10))
