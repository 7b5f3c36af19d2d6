"""AdamW with weight-decay exclusions, and the linear-warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from clinseq.errors import ConfigError

__all__ = ["build_optimizer", "param_groups", "warmup_cosine", "warmup_cosine_factor"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups: decayed weights, and parameters that get no decay.

    Decay applies to weight matrices and convolution kernels (``ndim >= 2``) only. Biases, the scales
    and shifts of BatchNorm/LayerNorm and other 1-D parameters (e.g. a learnable temperature) are
    excluded: decaying them shrinks a normalisation's scale towards 0 and a bias towards 0 for no
    regularisation benefit (Goyal et al. 2017; the usual SimCLR/MoCo/timm practice). Parameters with
    ``requires_grad=False`` (a momentum encoder) are left out of the optimizer.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    betas: Iterable[float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over :func:`param_groups` of ``model``.

    ``fused`` defaults to True on CUDA (one kernel for all parameters) and to torch's foreach path
    elsewhere.
    """
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters; nothing to optimise")
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)


def warmup_cosine_factor(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Learning-rate multiplier after ``step`` optimizer steps (the peak value is 1).

    - warmup (step < warmup_steps): ``(step + 1) / warmup_steps`` — linear, reaching 1 at the last
      warmup step, so the very first update already has a non-zero rate;
    - then cosine: ``r + (1 − r) · ½ (1 + cos(π · p))`` with ``p = (step − warmup) / (max − warmup)``
      clamped to [0, 1] and ``r = min_lr_ratio``; ``p = 1`` at ``step = max_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(max_steps - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`warmup_cosine_factor` (its ``state_dict`` holds the step)."""
    if warmup_steps < 0 or max_steps < 1:
        raise ConfigError(
            f"warmup_steps must be >= 0 and max_steps >= 1, got warmup_steps={warmup_steps}, "
            f"max_steps={max_steps}"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")

    def factor(step: int) -> float:
        return warmup_cosine_factor(step, warmup_steps, max_steps, min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
