"""ResNet1d (Ribeiro/PCLR) and XResNet1d: lengths, presets, block structure."""

from __future__ import annotations

import pytest
import torch

from clinseq.errors import ConfigError
from clinseq.models import ResNet1d, XResNet1d, resnet1d_pclr, xresnet1d50, xresnet1d101
from clinseq.models.resnet1d import Bottleneck1d, RibeiroBlock, SameConv1d


@pytest.mark.parametrize("n_samples", [1, 3, 15, 16, 17, 63, 64, 65])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_same_conv_gives_ceil_length(n_samples: int, stride: int) -> None:
    conv = SameConv1d(2, 3, kernel_size=16, stride=stride)
    assert conv(torch.randn(1, 2, n_samples)).shape[-1] == -(-n_samples // stride)


def test_same_conv_is_centred_on_the_input() -> None:
    # With stride 1 and an impulse kernel at the kernel's centre (index 7 of 16: left pad 7, right 8),
    # the output reproduces the input exactly: padding is placed, not just sized.
    conv = SameConv1d(1, 1, kernel_size=16)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 7] = 1.0
    x = torch.randn(1, 1, 23)
    torch.testing.assert_close(conv(x), x)


@pytest.mark.parametrize("n_samples", [1, 5, 31, 32, 33, 250])
def test_resnet1d_feature_map_length_matches_frames(n_samples: int) -> None:
    model = ResNet1d(2, widths=(4, 6, 8), downsample=(4, 2), kernel_size=7)
    fmap = model.feature_map(torch.randn(2, 2, n_samples))
    assert fmap.shape == (2, 8, model.frames(n_samples))
    assert model.frames(n_samples) == -(-n_samples // 8)
    assert torch.isfinite(fmap).all()  # the −inf padding of the max-pool never leaks out


def test_ribeiro_block_skip_is_maxpool_then_1x1() -> None:
    block = RibeiroBlock(3, 5, kernel_size=16, downsample=4, dropout=0.0).eval()
    x = torch.randn(2, 3, 10)
    _, pre = block(x, x)
    # With the main path's conv2 zeroed, the pre-activation stream is exactly skip(y).
    with torch.no_grad():
        block.conv2.weight.zero_()
    _, skip_only = block(x, x)
    expected = block.skip[1](
        torch.nn.functional.max_pool1d(torch.nn.functional.pad(x, (0, 2), value=-1e9), 4)
    )
    torch.testing.assert_close(skip_only, expected)
    assert pre.shape == (2, 5, 3)


def test_pclr_preset_matches_the_paper_shape() -> None:
    model = resnet1d_pclr(12).eval()
    x = torch.randn(1, 12, 4096)  # 10 s at 409.6 Hz as in PCLR
    with torch.no_grad():
        fmap = model.feature_map(x)
    assert fmap.shape == (1, 320, 16)
    assert model.embed_dim == 320
    assert [b.conv2.stride[0] for b in model.blocks] == [4, 4, 4, 4]
    assert [b.conv1.out_channels for b in model.blocks] == [128, 196, 256, 320]
    assert all(b.conv1.kernel_size[0] == 16 for b in model.blocks)
    # Ribeiro et al. 2020's network has about 6.4 M parameters.
    n_params = sum(p.numel() for p in model.parameters())
    assert 6.2e6 < n_params < 6.6e6


def test_xresnet_presets_structure() -> None:
    m50, m101 = xresnet1d50(12), xresnet1d101(12, pool="concat")
    count = [sum(isinstance(m, Bottleneck1d) for m in net.modules()) for net in (m50, m101)]
    assert count == [16, 33]
    assert (m50.embed_dim, m101.embed_dim) == (2048, 4096)
    assert len([m for m in m50.stem if isinstance(m, torch.nn.Sequential)]) == 3  # three stem convs
    mids = [b.convs[1][0] for b in m50.modules() if isinstance(b, Bottleneck1d)]
    assert {c.kernel_size[0] for c in mids} == {5}
    # Each block's last batch norm starts at zero, so each block starts as (relu of) its identity path.
    assert all(b.convs[2][1].weight.abs().sum() == 0 for b in m50.modules() if isinstance(b, Bottleneck1d))


def test_xresnet101_runs_on_a_short_window() -> None:
    model = xresnet1d101(12, pool="concat").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 12, 250))
    assert out.shape == (1, 4096)
    h = model.feature_map(torch.randn(1, 12, 250))
    # concat pool = [mean ‖ max] of the final map
    with torch.no_grad():
        torch.testing.assert_close(
            model(torch.ones(1, 12, 250))[:, 2048:], model.feature_map(torch.ones(1, 12, 250)).amax(-1)
        )
    assert h.shape[-1] == model.frames(250) == 8


@pytest.mark.parametrize("n_samples", [1, 2, 7, 8, 9, 100])
def test_xresnet_feature_map_length_matches_frames(n_samples: int) -> None:
    model = XResNet1d(1, layers=(1, 1, 1), block_widths=(2, 2, 2), stem_widths=(2, 2, 2), expansion=2).eval()
    assert model.feature_map(torch.randn(1, 1, n_samples)).shape[-1] == model.frames(n_samples)


def test_bad_configs_raise() -> None:
    with pytest.raises(ConfigError, match="len\\(downsample\\) == len\\(widths\\) - 1"):
        ResNet1d(12, widths=(64, 128), downsample=(4, 4))
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        XResNet1d(12, kernel_size=4)
    with pytest.raises(ConfigError, match="pool must be one of"):
        XResNet1d(12, pool="max")
    with pytest.raises(ConfigError, match="dropout"):
        resnet1d_pclr(12, dropout=1.5)
