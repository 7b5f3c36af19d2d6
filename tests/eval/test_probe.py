"""The linear probe: sklearn's one-vs-rest on standardised features, C chosen on val, constant classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from clinseq.errors import ConfigError
from clinseq.eval.metrics import auroc_per_class, evaluate_predictions
from clinseq.eval.probe import fit_linear_probe


def _data(n: int, k: int = 3, d: int = 8, signal: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.35).astype(np.uint8)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 20.0, d) + rng.uniform(-5, 5, d)  # unscaled features
    x[:, :k] += signal * y * 3.0
    return x, y


def test_probe_equals_sklearn_one_vs_rest_on_standardised_features() -> None:
    x, y = _data(200)
    x_test, _ = _data(50, seed=1)
    probe = fit_linear_probe(x, y, C=0.3)
    scaler = StandardScaler().fit(x)
    ovr = OneVsRestClassifier(LogisticRegression(C=0.3, max_iter=2000)).fit(scaler.transform(x), y)
    np.testing.assert_allclose(
        probe.decision_function(x_test), ovr.decision_function(scaler.transform(x_test)), rtol=1e-5, atol=1e-5
    )
    proba = ovr.predict_proba(scaler.transform(x_test))
    np.testing.assert_allclose(probe.predict_proba(x_test), proba, atol=1e-6)


def test_features_containing_the_label_reach_auroc_one_and_noise_chance() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((1200, 4)) < 0.3).astype(np.uint8)
    informative = y + 0.1 * rng.normal(size=y.shape)  # features = Y + noise
    noise = rng.normal(size=(1200, 16))
    pid = np.arange(1200)
    tr, va, te = slice(0, 600), slice(600, 800), slice(800, None)
    for x, expect in ((informative, "one"), (noise, "chance")):
        probe = fit_linear_probe(x[tr], y[tr], x[va], y[va])
        m = evaluate_predictions(y[te], probe.decision_function(x[te]), pid[te], n_boot=300)
        if expect == "one":
            assert m.auroc.point > 0.99 and m.auprc.point > 0.97
        else:
            assert m.auroc.low < 0.5 < m.auroc.high and abs(m.auroc.point - 0.5) < 0.07


def test_c_is_chosen_on_validation_smallest_on_ties() -> None:
    x, y = _data(150, signal=0.6)
    x_val, y_val = _data(80, signal=0.6, seed=2)
    grid = (1e-3, 1e-1, 10.0)
    probe = fit_linear_probe(x, y, x_val, y_val, Cs=grid)
    assert set(probe.val_auroc) == set(grid)
    for c, score in probe.val_auroc.items():  # each recorded score is the refit's val macro AUROC
        refit = fit_linear_probe(x, y, C=c)
        assert score == pytest.approx(np.nanmean(auroc_per_class(y_val, refit.decision_function(x_val))))
    best = max(probe.val_auroc.values())
    assert probe.C == min(c for c, v in probe.val_auroc.items() if v == best)


def test_classes_absent_from_training_get_a_constant_score() -> None:
    x, y = _data(120, k=3)
    y_train = y.copy()
    y_train[:, 1] = 0  # never positive in this small training subset
    y_train[:, 2] = 1  # always positive
    probe = fit_linear_probe(x, y_train, C=1.0)
    assert probe.constant.tolist() == [False, True, True]
    scores = probe.decision_function(x)
    assert np.ptp(scores[:, 1]) == 0 and np.ptp(scores[:, 2]) == 0
    assert scores[0, 1] < -10 and scores[0, 2] > 10  # log-odds of prevalence 0 and 1, clipped
    m = evaluate_predictions(y, scores, np.arange(len(y)), n_boot=0)
    assert m.per_class_auroc[1] == 0.5 and m.per_class_auroc[2] == 0.5  # chance, not a crash or a drop
    assert m.per_class_auprc[1] == pytest.approx(y[:, 1].mean())


def test_bad_input_raises_config_error() -> None:
    x, y = _data(30)
    with pytest.raises(ConfigError, match="validation data"):
        fit_linear_probe(x, y)
    with pytest.raises(ConfigError, match="C must be > 0"):
        fit_linear_probe(x, y, C=0.0)
    with pytest.raises(ConfigError, match="same n"):
        fit_linear_probe(x, y[:10], C=1.0)
    with pytest.raises(ConfigError, match="both labels in the validation"):
        fit_linear_probe(x, y, x[:5], np.zeros((5, 3)))
    probe = fit_linear_probe(x, y, C=1.0)
    with pytest.raises(ConfigError, match="shape"):
        probe.decision_function(x[:, :3])
