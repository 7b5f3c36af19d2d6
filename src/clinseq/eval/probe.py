"""Linear probe: standardised frozen features → one L2 logistic regression per class (one-vs-rest).

The protocol of the PTB-XL SSL literature (e.g. Mehari & Strodthoff 2022; PCLR, Diamant et al. 2022):

- features are standardised with the mean and standard deviation of the **training** examples
  (``sklearn.preprocessing.StandardScaler``; a constant feature gets scale 1);
- each class gets its own ``sklearn.linear_model.LogisticRegression`` (L2, lbfgs) — one-vs-rest, so the
  multi-label classes are independent;
- the inverse regularisation strength C is chosen on the validation fold (under k-fold cross-fitting the
  protocol then uses one C for all folds, the best mean validation AUROC): every C of the grid is fitted
  and the one with the best validation macro AUROC (over the classes with both labels there) is kept,
  the smallest C on ties (the most regularised). One C is shared by all classes: per-class choices
  overfit a validation fold of a few dozen ECGs. Pass ``C=`` to skip the search (then no validation data
  is needed). The validation labels are used at every label fraction, as is usual in the literature;
  they never enter the fit.
- a class with no positive (or no negative) among the training examples — common at 1 % of the labels —
  cannot be fitted; it gets a **constant** score, the log-odds of its training prevalence (clipped to
  [1e-6, 1 − 1e-6]). A constant score ranks no example above another, so that class scores AUROC 0.5 and
  AUPRC = its test prevalence: an honest chance-level contribution rather than a crash or a silent drop.

Scores are logits (``decision_function``): AUROC and AUPRC are rank-based, and logits keep ranks that
sigmoid probabilities would round to ties at 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from clinseq.errors import ConfigError
from clinseq.eval.metrics import auroc_per_class

__all__ = ["DEFAULT_CS", "LinearProbe", "fit_linear_probe"]

#: Grid of inverse L2 strengths searched on the validation fold (standardised features).
DEFAULT_CS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)

_PREVALENCE_CLIP = 1e-6


@dataclass
class LinearProbe:
    """A fitted probe: ``logits = ((x − mean) / scale) @ coef.T + intercept``.

    Attributes:
        mean, scale: (D,) standardisation from the training features.
        coef: (K, D) and intercept (K,): per-class logistic regressions; zero coefficients for the
            constant classes.
        constant: (K,) True where the class had a single label value in training (constant score).
        C: the inverse L2 strength used.
        val_auroc: C → validation macro AUROC for each C tried (empty when C was fixed).
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    constant: np.ndarray
    C: float
    val_auroc: dict[float, float] = field(default_factory=dict)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """(n, K) logits of the features ``x`` (n, D)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.coef.shape[1]:
            raise ConfigError(
                f"features must have shape (n, {self.coef.shape[1]}) like the training features, "
                f"got {x.shape}"
            )
        return ((x - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, K) probabilities, the sigmoid of :meth:`decision_function`."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(x)))


def _fit_path(
    xs: np.ndarray, y: np.ndarray, Cs: Sequence[float], max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class fits for every C of ``Cs`` (ascending): coef (n_C, K, D), intercept (n_C, K), constant (K,).

    Along the grid each class's fit starts from the previous C's solution (a regularisation path: the
    same optimum to lbfgs tolerance, in far fewer iterations). BLAS is held to one thread: these are
    small matrix-vector products for which thread start-up costs more than it saves (8× measured on
    300 × 320 features) and other processes share the cores.
    """
    n_classes = y.shape[1]
    coef = np.zeros((len(Cs), n_classes, xs.shape[1]))
    intercept = np.zeros((len(Cs), n_classes))
    constant = np.zeros(n_classes, bool)
    with threadpool_limits(limits=1, user_api="blas"):
        for k in range(n_classes):
            yk = y[:, k]
            prevalence = float(yk.mean())
            if prevalence in (0.0, 1.0):
                constant[k] = True
                p = min(max(prevalence, _PREVALENCE_CLIP), 1.0 - _PREVALENCE_CLIP)
                intercept[:, k] = np.log(p / (1.0 - p))
                continue
            model = LogisticRegression(max_iter=max_iter, warm_start=len(Cs) > 1)
            for i, c in enumerate(Cs):
                model.set_params(C=c).fit(xs, yk)
                coef[i, k], intercept[i, k] = model.coef_[0], model.intercept_[0]
    return coef, intercept, constant


def fit_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    *,
    C: float | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 2000,
) -> LinearProbe:
    """Fit a one-vs-rest logistic-regression probe on standardised features.

    Args:
        x_train: (n, D) training features; y_train: (n, K) multi-hot labels.
        x_val, y_val: validation features and labels, used only to choose C.
        C: fixed inverse L2 strength; None → search ``Cs`` on the validation data.
        Cs: the grid searched when ``C`` is None.
        max_iter: lbfgs iterations per class.

    Returns:
        :class:`LinearProbe`.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    y_train = np.asarray(y_train)
    if x_train.ndim != 2 or y_train.ndim != 2 or x_train.shape[0] != y_train.shape[0]:
        raise ConfigError(
            f"expected x_train (n, D) and y_train (n, K) with the same n, got {x_train.shape} and "
            f"{y_train.shape}"
        )
    if x_train.shape[0] == 0:
        raise ConfigError("no training examples: the label fraction selected no labelled recording")
    if not np.isfinite(x_train).all():
        raise ConfigError("x_train contains NaN or inf; check the encoder's embeddings")
    scaler = StandardScaler().fit(x_train)
    xs = scaler.transform(x_train)

    def probe_of(coef: np.ndarray, intercept: np.ndarray, constant: np.ndarray, c: float) -> LinearProbe:
        return LinearProbe(scaler.mean_.copy(), scaler.scale_.copy(), coef, intercept, constant, float(c))

    if C is not None:
        if not C > 0:
            raise ConfigError(f"C must be > 0, got {C}; e.g. C=0.01 (smaller = stronger L2)")
        coef, intercept, constant = _fit_path(xs, y_train, [float(C)], max_iter)
        return probe_of(coef[0], intercept[0], constant, C)
    if x_val is None or y_val is None:
        raise ConfigError(
            "choosing C needs validation data: pass x_val and y_val, or a fixed C (e.g. C=0.01)"
        )
    Cs = sorted(float(c) for c in Cs)
    if not Cs or Cs[0] <= 0:
        raise ConfigError(f"Cs must be a non-empty grid of positive values, got {Cs}")
    y_val = np.asarray(y_val)
    coefs, intercepts, constant = _fit_path(xs, y_train, Cs, max_iter)
    scores: dict[float, float] = {}
    best: LinearProbe | None = None
    best_score = -np.inf
    for i, c in enumerate(Cs):
        probe = probe_of(coefs[i], intercepts[i], constant, c)
        per_class = auroc_per_class(y_val, probe.decision_function(x_val))
        defined = per_class[~np.isnan(per_class)]
        if defined.size == 0:
            raise ConfigError(
                "no class has both labels in the validation set, so C cannot be chosen on it; "
                "pass a fixed C (e.g. C=0.01)"
            )
        scores[c] = float(defined.mean())
        if scores[c] > best_score:  # strict: the smallest C wins ties
            best, best_score = probe, scores[c]
    best.val_auroc = scores
    return best
