"""EHR inputs for pretraining: two event windows per patient (patient contrast) and ECG ↔ EHR-context pairs.

Both adapt :mod:`clinseq.data.event_sequences` (vocabulary, value normalisation, windows, collate) to the
batch samplers of :mod:`clinseq.data.samplers`, whose keys are ``WindowKey(recording_id, start)``:

- :class:`PatientEventPairs` — key ``recording_id`` = a patient's position; the item is two random crops
  of ``max_len`` consecutive events of that patient's timeline, drawn from two
  ``EventSequenceDataset(random_crop=True)`` with different seeds (so they differ whenever the patient
  has more than ``max_len`` events; a patient with fewer gives two identical windows — pick ``max_len``
  well below the typical timeline length, as the MIMIC-IV recipe does).
- :class:`ECGContextPairs` — key = an ECG window; the item adds the patient's events in the
  ``context_s`` seconds before the recording's start (``store.context_events``), the last ``max_len``
  of them, encoded by :func:`clinseq.data.event_sequences.encode_events` (the item layout of
  ``EventSequenceDataset``).

Vocabulary and value statistics are fitted on the pretraining patients only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from clinseq.data.event_sequences import (
    CodeVocabulary,
    EventSequenceDataset,
    ValueNormalizer,
    collate_events,
    encode_events,
)
from clinseq.errors import ConfigError

if TYPE_CHECKING:
    from clinseq.timeline import TimelineStore

__all__ = ["ECGContextPairs", "PatientEventPairs", "collate_event_pairs"]

# The second crop's seed offset (any constant other than 0 gives an independent crop stream).
_SECOND_VIEW_SEED = 7919


class PatientEventPairs(Dataset):
    """Two random event windows of each patient; keys are ``WindowKey(patient position, -1)``.

    ``__getitems__(keys)`` returns the batch of :func:`collate_event_pairs`: 2P windows, the first crop
    of every patient then the second (``patient_id`` repeated), so rows i and i + P are positives.
    """

    def __init__(
        self,
        first: EventSequenceDataset,
        second: EventSequenceDataset,
        vocab: CodeVocabulary,
        normalizer: ValueNormalizer,
    ) -> None:
        if not np.array_equal(first.patient_ids, second.patient_ids):
            raise ConfigError("the two event-window datasets must cover the same patients in the same order")
        self.first, self.second = first, second
        self.vocab, self.normalizer = vocab, normalizer
        self.patient_ids = first.patient_ids
        self.vocab_size = len(vocab)

    @classmethod
    def fit(
        cls, store: TimelineStore, patient_ids: Sequence[int] | np.ndarray, max_len: int = 256, seed: int = 0
    ) -> PatientEventPairs:
        """Vocabulary and value statistics from ``patient_ids``' events, then the two crop streams."""
        if not store.has_events:
            raise ConfigError(
                f"{store.path}: holds no events; convert an EHR source (clinseq convert mimic-iv)"
            )
        index = store.event_index
        ids = np.intersect1d(np.asarray(patient_ids, np.int64), index.subject_ids)
        if len(ids) == 0:
            raise ConfigError(f"{store.path}: none of the {len(patient_ids)} pretraining patients has events")
        vocab = CodeVocabulary.fit(index, ids)
        normalizer = ValueNormalizer.fit(index, ids)
        first = EventSequenceDataset(
            index, ids, vocab, normalizer, max_len=max_len, random_crop=True, seed=seed
        )
        second = EventSequenceDataset(
            index, ids, vocab, normalizer, max_len=max_len, random_crop=True, seed=seed + _SECOND_VIEW_SEED
        )
        return cls(first, second, vocab, normalizer)

    def set_epoch(self, epoch: int) -> None:
        self.first.set_epoch(epoch)
        self.second.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, key: Any) -> tuple[dict, dict]:
        position = int(key[0]) if isinstance(key, (tuple, list)) else int(key)
        return self.first[position], self.second[position]

    def __getitems__(self, keys: Sequence[Any]) -> dict[str, torch.Tensor]:
        return collate_event_pairs([self[k] for k in keys])


def collate_event_pairs(items: Any) -> dict[str, torch.Tensor]:
    """(first, second) window pairs → one batch of 2P windows: all first crops, then all second crops."""
    if isinstance(items, dict):  # __getitems__ already collated
        return items
    return collate_events([a for a, _ in items] + [b for _, b in items])


class ECGContextPairs(Dataset):
    """ECG windows with the patient's EHR context before each recording (ECG ↔ EHR alignment).

    Args:
        windows: a ``WindowDataset`` over the ECG recordings.
        store: the store holding both the recordings and the events of the same patients.
        vocab, normalizer: fitted on the pretraining patients.
        context_s: seconds of history before the recording's ``start_time``.
        max_len: events per context (the most recent ones).

    Batches (``__getitems__``): the window batch (``x``, ids) plus the event fields.
    """

    def __init__(
        self,
        windows: Any,
        store: TimelineStore,
        vocab: CodeVocabulary,
        normalizer: ValueNormalizer,
        context_s: float = 365 * 86400.0,
        max_len: int = 256,
    ) -> None:
        if not store.has_events:
            raise ConfigError(
                f"{store.path}: ECG ↔ EHR pairs need the patients' events in the same store (MIMIC-IV-ECG "
                "converted with MIMIC-IV); this store has no events"
            )
        self.windows, self.store = windows, store
        self.vocab, self.normalizer = vocab, normalizer
        self.context_s, self.max_len = float(context_s), int(max_len)
        self.vocab_size = len(vocab)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.windows, "set_epoch"):
            self.windows.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitems__(self, keys: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = self.windows.__getitems__(keys)
        items = [
            encode_events(
                self.store.context_events(int(rid), self.context_s), self.vocab, self.normalizer, self.max_len
            )
            for rid in batch["recording_id"].tolist()
        ]
        events = collate_events(items)
        events.pop("patient_id")
        return {**batch, **events}
