"""The non-neural EHR baseline: counts of each code in the input window → logistic regression.

The MEDS-Tab idea (Oufattole et al. 2024, "MEDS-Tab: Automated tabularization and baseline methods for
MEDS datasets") reduced to its core, and the bar EHR self-supervision has to clear: for each label row,
how often each code occurs among the events the encoder may see (the same window as
:class:`~clinseq.eval.ehr_features.PredictionTimeEvents`: static events and ``input_start <= time <=
prediction_time``, but **all** of them, not only the last ``max_len``), as a sparse (n, V) matrix; then
``log1p``, scaled by each column's maximum absolute value on the training rows, and an L2 logistic
regression whose C is chosen on the validation rows (AUROC).

The vocabulary (columns) is fitted on the training rows only: codes present in at least ``min_rows``
training rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from clinseq.eval.ehr_features import PredictionTimeEvents
from clinseq.utils import ConfigError

__all__ = ["COUNT_CS", "CountBaseline", "code_count_matrix", "fit_count_baseline"]

#: C grid of the count baseline (inverse L2 strength on log1p counts scaled to [0, 1]).
COUNT_CS = (0.001, 0.01, 0.1, 1.0, 10.0)


def code_count_matrix(events: PredictionTimeEvents) -> sp.csr_matrix:
    """(n labels, n store codes) CSR float32: count of each store code (its ``code_index``) among the
    events that label row may use (no ``max_len`` truncation)."""
    n_codes = len(events.index.codes)
    indptr, indices, data = [0], [], []
    for i in range(len(events)):
        ids = events.events(i).column("code_index").to_numpy()
        if len(ids):
            counts = np.bincount(ids, minlength=0)
            nz = np.flatnonzero(counts)
            indices.append(nz.astype(np.int32))
            data.append(counts[nz].astype(np.float32))
            indptr.append(indptr[-1] + len(nz))
        else:
            indptr.append(indptr[-1])
    return sp.csr_matrix(
        (
            np.concatenate(data) if data else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int32),
            np.asarray(indptr, np.int64),
        ),
        shape=(len(events), n_codes),
    )


@dataclass
class CountBaseline:
    """A fitted count baseline: kept store-code columns, their training max of log1p counts, and the
    logistic regression."""

    columns: np.ndarray
    scale: np.ndarray
    model: LogisticRegression | None
    constant: float
    C: float | None
    val_auroc: dict[float, float] = field(default_factory=dict)

    def features(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """log1p counts of the kept columns scaled by the training maxima."""
        x = counts[:, self.columns].astype(np.float64).log1p()
        return sp.csr_matrix(x.multiply(1.0 / self.scale[None, :]))

    def decision_function(self, counts: sp.csr_matrix) -> np.ndarray:
        """(n,) scores (log-odds); a constant when the training labels were all one class."""
        if self.model is None:
            return np.full(counts.shape[0], self.constant)
        return self.model.decision_function(self.features(counts))


def fit_count_baseline(
    counts_train: sp.csr_matrix,
    y_train: np.ndarray,
    counts_val: sp.csr_matrix | None = None,
    y_val: np.ndarray | None = None,
    *,
    C: float | None = None,
    Cs: Sequence[float] = COUNT_CS,
    min_rows: int = 1,
    max_iter: int = 2000,
) -> CountBaseline:
    """Fit the baseline on training rows; C from ``Cs`` by validation AUROC unless ``C`` is given.

    When the validation rows lack one of the two labels, C cannot be chosen on them and the middle of
    ``Cs`` is used (recorded as ``val_auroc == {}``).
    """
    y_train = np.asarray(y_train).astype(bool).ravel()
    if counts_train.shape[0] != len(y_train) or len(y_train) == 0:
        raise ConfigError(
            f"need one label per training row, got {counts_train.shape[0]} rows, {len(y_train)} labels"
        )
    if min_rows < 1:
        raise ConfigError(f"min_rows must be >= 1, got {min_rows}")
    present = np.asarray((counts_train > 0).sum(axis=0)).ravel()
    columns = np.flatnonzero(present >= min_rows)
    if len(columns) == 0:
        columns = np.zeros(1, np.int64)  # no code at all: one all-zero column keeps shapes valid
    scale = np.asarray(counts_train[:, columns].astype(np.float64).log1p().max(axis=0).todense()).ravel()
    scale[scale == 0] = 1.0
    if y_train.all() or not y_train.any():
        return CountBaseline(columns, scale, None, 1.0 if y_train.all() else 0.0, None)
    base = CountBaseline(columns, scale, None, 0.0, None)
    x_train = base.features(counts_train)

    def fit(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=max_iter).fit(x_train, y_train)

    if C is not None:
        return CountBaseline(columns, scale, fit(float(C)), 0.0, float(C))
    grid = sorted(float(c) for c in Cs)
    y_val = None if y_val is None else np.asarray(y_val).astype(bool).ravel()
    if counts_val is None or y_val is None or y_val.all() or not y_val.any():
        c = grid[len(grid) // 2]
        return CountBaseline(columns, scale, fit(c), 0.0, c)
    x_val = base.features(counts_val)
    scores: dict[float, float] = {}
    best, best_score = None, -np.inf
    for c in grid:
        model = fit(c)
        scores[c] = float(roc_auc_score(y_val, model.decision_function(x_val)))
        if scores[c] > best_score:  # strict: the smallest C wins ties
            best, best_score = (model, c), scores[c]
    return CountBaseline(columns, scale, best[0], 0.0, best[1], scores)
