"""Views: each one's defining property measured on synthetic tensors, seeding, devices, composition."""

from __future__ import annotations

import math

import pytest
import torch

from clinseq.data.views import (
    AmplitudeScale,
    BaselineWander,
    ChannelMask,
    Compose,
    FrequencyPerturbation,
    GaussianNoise,
    MultiView,
    PowerlineNoise,
    RandomApply,
    RandomCrop,
    TimeMask,
)
from clinseq.errors import ConfigError

RATE = 500.0
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ecg_like(b: int = 8, c: int = 12, t: int = 1000, seed: int = 1) -> torch.Tensor:
    """Smooth random signals (sum of sines) plus an offset, never exactly zero."""
    g = gen(seed)
    time = torch.arange(t) / RATE
    freqs = torch.rand(b, c, 4, 1, generator=g) * 20 + 1
    amps = torch.rand(b, c, 4, 1, generator=g)
    x = (amps * torch.sin(2 * math.pi * freqs * time)).sum(2)
    return x + 3.0 + 0.1 * torch.rand(b, c, 1, generator=g)


ALL_VIEWS = [
    RandomCrop(400),
    AmplitudeScale(0.5, 2.0, per_channel=True),
    GaussianNoise((10.0, 20.0)),
    BaselineWander(RATE),
    PowerlineNoise(RATE, 60.0),
    ChannelMask(0.25),
    TimeMask(0.1, 5),
    TimeMask(0.5, 3, per_channel=True),
    FrequencyPerturbation(0.1),
]


@pytest.mark.parametrize("view", ALL_VIEWS, ids=lambda v: repr(v)[:40])
def test_seeded_and_batch_consistent(view):
    x = ecg_like()
    a, b = view(x, gen(7)), view(x, gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, view(x, gen(8)))
    assert a.dtype == x.dtype and a.shape[:2] == x.shape[:2]
    assert torch.equal(x, ecg_like()), "views must not modify their input"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("view", ALL_VIEWS, ids=lambda v: repr(v)[:40])
def test_same_seed_same_view_on_every_device(view, device):
    """Random numbers come from the CPU generator and move to x's device: CPU and GPU results agree."""
    x = ecg_like().double()
    expected = view(x, gen(3))
    got = view(x.float().to(device), gen(3)).cpu().double()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_random_crop_returns_contiguous_spans():
    x = torch.arange(4 * 2 * 50, dtype=torch.float32).view(4, 2, 50)
    y = RandomCrop(20)(x, gen())
    assert y.shape == (4, 2, 20)
    for b in range(4):
        start = int(y[b, 0, 0] - x[b, 0, 0])
        assert torch.equal(y[b], x[b, :, start : start + 20])
    starts = {int(RandomCrop(20)(x, gen(s))[0, 0, 0]) for s in range(30)}
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 30
    with pytest.raises(ConfigError, match="longer than"):
        RandomCrop(51)(x, gen())


def test_amplitude_scale_multiplies_each_element_by_a_factor_in_range():
    x = ecg_like()
    ratio = AmplitudeScale(0.8, 1.25)(x, gen()) / x
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), rtol=1e-5)
    assert (ratio >= 0.8 - 1e-6).all() and (ratio <= 1.25 + 1e-6).all()
    per_channel = AmplitudeScale(0.8, 1.25, per_channel=True)(x, gen()) / x
    assert torch.allclose(per_channel, per_channel[:, :, :1].expand_as(x), rtol=1e-5)
    assert per_channel[:, :, 0].std(dim=1).min() > 0


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_gaussian_noise_has_the_requested_snr(snr_db):
    x = ecg_like(b=16, t=20000)
    y = GaussianNoise(snr_db)(x, gen())
    noise = y - x
    signal_power = x.var(dim=2, correction=0)
    measured = 10 * torch.log10(signal_power / noise.pow(2).mean(dim=2))
    assert (measured - snr_db).abs().max() < 0.15  # sampling error of 20,000 noise samples
    assert noise.mean(dim=2).abs().max() < 0.05 * signal_power.sqrt().max()
    flat = torch.ones(1, 2, 100)
    assert torch.equal(GaussianNoise(10.0)(flat, gen()), flat)  # no signal, no noise


def test_baseline_wander_is_low_frequency_and_bounded():
    x = ecg_like(b=16, t=5000)  # 10 s at 500 Hz
    view = BaselineWander(RATE, amplitude=(0.2, 0.3), frequency_hz=(0.1, 0.5), n_components=3)
    added = view(x, gen()) - x
    # A Hann window keeps the leakage of non-integer periods out of the high bins.
    spectrum = torch.fft.rfft(added * torch.hann_window(5000, periodic=False), dim=2).abs().pow(2)
    freqs = torch.fft.rfftfreq(5000, 1 / RATE)
    below_1hz = spectrum[:, :, freqs <= 1.0].sum(2) / spectrum.sum(2).clamp_min(1e-12)
    assert below_1hz.min() > 0.995
    # Each of 3 components ≤ 0.3/√3, channel weights ≤ 1: |wander| ≤ 0.3·√3.
    assert added.abs().max() <= 0.3 * math.sqrt(3) + 1e-5
    assert added.abs().amax(dim=(1, 2)).min() > 0.01  # every element got some wander
    with pytest.raises(ConfigError, match="Nyquist"):
        BaselineWander(1.0, frequency_hz=(0.1, 0.6))


@pytest.mark.parametrize("mains_hz", [50.0, 60.0])
def test_powerline_noise_is_a_pure_mains_sinusoid(mains_hz):
    x = ecg_like(t=1000)  # 2 s: 50 and 60 Hz fall on rFFT bins (0.5 Hz apart)
    added = PowerlineNoise(RATE, mains_hz, amplitude=(0.05, 0.1))(x, gen()) - x
    power = torch.fft.rfft(added, dim=2).abs().pow(2)
    k = int(mains_hz / 0.5)
    assert (power[:, :, k] / power.sum(2)).min() > 0.999
    peak = added.abs().amax(dim=2)
    assert peak.max() <= 0.1 + 1e-5 and peak.min() >= 0.05 * 0.5 - 1e-3
    with pytest.raises(ConfigError, match="Nyquist"):
        PowerlineNoise(100.0, 50.0)  # PTB-XL's 100 Hz files cannot hold 50 Hz


@pytest.mark.parametrize(
    "fraction,n_channels,expected", [(0.25, 12, 3), (0.5, 12, 6), (0.1, 12, 1), (0.0, 4, 0)]
)
def test_channel_mask_zeroes_exactly_the_requested_channels(fraction, n_channels, expected):
    x = ecg_like(b=256, c=n_channels)
    y = ChannelMask(fraction)(x, gen())
    zero = (y == 0).all(dim=2)
    assert (zero.sum(dim=1) == expected).all()
    assert torch.equal(y[~zero], x[~zero])
    if expected:  # every channel gets masked in some element: the subsets are random
        assert zero.any(dim=0).all()


@pytest.mark.parametrize("fraction,n_spans", [(0.1, 5), (0.5, 1), (0.5, 3), (0.013, 5), (1.0, 2)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_time_mask_zeroes_exactly_the_requested_fraction(fraction, n_spans, per_channel):
    x = ecg_like(b=16, t=1000)
    y = TimeMask(fraction, n_spans, per_channel=per_channel)(x, gen())
    masked = y == 0
    assert (masked.sum(dim=2) == round(fraction * 1000)).all()
    assert torch.equal(y[~masked], x[~masked])
    if not per_channel:
        assert (masked == masked[:, :1]).all(), "the same spans on all channels"
    # At most n_spans runs of masked samples per row.
    starts = masked[..., 1:] & ~masked[..., :-1]
    runs = starts.sum(dim=2) + masked[..., 0].long()
    assert (runs <= n_spans).all()


@pytest.mark.parametrize("per_channel", [True, False])
def test_frequency_perturbation_changes_only_the_targeted_bins(per_channel):
    t = 1000
    x = ecg_like(b=4, c=3, t=t).double() + torch.randn(4, 3, t, generator=gen(5), dtype=torch.float64)
    y = FrequencyPerturbation(0.1, per_channel=per_channel)(x, gen())
    before, after = torch.fft.rfft(x, dim=2), torch.fft.rfft(y, dim=2)
    changed = (after - before).abs() > 1e-9 * before.abs().max()
    removed = after.abs() < 1e-9 * before.abs().max()
    n_bins = t // 2 + 1
    assert (changed.sum(dim=2) == round(0.1 * n_bins)).all()
    assert torch.equal(changed, removed), "changed bins are exactly the removed ones"
    if not per_channel:
        assert (changed == changed[:, :1]).all()


def test_compose_random_apply_and_multiview():
    x = ecg_like(b=64)
    scale = AmplitudeScale(2.0, 2.0)
    assert torch.equal(RandomApply(scale, 0.0)(x, gen()), x)
    assert torch.allclose(RandomApply(scale, 1.0)(x, gen()), 2 * x)
    half = RandomApply(scale, 0.5)(x, gen())
    applied = torch.isclose(half, 2 * x).all(dim=(1, 2))
    assert torch.equal(half[~applied], x[~applied]) and 16 < int(applied.sum()) < 48
    chain = Compose([scale, ChannelMask(0.5)])
    g1, g2 = gen(2), gen(2)
    expected = ChannelMask(0.5)(scale(x, g2), g2)
    assert torch.equal(chain(x, g1), expected)
    views = MultiView(Compose([GaussianNoise(20.0), RandomCrop(500)]), n_views=2)(x, gen())
    assert views.shape == (64, 2, 12, 500)
    assert not torch.equal(views[:, 0], views[:, 1])
    with pytest.raises(ConfigError, match="cannot be applied to some elements"):
        RandomApply(RandomCrop(10), 0.5)(x, gen())
    # Any callable works in RandomApply (computed for the batch, kept where selected) if it keeps the shape.
    tripled = RandomApply(lambda x, generator=None: 3 * x, 0.5)(x, gen())
    kept = torch.isclose(tripled, x).all(dim=(1, 2))
    assert torch.equal(tripled[~kept], 3 * x[~kept]) and 0 < int(kept.sum()) < 64
    with pytest.raises(ConfigError, match="shape-preserving"):
        RandomApply(lambda x, generator=None: x[..., :10], 0.5)(x, gen())


@pytest.mark.parametrize("view", [v for v in ALL_VIEWS if not isinstance(v, RandomCrop)], ids=repr)
def test_random_apply_changes_exactly_the_selected_elements(view):
    """RandomApply(v, p): the selected elements are v's output, the others exactly x, for one seed."""
    x = ecg_like(b=32)
    g = gen(9)
    selected = torch.rand(32, generator=g) < 0.5  # RandomApply's first draw
    expected = torch.where(selected[:, None, None], view(x, g), x)
    got = RandomApply(view, 0.5)(x, gen(9))
    assert torch.equal(got, expected)
    assert torch.equal(got[~selected], x[~selected])


def test_low_precision_inputs_keep_their_dtype():
    x = ecg_like().to(torch.bfloat16)
    for view in ALL_VIEWS:
        y = view(x, gen())
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_bad_inputs_raise_config_errors():
    with pytest.raises(ConfigError, match="batch, channels, samples"):
        GaussianNoise()(torch.zeros(12, 100), gen())
    with pytest.raises(ConfigError, match="batch, channels, samples"):
        ChannelMask()(torch.zeros(2, 12, 100, dtype=torch.int16), gen())
    for make in (
        lambda: ChannelMask(1.5),
        lambda: TimeMask(0.1, 0),
        lambda: AmplitudeScale(2.0, 1.0),
        lambda: GaussianNoise((30.0, 20.0)),
        lambda: RandomApply(ChannelMask(), 2.0),
        lambda: PowerlineNoise(0.0),
    ):
        with pytest.raises(ConfigError):
            make()


@pytest.mark.parametrize("n,k", [(12, 3), (501, 50), (501, 450), (501, 200)])
def test_random_subsets_are_uniform(n, k):
    """Each position is chosen with probability k/n (Floyd's algorithm and the top-k path alike)."""
    from clinseq.data.views import _random_subset

    rows = 4000
    mask = _random_subset((rows, n), k, gen(), torch.zeros(1))
    assert (mask.sum(dim=1) == k).all()
    freq = mask.float().mean(dim=0)
    sigma = math.sqrt(k / n * (1 - k / n) / rows)
    assert (freq - k / n).abs().max() < 5 * sigma


def test_chunked_cpu_noise_is_the_same_stream_as_one_draw():
    """On CPU GaussianNoise draws its noise in chunks; the result equals the one-draw path (used for GPU
    tensors and non-contiguous inputs), so CPU and GPU batches get the same noise."""
    x = ecg_like(b=16, c=12, t=1000)
    chunked = GaussianNoise((10.0, 20.0))(x, gen(4))
    x_strided = x.transpose(1, 2).contiguous().transpose(1, 2)  # same values, not contiguous
    assert not x_strided.clone().is_contiguous()  # the view's own copy keeps the strides
    one_draw = GaussianNoise((10.0, 20.0))(x_strided, gen(4))
    torch.testing.assert_close(chunked, one_draw, atol=1e-6, rtol=1e-6)
