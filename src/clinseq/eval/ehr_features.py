"""Encoder inputs and embeddings at prediction time: what was recorded up to each label's prediction_time.

For a label row (``subject_id``, ``prediction_time``) the encoder sees the subject's events with
``input_start <= time <= prediction_time`` (``input_start = prediction_time − input_window_s``, or the
first event when ``input_window_s`` is None, as in MEDS-DEV's tasks whose input window starts at
``null``), plus the subject's static (null-time) events, and of those the **last** ``max_len``: the
most recent history. Nothing recorded after ``prediction_time`` is read (the MEDS label convention:
data at or before the prediction time may be used). Items follow the batch contract of
:mod:`clinseq.data.event_sequences`, encoded with the vocabulary and value statistics fitted on the
pretraining patients, exactly as in pretraining.

Reads are zero-copy slices of the store's memory-mapped ``events.arrow``
(:meth:`~clinseq.timeline.events.EventIndex.patient_arrow`): O(log n) per label for a subject with n
events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset

from clinseq.data.event_sequences import (
    NO_TIME,
    CodeVocabulary,
    ValueNormalizer,
    collate_events,
    window_item,
)
from clinseq.errors import ConfigError
from clinseq.timeline.events_read import EventIndex

if TYPE_CHECKING:
    from clinseq.eval.tasks import Examples
    from clinseq.timeline import TimelineStore

__all__ = [
    "EventFeatures",
    "PredictionTimeEvents",
    "check_prediction_time_examples",
    "embed_at_prediction_times",
    "prediction_times_us",
]

_ONE_US = np.timedelta64(1, "us")


def prediction_times_us(labels: pl.DataFrame) -> np.ndarray:
    """``prediction_time`` of each label row as int64 µs since 1970-01-01."""
    if "prediction_time" not in labels.columns:
        raise ConfigError(f"labels need a prediction_time column, got {labels.columns}")
    times = labels["prediction_time"].cast(pl.Datetime("us")).cast(pl.Int64)
    if times.null_count():
        raise ConfigError(f"{times.null_count()} label row(s) have no prediction_time")
    return times.to_numpy()


class PredictionTimeEvents(Dataset):
    """One encoded event window per label row: the subject's history up to its ``prediction_time``.

    Args:
        index: the store's event index (``store.event_index``).
        labels: MEDS labels (``subject_id``, ``prediction_time``), e.g. from
            :func:`~clinseq.eval.meds_labels.read_labels`.
        vocab, normalizer: fitted on the pretraining patients (unknown codes → ``UNK``).
        max_len: events per window (the most recent ones are kept).
        input_window_s: seconds of history before ``prediction_time``; None = all of it.
        include_static: also give the static (null-time) events.

    ``dataset[i]`` is the item of :func:`~clinseq.data.event_sequences.window_item` for label row i;
    its ``window_end_us`` is the time of the last event given, never after that row's prediction time.
    """

    def __init__(
        self,
        index: EventIndex,
        labels: pl.DataFrame,
        vocab: CodeVocabulary,
        normalizer: ValueNormalizer,
        max_len: int = 256,
        input_window_s: float | None = None,
        include_static: bool = True,
    ) -> None:
        if max_len < 1:
            raise ConfigError(f"max_len must be >= 1 event, got {max_len}")
        if input_window_s is not None and not input_window_s > 0:
            raise ConfigError(
                f"input_window_s must be > 0 seconds or None (all history), got {input_window_s}"
            )
        self.index, self.max_len, self.include_static = index, int(max_len), include_static
        self.input_window_s = input_window_s
        self.subject_ids = labels["subject_id"].cast(pl.Int64).to_numpy()
        self.prediction_us = prediction_times_us(labels)
        # Per store code (its code_index): vocabulary index and value statistics, looked up once.
        store_codes = index.codes
        self._code_to_vocab = vocab.encode(store_codes)
        self._mean, self._std = normalizer.lookup(store_codes)
        self.normalizer = normalizer

    @classmethod
    def for_counting(
        cls, index: EventIndex, labels: pl.DataFrame, input_window_s: float | None = None
    ) -> PredictionTimeEvents:
        """The same windows for code counting only (:meth:`events`; no vocabulary, no encoding)."""
        empty_vocab = CodeVocabulary([], [])
        empty_stats = ValueNormalizer(
            pl.DataFrame(schema={"code": pl.String, "mean": pl.Float64, "std": pl.Float64})
        )
        return cls(index, labels, empty_vocab, empty_stats, max_len=1, input_window_s=input_window_s)

    def __len__(self) -> int:
        return len(self.subject_ids)

    def events(self, i: int) -> pa.Table:
        """The Arrow events label row ``i`` may use (static first, then time order), before truncation
        to the last ``max_len``."""
        end = np.datetime64(int(self.prediction_us[i]), "us") + _ONE_US  # half-open: time <= prediction
        start = None
        if self.input_window_s is not None:
            start = end - _ONE_US - np.timedelta64(int(round(self.input_window_s * 1e6)), "us")
        return self.index.patient_arrow(
            int(self.subject_ids[i]), start=start, end=end, include_static=self.include_static
        )

    def __getitem__(self, i: int) -> dict[str, np.ndarray | int]:
        if not 0 <= i < len(self):
            raise IndexError(f"label row {i} out of range for {len(self)} rows")
        events = self.events(i)
        if events.num_rows > self.max_len:
            events = events.slice(events.num_rows - self.max_len)
        code_index = events.column("code_index").to_numpy()
        times = pc.fill_null(events.column("time").cast(pa.int64()), NO_TIME).to_numpy()
        raw = events.column("numeric_value").to_numpy().astype(np.float64)  # null → NaN
        values, mask = self.normalizer.standardize(raw, self._mean[code_index], self._std[code_index])
        return window_item(
            self._code_to_vocab[code_index], times, values, mask, self.max_len, int(self.subject_ids[i])
        )


@torch.no_grad()
def embed_at_prediction_times(
    encoder: torch.nn.Module,
    events: PredictionTimeEvents,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """(n, D) float32 embeddings of the label rows, in label order, with the encoder frozen (eval mode).

    The encoder's train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        params = list(encoder.parameters())
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        loader = DataLoader(events, batch_size=batch_size, shuffle=False, collate_fn=collate_events)
        for batch in loader:
            inputs: Mapping[str, torch.Tensor] = {k: v.to(device) for k, v in batch.items()}
            out.append(encoder(inputs).float().cpu().numpy())
    finally:
        encoder.train(was_training)
    dim = getattr(encoder, "embed_dim", 0)
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def check_prediction_time_examples(examples: Examples, what: str) -> None:
    """Raise unless ``examples`` are keyed by (subject_id, prediction_time)."""
    if examples.key_kind != "prediction_time":
        raise ConfigError(
            f"{what} reads a subject's events up to a prediction time; task {examples.task!r} is keyed by "
            "recording (use a waveform encoder for it)"
        )


@dataclass
class EventFeatures:
    """Featurizer of :func:`clinseq.eval.evaluate` for an event encoder on (subject_id, prediction_time)
    examples: the embedding of each example's events up to its prediction time (module docstring).

    Attributes:
        encoder: an event encoder (``EventTransformer``); never modified.
        vocab, normalizer: the pretraining vocabulary and value statistics.
        max_len: events per input (the most recent).
        input_window_s: seconds of history before ``prediction_time`` (None: all of it).
        batch_size, device: as for :func:`embed_at_prediction_times`.
    """

    encoder: torch.nn.Module
    vocab: CodeVocabulary
    normalizer: ValueNormalizer
    max_len: int = 256
    input_window_s: float | None = None
    batch_size: int = 64
    device: str | torch.device | None = None

    def __call__(self, store: TimelineStore, examples: Examples) -> np.ndarray:
        check_prediction_time_examples(examples, "an event encoder")
        events = PredictionTimeEvents(
            store.event_index, examples.keys, self.vocab, self.normalizer, self.max_len, self.input_window_s
        )
        return embed_at_prediction_times(self.encoder, events, batch_size=self.batch_size, device=self.device)
