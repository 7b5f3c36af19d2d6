"""The non-neural EHR baseline: counts of each code in the input window, for a logistic regression.

The MEDS-Tab idea (Oufattole et al. 2024, "MEDS-Tab: Automated tabularization and baseline methods for
MEDS datasets") reduced to its core, and the bar EHR self-supervision has to clear: for each example
(subject_id, prediction_time), how often each code occurs among the events the encoder may see (the same
window as :class:`~clinseq.eval.ehr_features.PredictionTimeEvents`: static events and ``input_start <=
time <= prediction_time``, but **all** of them, not only the last ``max_len``). :class:`CodeCountFeatures`
is a featurizer of :func:`clinseq.eval.evaluate`: ``log1p`` counts of the codes present in the inputs of
at least ``min_examples`` examples (at most ``max_codes``, the most widespread first; chosen without
labels), which the protocol's probe standardises on the training subjects and fits as an L2 logistic
regression with C chosen on the validation subjects — the same probe as the encoders' rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from clinseq.data.event_sequences import CodeVocabulary, ValueNormalizer
from clinseq.errors import ConfigError
from clinseq.eval.ehr_features import EventFeatures, PredictionTimeEvents, check_prediction_time_examples

if TYPE_CHECKING:
    from clinseq.eval.tasks import Examples
    from clinseq.timeline import TimelineStore

__all__ = ["COUNTS_NAME", "CodeCountFeatures", "code_count_matrix", "event_featurizers"]


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
class CodeCountFeatures:
    """Featurizer: ``log1p`` counts of each code in each example's input window (module docstring).

    Attributes:
        input_window_s: seconds of history before ``prediction_time`` (None: all of it).
        min_examples: keep codes present in the inputs of at least this many examples.
        max_codes: keep at most this many codes (the most widespread), bounding the dense matrix.
        codes: count only these codes (one column each, in this order), e.g. a hand-picked set; then
            ``min_examples`` and ``max_codes`` do not apply.
    """

    input_window_s: float | None = None
    min_examples: int = 2
    max_codes: int | None = 4096
    codes: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.min_examples < 1:
            raise ConfigError(f"min_examples must be >= 1, got {self.min_examples}")
        if self.max_codes is not None and self.max_codes < 1:
            raise ConfigError(f"max_codes must be >= 1 or None, got {self.max_codes}")

    def __call__(self, store: TimelineStore, examples: Examples) -> np.ndarray:
        check_prediction_time_examples(examples, "code counts")
        events = PredictionTimeEvents.for_counting(store.event_index, examples.keys, self.input_window_s)
        counts = code_count_matrix(events)
        if self.codes is not None:
            position = {c: i for i, c in enumerate(store.event_index.codes.to_list())}
            out = np.zeros((counts.shape[0], len(self.codes)), np.float32)
            for j, code in enumerate(self.codes):
                if code in position:
                    out[:, j] = np.log1p(counts[:, position[code]].toarray().ravel())
            return out
        present = np.asarray((counts > 0).sum(axis=0)).ravel()
        columns = np.flatnonzero(present >= self.min_examples)
        if self.max_codes is not None and len(columns) > self.max_codes:
            order = np.argsort(-present[columns], kind="stable")[: self.max_codes]
            columns = np.sort(columns[order])
        if len(columns) == 0:
            return np.zeros((counts.shape[0], 1), np.float32)
        return np.log1p(counts[:, columns].toarray()).astype(np.float32)


#: The row name of the count baseline in EHR tables.
COUNTS_NAME = "code counts + LR"


def event_featurizers(
    encoders: Mapping[str, torch.nn.Module],
    vocab: CodeVocabulary,
    normalizer: ValueNormalizer,
    max_len: int,
    *,
    counts: bool = True,
    input_window_s: float | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> dict[str, object]:
    """The rows of an EHR table: each encoder's :class:`EventFeatures` and, last (the baseline the others
    are compared with), :data:`COUNTS_NAME` (:class:`CodeCountFeatures`)."""
    rows: dict[str, object] = {
        name: EventFeatures(enc, vocab, normalizer, max_len, input_window_s, batch_size, device)
        for name, enc in encoders.items()
    }
    if counts:
        rows[COUNTS_NAME] = CodeCountFeatures(input_window_s)
    return rows
