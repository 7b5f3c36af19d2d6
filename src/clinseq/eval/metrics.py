"""Macro AUROC / AUPRC for multi-label predictions, with patient-level bootstrap confidence intervals.

Definitions (checked against scikit-learn in ``tests/eval/test_metrics.py``):

- AUROC of one class = P(s⁺ > s⁻) + ½ P(s⁺ = s⁻) over (positive, negative) pairs — the Mann–Whitney form
  of the area under the ROC curve, equal to ``sklearn.metrics.roc_auc_score``.
- AUPRC of one class = average precision, AP = Σₙ (Rₙ − Rₙ₋₁) Pₙ over the distinct score thresholds in
  descending order, equal to ``sklearn.metrics.average_precision_score`` (no interpolation).
- Macro = the unweighted mean over the classes that have both a positive and a negative example in the
  evaluated set; other classes are undefined and skipped (their number is reported).

Both metrics accept per-example integer weights, and a weight w counts exactly like w copies of the
example. That is how the bootstrap is computed without building resampled arrays: a resample draws
**patients** with replacement (as many draws as there are patients), and each ECG gets the number of
times its patient was drawn as its weight, so all ECGs of a patient go in or out together. Within one
resample, classes without both labels are skipped, as for the point estimate; the bootstrap only ever
considers the classes that the point estimate itself evaluated. The interval is the percentile interval
(default 95 %: the 2.5th and 97.5th percentiles). The resamples depend only on (patient ids, ``n_boot``,
``seed``), so two models scored on the same test set with the same seed see the same resamples and their
per-resample difference gives a paired interval (:func:`paired_difference`).

This differs from ecg_ptbxl_benchmarking on purpose: it resamples *ECGs* 100 times, redraws any
resample in which a class has no positive, and reports the 5th–95th percentiles (a 90 % interval). On
PTB-XL a patient may have several ECGs, so ECG-level resampling understates the variance; and on a small
test fold with rare classes a resample with every class present may never come, so classes are skipped
per resample instead.

Metrics here are evaluation-time numpy code, not a training hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from clinseq.errors import ConfigError

__all__ = [
    "MetricCI",
    "PredictionMetrics",
    "auroc_per_class",
    "average_precision_per_class",
    "evaluate_predictions",
    "paired_difference",
    "patient_bootstrap_weights",
]

#: Resamples are scored in chunks of about this many (resample × example) weights to bound memory.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class MetricCI:
    """A point estimate with its bootstrap percentile interval.

    ``low``/``high`` are NaN when no resample gave a defined value (or ``n_boot == 0``);
    ``n_boot`` counts the resamples in which the metric was defined.
    """

    point: float
    low: float
    high: float
    n_boot: int
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "point": _none_if_nan(self.point),
            "low": _none_if_nan(self.low),
            "high": _none_if_nan(self.high),
            "n_boot": self.n_boot,
            "confidence": self.confidence,
        }

    def __str__(self) -> str:
        if np.isnan(self.low):
            return f"{self.point:.3f}"
        return f"{self.point:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass
class PredictionMetrics:
    """Macro AUROC/AUPRC of one set of multi-label predictions, with patient-bootstrap CIs.

    Attributes:
        auroc, auprc: macro values with their intervals.
        per_class_auroc, per_class_auprc: (K,) point values, NaN for classes not evaluated.
        evaluated: (K,) bool, the classes with both labels in the evaluated set.
        n_patients, n_examples: size of the evaluated set.
        auroc_boot, auprc_boot: (n_boot,) macro values of each resample (NaN where undefined), kept for
            paired comparisons; not serialised.
    """

    auroc: MetricCI
    auprc: MetricCI
    per_class_auroc: np.ndarray
    per_class_auprc: np.ndarray
    evaluated: np.ndarray
    n_patients: int
    n_examples: int
    auroc_boot: np.ndarray = field(repr=False)
    auprc_boot: np.ndarray = field(repr=False)

    @property
    def n_classes_evaluated(self) -> int:
        return int(self.evaluated.sum())


def _none_if_nan(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _check_binary(y_true: np.ndarray, name: str = "y_true") -> np.ndarray:
    y = np.asarray(y_true)
    if y.dtype == bool:
        return y
    if y.size and not np.isin(y, (0, 1)).all():
        raise ConfigError(f"{name} must be binary (0/1 or bool), got values {np.unique(y)[:10].tolist()}")
    return y.astype(bool)


def _prepare(
    y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y (n, K) bool, scores (n, K) float64, weights (B, n) float64) with shapes validated."""
    y = _check_binary(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if y.ndim != 2 or y.shape != s.shape:
        raise ConfigError(
            f"y_true and scores must have the same shape (n_examples, n_classes), got {y.shape} and "
            f"{s.shape}; pass one score column per class"
        )
    if not np.isfinite(s).all():
        raise ConfigError("scores contain NaN or inf; check the model's outputs before scoring")
    n = y.shape[0]
    if weights is None:
        w = np.ones((1, n))
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim == 1:
            w = w[None, :]
        if w.ndim != 2 or w.shape[1] != n:
            raise ConfigError(
                f"weights must have shape (n_examples,) or (B, n_examples) = (B, {n}), got {w.shape}"
            )
        if (w < 0).any():
            raise ConfigError("weights must be >= 0 (they count copies of each example)")
    return y, s, w


def _group_sums(
    y: np.ndarray, s: np.ndarray, w: np.ndarray, descending: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted positive and negative counts per distinct score, (B, G) each, in sorted score order."""
    order = np.argsort(-s if descending else s, kind="stable")
    s_sorted = s[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    w_sorted = w[:, order]
    y_sorted = y[order]
    pos = np.add.reduceat(w_sorted * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w_sorted * ~y_sorted, starts, axis=1)
    return pos, neg


def _auroc_1d(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B,) AUROC of one class for each weight row; NaN where a row has no positive or no negative."""
    pos, neg = _group_sums(y, s, w, descending=False)
    neg_below = np.cumsum(neg, axis=1) - neg  # negatives with a strictly lower score
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / (n_pos * n_neg)
    out[(n_pos <= 0) | (n_neg <= 0)] = np.nan
    return out


def _ap_1d(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B,) average precision of one class per weight row; NaN where a row lacks positives or negatives."""
    pos, neg = _group_sums(y, s, w, descending=True)
    tps, fps = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    n_pos, n_neg = tps[:, -1], fps[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / np.where(tps + fps > 0, tps + fps, 1.0), 0.0)
        out = (pos * precision).sum(axis=1) / n_pos
    out[(n_pos <= 0) | (n_neg <= 0)] = np.nan
    return out


def _per_class(fn, y_true, scores, weights) -> np.ndarray:  # noqa: ANN001 - internal
    y, s, w = _prepare(y_true, scores, weights)
    n_boot, n = w.shape
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    out = np.empty((n_boot, y.shape[1]))
    for k in range(y.shape[1]):
        for b0 in range(0, n_boot, chunk):
            out[b0 : b0 + chunk, k] = fn(y[:, k], s[:, k], w[b0 : b0 + chunk])
    return out


def auroc_per_class(y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUROC of each class (column), optionally for many weightings at once.

    Args:
        y_true: (n,) or (n, K) binary labels.
        scores: same shape, higher = more likely positive (logits or probabilities).
        weights: None, (n,) or (B, n) non-negative example weights; weight w counts as w copies.

    Returns:
        (K,) when ``weights`` is None or 1-D, else (B, K); NaN for a class without both labels.
    """
    out = _per_class(_auroc_1d, y_true, scores, weights)
    return out[0] if weights is None or np.ndim(weights) == 1 else out


def average_precision_per_class(
    y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Average precision (AUPRC) of each class; same arguments and shapes as :func:`auroc_per_class`.

    A class without both labels is NaN (scikit-learn returns 1.0 or 0.0 there; neither is informative).
    """
    out = _per_class(_ap_1d, y_true, scores, weights)
    return out[0] if weights is None or np.ndim(weights) == 1 else out


def patient_bootstrap_weights(
    patient_ids: Sequence[int] | np.ndarray, n_boot: int, seed: int = 0
) -> np.ndarray:
    """(n_boot, n) integer weights of a patient-level bootstrap.

    Each resample draws ``n_patients`` patients with replacement (one seeded ``numpy`` generator over the
    sorted unique patient ids); an example's weight is how often its patient was drawn, so all examples
    of one patient share their weight in every resample.
    """
    if n_boot < 0:
        raise ConfigError(f"n_boot must be >= 0, got {n_boot}; use e.g. 1000 (0 disables the CIs)")
    patients, inverse = np.unique(np.asarray(patient_ids), return_inverse=True)
    n_pat = len(patients)
    if n_pat == 0:
        raise ConfigError("no patients to resample: the evaluated set is empty")
    draws = np.random.default_rng(seed).integers(0, n_pat, size=(n_boot, n_pat))
    flat = (draws + np.arange(n_boot)[:, None] * n_pat).ravel()
    counts = np.bincount(flat, minlength=n_boot * n_pat).reshape(n_boot, n_pat)
    return counts[:, inverse.ravel()]


def _macro(per_class: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the classes in ``mask`` that are defined (not NaN), per row; NaN if none is."""
    values = per_class[..., mask]
    defined = ~np.isnan(values)
    count = defined.sum(axis=-1)
    total = np.where(defined, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _interval(point: float, samples: np.ndarray, confidence: float) -> MetricCI:
    finite = samples[~np.isnan(samples)]
    if finite.size == 0:
        return MetricCI(float(point), float("nan"), float("nan"), 0, confidence)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return MetricCI(float(point), float(low), float(high), int(finite.size), confidence)


def evaluate_predictions(
    y_true: np.ndarray,
    scores: np.ndarray,
    patient_ids: Sequence[int] | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PredictionMetrics:
    """Macro AUROC and AUPRC over the classes with both labels, with patient-level bootstrap CIs.

    Args:
        y_true: (n, K) multi-hot labels of the evaluated examples (ECGs).
        scores: (n, K) scores, higher = more likely (logits are fine: both metrics are rank-based).
        patient_ids: (n,) patient of each example; the bootstrap resamples patients.
        n_boot: number of resamples (0: point estimates only).
        seed: seeds the resamples (same seed + same patients → same resamples, for paired comparisons).
        confidence: width of the percentile interval.

    Returns:
        :class:`PredictionMetrics`. Classes without both labels in the evaluated set are skipped and
        counted in ``evaluated``; within a resample, evaluated classes that lose one of their labels are
        skipped for that resample.
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}; e.g. 0.95")
    y, s, _ = _prepare(y_true, scores, None)
    patient_ids = np.asarray(patient_ids)
    if patient_ids.shape != (y.shape[0],):
        raise ConfigError(
            f"patient_ids must have one entry per example, shape ({y.shape[0]},), got {patient_ids.shape}"
        )
    auroc_k = auroc_per_class(y, s)
    auprc_k = average_precision_per_class(y, s)
    evaluated = ~np.isnan(auroc_k)
    auroc_point = float(_macro(auroc_k, evaluated)) if evaluated.any() else float("nan")
    auprc_point = float(_macro(auprc_k, evaluated)) if evaluated.any() else float("nan")
    if n_boot > 0 and evaluated.any():
        w = patient_bootstrap_weights(patient_ids, n_boot, seed)
        # Only the evaluated classes are scored per resample: the others can never enter the mean.
        auroc_boot = _macro(
            auroc_per_class(y[:, evaluated], s[:, evaluated], w), np.ones(evaluated.sum(), bool)
        )
        auprc_boot = _macro(
            average_precision_per_class(y[:, evaluated], s[:, evaluated], w), np.ones(evaluated.sum(), bool)
        )
    else:
        auroc_boot = auprc_boot = np.full(max(n_boot, 0), np.nan)
    return PredictionMetrics(
        auroc=_interval(auroc_point, auroc_boot, confidence),
        auprc=_interval(auprc_point, auprc_boot, confidence),
        per_class_auroc=auroc_k,
        per_class_auprc=auprc_k,
        evaluated=evaluated,
        n_patients=len(np.unique(patient_ids)),
        n_examples=int(y.shape[0]),
        auroc_boot=auroc_boot,
        auprc_boot=auprc_boot,
    )


def paired_difference(
    point_a: float, boot_a: np.ndarray, point_b: float, boot_b: np.ndarray, confidence: float = 0.95
) -> MetricCI:
    """``a − b`` with a paired percentile interval from the two models' per-resample values.

    Valid only when both were computed on the same examples with the same bootstrap seed and ``n_boot``
    (then resample i is the same draw of patients for both).
    """
    boot_a, boot_b = np.asarray(boot_a), np.asarray(boot_b)
    if boot_a.shape != boot_b.shape:
        raise ConfigError(
            f"paired resamples must match, got {boot_a.shape} and {boot_b.shape}; score both models with "
            "the same n_boot and seed"
        )
    return _interval(point_a - point_b, boot_a - boot_b, confidence)
