"""Macro AUROC/AUPRC against scikit-learn; the patient-level bootstrap and its intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from clinseq.errors import ConfigError
from clinseq.eval.metrics import (
    auroc_per_class,
    average_precision_per_class,
    evaluate_predictions,
    paired_difference,
    patient_bootstrap_weights,
)


def _case(seed: int, n: int = 60, k: int = 4, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < rng.uniform(0.1, 0.6, k)).astype(np.uint8)
    s = y * rng.uniform(0.2, 1.5, k) + rng.normal(size=(n, k))
    if ties:  # coarse scores: many tied values, the hard case for both metrics
        s = np.round(s, 1)
    return y, s


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [True, False])
def test_per_class_metrics_match_sklearn(seed: int, ties: bool) -> None:
    y, s = _case(seed, ties=ties)
    auroc = auroc_per_class(y, s)
    ap = average_precision_per_class(y, s)
    for k in range(y.shape[1]):
        assert auroc[k] == pytest.approx(roc_auc_score(y[:, k], s[:, k]), abs=1e-12)
        assert ap[k] == pytest.approx(average_precision_score(y[:, k], s[:, k]), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_integer_weights_equal_duplicated_examples(seed: int) -> None:
    y, s = _case(seed, n=40)
    rng = np.random.default_rng(100 + seed)
    w = rng.integers(0, 4, size=(5, len(y)))
    auroc = auroc_per_class(y, s, w)
    ap = average_precision_per_class(y, s, w)
    assert auroc.shape == ap.shape == (5, y.shape[1])
    for b in range(5):
        idx = np.repeat(np.arange(len(y)), w[b])  # the resample written out
        for k in range(y.shape[1]):
            yk, sk = y[idx, k], s[idx, k]
            if yk.min() == yk.max():
                assert np.isnan(auroc[b, k]) and np.isnan(ap[b, k])
                continue
            assert auroc[b, k] == pytest.approx(roc_auc_score(yk, sk), abs=1e-12)
            assert ap[b, k] == pytest.approx(average_precision_score(yk, sk), abs=1e-12)


def test_macro_skips_classes_without_both_labels() -> None:
    y, s = _case(7, n=50, k=5)
    y[:, 1] = 0  # no positive
    y[:, 3] = 1  # no negative
    m = evaluate_predictions(y, s, np.arange(len(y)), n_boot=0)
    assert m.evaluated.tolist() == [True, False, True, False, True]
    assert m.n_classes_evaluated == 3
    keep = [0, 2, 4]
    assert m.auroc.point == pytest.approx(roc_auc_score(y[:, keep], s[:, keep], average="macro"), abs=1e-12)
    assert m.auprc.point == pytest.approx(
        average_precision_score(y[:, keep], s[:, keep], average="macro"), abs=1e-12
    )
    assert np.isnan(m.auroc.low) and m.auroc.n_boot == 0


def test_bootstrap_weights_resample_whole_patients() -> None:
    patients = np.array([5, 5, 5, 9, 2, 2, 7])
    w = patient_bootstrap_weights(patients, n_boot=300, seed=3)
    assert w.shape == (300, 7)
    for pid in np.unique(patients):
        cols = w[:, patients == pid]
        assert (cols == cols[:, :1]).all(), "all ECGs of a patient share their weight"
    # each resample draws exactly n_patients patients
    first = [np.flatnonzero(patients == p)[0] for p in np.unique(patients)]
    assert (w[:, first].sum(axis=1) == 4).all()
    np.testing.assert_array_equal(w, patient_bootstrap_weights(patients, 300, seed=3))
    assert not np.array_equal(w, patient_bootstrap_weights(patients, 300, seed=4))


def _patients_with_signal(n_patients: int, seed: int, k: int = 3):
    rng = np.random.default_rng(seed)
    y = (rng.random((n_patients, k)) < 0.3).astype(np.uint8)
    y[0], y[1] = 1, 0  # both labels present for every class
    s = y * 1.0 + rng.normal(size=y.shape)
    return y, s, np.arange(n_patients) * 10


def test_ci_contains_point_and_shrinks_with_more_patients() -> None:
    widths = []
    for n in (40, 400):
        y, s, pid = _patients_with_signal(n, seed=n)
        m = evaluate_predictions(y, s, pid, n_boot=500, seed=0)
        for ci in (m.auroc, m.auprc):
            assert ci.low <= ci.point <= ci.high
            assert 0.0 <= ci.low and ci.high <= 1.0
            assert ci.n_boot == 500
        widths.append(m.auroc.high - m.auroc.low)
    assert widths[1] < 0.6 * widths[0], widths  # ~1/sqrt(10) expected


def test_resampling_is_by_patient_duplicated_ecgs() -> None:
    """Copies of a patient's ECG under the same patient id add no information: the CI is unchanged.

    The same copies as *different* patients would (wrongly) look like more data and narrow the CI.
    """
    y, s, pid = _patients_with_signal(60, seed=1)
    copies = 4
    y4, s4 = np.repeat(y, copies, axis=0), np.repeat(s, copies, axis=0)
    base = evaluate_predictions(y, s, pid, n_boot=400, seed=11)
    same_patient = evaluate_predictions(y4, s4, np.repeat(pid, copies), n_boot=400, seed=11)
    as_new_patients = evaluate_predictions(y4, s4, np.arange(len(y4)), n_boot=400, seed=11)
    assert same_patient.auroc.point == pytest.approx(base.auroc.point)
    np.testing.assert_allclose(same_patient.auroc_boot, base.auroc_boot, rtol=0, atol=1e-12)
    np.testing.assert_allclose(same_patient.auprc_boot, base.auprc_boot, rtol=0, atol=1e-12)
    width = lambda m: m.auroc.high - m.auroc.low  # noqa: E731
    assert width(as_new_patients) < 0.75 * width(same_patient)


def test_bootstrap_value_equals_sklearn_on_the_written_out_resample() -> None:
    rng = np.random.default_rng(5)
    pid = np.repeat(np.arange(30), rng.integers(1, 4, 30))  # patients with 1-3 ECGs
    y = (rng.random((len(pid), 2)) < 0.4).astype(np.uint8)
    s = y + rng.normal(size=y.shape)
    m = evaluate_predictions(y, s, pid, n_boot=20, seed=2)
    # Rebuild resample 7 by hand: draw patients exactly as documented, take all their ECGs.
    patients = np.unique(pid)
    draws = np.random.default_rng(2).integers(0, len(patients), size=(20, len(patients)))[7]
    idx = np.concatenate([np.flatnonzero(pid == patients[d]) for d in draws])
    per_class = [roc_auc_score(y[idx, k], s[idx, k]) for k in range(2) if 0 < y[idx, k].sum() < len(idx)]
    assert m.auroc_boot[7] == pytest.approx(np.mean(per_class), abs=1e-12)


def test_paired_difference_of_a_model_with_itself_is_zero() -> None:
    y, s, pid = _patients_with_signal(50, seed=2)
    a = evaluate_predictions(y, s, pid, n_boot=100, seed=0)
    d = paired_difference(a.auroc.point, a.auroc_boot, a.auroc.point, a.auroc_boot)
    assert (d.point, d.low, d.high) == (0.0, 0.0, 0.0)
    noisy = evaluate_predictions(y, s + np.random.default_rng(0).normal(size=s.shape) * 3, pid, n_boot=100)
    d = paired_difference(a.auroc.point, a.auroc_boot, noisy.auroc.point, noisy.auroc_boot)
    assert d.point > 0 and d.low <= d.point <= d.high
    with pytest.raises(ConfigError, match="same n_boot"):
        paired_difference(0.5, np.zeros(3), 0.5, np.zeros(4))


def test_bad_input_raises_config_error() -> None:
    y, s = _case(0)
    with pytest.raises(ConfigError, match="same shape"):
        evaluate_predictions(y, s[:, :2], np.arange(len(y)))
    with pytest.raises(ConfigError, match="one entry per example"):
        evaluate_predictions(y, s, np.arange(3))
    with pytest.raises(ConfigError, match="binary"):
        auroc_per_class(y * 2, s)
    with pytest.raises(ConfigError, match="NaN"):
        auroc_per_class(y, s * np.nan)
    with pytest.raises(ConfigError, match="n_boot"):
        patient_bootstrap_weights([1, 2], n_boot=-1)
