"""Transformer encoder for EHR event sequences: code + time-delta + value embeddings, masked mean pool.

Input is the batch of ``clinseq.data.event_sequences`` (B windows of L events):

=====================  ============  =============================================================
key                    shape/dtype   meaning
=====================  ============  =============================================================
``codes``              (B, L) int    vocabulary index in [0, vocab_size); 0 = padding
``time_delta_s``       (B, L) float  seconds since the previous event of the window (0 for the first
                                     event and for static events); negative values are read as 0
``values``             (B, L) float  normalised numeric value (z-score per code)
``value_mask``         (B, L) bool   True where ``values`` holds a value
``padding_mask``       (B, L) bool   True = a real event, False = padding
=====================  ============  =============================================================

Token i = E_code[codes_i] + E_time(log1p(Δt_i / 1 s)) + value_mask_i · (values_i · w_value + b_value)
(the b_value term marks "a value is present", so a value equal to the code's mean still differs from
no value). E_time is either sinusoidal features of u = log1p(Δt) (periods in u from 0.5 to 40, i.e. a
resolution from seconds to years) followed by a linear map, or a small MLP of u. Event order enters
through rotary positions on the index of each real event (padding is skipped in the count, so left,
right or interleaved padding all give the same result). Attention masks padded keys; the embedding is
the mean of the final-normalised tokens over real events (a window without events gives zeros).
Extra keys in the batch (``patient_id``, …) are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from clinseq.errors import ConfigError, ShapeError
from clinseq.models.attention import TransformerBlock
from clinseq.models.base import Encoder, check_choice, check_positive

__all__ = ["EventTransformer", "TimeDeltaEmbedding"]

_KEYS = ("codes", "time_delta_s", "values", "value_mask", "padding_mask")


class TimeDeltaEmbedding(nn.Module):
    """Embedding of time gaps Δt (seconds) through u = log1p(max(Δt, 0)): sinusoidal or MLP.

    ``kind="sinusoidal"``: [u / 20, sin(ω_k u), cos(ω_k u)] for ``n_frequencies`` angular frequencies
    ω_k = 2π / P_k with periods P_k geometric from 0.5 to 40 in u, then a linear map to ``dim``.
    ``kind="mlp"``: Linear(1, dim) → GELU → Linear(dim, dim) on u.
    """

    def __init__(self, dim: int, kind: str = "sinusoidal", n_frequencies: int = 16) -> None:
        super().__init__()
        check_choice("time_embedding", kind, ("sinusoidal", "mlp"))
        check_positive("n_time_frequencies", n_frequencies)
        self.kind = kind
        if kind == "sinusoidal":
            periods = torch.logspace(math.log10(0.5), math.log10(40.0), n_frequencies)
            self.register_buffer("omega", 2 * math.pi / periods, persistent=False)
            self.proj = nn.Linear(2 * n_frequencies + 1, dim)
        else:
            self.proj = nn.Sequential(nn.Linear(1, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, time_delta_s: torch.Tensor) -> torch.Tensor:
        u = torch.log1p(time_delta_s.float().clamp(min=0.0))[..., None]
        if self.kind == "sinusoidal":
            angles = u * self.omega
            u = torch.cat([u / 20.0, angles.sin(), angles.cos()], dim=-1)
        return self.proj(u)


class EventTransformer(Encoder):
    """EHR encoder; ``forward(batch) -> (B, dim)`` (tokens too with return_tokens).

    Args:
        vocab_size: number of code indices (``len(CodeVocabulary)``, padding and unknown included).
        dim: token width D (``embed_dim``).
        depth: transformer blocks.
        n_heads: attention heads (dim / n_heads must be even with rotary positions).
        mlp_ratio: MLP hidden width / dim.
        dropout: dropout in attention, MLP and residual branches.
        time_embedding: "sinusoidal" or "mlp" (see ``TimeDeltaEmbedding``).
        n_time_frequencies: sinusoidal frequencies of the time embedding.
        positions: "rope" (rotary on the real-event index) or "none" (order only through Δt).
        checkpointing: recompute block activations in backward (training only).
        rope_base: RoPE base frequency.

    Codes are range-checked on CPU tensors (on CUDA the check would force a host sync; an
    out-of-range index there raises a device-side assert instead).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        depth: int = 4,
        n_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        time_embedding: str = "sinusoidal",
        n_time_frequencies: int = 16,
        positions: str = "rope",
        checkpointing: bool = False,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("dim", dim), ("depth", depth), ("n_heads", n_heads)):
            check_positive(name, value)
        check_choice("positions", positions, ("rope", "none"))
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size = vocab_size
        self.positions = positions
        self.checkpointing = checkpointing
        self.embed_dim = dim
        self.code_embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.time_embed = TimeDeltaEmbedding(dim, time_embedding, n_time_frequencies)
        self.value_weight = nn.Parameter(torch.randn(dim) * 0.02)
        self.value_bias = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, n_heads, mlp_ratio, dropout, positions == "rope", rope_base)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def _check(self, batch: Mapping[str, torch.Tensor]) -> None:
        if not isinstance(batch, Mapping):
            raise ShapeError(
                f"EventTransformer expects a dict batch with keys {_KEYS}, got {type(batch).__name__}; build "
                "it with clinseq.data.event_sequences"
            )
        missing = [k for k in _KEYS if k not in batch]
        if missing:
            raise ShapeError(
                f"EventTransformer batch lacks {missing}; expected keys {_KEYS}, got {sorted(batch)}"
            )
        shape = tuple(batch["codes"].shape)
        if len(shape) != 2:
            raise ShapeError(f"batch['codes'] must have shape (B, L), got {shape}")
        for key in _KEYS[1:]:
            if tuple(batch[key].shape) != shape:
                raise ShapeError(
                    f"batch['{key}'] must have the shape of batch['codes'] {shape}, "
                    f"got {tuple(batch[key].shape)}"
                )
        codes = batch["codes"]
        if codes.is_floating_point() or codes.dtype == torch.bool:
            raise ShapeError(f"batch['codes'] must be an integer tensor (int64), got {codes.dtype}")
        for key in ("value_mask", "padding_mask"):
            if batch[key].dtype != torch.bool:
                raise ShapeError(
                    f"batch['{key}'] must be bool, got {batch[key].dtype}; use batch['{key}'].bool()"
                )
        if codes.device.type == "cpu" and codes.numel():
            low, high = int(codes.min()), int(codes.max())
            if low < 0 or high >= self.vocab_size:
                raise ShapeError(
                    f"batch['codes'] must lie in [0, vocab_size={self.vocab_size}), got [{low}, {high}]; "
                    "build the encoder with vocab_size=len(vocabulary)"
                )

    def forward(
        self, batch: Mapping[str, torch.Tensor], return_tokens: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Masked-mean (B, dim) embedding; with ``return_tokens`` also the (B, L, dim) normalised tokens
        (padded positions hold values that carry no meaning)."""
        self._check(batch)
        real = batch["padding_mask"]
        has_value = (batch["value_mask"] & real)[..., None]
        values = torch.where(has_value, batch["values"].float()[..., None], 0.0)
        h = (
            self.code_embed(batch["codes"])
            + self.time_embed(batch["time_delta_s"])
            + has_value * (values * self.value_weight + self.value_bias)
        )
        # Index among real events, so the amount and place of padding never shifts a position.
        positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)
        for block in self.blocks:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, real, positions, use_reentrant=False)
            else:
                h = block(h, real, positions)
        h = self.norm(h)
        count = real.sum(dim=1, keepdim=True).clamp(min=1).to(h.dtype)
        pooled = torch.where(real[..., None], h, 0.0).sum(dim=1) / count
        return (pooled, h) if return_tokens else pooled

    def pooled(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.forward(batch)
