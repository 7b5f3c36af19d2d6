"""1-D residual networks for ECG: the Ribeiro/PCLR ResNet and an xresnet1d-like bottleneck ResNet.

- ``ResNet1d`` — Ribeiro et al. 2020, "Automatic diagnosis of the 12-lead ECG using a deep neural network"
  (Nat. Commun. 11:1760), the encoder of PCLR (Diamant et al. 2022, PLOS Comput. Biol. 18:e1009862):
  a kernel-16 convolution with 64 filters, then residual units with two kernel-16 convolutions whose
  second one down-samples by 4 (filters 128, 196, 256, 320), a skip path of max-pool + 1×1 convolution,
  and batch norm + ReLU applied *after* the sum (the unit passes both the activated and the
  pre-activation streams on). PCLR takes 10 s of 12-lead ECG at 4096 samples (409.6 Hz), so the last
  unit holds 16 frames, and global average pooling gives the 320-d representation.
- ``XResNet1d`` — the 1-D xresnet of Strodthoff et al. 2021 ("Deep learning for ECG analysis:
  benchmarks and insights from PTB-XL", IEEE JBHI 25:1519), after He et al. 2019 ("Bag of tricks"):
  a stem of three convolutions (32, 32, 64 filters, the first with stride 2) and a stride-2 max-pool,
  then four stages of bottleneck blocks (1×1 → k×1 → 1×1, expansion 4, kernel 5), stride 2 from
  the second stage, an identity path of average pooling + 1×1 convolution, and the last batch norm of
  each block initialised to zero. Pooling is global average, or "concat" (average ‖ max) as in the
  benchmark's head.

Every length works: each down-sampling step maps T samples to ceil(T / stride) (TF-"same" padding), so
any T ≥ 1 gives at least one frame; the minimum *useful* length is about one receptive field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clinseq.errors import ConfigError
from clinseq.models.base import Encoder, check_choice, check_positive, check_signal

__all__ = ["ResNet1d", "XResNet1d", "resnet1d_pclr", "xresnet1d50", "xresnet1d101"]


def _same_padding(n_samples: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """(left, right) padding so that a convolution gives ceil(n_samples / stride) outputs (TF "same")."""
    n_out = -(-n_samples // stride)
    total = max((n_out - 1) * stride + kernel_size - n_samples, 0)
    return total // 2, total - total // 2


class SameConv1d(nn.Conv1d):
    """``nn.Conv1d`` whose padding is computed per input so that T samples give ceil(T / stride) frames.

    Even kernels (Ribeiro's 16) cannot be padded symmetrically; the extra sample goes to the right.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = _same_padding(x.shape[-1], self.kernel_size[0], self.stride[0])
        return super().forward(F.pad(x, (left, right)))


class _MaxPoolCeil(nn.Module):
    """Max-pool with window = stride = ``factor`` giving ceil(T / factor) frames (the last may be partial)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = (-x.shape[-1]) % self.factor
        # −inf padding never wins the max, so a partial last window pools its real samples only.
        x = F.pad(x, (0, extra), value=float("-inf"))
        return F.max_pool1d(x, self.factor, self.factor)


class RibeiroBlock(nn.Module):
    """One residual unit of Ribeiro et al. 2020 (pre-activation order, two streams).

    ``(x, y) → x' = conv2(drop(relu(bn1(conv1(x))))) + skip(y);  returns (drop(relu(bn2(x'))), x')``
    where conv2 down-samples by ``downsample`` and skip = max-pool(downsample) then a 1×1 convolution
    when the width changes.
    """

    def __init__(self, in_width: int, out_width: int, kernel_size: int, downsample: int, dropout: float):
        super().__init__()
        self.conv1 = SameConv1d(in_width, out_width, kernel_size)
        self.bn1 = nn.BatchNorm1d(out_width)
        self.conv2 = SameConv1d(out_width, out_width, kernel_size, stride=downsample)
        self.bn2 = nn.BatchNorm1d(out_width)
        self.dropout = nn.Dropout(dropout)
        skip: list[nn.Module] = []
        if downsample > 1:
            skip.append(_MaxPoolCeil(downsample))
        if in_width != out_width:
            skip.append(nn.Conv1d(in_width, out_width, 1, bias=False))
        self.skip = nn.Sequential(*skip)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.skip(y)
        x = self.dropout(F.relu(self.bn1(self.conv1(x))))
        x = self.conv2(x) + y
        return self.dropout(F.relu(self.bn2(x))), x


class ResNet1d(Encoder):
    """Ribeiro-style 1-D ResNet (the PCLR encoder); ``forward(x: (B, C, T)) -> (B, widths[-1])``.

    Args:
        in_channels: input channels C (leads).
        widths: filters of the stem convolution followed by those of each residual unit; the
            Ribeiro/PCLR network is (64, 128, 196, 256, 320).
        downsample: down-sampling factor of each residual unit (len(widths) − 1 entries); (4, 4, 4, 4)
            takes 4096 samples to 16 frames.
        kernel_size: convolution kernel in samples (16 in the paper).
        dropout: dropout after each activation (PCLR trains with 0).

    Pooling is the global average over the remaining frames, so any T ≥ 1 works; with the default
    factors T ≥ 256 keeps at least one frame per 256 input samples un-padded.
    """

    def __init__(
        self,
        in_channels: int = 12,
        widths: Sequence[int] = (64, 128, 196, 256, 320),
        downsample: Sequence[int] = (4, 4, 4, 4),
        kernel_size: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths, downsample = tuple(widths), tuple(downsample)
        check_positive("in_channels", in_channels)
        check_positive("kernel_size", kernel_size)
        if len(widths) < 1 or len(downsample) != len(widths) - 1:
            raise ConfigError(
                f"ResNet1d needs len(downsample) == len(widths) - 1 (one factor per residual unit), got "
                f"widths={widths} and downsample={downsample}; e.g. widths=(64, 128, 196, 256, 320) with "
                "downsample=(4, 4, 4, 4)"
            )
        for w in (*widths, *downsample):
            check_positive("every width and downsample factor", w)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.total_stride = math.prod(downsample)
        self.stem = nn.Sequential(
            SameConv1d(in_channels, widths[0], kernel_size), nn.BatchNorm1d(widths[0]), nn.ReLU()
        )
        self.blocks = nn.ModuleList(
            RibeiroBlock(w_in, w_out, kernel_size, s, dropout)
            for w_in, w_out, s in zip(widths[:-1], widths[1:], downsample, strict=True)
        )
        self.embed_dim = widths[-1]

    def frames(self, n_samples: int) -> int:
        """Length of the last feature map for ``n_samples`` input samples: ceil(T / total stride)."""
        n = n_samples
        for block in self.blocks:
            n = -(-n // block.conv2.stride[0])
        return n

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last (B, embed_dim, frames(T)) feature map, before pooling."""
        check_signal(x, self.in_channels, type(self).__name__)
        x = self.stem(x)
        y = x
        for block in self.blocks:
            x, y = block(x, y)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled (B, embed_dim) embedding of x (B, C, T)."""
        return self.feature_map(x).mean(dim=-1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def _conv_bn(
    in_width: int, out_width: int, kernel_size: int, stride: int = 1, relu: bool = True, zero_bn: bool = False
) -> nn.Sequential:
    conv = nn.Conv1d(in_width, out_width, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    bn = nn.BatchNorm1d(out_width)
    if zero_bn:
        # A zero γ makes each block start as the identity ("bag of tricks" / fastai xresnet).
        nn.init.zeros_(bn.weight)
    layers: list[nn.Module] = [conv, bn]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Bottleneck1d(nn.Module):
    """xresnet bottleneck: relu(bn(1×1) ∘ relu(bn(k×1, stride)) ∘ relu(bn(1×1)) (x) + id(x)).

    id = average-pool(stride, ceil) then 1×1 conv + bn when the width changes (ResNet-D path).
    """

    def __init__(
        self, in_width: int, hidden_width: int, out_width: int, kernel_size: int, stride: int, zero_bn: bool
    ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            _conv_bn(in_width, hidden_width, 1),
            _conv_bn(hidden_width, hidden_width, kernel_size, stride=stride),
            _conv_bn(hidden_width, out_width, 1, relu=False, zero_bn=zero_bn),
        )
        identity: list[nn.Module] = []
        if stride != 1:
            identity.append(nn.AvgPool1d(stride, stride, ceil_mode=True))
        if in_width != out_width:
            identity.append(_conv_bn(in_width, out_width, 1, relu=False))
        self.identity = nn.Sequential(*identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.convs(x) + self.identity(x))


class XResNet1d(Encoder):
    """xresnet1d-like bottleneck ResNet (Strodthoff et al. 2021); ``forward(x) -> (B, embed_dim)``.

    Args:
        in_channels: input channels C.
        layers: blocks per stage, (3, 4, 6, 3) for xresnet1d50, (3, 4, 23, 3) for xresnet1d101.
        block_widths: bottleneck (hidden) width of each stage; the block output is ``expansion`` times it.
        stem_widths: the three stem convolutions' filters (the first has stride 2).
        expansion: bottleneck expansion (4).
        kernel_size: odd kernel of the bottleneck's middle convolution (5 in the PTB-XL benchmark).
        stem_kernel_size: odd kernel of the stem convolutions (5).
        pool: "avg" (embed_dim = expansion · block_widths[-1]) or "concat" (average ‖ max, twice that).
        zero_init_residual: start each block's last batch norm at γ = 0 (each block starts as identity).

    Total stride 2 (stem) · 2 (max-pool) · 2^(stages − 1); T samples map to ceil(T / total stride)
    frames, so any T ≥ 1 works.
    """

    def __init__(
        self,
        in_channels: int = 12,
        layers: Sequence[int] = (3, 4, 6, 3),
        block_widths: Sequence[int] = (64, 128, 256, 512),
        stem_widths: Sequence[int] = (32, 32, 64),
        expansion: int = 4,
        kernel_size: int = 5,
        stem_kernel_size: int = 5,
        pool: str = "avg",
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        layers, block_widths, stem_widths = tuple(layers), tuple(block_widths), tuple(stem_widths)
        check_positive("in_channels", in_channels)
        check_positive("expansion", expansion)
        check_choice("pool", pool, ("avg", "concat"))
        if len(layers) != len(block_widths) or not layers:
            raise ConfigError(
                f"XResNet1d needs one width per stage: len(layers) == len(block_widths) >= 1, got layers="
                f"{layers} and block_widths={block_widths}"
            )
        if len(stem_widths) < 1:
            raise ConfigError(f"stem_widths needs at least one width, got {stem_widths}")
        for k, name in ((kernel_size, "kernel_size"), (stem_kernel_size, "stem_kernel_size")):
            if k < 1 or k % 2 == 0:
                raise ConfigError(f"{name} must be odd and >= 1 (symmetric padding), got {k}; use e.g. 5")
        for n in (*layers, *block_widths, *stem_widths):
            check_positive("every entry of layers, block_widths and stem_widths", n)
        self.in_channels = in_channels
        stem: list[nn.Module] = []
        width = in_channels
        for i, w in enumerate(stem_widths):
            stem.append(_conv_bn(width, w, stem_kernel_size, stride=2 if i == 0 else 1))
            width = w
        stem.append(nn.MaxPool1d(3, 2, padding=1))
        self.stem = nn.Sequential(*stem)
        stages: list[nn.Module] = []
        for i, (n_blocks, hidden) in enumerate(zip(layers, block_widths, strict=True)):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(
                    Bottleneck1d(width, hidden, hidden * expansion, kernel_size, stride, zero_init_residual)
                )
                width = hidden * expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = pool
        self.feature_dim = width
        self.embed_dim = width * (2 if pool == "concat" else 1)
        self.total_stride = 4 * 2 ** (len(layers) - 1)

    def frames(self, n_samples: int) -> int:
        """Length of the last feature map for ``n_samples`` input samples: ceil(T / total stride)."""
        return -(-n_samples // self.total_stride)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last (B, feature_dim, frames(T)) feature map, before pooling."""
        check_signal(x, self.in_channels, type(self).__name__)
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (B, embed_dim) embedding: mean over frames, or [mean ‖ max] for pool="concat"."""
        h = self.feature_map(x)
        if self.pool == "concat":
            return torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=-1)
        return h.mean(dim=-1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def resnet1d_pclr(in_channels: int = 12, dropout: float = 0.0) -> ResNet1d:
    """The PCLR encoder (Diamant et al. 2022): Ribeiro ResNet, kernel 16, widths 64→320, 320-d GAP.

    Built for 10 s of 12-lead ECG resampled to 4096 samples (16 frames at the last unit); PCLR pairs it
    with a 320 → 320 projection (``ProjectionHead(320, 320, 320)``).
    """
    return ResNet1d(in_channels, (64, 128, 196, 256, 320), (4, 4, 4, 4), kernel_size=16, dropout=dropout)


def xresnet1d50(in_channels: int = 12, pool: str = "avg", **kwargs) -> XResNet1d:
    """xresnet1d50: bottleneck stages (3, 4, 6, 3), kernel 5, 2048-d (4096-d with pool="concat")."""
    return XResNet1d(in_channels, layers=(3, 4, 6, 3), pool=pool, **kwargs)


def xresnet1d101(in_channels: int = 12, pool: str = "avg", **kwargs) -> XResNet1d:
    """xresnet1d101: bottleneck stages (3, 4, 23, 3), kernel 5, 2048-d (4096-d with pool="concat").

    The supervised reference of the PTB-XL benchmark (macro AUROC 0.925 "all", 0.930 superdiagnostic).
    """
    return XResNet1d(in_channels, layers=(3, 4, 23, 3), pool=pool, **kwargs)
