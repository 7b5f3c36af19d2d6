"""What every encoder shares: the ``embed_dim`` attribute, ``embed()`` and input checks.

Every waveform encoder takes a float tensor ``x`` of shape (B, C, T) — B items, C channels, T samples —
and returns a pooled (B, D) embedding from ``forward`` (or a documented richer output), with
``D == embed_dim``. ``embed(x)`` is the frozen-feature path used by linear probes: eval mode, no
gradients, pooled (B, D); the module's train/eval mode is restored afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clinseq.errors import ConfigError, ShapeError


class Encoder(nn.Module):
    """Base class of the clinseq encoders.

    Subclasses set ``embed_dim`` and implement ``forward`` and ``pooled`` (the (B, D) embedding of a
    batch, called under ``torch.no_grad`` in eval mode by ``embed``).
    """

    embed_dim: int

    def pooled(self, x: Any) -> torch.Tensor:  # pragma: no cover - abstract
        """The pooled (B, embed_dim) embedding of ``x`` (with gradients; ``embed`` wraps it)."""
        raise NotImplementedError

    def embed(self, x: Any) -> torch.Tensor:
        """Pooled (B, embed_dim) embedding in eval mode without gradients (mode restored afterwards).

        Dropout is off and batch norm uses its running statistics, so the result depends on each item
        alone and is deterministic for a given input.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self.pooled(x)
        finally:
            self.train(was_training)


def check_signal(x: torch.Tensor, in_channels: int, name: str, min_samples: int = 1) -> None:
    """Raise a ``ShapeError`` unless ``x`` is a floating (B, C, T) tensor with C == ``in_channels``."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} expects a torch.Tensor of shape (B, C, T), got {type(x).__name__}")
    if x.ndim != 3:
        raise ShapeError(
            f"{name} expects input of shape (B, C, T) = (batch, channels, samples), got shape "
            f"{tuple(x.shape)}; add a batch axis with x[None] or a channel axis with x[:, None]"
        )
    if not x.is_floating_point():
        raise ShapeError(
            f"{name} expects a floating-point signal, got dtype {x.dtype}; convert ADC counts to physical "
            "units first, e.g. ((x - baseline) / gain).float()"
        )
    if x.shape[1] != in_channels:
        raise ShapeError(
            f"{name} was built for in_channels={in_channels}, got {x.shape[1]} channels (shape "
            f"{tuple(x.shape)}); build the encoder with in_channels={x.shape[1]} or select channels"
        )
    if x.shape[2] < min_samples:
        raise ShapeError(
            f"{name} needs at least {min_samples} samples per item, got T={x.shape[2]}; use longer "
            "windows or a configuration with less down-sampling"
        )


def check_positive(name: str, value: int | float) -> None:
    """Raise a ``ConfigError`` unless ``value`` > 0."""
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    """Raise a ``ConfigError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
