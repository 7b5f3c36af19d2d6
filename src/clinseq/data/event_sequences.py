"""Model inputs from event timelines: code vocabulary, per-code value normalisation, fixed-length windows.

Batch contract (shared with the EHR encoder, ``EventTransformer``), for B windows of L events:

=====================  ============  =============================================================
key                    shape/dtype   meaning
=====================  ============  =============================================================
``codes``              (B, L) int64  vocabulary index; 0 = padding, 1 = unknown code
``time_delta_s``       (B, L) f32    seconds since the previous event of the window; 0 for the first
                                     event and for static (null-time) events
``values``             (B, L) f32    normalised numeric value z = (v − μ_code) / σ_code, clipped to
                                     ±``clip_sigma``; 0 when absent
``value_mask``         (B, L) bool   True where ``values`` holds a value
``padding_mask``       (B, L) bool   True = a real event, False = padding
``patient_id``         (B,) int64    the subject
``window_start_us``    (B,) int64    time of the first timed event (µs since 1970-01-01), or
                                     ``NO_TIME`` (int64 min) when the window holds only static events
``window_end_us``      (B,) int64    time of the last timed event, same convention
=====================  ============  =============================================================

Statistics (vocabulary counts, μ and σ) are fitted on the training split's patients only, so nothing
about validation or test patients leaks into the inputs.

One item layout for every producer: :func:`window_item` pads encoded events into an item;
:class:`EventSequenceDataset` feeds it slices of its pre-encoded timelines, and :func:`encode_events`
encodes any events table (e.g. the EHR context before an ECG) and feeds it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset

from clinseq.timeline.events_read import EventIndex

PAD, UNK = 0, 1
NO_TIME = np.iinfo(np.int64).min


@dataclass
class CodeVocabulary:
    """Code → index; 0 is padding, 1 the unknown token, known codes from 2 in decreasing count order."""

    codes: list[str]
    counts: list[int]
    min_count: int = 1

    def __post_init__(self) -> None:
        self._index = {c: i + 2 for i, c in enumerate(self.codes)}
        self._table = pl.DataFrame(
            {"code": self.codes, "_index": np.arange(2, len(self.codes) + 2, dtype=np.int64)},
            schema={"code": pl.String, "_index": pl.Int64},
        )

    def __len__(self) -> int:
        """Size including the padding and unknown entries."""
        return len(self.codes) + 2

    @classmethod
    def from_counts(cls, counts: pl.DataFrame, min_count: int = 1) -> CodeVocabulary:
        """From a table with ``code`` and ``count`` (e.g. ``events/metadata/codes.parquet``)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        for column in ("code", "count"):
            if column not in counts.columns:
                raise ValueError(f"counts needs columns 'code' and 'count', got {counts.columns}")
        kept = counts.filter(pl.col("count") >= min_count).sort(["count", "code"], descending=[True, False])
        return cls(kept["code"].to_list(), kept["count"].to_list(), min_count)

    @classmethod
    def fit(cls, index: EventIndex, patient_ids: Iterable[int], min_count: int = 1) -> CodeVocabulary:
        """Count codes over the given (training) patients' events and keep those seen ``min_count`` times."""
        frames = [index.patient_events(int(p)).select("code") for p in patient_ids]
        events = pl.concat(frames) if frames else pl.DataFrame(schema={"code": pl.String})
        return cls.from_counts(events.group_by("code").len("count"), min_count)

    def encode(self, codes: pl.Series | Sequence[str]) -> np.ndarray:
        """Indices (int64) of ``codes``; codes not in the vocabulary map to ``UNK`` (1)."""
        series = codes if isinstance(codes, pl.Series) else pl.Series("code", list(codes), pl.String)
        mapped = (
            series.rename("code").to_frame().join(self._table, on="code", how="left", maintain_order="left")
        )
        return mapped["_index"].fill_null(UNK).to_numpy().astype(np.int64)

    def decode(self, indices: Sequence[int]) -> list[str]:
        """Codes of indices (``<pad>``/``<unk>`` for 0/1)."""
        names = ["<pad>", "<unk>", *self.codes]
        return [names[int(i)] for i in indices]


@dataclass
class ValueNormalizer:
    """Per-code z-scoring of ``numeric_value`` with μ, σ fitted on training patients only.

    z = (v − μ_code) / σ_code, clipped to ±``clip_sigma``; σ < ``min_std`` (a constant value) → σ = 1.
    Codes without a numeric value in the training data get no value (``value_mask`` False).
    """

    stats: pl.DataFrame  # code, mean, std
    clip_sigma: float = 10.0
    min_std: float = 1e-6

    @classmethod
    def fit(
        cls,
        index: EventIndex,
        patient_ids: Iterable[int],
        clip_sigma: float = 10.0,
        min_std: float = 1e-6,
    ) -> ValueNormalizer:
        frames = [index.patient_events(int(p)).select("code", "numeric_value") for p in patient_ids]
        events = (
            pl.concat(frames)
            if frames
            else pl.DataFrame(schema={"code": pl.String, "numeric_value": pl.Float32})
        )
        stats = (
            events.filter(pl.col("numeric_value").is_not_null() & pl.col("numeric_value").is_finite())
            .group_by("code")
            .agg(
                pl.col("numeric_value").cast(pl.Float64).mean().alias("mean"),
                pl.col("numeric_value").cast(pl.Float64).std(ddof=0).alias("std"),
            )
            .with_columns(pl.when(pl.col("std") < min_std).then(1.0).otherwise(pl.col("std")).alias("std"))
            .sort("code")
        )
        return cls(stats, clip_sigma, min_std)

    def transform(self, codes: pl.Series, values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """``(z float32, mask bool)`` for events with these codes and raw numeric values."""
        mean, std = self.lookup(codes)
        return self.standardize(values.cast(pl.Float64).fill_null(np.nan).to_numpy(), mean, std)

    def lookup(self, codes: pl.Series | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` float64 per code; NaN for codes without training values."""
        series = codes if isinstance(codes, pl.Series) else pl.Series("code", list(codes), pl.String)
        joined = (
            series.rename("code").to_frame().join(self.stats, on="code", how="left", maintain_order="left")
        )
        return joined["mean"].fill_null(np.nan).to_numpy(), joined["std"].fill_null(np.nan).to_numpy()

    def standardize(
        self, values: np.ndarray, mean: np.ndarray, std: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(z float32, mask bool)`` from raw values (NaN = absent) and their codes' statistics."""
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.clip((values - mean) / std, -self.clip_sigma, self.clip_sigma)
        mask = np.isfinite(z)
        return np.where(mask, z, 0.0).astype(np.float32), mask


class EventSequenceDataset(Dataset):
    """Fixed-length windows of patients' event timelines, encoded for an event encoder.

    Each patient's events (static first, then in time order) are cut into windows of ``max_len``
    consecutive events with stride ``stride`` (default ``max_len``: non-overlapping; the last window is
    shorter and padded). With ``random_crop=True`` each item instead draws one window start uniformly
    from the patient's events, from ``numpy.random.default_rng((seed, epoch, item))``: identical for a
    given seed and epoch, in any worker, in any order (call :meth:`set_epoch` each epoch).

    Encoded events are held in memory as five flat arrays, about 21 bytes per event.
    """

    def __init__(
        self,
        index: EventIndex,
        patient_ids: Sequence[int],
        vocab: CodeVocabulary,
        normalizer: ValueNormalizer,
        max_len: int = 256,
        stride: int | None = None,
        random_crop: bool = False,
        seed: int = 0,
        include_static: bool = True,
    ) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1 event, got {max_len}")
        stride = max_len if stride is None else stride
        if stride < 1:
            raise ValueError(f"stride must be >= 1 event, got {stride}")
        self.max_len, self.stride, self.random_crop = max_len, stride, random_crop
        self.seed, self.epoch = int(seed), 0
        # Per store code (its code_index): vocabulary index and value statistics, looked up once; then
        # each patient is numpy gathers over zero-copy Arrow slices of the index.
        store_codes = index.codes
        code_to_vocab = vocab.encode(store_codes)
        mean, std = normalizer.lookup(store_codes)
        codes, times, values, masks, offsets, pids = [], [], [], [], [0], []
        for pid in patient_ids:
            events = index.patient_arrow(int(pid), include_static=include_static)
            if events.num_rows == 0:
                continue
            code_index = events.column("code_index").to_numpy()
            codes.append(code_to_vocab[code_index])
            times.append(pc.fill_null(events.column("time").cast(pa.int64()), NO_TIME).to_numpy())
            raw = events.column("numeric_value").to_numpy().astype(np.float64)  # null → NaN
            z, m = normalizer.standardize(raw, mean[code_index], std[code_index])
            values.append(z)
            masks.append(m)
            offsets.append(offsets[-1] + events.num_rows)
            pids.append(int(pid))
        empty_i = np.zeros(0, np.int64)
        self._codes = np.concatenate(codes) if codes else empty_i
        self._times = np.concatenate(times) if times else empty_i
        self._values = np.concatenate(values) if values else np.zeros(0, np.float32)
        self._masks = np.concatenate(masks) if masks else np.zeros(0, bool)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self.patient_ids = np.asarray(pids, dtype=np.int64)
        # Window table: (patient position, first event); one row per window (or per patient when cropping).
        lengths = np.diff(self._offsets)
        if random_crop:
            self._windows = np.stack([np.arange(len(pids)), np.zeros(len(pids), np.int64)], axis=1)
        else:
            rows = [
                (p, s)
                for p, n in enumerate(lengths)
                for s in range(0, max(int(n) - max_len, 0) + stride, stride)
                if s < n
            ]
            self._windows = np.asarray(rows, dtype=np.int64).reshape(-1, 2)

    def set_epoch(self, epoch: int) -> None:
        """Random crops depend on (seed, epoch, item)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._windows)

    def __getitem__(self, item: int) -> dict[str, np.ndarray | int]:
        if not 0 <= item < len(self):
            raise IndexError(f"item {item} out of range for {len(self)} windows")
        p, start = (int(x) for x in self._windows[item])
        lo, hi = int(self._offsets[p]), int(self._offsets[p + 1])
        n = hi - lo
        if self.random_crop and n > self.max_len:
            rng = np.random.default_rng((self.seed, self.epoch, item))
            start = int(rng.integers(0, n - self.max_len + 1))
        a, b = lo + start, min(lo + start + self.max_len, hi)
        return window_item(
            self._codes[a:b],
            self._times[a:b],
            self._values[a:b],
            self._masks[a:b],
            self.max_len,
            patient_id=int(self.patient_ids[p]),
        )


def window_item(
    codes: np.ndarray,
    times_us: np.ndarray,
    values: np.ndarray,
    value_mask: np.ndarray,
    max_len: int,
    patient_id: int = 0,
) -> dict[str, np.ndarray | int]:
    """One item of the batch contract (module docstring) from k ≤ ``max_len`` encoded events in order.

    Args:
        codes: (k,) int64 vocabulary indices.
        times_us: (k,) int64 event times in µs since 1970-01-01, ``NO_TIME`` for static events.
        values: (k,) float32 normalised values (0 where absent); value_mask: (k,) bool.
        max_len: the padded length L.
        patient_id: the subject.

    Returns:
        ``codes``, ``time_delta_s``, ``values``, ``value_mask``, ``padding_mask`` padded to L, and
        ``patient_id``, ``window_start_us``, ``window_end_us``.
    """
    k, L = len(codes), int(max_len)
    if k > L:
        raise ValueError(f"a window holds at most max_len={L} events, got {k}: pass the last {L} of them")
    out_codes = np.zeros(L, np.int64)
    out_codes[:k] = codes
    timed = times_us != NO_TIME
    delta = np.zeros(L, np.float32)
    if k > 1:
        # Seconds since the previous event; 0 where either side is a static (null-time) event.
        d = (times_us[1:] - times_us[:-1]) / 1e6
        d[~(timed[1:] & timed[:-1])] = 0.0
        delta[1:k] = d
    out_values = np.zeros(L, np.float32)
    out_values[:k] = values
    out_mask = np.zeros(L, bool)
    out_mask[:k] = value_mask
    padding = np.zeros(L, bool)
    padding[:k] = True
    timed_times = times_us[timed]
    return {
        "codes": out_codes,
        "time_delta_s": delta,
        "values": out_values,
        "value_mask": out_mask,
        "padding_mask": padding,
        "patient_id": int(patient_id),
        "window_start_us": int(timed_times[0]) if len(timed_times) else int(NO_TIME),
        "window_end_us": int(timed_times[-1]) if len(timed_times) else int(NO_TIME),
    }


def encode_events(
    events: pl.DataFrame,
    vocab: CodeVocabulary,
    normalizer: ValueNormalizer,
    max_len: int,
    patient_id: int = 0,
) -> dict[str, np.ndarray | int]:
    """The last ``max_len`` of a patient's ``events`` as one item, encoded as ``EventSequenceDataset`` does.

    Args:
        events: MEDS columns ``code``, ``time`` (datetime or int64 µs; null = static) and
            ``numeric_value``, in time order (e.g. ``store.patient(pid).events()`` or
            ``store.context_events(...)``).
        vocab, normalizer: fitted on the training patients.
        max_len: events per window; earlier events are left out.
        patient_id: the subject recorded in the item.

    Returns:
        the item of :func:`window_item`: codes through ``vocab`` (unknown → ``UNK``), values z-scored per
        code by ``normalizer``, seconds between consecutive timed events, padding to ``max_len``.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1 event, got {max_len}")
    events = events.tail(max_len)
    times = events["time"].cast(pl.Int64).fill_null(NO_TIME).to_numpy()
    values, value_mask = normalizer.transform(events["code"], events["numeric_value"])
    return window_item(vocab.encode(events["code"]), times, values, value_mask, max_len, patient_id)


def collate_events(items: Sequence[dict[str, np.ndarray | int]]) -> dict[str, torch.Tensor]:
    """Stack dataset items into the batch dict of the module docstring (all items share ``max_len``)."""
    if not items:
        raise ValueError("collate_events got an empty list of items: a batch needs at least one window")
    out: dict[str, torch.Tensor] = {}
    for key in ("codes", "time_delta_s", "values", "value_mask", "padding_mask"):
        out[key] = torch.from_numpy(np.stack([it[key] for it in items]))
    for key in ("patient_id", "window_start_us", "window_end_us"):
        out[key] = torch.tensor([it[key] for it in items], dtype=torch.int64)
    return out
