"""Featurizers: what turns a task's examples into one feature vector each, for the probe.

A featurizer is any callable ``featurize(store, examples) -> (n, D) float array`` (row i for example i
of :class:`~clinseq.eval.tasks.Examples`). The protocol compares featurizers side by side: a pretrained
encoder, the same encoder at random init, a non-neural baseline — each one row of the table.

- :class:`EncoderFeatures`: a waveform encoder (ECG, EEG) on recording-keyed examples: the mean of its
  window embeddings over each recording (:func:`~clinseq.eval.embeddings.extract_embeddings`).
- :class:`FeatureTable`: precomputed features (e.g. the Parquet of ``clinseq embed``), joined on the
  example keys.

Examples keyed by (subject_id, prediction_time) need a featurizer that reads only the subject's events
at or before ``prediction_time``; an EHR module supplies it (the contract is the same callable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import polars as pl

from clinseq.errors import ConfigError
from clinseq.eval.embeddings import Preprocess, extract_embeddings

if TYPE_CHECKING:
    import torch

    from clinseq.eval.tasks import Examples
    from clinseq.models import Encoder
    from clinseq.timeline import TimelineStore

__all__ = [
    "EMBEDDING_COLUMN",
    "EncoderFeatures",
    "FeatureTable",
    "Featurizer",
    "check_features",
    "embedding_table",
]

#: The column of a features table holding each example's vector (list of float32).
EMBEDDING_COLUMN = "embedding"


@runtime_checkable
class Featurizer(Protocol):
    """``featurize(store, examples) -> (n, D)`` features, row i for example i."""

    def __call__(self, store: TimelineStore, examples: Examples) -> np.ndarray: ...


@dataclass
class EncoderFeatures:
    """A waveform encoder as a featurizer: one embedding per recording (mean over windows).

    Attributes:
        encoder: a clinseq encoder (``embed(x) -> (B, D)``); never modified (fine-tuning trains a copy).
        window_s: window length in seconds (None: whole recordings); use the pretraining window.
        channels, preprocess, batch_size, device, num_workers, progress: as for
            :func:`~clinseq.eval.embeddings.extract_embeddings`.
    """

    encoder: Encoder
    window_s: float | None = None
    channels: Sequence[str] | Sequence[int] | None = None
    preprocess: Preprocess | None = None
    batch_size: int = 64
    device: str | torch.device | None = None
    num_workers: int = 0
    progress: bool = True

    def __call__(self, store: TimelineStore, examples: Examples) -> np.ndarray:
        if examples.key_kind != "recording":
            raise ConfigError(
                f"task {examples.task!r} is keyed by (subject_id, prediction_time): a waveform encoder "
                "embeds recordings; use an EHR featurizer that reads the events up to prediction_time"
            )
        return extract_embeddings(
            self.encoder,
            store,
            examples.recording_ids,
            window_s=self.window_s,
            channels=self.channels,
            preprocess=self.preprocess,
            batch_size=self.batch_size,
            device=self.device,
            num_workers=self.num_workers,
            progress=self.progress,
        )


class FeatureTable:
    """Precomputed features: a DataFrame (or Parquet file) with the example keys and ``embedding``.

    The keys are ``recording_id``, or ``subject_id`` + ``prediction_time``, as the task's examples;
    ``embedding`` is a list (or array) column of equal-length float vectors — the layout that
    ``clinseq embed`` writes. Every example of the task must have a row.
    """

    def __init__(self, source: pl.DataFrame | str) -> None:
        self.frame = source if isinstance(source, pl.DataFrame) else pl.read_parquet(source)
        if EMBEDDING_COLUMN not in self.frame.columns:
            raise ConfigError(
                f"features table needs an {EMBEDDING_COLUMN!r} column, got {self.frame.columns}"
            )

    def __call__(self, store: TimelineStore, examples: Examples) -> np.ndarray:
        keys = [c for c in ("recording_id", "subject_id", "prediction_time") if c in examples.keys.columns]
        missing_cols = [k for k in keys if k not in self.frame.columns]
        if missing_cols:
            raise ConfigError(
                f"features table lacks the key column(s) {missing_cols} of task {examples.task!r}"
            )
        frame = self.frame.select(*keys, EMBEDDING_COLUMN)
        for k in keys:
            frame = frame.with_columns(pl.col(k).cast(examples.keys.schema[k]))
        joined = examples.keys.select(keys).join(frame, on=keys, how="left", maintain_order="left")
        if joined.height != len(examples):
            raise ConfigError("features table has several rows for one example; give each key one row")
        absent = joined.filter(pl.col(EMBEDDING_COLUMN).is_null())
        if absent.height:
            raise ConfigError(
                f"features table lacks {absent.height} example(s) of task {examples.task!r}, e.g. "
                f"{absent.head(5).select(keys).rows()}; compute features for every labelled example"
            )
        return np.asarray(joined[EMBEDDING_COLUMN].to_list(), dtype=np.float32)


def embedding_table(z: np.ndarray, examples: Examples) -> pl.DataFrame:
    """The examples' keys (``recording_id``, ``patient_id``; or ``subject_id``, ``prediction_time``) with
    their features as an ``embedding`` list<float32> column — the Parquet layout of ``clinseq embed``,
    which :class:`FeatureTable` reads back."""
    z = check_features("embedding", z, len(examples)).astype(np.float32)
    column = pl.Series(EMBEDDING_COLUMN, z).cast(pl.List(pl.Float32))  # (n, D) numpy → Array → List
    return examples.keys.with_columns(column)


def check_features(name: str, z: np.ndarray, n: int) -> np.ndarray:
    """``z`` as a finite float array of shape (n, D), or a :class:`ConfigError` naming ``name``."""
    z = np.asarray(z)
    if z.ndim != 2 or z.shape[0] != n:
        raise ConfigError(
            f"featurizer {name!r} returned shape {z.shape}; expected ({n}, D), one row per example"
        )
    if not np.isfinite(z).all():
        raise ConfigError(f"featurizer {name!r} returned NaN or inf features")
    return z
