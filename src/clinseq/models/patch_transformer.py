"""Patch transformer for multichannel waveforms (ECG, EEG), with chunked inference for hour-long EEG.

A signal x (B, C, T) is cut into non-overlapping patches of ``patch_len`` samples (the last one
zero-padded when T is not a multiple) and each patch becomes a token:

- ``tokenization="channel_independent"`` (PatchTST, Nie et al. 2023, arXiv 2211.14730, with a learned
  channel embedding added so leads stay distinguishable): one token per (channel, patch), a shared
  linear map patch_len → dim; tokens = C · ceil(T / patch_len), ordered channel-major.
- ``tokenization="mixed"``: one token per patch across all channels, a linear map C · patch_len → dim;
  tokens = ceil(T / patch_len).

Positions are rotary (RoPE on the patch index, any length) or a learned table of ``max_patches``
entries. The embedding is the mean over all tokens after a final layer norm, so any T ≥ 1 works (one
patch at least).

Long sequences. Attention runs in ``F.scaled_dot_product_attention``, whose flash and memory-efficient
backends never store the N × N scores: FlashAttention-2 on CUDA under bf16/fp16 autocast, the
memory-efficient kernel on CUDA in fp32, torch's flash kernel on the CPU (without dropout); see
:mod:`clinseq.models.attention`. Every other tensor is O(N · dim), so forward + backward memory grows
linearly with the sequence length; ``attention_backend(x)`` names the backend an input gets, and
``attention_backends=("flash", "efficient")`` makes a fall-back to the quadratic math path an error.
With ``checkpointing=True`` only each block's input is kept for the backward pass and the block is
recomputed there: activation memory ≈ depth · N · dim (the block inputs) plus one block's intermediates
instead of depth times those, for about one more forward pass of compute. For inference on recordings
longer than one attention window, ``embed_chunked`` embeds fixed chunks independently (memory bounded by
the chunk, whatever T is).

Sizes: one hour of 19-channel EEG at 256 Hz with one-second patches (``patch_len=256``, channel-
independent tokens) is 19 · 3600 = 68,400 tokens. With dim 128 a block's input is 68,400 × 128 values
(17.5 MB in bf16), so with checkpointing the activations of the whole hour take well under a gigabyte
(arithmetic, not a GPU measurement: ``benchmarks/bench_encoder.py --device cuda`` measures it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from clinseq.errors import ConfigError
from clinseq.models.attention import Backends, TransformerBlock, resolve_backends
from clinseq.models.base import Encoder, check_choice, check_positive, check_signal

__all__ = ["PatchTransformer"]


class PatchTransformer(Encoder):
    """Patch-token transformer; ``forward(x: (B, C, T)) -> (B, dim)`` (tokens too with return_tokens).

    Args:
        in_channels: input channels C.
        patch_len: samples per patch (per channel).
        dim: token width D (``embed_dim``).
        depth: number of transformer blocks.
        n_heads: attention heads (dim / n_heads must be even for rotary positions).
        mlp_ratio: MLP hidden width / dim.
        dropout: dropout in attention, MLP and residual branches.
        tokenization: "channel_independent" or "mixed" (see the module docstring).
        positions: "rope" or "learned".
        max_patches: size of the learned position table (patches per channel), for positions="learned".
        checkpointing: recompute block activations in backward (training only).
        rope_base: RoPE base frequency.
        attention_backends: SDPA backends the blocks may use ("flash", "efficient", "cudnn", "math"),
            None for torch's choice; e.g. ("flash", "efficient") guarantees memory linear in tokens.
    """

    def __init__(
        self,
        in_channels: int,
        patch_len: int = 50,
        dim: int = 128,
        depth: int = 4,
        n_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        tokenization: str = "channel_independent",
        positions: str = "rope",
        max_patches: int = 1024,
        checkpointing: bool = False,
        rope_base: float = 10000.0,
        attention_backends: Backends = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("patch_len", patch_len),
            ("dim", dim),
            ("depth", depth),
            ("n_heads", n_heads),
            ("max_patches", max_patches),
        ):
            check_positive(name, value)
        check_choice("tokenization", tokenization, ("channel_independent", "mixed"))
        check_choice("positions", positions, ("rope", "learned"))
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.patch_len = patch_len
        self.tokenization = tokenization
        self.positions = positions
        self.max_patches = max_patches
        self.checkpointing = checkpointing
        self.attention_backends = resolve_backends(attention_backends)
        self.embed_dim = dim
        if tokenization == "channel_independent":
            self.patch_embed = nn.Linear(patch_len, dim)
            self.channel_embed = nn.Parameter(torch.randn(in_channels, dim) * 0.02)
        else:
            self.patch_embed = nn.Linear(in_channels * patch_len, dim)
            self.register_parameter("channel_embed", None)
        if positions == "learned":
            self.pos_embed = nn.Parameter(torch.randn(max_patches, dim) * 0.02)
        else:
            self.register_parameter("pos_embed", None)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim, n_heads, mlp_ratio, dropout, positions == "rope", rope_base, self.attention_backends
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def n_patches(self, n_samples: int) -> int:
        """Patches per channel for ``n_samples`` samples: ceil(T / patch_len)."""
        return -(-n_samples // self.patch_len)

    def n_tokens(self, n_samples: int) -> int:
        """Tokens (the attention length) for ``n_samples`` samples."""
        n = self.n_patches(n_samples)
        return n * self.in_channels if self.tokenization == "channel_independent" else n

    def attention_backend(self, x: torch.Tensor) -> str:
        """The SDPA backend ("flash", "efficient", "cudnn", "math"; "none": no allowed backend accepts
        it) that ``forward(x)`` would run for x (B, C, T) now, under the current autocast state and
        train/eval mode. Computes nothing but one (B, heads, tokens, head_dim) allocation."""
        check_signal(x, self.in_channels, type(self).__name__)
        attn = self.blocks[0].attn
        shape = (x.shape[0], self.n_tokens(x.shape[2]), self.embed_dim)
        weight = self.norm.weight
        # Only the shape, device and dtype of the block input matter: a broadcast scalar, no allocation.
        return attn.backend_for(torch.zeros((), device=weight.device, dtype=weight.dtype).expand(shape))

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, N, D), rotary positions (N,)) of x (B, C, T)."""
        b, c, t = x.shape
        n = self.n_patches(t)
        if self.positions == "learned" and n > self.max_patches:
            raise ConfigError(
                f"PatchTransformer(positions='learned', max_patches={self.max_patches}) got T={t} samples = "
                f"{n} patches of {self.patch_len}; use positions='rope', a larger max_patches, or "
                "embed_chunked() with a chunk of at most max_patches * patch_len samples"
            )
        x = nn.functional.pad(x, (0, n * self.patch_len - t))
        patches = x.reshape(b, c, n, self.patch_len)
        patch_index = torch.arange(n, device=x.device)
        if self.tokenization == "channel_independent":
            h = self.patch_embed(patches) + self.channel_embed[:, None, :]  # (B, C, N, D)
            if self.pos_embed is not None:
                h = h + self.pos_embed[:n]
            return h.reshape(b, c * n, -1), patch_index.repeat(c)
        h = self.patch_embed(patches.permute(0, 2, 1, 3).reshape(b, n, c * self.patch_len))
        if self.pos_embed is not None:
            h = h + self.pos_embed[:n]
        return h, patch_index

    def forward(
        self, x: torch.Tensor, return_tokens: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Mean-pooled (B, dim) embedding of x (B, C, T); with ``return_tokens`` also the (B, N, dim)
        normalised tokens (N = n_tokens(T), channel-major for channel-independent tokenisation)."""
        check_signal(x, self.in_channels, type(self).__name__)
        h, positions = self._tokens(x)
        for block in self.blocks:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, None, positions, use_reentrant=False)
            else:
                h = block(h, None, positions)
        h = self.norm(h)
        pooled = h.mean(dim=1)
        return (pooled, h) if return_tokens else pooled

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def embed_chunked(
        self,
        x: torch.Tensor,
        chunk_samples: int | None = None,
        *,
        chunk_s: float | None = None,
        sampling_rate_hz: float | None = None,
        chunks_per_batch: int = 8,
    ) -> torch.Tensor:
        """Embedding of a long recording from independent chunks, with memory bounded by the chunk size.

        T is cut into consecutive chunks of ``chunk_samples`` samples (or ``round(chunk_s ·
        sampling_rate_hz)``), the last one shorter when T is not a multiple. Each chunk j of n_j samples
        is embedded on its own, exactly as ``embed`` embeds a window (eval mode, no gradients, positions
        restarting at 0), and the result is the length-weighted mean
            e = Σ_j (n_j / T) · embed(x[..., chunk j])      (fp32, shape (B, dim)).
        With one chunk covering all of T this is ``embed(x)``. Attention never crosses a chunk border,
        so peak activation memory is that of ``chunks_per_batch · B`` chunks, whatever T is; ``x`` may
        stay on the CPU — only one group of chunks is moved to the model's device at a time.

        ``chunk_samples`` must be a multiple of ``patch_len`` so that the chunks' patches are the
        patches of the whole recording.
        """
        if (chunk_samples is None) == (chunk_s is None):
            raise ConfigError(
                "embed_chunked needs exactly one of chunk_samples or chunk_s (with sampling_rate_hz), got "
                f"chunk_samples={chunk_samples}, chunk_s={chunk_s}"
            )
        if chunk_s is not None:
            if sampling_rate_hz is None or not sampling_rate_hz > 0:
                raise ConfigError(
                    f"chunk_s={chunk_s} needs sampling_rate_hz > 0, got {sampling_rate_hz}; pass the "
                    "recording's rate, e.g. sampling_rate_hz=256.0"
                )
            check_positive("chunk_s", chunk_s)
            chunk_samples = int(round(chunk_s * sampling_rate_hz))
        elif chunk_samples is None:  # unreachable (checked above); narrows the type
            raise ConfigError("embed_chunked needs chunk_samples or chunk_s")
        check_positive("chunk_samples", chunk_samples)
        check_positive("chunks_per_batch", chunks_per_batch)
        if chunk_samples % self.patch_len != 0:
            raise ConfigError(
                f"chunk_samples must be a multiple of patch_len={self.patch_len}, got {chunk_samples}; use "
                f"{max(1, round(chunk_samples / self.patch_len)) * self.patch_len}"
            )
        check_signal(x, self.in_channels, type(self).__name__)
        b, c, t = x.shape
        device = self.norm.weight.device
        n_full, rest = divmod(t, chunk_samples)
        total = torch.zeros(b, self.embed_dim, device=device, dtype=torch.float32)
        for first in range(0, n_full, chunks_per_batch):
            k = min(chunks_per_batch, n_full - first)
            part = x[:, :, first * chunk_samples : (first + k) * chunk_samples]
            # (B, C, k·S) → (B·k, C, S): chunk j of item i is row i·k + j.
            part = part.reshape(b, c, k, chunk_samples).transpose(1, 2).reshape(b * k, c, chunk_samples)
            e = self.embed(part.to(device, non_blocking=True)).float()
            total += e.view(b, k, -1).sum(dim=1) * chunk_samples
        if rest:
            e = self.embed(x[:, :, n_full * chunk_samples :].to(device, non_blocking=True)).float()
            total += e * rest
        return total / t
