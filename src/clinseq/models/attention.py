"""Pre-norm transformer blocks on ``F.scaled_dot_product_attention`` (SDPA), with rotary positions.

Which SDPA backend runs, and its attention memory for B items, H heads and L tokens:

- CUDA, fp16/bf16 (autocast), no mask: ``flash`` (FlashAttention-2; head_dim ≤ 256, a multiple of 8),
  O(B·H·L) — the L × L scores are never stored.
- CUDA, fp32, or with a key padding mask: ``efficient`` (memory-efficient attention), O(B·H·L).
- CPU, fp32/bf16, no dropout: ``flash`` (torch's CPU flash kernel, also with a mask), O(B·H·L).
- dropout > 0 on the CPU, or when forced: ``math``, which materialises the B·H·L² scores.

:func:`sdpa_backend` says which one an input gets; ``backends=`` on :class:`SelfAttention` and
:class:`TransformerBlock` restricts the choice, e.g. ``("flash", "efficient")`` turns a silent fall-back
to the quadratic math path into an error.

Rotary position embedding (RoPE): Su et al. 2021, "RoFormer" (arXiv 2104.09864). Channel pairs
(i, i + Dh/2) of each query and key are rotated by the angle p · θ_i with θ_i = base^(−2i / Dh) and p
the token's position, so q·k depends on positions only through their difference and any length works.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from clinseq.errors import ConfigError

__all__ = [
    "SDPA_BACKENDS",
    "SelfAttention",
    "TransformerBlock",
    "apply_rotary",
    "resolve_backends",
    "sdpa_backend",
]

#: Names accepted by ``backends=`` and returned by :func:`sdpa_backend`.
SDPA_BACKENDS: dict[str, SDPBackend] = {
    name: getattr(SDPBackend, member)
    for name, member in (
        ("flash", "FLASH_ATTENTION"),
        ("efficient", "EFFICIENT_ATTENTION"),
        ("cudnn", "CUDNN_ATTENTION"),  # not in every torch the package accepts
        ("math", "MATH"),
    )
    if hasattr(SDPBackend, member)
}
_NAMES = {int(v): k for k, v in SDPA_BACKENDS.items()}

Backends = str | Sequence[str] | None


def resolve_backends(backends: Backends) -> tuple[str, ...] | None:
    """Validated backend names (None: torch chooses among all); a single name may be given as a string."""
    if backends is None:
        return None
    names = (backends,) if isinstance(backends, str) else tuple(backends)
    unknown = [n for n in names if n not in SDPA_BACKENDS]
    if unknown or not names:
        raise ConfigError(
            f"attention backends must be a non-empty selection of {tuple(SDPA_BACKENDS)}, got {backends!r}; "
            "e.g. ('flash', 'efficient') for linear memory, or None to let torch choose"
        )
    return names


def _kernel_context(backends: tuple[str, ...] | None):
    return nullcontext() if backends is None else sdpa_kernel([SDPA_BACKENDS[n] for n in backends])


def sdpa_backend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    backends: Backends = None,
) -> str:
    """Name of the backend ``F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p)`` runs.

    One of "flash", "efficient", "cudnn", "math"; "none" when no allowed backend accepts the input (the
    call would raise), "unknown" when this torch build cannot tell. It asks torch's own dispatcher
    (``torch._fused_sdp_choice``), under the ``backends`` restriction and the global SDPA flags, so the
    answer is the kernel that really runs; nothing is computed.
    """
    choose = getattr(torch, "_fused_sdp_choice", None)
    if choose is None:  # pragma: no cover - private helper missing in some future torch
        return "unknown"
    with _kernel_context(resolve_backends(backends)), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch explains each backend it rules out: not wanted for a query
        try:
            index = int(choose(q, k, v, attn_mask, dropout_p))
        except RuntimeError:  # "No viable backend ... was found"
            return "none"
    return _NAMES.get(index, "none" if index < 0 else "unknown")


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
    ``backends``: SDPA backends allowed (names of :data:`SDPA_BACKENDS`), None for torch's choice; an
    input that none of them accepts raises a ``ConfigError`` rather than falling back.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        dropout: float = 0.0,
        rotary: bool = False,
        rope_base: float = 10000.0,
        backends: Backends = None,
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
        self.backends = resolve_backends(backends)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    @staticmethod
    def _mask(key_padding_mask: torch.Tensor | None) -> torch.Tensor | None:
        if key_padding_mask is None:
            return None
        empty = ~key_padding_mask.any(dim=-1, keepdim=True)
        return (key_padding_mask | empty)[:, None, None, :]

    def backend_for(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> str:
        """The SDPA backend that ``forward(x, key_padding_mask)`` runs now (see :func:`sdpa_backend`).

        Takes the current autocast state and train/eval mode (dropout) into account; allocates one
        (B, H, L, head_dim) tensor and computes nothing.
        """
        b, n, _ = x.shape
        dtype = torch.result_type(x, self.qkv.weight) if x.is_floating_point() else self.qkv.weight.dtype
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
        q = torch.empty(b, self.n_heads, n, self.head_dim, device=x.device, dtype=dtype)
        dropout = self.dropout if self.training else 0.0
        return sdpa_backend(q, q, q, self._mask(key_padding_mask), dropout, self.backends)

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
        mask = self._mask(key_padding_mask)
        dropout = self.dropout if self.training else 0.0
        with _kernel_context(self.backends):
            try:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            except RuntimeError as exc:
                if self.backends is None or sdpa_backend(q, k, v, mask, dropout, self.backends) != "none":
                    raise
                raise ConfigError(
                    f"none of the allowed attention backends {self.backends} accepts this input "
                    f"({q.device.type}, {q.dtype}, head_dim {self.head_dim}, mask "
                    f"{'yes' if mask is not None else 'no'}, dropout {dropout}): flash needs fp16/bf16 on "
                    "CUDA (use bf16 autocast) and no dropout on the CPU; efficient runs on CUDA only. "
                    "Change the input, or allow another backend (None lets torch choose; 'math' stores "
                    "the L × L scores)"
                ) from exc
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then + MLP(LN(x)) with a GELU MLP of ``mlp_ratio`` · dim.

    ``backends`` restricts the attention's SDPA backends (see :class:`SelfAttention`).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        rotary: bool = False,
        rope_base: float = 10000.0,
        backends: Backends = None,
    ) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout, rotary, rope_base, backends)
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
