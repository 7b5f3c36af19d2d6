"""Projection and prediction heads for contrastive / self-distillation objectives.

- ``ProjectionHead``: the MLP g(·) of SimCLR (Chen et al. 2020, arXiv 2002.05709) mapping the encoder's
  representation h to the space of the loss, z = g(h); the loss is computed on z, downstream tasks use h.
  PCLR uses a 320 → 320 projection on the 320-d ResNet output.
- ``PredictionHead``: the predictor q(·) of BYOL (Grill et al. 2020, arXiv 2006.07733) and of the patient
  memory queue (PMQ) objective: an MLP out_dim → hidden → out_dim applied to the online branch only.
- ``l2_normalize``: z / max(‖z‖₂, eps) along the last axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clinseq.errors import ConfigError
from clinseq.models.base import check_choice, check_positive

__all__ = ["ProjectionHead", "PredictionHead", "l2_normalize"]


def l2_normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """x / max(‖x‖₂, eps) along ``dim`` (rows of norm 0 stay 0)."""
    return F.normalize(x, p=2.0, dim=dim, eps=eps)


def _norm(kind: str | None, width: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm1d(width)
    if kind == "ln":
        return nn.LayerNorm(width)
    return nn.Identity()


class _MLP(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, n_layers: int, norm: str | None) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            check_positive(name, value)
        check_choice("norm", norm, ("bn", "ln", None))
        if n_layers < 1:
            raise ConfigError(f"n_layers must be >= 1 (1 = a single linear map), got {n_layers}")
        self.in_dim, self.hidden_dim, self.out_dim, self.n_layers = in_dim, hidden_dim, out_dim, n_layers
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(n_layers - 1):
            # The norm re-centres, which makes the linear bias redundant.
            layers += [nn.Linear(width, hidden_dim, bias=norm is None), _norm(norm, hidden_dim), nn.ReLU()]
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[-1] != self.in_dim:
            raise ConfigError(
                f"{type(self).__name__} expects input of shape (B, {self.in_dim}), got {tuple(x.shape)}; "
                "pool the encoder output first (e.g. encoder(x) or encoder.embed(x))"
            )
        return self.net(x)


class ProjectionHead(_MLP):
    """SimCLR-style MLP: (n_layers − 1) × [Linear → norm → ReLU], then Linear to ``out_dim``.

    ``norm``: "bn" (batch norm, as SimCLR/BYOL; needs B > 1 in training), "ln" (layer norm) or None.
    ``n_layers=1`` is a single linear projection. Output is not normalised (see ``l2_normalize``).
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, n_layers: int = 2, norm: str | None = "bn"
    ) -> None:
        super().__init__(in_dim, hidden_dim, out_dim, n_layers, norm)


class PredictionHead(_MLP):
    """BYOL/PMQ predictor: ``dim → hidden_dim → dim`` MLP (Linear → norm → ReLU → Linear by default)."""

    def __init__(self, dim: int, hidden_dim: int, n_layers: int = 2, norm: str | None = "bn") -> None:
        super().__init__(dim, hidden_dim, dim, n_layers, norm)
