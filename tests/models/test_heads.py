"""Projection / prediction heads and l2_normalize."""

from __future__ import annotations

import pytest
import torch

from clinseq.errors import ConfigError
from clinseq.models import PredictionHead, ProjectionHead, l2_normalize


@pytest.mark.parametrize("norm", ["bn", "ln", None])
@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_projection_head_structure_and_shape(norm: str | None, n_layers: int) -> None:
    head = ProjectionHead(10, 7, 4, n_layers=n_layers, norm=norm)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == (
        [(10, 7)] + [(7, 7)] * (n_layers - 2) + [(7, 4)] if n_layers > 1 else [(10, 4)]
    )
    norms = [m for m in head.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm))]
    assert len(norms) == (0 if norm is None else n_layers - 1)
    x = torch.randn(5, 10, requires_grad=True)
    out = head(x)
    assert out.shape == (5, 4)
    out.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_prediction_head_maps_dim_to_dim() -> None:
    head = PredictionHead(6, 12)
    assert head(torch.randn(4, 6)).shape == (4, 6)
    assert isinstance(head.net[1], torch.nn.BatchNorm1d)


def test_pclr_projection_is_a_320_head() -> None:
    head = ProjectionHead(320, 320, 320, n_layers=1, norm=None)
    assert sum(p.numel() for p in head.parameters()) == 320 * 320 + 320


def test_l2_normalize() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(l2_normalize(x), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    y = l2_normalize(torch.randn(7, 5))
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(7))


def test_bad_input_raises() -> None:
    with pytest.raises(ConfigError, match="n_layers must be >= 1"):
        ProjectionHead(4, 4, 4, n_layers=0)
    with pytest.raises(ConfigError, match="norm must be one of"):
        ProjectionHead(4, 4, 4, norm="gn")
    with pytest.raises(ConfigError, match=r"shape \(B, 4\), got \(2, 3\)"):
        ProjectionHead(4, 4, 4)(torch.randn(2, 3))
