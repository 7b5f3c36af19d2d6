"""ADC → physical units: the store's one precision rule, and when float32 arithmetic meets it exactly.

The rule (design §2): ``physical = (adc - baseline) / gain`` computed in float64 and rounded once to
float32, so a value is within half a float32 ulp of wfdb's and mne's float64 one, whatever the ADC width.

The float64 pass costs about half of a window read. For the common case it is not needed: when the ADC
values have at most 16 bits, every baseline is an integer with ``|baseline| <= 2**23`` and every gain is
exactly representable in float32 (PTB-XL's 1000 ADC units per mV, most WFDB gains), then ``adc -
baseline`` is an integer below ``2**24`` (exact in float32) and the gain is exact in float32, so float32's
correctly rounded quotient is the exact quotient rounded once to float32. The float64 rule rounds twice
(to float64, then to float32), and for a quotient that is innocuous whenever the wider format has at least
``2p + 2`` bits of precision, ``53 >= 2 * 24 + 2`` (S. A. Figueroa, "When is double rounding
innocuous?", ACM SIGNUM Newsletter 30(3), 1995). Both paths then give the same bits; the test
``tests/timeline/test_calibration.py`` checks it over every int16 value and real gains.
"""

from __future__ import annotations

import numpy as np

__all__ = ["exact_in_float32", "to_physical"]

#: Largest |baseline| of the float32 path: with 16-bit ADC values, |adc - baseline| < 2**23 + 2**16 < 2**24.
MAX_BASELINE_FLOAT32 = float(2**23)
_SMALL_INTEGER_DTYPES = {"int8", "uint8", "int16", "uint16"}


def exact_in_float32(gain: np.ndarray, baseline: np.ndarray, sample_dtype: str) -> bool:
    """True when float32 arithmetic gives the float64 rule's bits for these channels (module docstring).

    Args:
        gain: ADC units per physical unit, one per channel.
        baseline: ADC value of physical zero, one per channel.
        sample_dtype: the stored samples' numpy dtype name (``"int16"``...).
    """
    gain = np.asarray(gain, np.float64)
    baseline = np.asarray(baseline, np.float64)
    if sample_dtype == "float32":  # resampled stores: exact only as the identity (gain 1, baseline 0)
        return bool(np.all(gain == 1.0) and np.all(baseline == 0.0))
    if sample_dtype not in _SMALL_INTEGER_DTYPES:
        return False
    return bool(
        np.all(np.isfinite(gain))
        and np.all(gain.astype(np.float32).astype(np.float64) == gain)
        and np.all(baseline == np.round(baseline))
        and np.all(np.abs(baseline) <= MAX_BASELINE_FLOAT32)
    )


def to_physical(window: np.ndarray, baseline: np.ndarray, gain: np.ndarray, exact32: bool) -> np.ndarray:
    """``(window - baseline) / gain`` per channel (rows of ``window``) as float32, by the store's rule.

    ``exact32`` (from :func:`exact_in_float32` for these channels and this sample type) takes the float32
    path, bit for bit the same result; otherwise the arithmetic runs in float64 and is rounded once.
    """
    if exact32:
        physical = window.astype(np.float32)  # a copy; in place from here
        physical -= baseline.astype(np.float32)[:, None]
        physical /= gain.astype(np.float32)[:, None]
        return physical
    physical = window.astype(np.float64)  # in place from here: ~10× faster than a mixed-type expression
    physical -= baseline[:, None]
    physical /= gain[:, None]
    return physical.astype(np.float32)
