"""Views (augmentations) of signal batches: seeded, vectorised over the batch, same on CPU and GPU.

Every view is a callable ``view(x, generator=None) -> tensor`` on a batch ``x`` of shape (B, C, T) in
physical units (ECG mV, EEG µV; amplitudes below are in the units of ``x``); it leaves ``x`` unchanged.
Views compose (:class:`Compose`, :class:`RandomApply`, :class:`MultiView`) and can be given to
:class:`~clinseq.data.datasets.WindowDataset` as its ``transform`` (run in the loader's workers) or applied
on the GPU in the training step.

Cost: a batch of 256 12-lead 1,000-sample windows is 12 MB, so on CPU every extra pass and every fresh
allocation (page faults) counts. Views therefore also have ``apply_(x, generator, select)``, which works
in place on a batch the caller owns; ``view(x)`` is ``apply_(x.clone())``, :class:`Compose` clones once
for its whole chain, and :class:`WindowDataset` hands its freshly read batch to ``apply_`` directly.
``select`` ((B,) bool) restricts a view to some elements without computing it for the others twice:
that is how :class:`RandomApply` works, at no extra pass.

Randomness comes only from ``generator`` (a ``torch.Generator``; ``None`` uses torch's global RNG). The
random numbers are drawn on the generator's device and then moved to ``x``'s device, so a CPU generator
with the same seed gives the same view of a CPU or a GPU tensor up to float rounding; a CUDA generator
draws on the GPU (faster for large noise tensors, but a different stream from the CPU one). Each view
draws a fixed sequence of numbers for a given input shape, so a composed pipeline is reproducible.

Every view documents a *clinical caveat*: what it may destroy that a diagnosis depends on. Views are
for self-supervised pretraining; check each against the labels before using it for supervised training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from clinseq.errors import ConfigError

#: ``(x, generator) -> tensor``: anything usable as a view.
ViewFn = Callable[..., torch.Tensor]


def _check_batch(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(
            f"{name} expects a float tensor x of shape (batch, channels, samples), got {got}; "
            "add a batch dimension with x[None] or convert ADC values with adc_to_physical()"
        )


def _rand(
    shape: Sequence[int],
    generator: torch.Generator | None,
    like: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """U[0, 1) drawn on the generator's device in float32, moved to ``like``'s device (and ``like``'s dtype
    unless ``dtype`` is given: float32 for positions, which bf16 could not resolve)."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(tuple(shape), generator=generator, device=device, dtype=torch.float32)
    return u.to(device=like.device, dtype=dtype or like.dtype)


def _randn(shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float32)
    return z.to(device=like.device, dtype=like.dtype)


def _range(value: float | tuple[float, float], name: str, low: float = -math.inf) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if not (low <= lo <= hi):
        raise ConfigError(
            f"{name} must be a number or a (low, high) pair with {low} <= low <= high, got {value}"
        )
    return float(lo), float(hi)


def _uniform(
    lo: float, hi: float, shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor
):
    return lo + (hi - lo) * _rand(shape, generator, like)


def _check_rate(sampling_rate_hz: float) -> float:
    if not sampling_rate_hz > 0:
        raise ConfigError(f"sampling_rate_hz must be > 0, got {sampling_rate_hz}: pass the store's rate")
    return float(sampling_rate_hz)


def _time_s(n: int, sampling_rate_hz: float, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(n, device=like.device, dtype=like.dtype) / sampling_rate_hz


def _random_subset(
    shape: tuple[int, int], k: int, generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """Boolean (rows, n), True at a uniformly random k-subset of each row.

    Small subsets (or small complements) use Floyd's algorithm, vectorised over rows: min(k, n − k)
    steps of ``rows`` random numbers each, instead of ``rows · n`` numbers and a sort. Larger ones take
    the k smallest of ``rows · n`` random keys.
    """
    rows, n = shape
    m = min(k, n - k)
    if m > 64:
        keys = _rand((rows, n), generator, like, torch.float32)
        mask = torch.zeros(rows, n, dtype=torch.bool, device=like.device)
        return mask.scatter_(1, keys.topk(k, dim=1, largest=False, sorted=False).indices, True)
    mask = torch.zeros(rows, n, dtype=torch.bool, device=like.device)
    if m > 0:
        u = _rand((m, rows), generator, like, torch.float32)
        for step, j in enumerate(range(n - m, n)):
            # Floyd: t uniform in [0, j]; take t, or j when t is already taken.
            t = (u[step] * (j + 1)).long().clamp_(max=j)[:, None]
            pick = torch.where(mask.gather(1, t), torch.full_like(t, j), t)
            mask.scatter_(1, pick, True)
    return mask if m == k else ~mask


class View:
    """Base class: a seeded, batch-vectorised transform of ``x`` (B, C, T).

    Subclasses implement :meth:`apply_`; calling a view is the functional form.
    """

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x, type(self).__name__)
        return self.apply_(x.clone(), generator)

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply the view to ``x`` in place where possible and return the result (``x`` itself or a new
        tensor). ``select`` ((B,) bool on ``x``'s device): change only those elements; the random numbers
        drawn are the same whatever ``select`` is."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def _apply(
    view: ViewFn, x: torch.Tensor, generator: torch.Generator | None, select: torch.Tensor | None
) -> torch.Tensor:
    """``view.apply_`` for clinseq views; any other callable is applied functionally and selected."""
    if isinstance(view, View):
        return view.apply_(x, generator, select)
    y = view(x, generator=generator)
    if select is None:
        return y
    if y.shape != x.shape:
        raise ConfigError(f"RandomApply needs a shape-preserving view; {view!r} gave {tuple(y.shape)}")
    return torch.where(select[:, None, None], y, x)


#: The integer dtype of each float size: zeroing by bits works for every float dtype.
_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _zero_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x[mask] = 0 in place (mask broadcast to x), NaN included: x's bits AND 0 (masked) or all ones.

    One vectorised integer pass: ``torch.where(mask, 0, x)`` gives the same values but is 5–10 times
    slower on CPU (bool inputs), and ``x · keep`` would leave NaN · 0 = NaN.
    """
    bits = _BITS[x.element_size()]
    x.view(bits).bitwise_and_(mask.to(bits).sub_(1))  # masked: 1 − 1 = 0, kept: 0 − 1 = −1 (all ones)
    return x


class Compose(View):
    """Apply views in order: ``views[-1](... views[0](x, g) ..., g)`` (one copy of x for the chain)."""

    def __init__(self, views: Sequence[ViewFn]) -> None:
        self.views = list(views)

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        for view in self.views:
            x = _apply(view, x, generator, select)
        return x


class RandomApply(View):
    """Apply ``view`` to each batch element with probability ``p`` (independently per element).

    clinseq views apply themselves to the selected elements only (no extra pass); other callables are
    computed for the whole batch and kept where selected, so they must preserve the shape.
    """

    def __init__(self, view: ViewFn, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be a probability in [0, 1], got {p}")
        self.view, self.p = view, float(p)

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_batch(x, "RandomApply")
        selected = _rand((x.shape[0],), generator, x, torch.float32) < self.p
        if select is not None:
            selected &= select
        return _apply(self.view, x, generator, selected)


class MultiView(View):
    """``n_views`` independent draws of ``view`` stacked on dim 1: (B, C, T) → (B, n_views, C, T').

    Use as a dataset transform to make the two (or more) views of SimCLR-style objectives in the loader's
    workers: ``batch["x"][:, 0]`` and ``batch["x"][:, 1]`` are the views of the same windows.
    """

    def __init__(self, view: ViewFn, n_views: int = 2) -> None:
        if not (isinstance(n_views, int) and n_views >= 1):
            raise ConfigError(f"n_views must be an integer >= 1, got {n_views!r}")
        self.view, self.n_views = view, n_views

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        if select is not None:
            raise ConfigError(
                "MultiView changes the batch's shape and cannot be applied to some elements only"
            )
        # The last view may work in x itself; the others need their own copy.
        views = [_apply(self.view, x.clone(), generator, None) for _ in range(self.n_views - 1)]
        return torch.stack([*views, _apply(self.view, x, generator, None)], dim=1)


class RandomCrop(View):
    """A random ``n_samples``-long crop of each element (the same span on all its channels).

    Clinical caveat: a short crop may miss intermittent findings (a single premature beat, paroxysmal
    runs) that the recording's label describes; for rhythm labels keep crops of several beats (≥ 2.5 s).

    Args:
        n_samples: crop length in samples (≤ T).
    """

    def __init__(self, n_samples: int) -> None:
        if not (isinstance(n_samples, int) and n_samples >= 1):
            raise ConfigError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        self.n_samples = n_samples

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply_(x, generator)  # gathers into a new tensor: no copy of x needed

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_batch(x, "RandomCrop")
        if select is not None:
            raise ConfigError(
                "RandomCrop changes the batch's shape and cannot be applied to some elements only"
            )
        b, c, t = x.shape
        if self.n_samples > t:
            raise ConfigError(
                f"RandomCrop(n_samples={self.n_samples}) is longer than the input's {t} samples"
            )
        u = _rand((b,), generator, x, torch.float32)
        start = (u * (t - self.n_samples + 1)).long().clamp_(max=t - self.n_samples)
        index = start[:, None] + torch.arange(self.n_samples, device=x.device)
        return x.gather(2, index[:, None, :].expand(b, c, self.n_samples))


def _selected(value: torch.Tensor, select: torch.Tensor | None, neutral: float) -> torch.Tensor:
    """``value`` (B, …) where selected, ``neutral`` elsewhere."""
    if select is None:
        return value
    shape = (-1,) + (1,) * (value.dim() - 1)
    return torch.where(
        select.view(shape), value, torch.full((), neutral, dtype=value.dtype, device=value.device)
    )


class AmplitudeScale(View):
    """Multiply each element (or each channel of it) by a factor uniform in ``[low, high]``.

    Clinical caveat: absolute amplitude is diagnostic in ECG (voltage criteria of left-ventricular
    hypertrophy, low QRS voltage) and in EEG (suppression, high-amplitude slowing); keep the range narrow
    or the encoder learns to ignore it.

    Args:
        low, high: range of the factor (> 0).
        per_channel: one factor per (element, channel) instead of per element.
    """

    def __init__(self, low: float = 0.8, high: float = 1.25, per_channel: bool = False) -> None:
        self.low, self.high = _range((low, high), "AmplitudeScale (low, high)", low=0.0)
        self.per_channel = per_channel

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_batch(x, "AmplitudeScale")
        shape = (x.shape[0], x.shape[1] if self.per_channel else 1, 1)
        return x.mul_(_selected(_uniform(self.low, self.high, shape, generator, x), select, 1.0))


#: Gaussian noise for CPU batches is drawn and added in chunks of about this many values: a 256 KB buffer
#: and the rows it is added to stay in L2, where a batch-sized one would page-fault on every call and
#: smaller chunks pay more Python per value (torch's CPU randn costs the same per value from 16K on).
_NOISE_CHUNK = 65536


class GaussianNoise(View):
    """Add white Gaussian noise at a signal-to-noise ratio drawn uniformly in ``snr_db`` (dB).

    The signal power is measured per (element, channel) as the mean square of the channel minus its mean
    over the window (the offset carries no signal); the noise variance is that power · 10^(−SNR/10), so
    the measured SNR of the result is ``snr_db`` up to the sampling error of the noise. Flat channels
    (zero power) get no noise.

    Clinical caveat: low SNR buries low-amplitude features first — P waves, pacing spikes, fibrillatory
    waves, EEG spikes; real noise (muscle, electrode motion) is coloured, not white.

    Args:
        snr_db: a fixed SNR or a (low, high) range in dB (default 15–30 dB).
        per_channel: one SNR draw per (element, channel) instead of per element.
    """

    def __init__(self, snr_db: float | tuple[float, float] = (15.0, 30.0), per_channel: bool = False) -> None:
        self.snr_db = _range(snr_db, "snr_db")
        self.per_channel = per_channel

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_batch(x, "GaussianNoise")
        b, c, t = x.shape
        snr = _uniform(*self.snr_db, (b, c if self.per_channel else 1, 1), generator, x)
        std = _selected(torch.sqrt(_ac_power(x) * torch.pow(10.0, -snr / 10.0)), select, 0.0)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        if x.device.type != "cpu" or gen_device.type != "cpu" or not x.is_contiguous():
            return x.addcmul_(std.expand(b, c, 1), _randn((b, c, t), generator, x))
        # CPU: the same numbers as one (B, C, T) draw (torch's CPU generator fills sequentially), drawn
        # chunk by chunk straight into the sum.
        rows, scale = x.view(b * c, t), std.expand(b, c, 1).reshape(b * c, 1)
        # Whole multiples of 16 rows: torch fills normals in blocks of 16 values (and redraws a partial last
        # block), so only such chunks give the very numbers of one (B, C, T) draw.
        per_chunk = max(16, _NOISE_CHUNK // t // 16 * 16)
        buffer = torch.empty((min(per_chunk, b * c), t), dtype=torch.float32)
        for i in range(0, b * c, per_chunk):
            j = min(i + per_chunk, b * c)
            noise = torch.randn((j - i, t), generator=generator, out=buffer[: j - i])
            rows[i:j].addcmul_(scale[i:j], noise if x.dtype == torch.float32 else noise.to(x.dtype))
        return x


def _ac_power(x: torch.Tensor) -> torch.Tensor:
    """Mean square of each (element, channel) minus its mean, (B, C, 1), in float32 or better.

    Σx² comes from a batched dot product (one BLAS pass; ``Tensor.var`` is several times slower on CPU).
    """
    b, c, t = x.shape
    x32 = x if x.dtype in (torch.float32, torch.float64) else x.float()
    rows = x32.reshape(b * c, 1, t)
    square = torch.bmm(rows, rows.transpose(1, 2)).view(b, c, 1) / t
    mean = x32.mean(dim=2, keepdim=True)
    return (square - mean * mean).clamp_(min=0.0).to(x.dtype)


class BaselineWander(View):
    """Add low-frequency baseline wander: a sum of ``n_components`` slow sinusoids.

    Each element gets components with frequencies uniform in ``frequency_hz``, random phases and
    amplitudes uniform in ``amplitude`` (divided by √n_components so the total stays in range), shared by
    its channels with a per-channel weight uniform in [−1, 1] (breathing and movement move all electrodes,
    each lead sees a different projection). Amplitudes are in the units of ``x`` (mV for ECG: default up
    to 0.3 mV).

    Clinical caveat: ST-segment elevation/depression (ischaemia, infarction) is itself a low-frequency
    shift of ≈ 0.1 mV; strong wander imitates or hides it.

    Args:
        sampling_rate_hz: the signal's rate.
        amplitude: (low, high) amplitude of each element's wander, in the units of x.
        frequency_hz: (low, high) frequencies of the components (default 0.05–0.5 Hz, respiration).
        n_components: sinusoids per element.
    """

    def __init__(
        self,
        sampling_rate_hz: float,
        amplitude: float | tuple[float, float] = (0.0, 0.3),
        frequency_hz: float | tuple[float, float] = (0.05, 0.5),
        n_components: int = 3,
    ) -> None:
        self.sampling_rate_hz = _check_rate(sampling_rate_hz)
        self.amplitude = _range(amplitude, "amplitude", low=0.0)
        self.frequency_hz = _range(frequency_hz, "frequency_hz", low=0.0)
        if self.frequency_hz[1] >= self.sampling_rate_hz / 2:
            raise ConfigError(
                f"frequency_hz {frequency_hz} must stay below Nyquist ({sampling_rate_hz / 2} Hz)"
            )
        if not (isinstance(n_components, int) and n_components >= 1):
            raise ConfigError(f"n_components must be an integer >= 1, got {n_components!r}")
        self.n_components = n_components

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_batch(x, "BaselineWander")
        b, c, t = x.shape
        k = self.n_components
        # Phases and sines in float32 at least (bf16 positions could not resolve the samples).
        like = torch.empty(0, device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
        freq = _uniform(*self.frequency_hz, (b, k, 1), generator, like)
        phase = _uniform(0.0, 2 * math.pi, (b, k, 1), generator, like)
        amp = _uniform(*self.amplitude, (b, k, 1), generator, like) / math.sqrt(k)
        weight = _selected(_uniform(-1.0, 1.0, (b, c, 1), generator, x), select, 0.0)
        wander = _sum_of_sinusoids(2 * math.pi * freq / self.sampling_rate_hz, phase, amp, t)
        # x += weight ⊗ wander in one fused pass over the batch.
        return x.baddbmm_(weight, wander[:, None, :].to(x.dtype))


def _sum_of_sinusoids(omega: torch.Tensor, phase: torch.Tensor, amp: torch.Tensor, n: int) -> torch.Tensor:
    """Σ_k amp_k · sin(omega_k · i + phase_k) for samples i = 0 … n − 1: (B, k, 1) parameters → (B, n).

    With i = q·L + r (L ≈ √n): sin(ωqL + φ)·cos(ωr) + cos(ωqL + φ)·sin(ωr), so only (B, k, n/L + L)
    sines and cosines are evaluated and one batched (n/L × 2k) @ (2k × L) product sums the components,
    instead of B·k·n sines (which cost more than everything else in a BaselineWander). The result is the
    direct sum up to float rounding.
    """
    b, k, _ = omega.shape
    length = max(1, math.isqrt(n - 1) + 1) if n > 1 else 1  # L ≥ √n
    blocks = -(-n // length)
    steps = torch.arange(max(blocks, length), device=omega.device, dtype=omega.dtype)
    coarse = torch.addcmul(phase, omega, steps[:blocks] * length)  # (B, k, Q): ω·qL + φ
    fine = omega * steps[:length]  # (B, k, L): ω·r
    left = torch.cat([amp * torch.sin(coarse), amp * torch.cos(coarse)], dim=1).transpose(1, 2)  # (B, Q, 2k)
    right = torch.cat([torch.cos(fine), torch.sin(fine)], dim=1)  # (B, 2k, L)
    return torch.bmm(left, right).view(b, blocks * length)[:, :n]


class PowerlineNoise(View):
    """Add mains interference: a sinusoid at ``frequency_hz`` (50 or 60 Hz) with random phase.

    The amplitude (units of ``x``; mV for ECG) is uniform in ``amplitude`` per element, with a per-channel
    weight uniform in [0.5, 1] and a per-channel phase (electrode impedances differ). The frequency must
    be below Nyquist: at PTB-XL's 100 Hz rate 50 Hz cannot be represented (raise) — use the 500 Hz data.

    Clinical caveat: none physiological (no cardiac or cerebral signal is a pure 50/60 Hz line), but
    acquisition systems notch-filter it, so heavy amounts teach invariance to an artefact absent from
    clinical recordings; high-frequency detail (pacing spikes, notches in QRS) sits in the same band.

    Args:
        sampling_rate_hz: the signal's rate.
        frequency_hz: mains frequency, 50 (Europe, Asia) or 60 (Americas) Hz.
        amplitude: (low, high) amplitude in the units of x (default up to 0.05 mV).
    """

    def __init__(
        self,
        sampling_rate_hz: float,
        frequency_hz: float = 50.0,
        amplitude: float | tuple[float, float] = (0.0, 0.05),
    ) -> None:
        self.sampling_rate_hz = _check_rate(sampling_rate_hz)
        if not 0 < frequency_hz < self.sampling_rate_hz / 2:
            raise ConfigError(
                f"frequency_hz={frequency_hz} must be in (0, Nyquist = {self.sampling_rate_hz / 2} Hz); "
                "powerline interference is not representable at this rate: resample or leave this view out"
            )
        self.frequency_hz = float(frequency_hz)
        self.amplitude = _range(amplitude, "amplitude", low=0.0)

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_batch(x, "PowerlineNoise")
        b, c, t = x.shape
        amp = _uniform(*self.amplitude, (b, 1, 1), generator, x) * _uniform(0.5, 1.0, (b, c, 1), generator, x)
        amp = _selected(amp, select, 0.0)
        phase = _uniform(0.0, 2 * math.pi, (b, c, 1), generator, x)
        # a·sin(ωt + φ) = a·cos φ · sin ωt + a·sin φ · cos ωt: a (B, C, 2) × (2, T) product added to x in one
        # pass, instead of B·C·T sines.
        omega_t = 2 * math.pi * self.frequency_hz * _time_s(t, self.sampling_rate_hz, x)
        basis = torch.stack([torch.sin(omega_t), torch.cos(omega_t)])  # (2, T)
        coef = torch.cat([amp * torch.cos(phase), amp * torch.sin(phase)], dim=2)  # (B, C, 2)
        return x.baddbmm_(coef, basis.expand(b, 2, t))


class ChannelMask(View):
    """Zero exactly ``round(fraction · C)`` randomly chosen channels (leads) of each element.

    Clinical caveat: findings are lead-specific — infarct localisation (II, III, aVF inferior; V1–V4
    anterior), bundle-branch blocks (V1, V6), EEG focal activity; a masked lead makes them unobservable.
    In a 12-lead ECG, III, aVR, aVL and aVF are linear combinations of I and II, so masking them alone
    hides little.

    Args:
        fraction: fraction of channels to zero, in [0, 1].
    """

    def __init__(self, fraction: float = 0.25) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"fraction must be in [0, 1], got {fraction}")
        self.fraction = float(fraction)

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_batch(x, "ChannelMask")
        b, c, _ = x.shape
        mask = _random_subset((b, c), round(self.fraction * c), generator, x)
        if select is not None:
            mask &= select[:, None]
        return _zero_where(x, mask[:, :, None])


class TimeMask(View):
    """Zero exactly ``round(fraction · T)`` samples of each element in ``n_spans`` non-overlapping spans.

    Span lengths differ by at most one sample; their positions are uniform among non-overlapping layouts
    (two spans may touch). The same spans mask all channels unless ``per_channel``. COMET's masked views
    use 5 spans covering 10 %; PMQ masks 50 %.

    Clinical caveat: a masked span can remove the only evidence of an intermittent finding (one premature
    beat, a pause, a short EEG discharge).

    Args:
        fraction: fraction of samples to zero, in [0, 1].
        n_spans: number of spans (fewer if there are fewer masked samples).
        per_channel: independent spans per channel.
    """

    def __init__(self, fraction: float = 0.1, n_spans: int = 5, per_channel: bool = False) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"fraction must be in [0, 1], got {fraction}")
        if not (isinstance(n_spans, int) and n_spans >= 1):
            raise ConfigError(f"n_spans must be an integer >= 1, got {n_spans!r}")
        self.fraction, self.n_spans, self.per_channel = float(fraction), n_spans, per_channel

    def mask(
        self, shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor
    ) -> torch.Tensor:
        """The boolean mask (rows, T), True where masked, for ``rows`` elements (or element-channels)."""
        rows, t = shape
        m = round(self.fraction * t)
        n = max(1, min(self.n_spans, m))
        lengths = torch.full((n,), m // n, device=like.device, dtype=torch.long)
        lengths[: m % n] += 1
        # Gaps before each span: n sorted draws in [0, T − m] ("stars and bars" for non-overlap).
        gaps = (_rand((rows, n), generator, like, torch.float32) * (t - m + 1)).long().clamp_(max=t - m)
        gaps = gaps.sort(dim=1).values
        # Span j covers samples gaps_j + (masked samples before it) + 0 … lengths_j − 1, so the masked
        # samples of a row are gaps[span of the k-th masked sample] + k, k = 0 … m − 1 (non-overlapping).
        span_of = torch.repeat_interleave(torch.arange(n, device=like.device), lengths, output_size=m)
        index = gaps[:, span_of] + torch.arange(m, device=like.device)
        return torch.zeros(rows, t, device=like.device, dtype=torch.bool).scatter_(1, index, True)

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_batch(x, "TimeMask")
        b, c, t = x.shape
        if self.per_channel:
            mask = self.mask((b * c, t), generator, x).view(b, c, t)
        else:
            mask = self.mask((b, t), generator, x)[:, None, :]
        if select is not None:
            mask = mask & select[:, None, None]
        return _zero_where(x, mask)


class FrequencyPerturbation(View):
    """Remove exactly ``round(fraction · F)`` randomly chosen rFFT bins (F = T//2 + 1) of each channel.

    PMQ (Sun et al. 2025) perturbs views in frequency by zeroing a random 10 % of the rFFT coefficients
    (TF-C's ``remove_frequency``; all bins, DC included, may be chosen). Here the count is exact per
    (element, channel), or per element with ``per_channel=False``: ``irfft(X · mask, n=T)``. Only the
    chosen bins change; zeroing is real, so the result is the exact real signal with those bins removed.

    Clinical caveat: removing bins of the QRS band (≈ 5–40 Hz in ECG) or of an EEG rhythm band (alpha
    8–12 Hz) changes morphology or rhythm content; removing DC drops the offset.

    Args:
        fraction: fraction of bins to remove, in [0, 1] (PMQ: 0.1).
        per_channel: independent bins per channel (PMQ) or the same bins for all channels.
    """

    def __init__(self, fraction: float = 0.1, per_channel: bool = True) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"fraction must be in [0, 1], got {fraction}")
        self.fraction, self.per_channel = float(fraction), per_channel

    def apply_(
        self, x: torch.Tensor, generator: torch.Generator | None = None, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_batch(x, "FrequencyPerturbation")
        b, c, t = x.shape
        n_bins = t // 2 + 1
        rows = b * c if self.per_channel else b
        remove = _random_subset((rows, n_bins), round(self.fraction * n_bins), generator, x)
        remove = remove.view(b, c if self.per_channel else 1, n_bins)
        spectrum = torch.fft.rfft(x if x.dtype in (torch.float32, torch.float64) else x.float(), dim=2)
        y = torch.fft.irfft(spectrum.masked_fill_(remove, 0), n=t, dim=2).to(x.dtype)
        if select is None:
            return x.copy_(y)
        # Unselected elements keep x exactly (an rfft round trip would change them by rounding).
        return torch.where(select[:, None, None], y, x, out=x)
