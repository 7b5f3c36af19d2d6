"""Momentum (exponential moving average) key encoders, as in MoCo, BYOL and PMQ.

MoCo (He et al. 2020, arXiv 1911.05722, eq. 2) updates the key encoder's parameters θ_k from the query
encoder's θ_q after every optimiser step:

    θ_k ← m·θ_k + (1 − m)·θ_q,        m = 0.999 by default (MoCo, PMQ)

and the key encoder receives no gradient. Buffers (batch-norm running statistics, counters) are not
averaged: they are copied from the online module, which keeps ``eval()``-mode statistics consistent with
the averaged weights' inputs.

Usage (one training step)::

    key_encoder = MomentumEncoder(nn.Sequential(encoder, projection), momentum=0.999)   # once
    q = predictor(projection(encoder(x1)))
    k = key_encoder(x2)                      # no gradient
    out = objective(q, k, patient_ids)
    out.loss.backward(); optimizer.step()
    key_encoder.update(nn.Sequential(encoder, projection))                             # after the step

The wrapper's ``state_dict`` holds the averaged copy, so a resumed run continues from it. Batch norm in
the key encoder uses batch statistics in training mode, as in MoCo; MoCo's shuffle-BN across GPUs is not
implemented (use SyncBatchNorm or layer norm under DDP).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from clinseq.errors import ConfigError, ShapeError

__all__ = ["MomentumEncoder", "ema_update"]


def _check_momentum(momentum: float) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"momentum must be a float in [0, 1] (e.g. 0.999), got {momentum!r}")
    return float(momentum)


def _unwrap(module: nn.Module) -> nn.Module:
    # DistributedDataParallel / DataParallel keep the real module in `.module`.
    inner = getattr(module, "module", None)
    return inner if isinstance(inner, nn.Module) else module


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """θ_target ← m·θ_target + (1 − m)·θ_online for every parameter; buffers copied from ``online``.

    Both modules must have the same parameter and buffer names and shapes (``target`` is usually a deep
    copy of ``online``); a DDP/DataParallel wrapper around ``online`` is unwrapped. ``momentum`` = 1
    leaves the target unchanged, 0 copies the online weights.
    """
    m = _check_momentum(momentum)
    online = _unwrap(online)
    on_params = dict(online.named_parameters())
    tg_params = dict(target.named_parameters())
    if on_params.keys() != tg_params.keys():
        missing = sorted(set(on_params) ^ set(tg_params))[:5]
        raise ShapeError(
            "ema_update needs the same parameters in online and target modules; these differ: "
            f"{missing}; build the target as copy.deepcopy(online) (MomentumEncoder does)"
        )
    names = list(on_params)
    for name in names:
        if on_params[name].shape != tg_params[name].shape:
            raise ShapeError(
                f"parameter {name!r} has shape {tuple(on_params[name].shape)} online but "
                f"{tuple(tg_params[name].shape)} in the target; they must match"
            )
    if names:
        tg = [tg_params[n] for n in names]
        on = [on_params[n].detach() for n in names]
        torch._foreach_mul_(tg, m)
        torch._foreach_add_(tg, on, alpha=1.0 - m)
    on_bufs = dict(online.named_buffers())
    tg_bufs = dict(target.named_buffers())
    if on_bufs.keys() != tg_bufs.keys():
        raise ShapeError(
            "ema_update needs the same buffers in online and target modules; these differ: "
            f"{sorted(set(on_bufs) ^ set(tg_bufs))[:5]}"
        )
    for name, buf in on_bufs.items():
        tg_bufs[name].copy_(buf)


class MomentumEncoder(nn.Module):
    """A frozen deep copy of ``online`` updated by :func:`ema_update`; ``forward`` runs without gradient.

    Args:
        online: the module whose moving average to keep (e.g. encoder + projection head).
        momentum: m of θ ← m·θ + (1 − m)·θ_online (MoCo/PMQ: 0.999).
    """

    def __init__(self, online: nn.Module, momentum: float = 0.999) -> None:
        super().__init__()
        self.momentum = _check_momentum(momentum)
        self.target = copy.deepcopy(_unwrap(online))
        self.target.requires_grad_(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The target module's output, computed under ``torch.no_grad()``."""
        with torch.no_grad():
            return self.target(*args, **kwargs)

    def update(self, online: nn.Module, momentum: float | None = None) -> None:
        """One EMA step towards ``online`` (call after ``optimizer.step()``); ``momentum`` overrides m."""
        ema_update(online, self.target, self.momentum if momentum is None else momentum)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"
