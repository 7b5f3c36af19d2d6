"""Pre-norm transformer blocks on ``F.scaled_dot_product_attention``, with rotary positions.

``F.scaled_dot_product_attention`` picks a fused kernel by itself: FlashAttention-2 on recent NVIDIA GPUs
for fp16/bf16 inputs without a mask, the memory-efficient kernel when a key padding mask is given, and
the math path on CPU. None of them materialises the L × L attention matrix on GPU.

Rotary position embedding (RoPE): Su et al. 2021, "RoFormer" (arXiv 2104.09864). Channel pairs
(i, i + Dh/2) of each query and key are rotated by the angle p · θ_i with θ_i = base^(−2i / Dh) and p
the token's position, so q·k depends on positions only through their difference and any length works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clinseq.utils import ConfigError

__all__ = ["apply_rotary", "SelfAttention", "TransformerBlock"]


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate x (B, H, L, Dh) by positions (L,) or (B, L) (half-split RoPE); computed in fp32."""
    half = x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (L, half) or (B, L, half)
    if angles.ndim == 3:
        angles = angles[:, None]  # broadcast over heads
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float().split(half, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``forward(x: (B, L, D), key_padding_mask=None, positions=None)``.

    ``key_padding_mask`` (B, L) bool: True = a real token that may be attended to. A row without any
    real token attends to all positions instead (avoids NaN; such outputs must be ignored by the caller).
    ``positions`` (L,) or (B, L): rotary positions, required when ``rotary=True``.
    """

    def __init__(
        self, dim: int, n_heads: int, dropout: float = 0.0, rotary: bool = False, rope_base: float = 10000.0
    ) -> None:
        super().__init__()
        if dim % n_heads != 0:
            raise ConfigError(f"dim must be divisible by n_heads, got dim={dim}, n_heads={n_heads}")
        head_dim = dim // n_heads
        if rotary and head_dim % 2 != 0:
            raise ConfigError(
                f"rotary positions need an even head dimension, got dim / n_heads = {head_dim}; change dim "
                "or n_heads"
            )
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.dropout = dropout
        self.rotary = rotary
        self.rope_base = rope_base
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.rotary:
            if positions is None:
                raise ConfigError("SelfAttention(rotary=True) needs positions of shape (L,) or (B, L)")
            q = apply_rotary(q, positions, self.rope_base)
            k = apply_rotary(k, positions, self.rope_base)
        mask = None
        if key_padding_mask is not None:
            empty = ~key_padding_mask.any(dim=-1, keepdim=True)
            mask = (key_padding_mask | empty)[:, None, None, :]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then + MLP(LN(x)) with a GELU MLP of ``mlp_ratio`` · dim."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        rotary: bool = False,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout, rotary, rope_base)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), key_padding_mask, positions))
        return x + self.drop(self.mlp(self.norm2(x)))
