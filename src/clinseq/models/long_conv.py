"""Encoders built from long-convolution layers (S4D, SGConv): a plain residual stack and a WaveNet-style
residual/skip stack with gated activations (the SL-S4Wave shape), with chunked overlap-save inference.

Input x (B, C, T) → stem → (B, dim, F) frames → blocks → feature map (B, dim, F) → mean over frames →
(B, dim) embedding. Every operation but the long convolutions is pointwise in time (1×1 convolutions,
layer norm over channels, activations), so the output at a frame depends on the input only through the
long kernels, and the time cost is O(F log F), the memory O(F) per layer.

- Stem: T is zero-padded to a multiple of ``stride`` and cut into non-overlapping patches of ``stride``
  samples, each mapped linearly to ``dim`` channels (a convolution with kernel = stride = ``stride``):
  F = ceil(T / stride). stride 1 is the 1×1 input projection of SL-S4Wave.
- ``stack="residual"`` (the S4/S4D block, Gu et al. 2022): x ← x + Dropout(GLU(W · GELU(Conv(LN(x))))),
  W a 1×1 convolution dim → 2·dim; a final layer norm.
- ``stack="wavenet"`` (SL-S4Wave, after DiffWave/SSSD): per block
  h = Conv₂(GELU(Conv₁(W_in · LN(x)))) on 2·dim channels, g = tanh(h[:dim]) ⊙ σ(h[dim:]) (gated unit),
  x ← (x + W_res g) / √2, skip ← skip + W_skip g; after the last block
  out = W_out₂ · ReLU(W_out₁ · skip / √depth). SL-S4Wave (Li et al., TMLR 2026, code ML-Health/SLS4Wave)
  pretrains this stack of SGConv layers with NT-Xent; its per-recording time normalisation is replaced
  here by a layer norm over channels, which keeps items independent and chunked inference exact.

Long inputs.
- ``checkpointing=True`` keeps only each block's input for the backward pass (recomputed there):
  activation memory ≈ depth · B · dim · F plus one block's intermediates, for about one extra forward.
- ``feature_map_chunked`` / ``embed_chunked``: overlap-save over the frames. With every long kernel
  bounded (``kernel_len``, or SGConv's finite ``max_length``) an output frame sees at most
  ``receptive_field()`` = (P, Q) frames before and after it. Chunk j of N frames [a, a + N) is computed
  from the input frames [a − P, a + N + Q) (clipped to the recording) and only its middle N outputs are
  kept ("saved"): every kept output sees exactly the inputs it sees in one pass, and at the recording's
  ends both pad with the same zeros, so the result equals the one-pass output (to float rounding) with
  memory bounded by N + P + Q frames. Cost (N + P + Q) / N times one pass.
- No Triton kernel: a fused kernel-generation + FFT-convolution kernel (FlashFFTConv-like) belongs here
  only where it beats ``torch.fft`` on a GPU, and no GPU was lent to measure that; the torch path
  (:func:`clinseq.models.fft_conv.fft_conv`) is the only one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clinseq.errors import ConfigError
from clinseq.models.base import Encoder, check_choice, check_positive, check_signal
from clinseq.models.s4d import S4D
from clinseq.models.sgconv import SGConv

__all__ = ["LongConvEncoder", "S4DEncoder", "SGConvEncoder"]


class ChannelNorm(nn.LayerNorm):
    """Layer norm over the channel axis of (B, H, L) (per item and frame: no statistic crosses time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _reach(layers: list[nn.Module]) -> tuple[int, int] | None:
    past = future = 0
    for layer in layers:
        r = layer.reach()
        if r is None:
            return None
        past, future = past + r[0], future + r[1]
    return past, future


class ResidualBlock(nn.Module):
    """Pre-norm S4 block: x + Dropout(GLU(W · Dropout(GELU(conv(LN(x)))))), (B, dim, F) → same."""

    def __init__(self, dim: int, conv: nn.Module, dropout: float) -> None:
        super().__init__()
        self.norm = ChannelNorm(dim)
        self.conv = conv
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Conv1d(dim, 2 * dim, 1)

    def long_convs(self) -> list[nn.Module]:
        return [self.conv]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.gelu(self.conv(self.norm(x))))
        return x + self.dropout(F.glu(self.out(h), dim=1))


class WaveNetBlock(nn.Module):
    """SL-S4Wave residual block: gated two-conv unit on 2·dim channels, residual and skip 1×1 outputs.

    ``forward(x) -> (x_next, skip)``, both (B, dim, F); x_next = (x + W_res g) / √2. The last block of a
    stack (``last=True``) has no residual output: only its skip output is used.
    """

    def __init__(
        self, dim: int, conv1: nn.Module, conv2: nn.Module, dropout: float, last: bool = False
    ) -> None:
        super().__init__()
        self.dim = dim
        self.norm = ChannelNorm(dim)
        self.inp = nn.Conv1d(dim, 2 * dim, 1)
        self.conv1 = conv1
        self.conv2 = conv2
        self.dropout = nn.Dropout(dropout)
        self.res = None if last else nn.Conv1d(dim, dim, 1)
        self.skip = nn.Conv1d(dim, dim, 1)

    def long_convs(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv2(self.dropout(F.gelu(self.conv1(self.inp(self.norm(x))))))
        g = self.dropout(torch.tanh(h[:, : self.dim]) * torch.sigmoid(h[:, self.dim :]))
        x_next = x if self.res is None else (x + self.res(g)) * math.sqrt(0.5)
        return x_next, self.skip(g)


class LongConvEncoder(Encoder):
    """Stack of long-convolution blocks; ``forward(x: (B, C, T)) -> (B, dim)``.

    Subclasses choose the layer (``S4DEncoder``, ``SGConvEncoder``) by implementing ``_make_conv``.

    Args:
        in_channels: input channels C.
        dim: model width (``embed_dim``).
        depth: number of blocks.
        stack: "residual" (S4 blocks) or "wavenet" (SL-S4Wave gated residual/skip blocks).
        stride: samples per input patch (frame); F = ceil(T / stride).
        bidirectional: each long convolution also sees the future (False: causal end to end).
        dropout: dropout inside the blocks.
        checkpointing: recompute each block in backward (training only).
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        depth: int,
        stack: str,
        stride: int,
        bidirectional: bool,
        dropout: float,
        checkpointing: bool,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("dim", dim), ("depth", depth), ("stride", stride)):
            check_positive(name, value)
        check_choice("stack", stack, ("residual", "wavenet"))
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.stack = stack
        self.stride = stride
        self.bidirectional = bidirectional
        self.checkpointing = checkpointing
        self.embed_dim = dim
        self.stem = nn.Conv1d(in_channels, dim, stride, stride=stride)
        blocks: list[nn.Module] = []
        for i in range(depth):
            if stack == "residual":
                blocks.append(ResidualBlock(dim, self._make_conv(dim), dropout))
            else:
                convs = self._make_conv(2 * dim), self._make_conv(2 * dim)
                blocks.append(WaveNetBlock(dim, *convs, dropout, last=i == depth - 1))
        self.blocks = nn.ModuleList(blocks)
        if stack == "residual":
            self.head: nn.Module = ChannelNorm(dim)
        else:
            self.head = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.ReLU(), nn.Conv1d(dim, dim, 1))

    def _make_conv(self, channels: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shapes -------------------------------------------------------------------------------------------
    def frames(self, n_samples: int) -> int:
        """Frames of the feature map for ``n_samples`` input samples: ceil(T / stride)."""
        return -(-n_samples // self.stride)

    def receptive_field(self) -> tuple[int, int] | None:
        """(past, future) frames an output frame depends on; None when a kernel spans the whole input."""
        return _reach([c for block in self.blocks for c in block.long_convs()])

    # -- one pass -----------------------------------------------------------------------------------------
    def _run_block(self, block: nn.Module, *args: torch.Tensor):
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, dim, frames(T)) feature map of x (B, C, T), before pooling."""
        check_signal(x, self.in_channels, type(self).__name__)
        pad = self.frames(x.shape[-1]) * self.stride - x.shape[-1]
        h = self.stem(F.pad(x, (0, pad)))
        if self.stack == "residual":
            for block in self.blocks:
                h = self._run_block(block, h)
            return self.head(h)
        skip = torch.zeros_like(h)
        for block in self.blocks:
            h, s = self._run_block(block, h)
            skip = skip + s
        return self.head(skip * math.sqrt(1.0 / len(self.blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over frames of the feature map: the (B, dim) embedding of x (B, C, T)."""
        return self.feature_map(x).mean(dim=-1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    # -- chunked (overlap-save) inference -----------------------------------------------------------------
    def _chunks(self, x: torch.Tensor, chunk_samples: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(first frame, kept (B, dim, n) outputs) of each chunk, eval mode, no gradients."""
        check_signal(x, self.in_channels, type(self).__name__)
        check_positive("chunk_samples", chunk_samples)
        if chunk_samples % self.stride:
            raise ConfigError(
                f"chunk_samples must be a multiple of stride={self.stride}, got {chunk_samples}; use "
                f"{max(1, round(chunk_samples / self.stride)) * self.stride}"
            )
        reach = self.receptive_field()
        if reach is None:
            raise ConfigError(
                f"{type(self).__name__} has kernels as long as the input (kernel_len=None), so no output has "
                "a bounded receptive field and chunks cannot reproduce one pass; build it with kernel_len set"
            )
        past, future = reach
        n_frames, chunk = self.frames(x.shape[-1]), chunk_samples // self.stride
        device = self.stem.weight.device
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for a in range(0, n_frames, chunk):
                    b = min(n_frames, a + chunk)
                    lo, hi = max(0, a - past), min(n_frames, b + future)
                    part = x[:, :, lo * self.stride : hi * self.stride].to(device, non_blocking=True)
                    yield a, self.feature_map(part)[:, :, a - lo : b - lo]
        finally:
            self.train(was_training)

    def feature_map_chunked(self, x: torch.Tensor, chunk_samples: int) -> torch.Tensor:
        """``feature_map(x)`` in eval mode computed by overlap-save chunks of ``chunk_samples`` samples.

        Equal to the one-pass feature map (float rounding aside); each step holds at most
        chunk + receptive field frames. The (B, dim, frames(T)) result is assembled on x's device.
        """
        parts = [h.to(x.device) for _, h in self._chunks(x, chunk_samples)]
        return torch.cat(parts, dim=-1)

    def embed_chunked(self, x: torch.Tensor, chunk_samples: int) -> torch.Tensor:
        """``embed(x)`` computed by overlap-save chunks: the (B, dim) mean of the chunked feature map.

        Only per-chunk sums are kept, so memory is bounded by one chunk and its receptive field whatever
        T is; x may stay on the CPU (one chunk at a time is moved to the model's device). fp32 result.
        """
        total, n = None, 0
        for _, h in self._chunks(x, chunk_samples):
            s = h.float().sum(dim=-1)
            total = s if total is None else total + s
            n += h.shape[-1]
        assert total is not None  # T >= 1 gives at least one chunk
        return total / n


class S4DEncoder(LongConvEncoder):
    """Stack of S4D layers (Gu et al. 2022); ``forward(x: (B, C, T)) -> (B, dim)``.

    Args (besides those of :class:`LongConvEncoder`):
        d_state: real state size N per channel (N/2 complex modes).
        init: "lin" (S4D-Lin) or "inv" (S4D-Inv).
        dt_min, dt_max: initial step range, in frames.
        kernel_len: taps kept per kernel, in frames (None: as long as the input; required for chunked
            inference).
    """

    def __init__(
        self,
        in_channels: int,
        dim: int = 64,
        depth: int = 4,
        stack: str = "residual",
        stride: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        checkpointing: bool = False,
        d_state: int = 64,
        init: str = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        kernel_len: int | None = None,
    ) -> None:
        self._layer_args = {
            "d_state": d_state,
            "init": init,
            "dt_min": dt_min,
            "dt_max": dt_max,
            "bidirectional": bidirectional,
            "kernel_len": kernel_len,
        }
        super().__init__(in_channels, dim, depth, stack, stride, bidirectional, dropout, checkpointing)

    def _make_conv(self, channels: int) -> nn.Module:
        return S4D(channels, **self._layer_args)


class SGConvEncoder(LongConvEncoder):
    """Stack of SGConv layers (Li et al. 2023), by default the SL-S4Wave WaveNet stack.

    Args (besides those of :class:`LongConvEncoder`):
        kernel_dim: learned taps per scale.
        max_length: longest lag a kernel reaches, in frames (sets the number of scales).
        decay: weight ratio α of consecutive scales.
        kernel_len: taps kept per kernel, in frames (None: up to max_length).
    """

    def __init__(
        self,
        in_channels: int,
        dim: int = 64,
        depth: int = 4,
        stack: str = "wavenet",
        stride: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        checkpointing: bool = False,
        kernel_dim: int = 32,
        max_length: int = 1 << 16,
        decay: float = 0.5,
        kernel_len: int | None = None,
    ) -> None:
        self._layer_args = {
            "kernel_dim": kernel_dim,
            "max_length": max_length,
            "decay": decay,
            "bidirectional": bidirectional,
            "kernel_len": kernel_len,
        }
        super().__init__(in_channels, dim, depth, stack, stride, bidirectional, dropout, checkpointing)

    def _make_conv(self, channels: int) -> nn.Module:
        return SGConv(channels, **self._layer_args)
