"""S4D: the FFT-applied kernel equals the diagonal recurrence run step by step; init; causality."""

from __future__ import annotations

import math

import pytest
import torch

from clinseq.errors import ConfigError, ShapeError
from clinseq.models.s4d import S4D, s4d_imag_init


def _scan(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    """The layer's system run as a recurrence in float64, from its raw parameters (no layer code).

    Causal: x_t = Ā x_{t−1} + B̄ u_t, y_t = 2 Re(C x_t) + D u_t. Anticausal (second C): z_t = Ā z_{t+1} +
    B̄ u_{t+1} from z_{L−1} = 0, y_t += 2 Re(C⁻ z_t). Ā = exp(ΔA), B̄ = (Ā − 1) / A · B (zero-order hold).
    """
    p = {n: t.detach().double() for n, t in layer.named_parameters()}
    a = torch.complex(-torch.exp(p["log_a_real"]), p["a_imag"])  # (H, N/2)
    dt = torch.exp(p["log_dt"])[:, None]
    a_bar = torch.exp(dt * a)
    b_bar = (a_bar - 1) / a * torch.view_as_complex(p["b"].contiguous())
    c = torch.view_as_complex(p["c"].contiguous())  # (dirs, H, N/2)
    u = u.double()
    bsz, h, length = u.shape
    y = p["d"][None, :, None] * u
    x = torch.zeros(bsz, h, a.shape[1], dtype=torch.cdouble)
    for t in range(length):
        x = a_bar * x + b_bar * u[:, :, t, None]
        y[:, :, t] += 2 * (c[0] * x).sum(-1).real
    if c.shape[0] == 2:
        z = torch.zeros_like(x)
        for t in range(length - 2, -1, -1):
            z = a_bar * z + b_bar * u[:, :, t + 1, None]
            y[:, :, t] += 2 * (c[1] * z).sum(-1).real
    return y


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("init", ["lin", "inv"])
def test_fft_kernel_equals_the_step_by_step_recurrence(bidirectional: bool, init: str) -> None:
    torch.manual_seed(0)
    layer = S4D(4, d_state=16, init=init, dt_min=0.01, dt_max=0.2, bidirectional=bidirectional)
    u = torch.randn(2, 4, 300)
    expected = _scan(layer, u)
    with torch.no_grad():
        got = layer(u)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # float64 all the way: agreement to rounding
        torch.testing.assert_close(layer.double()(u.double()), expected, rtol=1e-10, atol=1e-10)


def test_kernel_in_vandermonde_chunks_equals_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    layer = S4D(3, d_state=8, bidirectional=True)
    whole = layer.kernel(1000)
    import clinseq.models.s4d as s4d_module

    monkeypatch.setattr(s4d_module, "_VANDERMONDE_ELEMENTS", 3 * 2 * 37)  # chunks of 37 taps
    chunked = layer.kernel(1000)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    chunked.square().sum().backward()
    assert layer.c.grad is not None and layer.log_dt.grad is not None and layer.c.grad.abs().sum() > 0


def test_factored_vandermonde_equals_the_direct_powers_at_long_lags() -> None:
    torch.manual_seed(4)
    layer = S4D(2, d_state=8, bidirectional=True, dt_min=1e-3, dt_max=1e-2).double()
    a_bar, b_bar, c = (t.detach() for t in layer.discrete())
    lags = torch.arange(5000, dtype=torch.float64)
    # K[l] = 2 Re Σ_n C_n B̄_n Ā_n^l with Ā^l = exp(l · log Ā), one exponential per lag and mode.
    direct = 2 * torch.einsum("chn,hnl->chl", c * b_bar, torch.exp(torch.log(a_bar)[..., None] * lags)).real
    with torch.no_grad():
        torch.testing.assert_close(layer.kernel(5000), direct, rtol=1e-9, atol=1e-9)


def test_taps_do_not_depend_on_the_length_and_kernel_len_truncates() -> None:
    torch.manual_seed(2)
    layer = S4D(3, d_state=8)
    with torch.no_grad():
        k50, k200 = layer.kernel(50), layer.kernel(200)
    assert k50.shape == (1, 3, 50) and k200.shape == (1, 3, 200)
    torch.testing.assert_close(k50, k200[..., :50])
    short = S4D(3, d_state=8, kernel_len=20)
    short.load_state_dict(layer.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(short.kernel(200), k200[..., :20])
    assert short.reach() == (19, 0) and layer.reach() is None
    assert S4D(3, bidirectional=True, kernel_len=20).reach() == (19, 20)


def test_s4d_lin_and_inv_initialisation() -> None:
    n = 8
    torch.testing.assert_close(
        s4d_imag_init(n, "lin"), torch.tensor([0.0, math.pi, 2 * math.pi, 3 * math.pi])
    )
    inv = torch.tensor([n / math.pi * (n / (2 * k + 1) - 1) for k in range(n // 2)], dtype=torch.float32)
    torch.testing.assert_close(s4d_imag_init(n, "inv"), inv)
    layer = S4D(5, d_state=n, dt_min=1e-3, dt_max=1e-1)
    torch.testing.assert_close(-torch.exp(layer.log_a_real), torch.full((5, n // 2), -0.5))
    dt = torch.exp(layer.log_dt)
    assert ((dt >= 1e-3 - 1e-9) & (dt <= 1e-1 + 1e-9)).all()
    torch.testing.assert_close(torch.view_as_complex(layer.b), torch.ones(5, n // 2, dtype=torch.cfloat))


def test_causal_layer_never_lets_an_output_see_a_later_input() -> None:
    torch.manual_seed(3)
    layer = S4D(3, d_state=8, dt_min=0.01, dt_max=0.1).double()
    u = torch.randn(2, 3, 128, dtype=torch.float64)
    with torch.no_grad():
        base = layer(u)
        for t0 in (1, 64, 127):
            v = u.clone()
            v[..., t0:] = torch.randn_like(v[..., t0:])
            diff = (layer(v) - base).abs()
            assert diff[..., :t0].max().item() < 1e-10
            assert diff[..., t0:].max().item() > 1e-3


def test_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError, match="d_state must be even"):
        S4D(4, d_state=7)
    with pytest.raises(ConfigError, match="dt_min <= dt_max"):
        S4D(4, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ConfigError, match="init must be one of"):
        S4D(4, init="legs")
    with pytest.raises(ShapeError, match=r"expects u of shape \(B, 4, L\)"):
        S4D(4)(torch.randn(1, 3, 10))
