"""CPCEncoder: frames(T) against real output lengths, causality of c, presets, GRU/LSTM."""

from __future__ import annotations

import pytest
import torch

from clinseq.errors import ConfigError, ShapeError
from clinseq.models import CPCEncoder, cpc_mehari2022


def _strided(context: str = "gru", norm: str | None = "ln") -> CPCEncoder:
    torch.manual_seed(0)
    return CPCEncoder(2, (6, 6, 8), (10, 8, 4), (5, 4, 2), norm=norm, context=context, context_dim=5)


@pytest.mark.parametrize("n_samples", [105, 106, 144, 145, 146, 333, 1000, 1001])
@pytest.mark.parametrize("context", ["gru", "lstm"])
def test_frames_matches_output_length(n_samples: int, context: str) -> None:
    model = _strided(context).eval()
    with torch.no_grad():
        z, c = model(torch.randn(2, 2, n_samples))
    expected = model.frames(n_samples)
    assert z.shape == (2, expected, 8)
    assert c.shape == (2, expected, 5)


def test_receptive_field_and_minimum_length() -> None:
    model = _strided()
    assert model.total_stride == 40
    assert model.receptive_field == 10 + (8 - 1) * 5 + (4 - 1) * 20  # = 105
    assert model.frames(104) == 0 and model.frames(105) == 1 and model.frames(145) == 2
    with pytest.raises(ShapeError, match="at least 105 samples"):
        model(torch.randn(1, 2, 104))
    assert model(torch.randn(1, 2, 105)).c.shape[1] == 1


def test_context_is_causal() -> None:
    # Changing the input from sample `cut` on must leave every frame whose receptive field ends before
    # `cut` — and its context vector — unchanged (c_t sees z_≤t only).
    model = _strided("lstm").eval()
    x = torch.randn(1, 2, 600)
    cut = 400
    y = x.clone()
    y[..., cut:] = torch.randn(1, 2, 600 - cut)
    with torch.no_grad():
        a, b = model(x), model(y)
    n_safe = (cut - model.receptive_field) // model.total_stride + 1  # frames t with t·S + R <= cut
    torch.testing.assert_close(a.z[:, :n_safe], b.z[:, :n_safe])
    torch.testing.assert_close(a.c[:, :n_safe], b.c[:, :n_safe])
    assert not torch.allclose(a.c[:, n_safe:], b.c[:, n_safe:])


def test_embed_is_the_time_mean_of_c() -> None:
    model = _strided("gru", norm="bn")
    x = torch.randn(3, 2, 300)
    e = model.embed(x)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(e, model(x).c.mean(dim=1))
    assert e.shape == (3, model.embed_dim)


def test_mehari_preset_keeps_one_frame_per_sample() -> None:
    model = cpc_mehari2022(12).eval()
    assert isinstance(model.context, torch.nn.LSTM) and model.context.num_layers == 2
    assert model.total_stride == 1 and model.receptive_field == 1
    with torch.no_grad():
        z, c = model(torch.randn(2, 12, 37))
    assert z.shape == (2, 37, 512) and c.shape == (2, 37, 512) and model.frames(37) == 37
    assert sum(isinstance(m, torch.nn.Conv1d) for m in model.modules()) == 4
    assert isinstance(cpc_mehari2022(12, context="gru").context, torch.nn.GRU)


def test_bad_configs_raise() -> None:
    with pytest.raises(ConfigError, match="one channel count, kernel and stride per convolution"):
        CPCEncoder(12, (8, 8), (1,), (1, 1))
    with pytest.raises(ConfigError, match="context must be one of"):
        CPCEncoder(12, context="transformer")
    with pytest.raises(ConfigError, match="norm must be one of"):
        CPCEncoder(12, norm="gn")
