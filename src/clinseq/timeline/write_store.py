"""People's own recordings → a timeline store: :func:`write_store` over arrays in memory.

The shortest path for data that is not in a published layout: hand :func:`write_store` an iterable of
:class:`ArrayRecording` (a ``(channels, samples)`` array, its sampling rate in Hz, channel names, units,
patient id, optional start time and labels) and it writes them with the same atomic, resumable
:class:`~clinseq.timeline.writer.StoreWriter` the converters use::

    from clinseq.timeline import ArrayRecording, write_store

    write_store(
        (ArrayRecording(x, 500.0, ["I", "II", "V1"], "mV", patient_id=p, labels={"af": y})
         for x, p, y in my_ecgs),
        "stores/mine",
    )

A run that stops leaves ``<out>.tmp-*``; calling again with the same iterable (and the same
``identity``, ``dataset``, ``source``) resumes after the last committed part (recordings are keyed by
``recording_id``, by default their 1-based position).
The labels become ``recordings`` columns; ``clinseq eval --labels`` takes a table of
``recording_id`` + label columns (see the README, "Your own data").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from clinseq.timeline.records import Recording
from clinseq.timeline.writer import DEFAULT_PART_MAX_BYTES, StoreWriter

__all__ = ["ArrayRecording", "write_store"]


@dataclass
class ArrayRecording:
    """One recording held as an array.

    Attributes:
        samples: ``(n_channels, n_samples)`` (a 1-D array is one channel). Floating-point values are
            physical values in ``units`` and are stored as float32; int16/int32 values are ADC counts
            with ``physical = (adc - baseline) / gain`` (``gain`` in ADC units per physical unit,
            default 1 and 0).
        sampling_rate_hz: samples per second, per channel.
        channel_names: one name per channel (e.g. ``["I", "II", ...]``, ``["Fp1", ...]``).
        units: the physical unit, one for all channels (``"mV"``) or one per channel.
        patient_id: the patient (int64); recordings of one patient are positives for patient-aware
            objectives and stay on one side of a split.
        start_time: when the recording started (None: unknown).
        recording_id: unique in the store; None: the 1-based position in the iterable.
        labels: per-recording values kept as ``recordings`` columns (same keys on every recording).
        modality: ``"ecg"``, ``"eeg"``...
        source: where it came from (a path; default ``array:<recording_id>``).
    """

    samples: np.ndarray
    sampling_rate_hz: float
    channel_names: list[str]
    units: str | list[str]
    patient_id: int
    start_time: datetime | None = None
    recording_id: int | None = None
    labels: Mapping[str, Any] = field(default_factory=dict)
    modality: str = "ecg"
    gain: list[float] | None = None
    baseline: list[float] | None = None
    source: str | None = None

    def to_recording(self, default_id: int) -> Recording:
        """The writer's :class:`~clinseq.timeline.records.Recording` (``default_id`` when no id)."""
        samples = np.asarray(self.samples)
        if samples.ndim == 1:
            samples = samples[None, :]
        if samples.ndim != 2:
            raise ValueError(f"samples must be (channels, samples), got shape {samples.shape}")
        n = samples.shape[0]
        if np.issubdtype(samples.dtype, np.floating):
            samples = np.ascontiguousarray(samples, dtype=np.float32)
            gain, baseline = [1.0] * n, [0.0] * n
            if self.gain is not None or self.baseline is not None:
                raise ValueError("gain/baseline apply to integer ADC samples; float samples are physical")
        elif samples.dtype in (np.int16, np.int32):
            samples = np.ascontiguousarray(samples)
            gain = [float(g) for g in (self.gain or [1.0] * n)]
            baseline = [float(b) for b in (self.baseline or [0.0] * n)]
        else:
            raise ValueError(f"samples dtype must be floating, int16 or int32, got {samples.dtype}")
        if not (np.isfinite(self.sampling_rate_hz) and self.sampling_rate_hz > 0):
            raise ValueError(f"sampling_rate_hz must be a positive number of Hz, got {self.sampling_rate_hz}")
        units = [self.units] * n if isinstance(self.units, str) else list(self.units)
        recording_id = default_id if self.recording_id is None else int(self.recording_id)
        return Recording(
            recording_id=recording_id,
            patient_id=int(self.patient_id),
            start_time=self.start_time,
            modality=self.modality,
            sampling_rate_hz=float(self.sampling_rate_hz),
            samples=samples,
            channel_names=[str(c) for c in self.channel_names],
            units=units,
            gain=gain,
            baseline=baseline,
            source=self.source or f"array:{recording_id}",
            attributes=dict(self.labels),
        )


def write_store(
    recordings: Iterable[ArrayRecording | Recording],
    out: str | os.PathLike[str],
    *,
    dataset: str = "own",
    source: str | os.PathLike[str] | None = None,
    patients: pl.DataFrame | None = None,
    part_max_bytes: int = DEFAULT_PART_MAX_BYTES,
    manifest_extra: dict[str, Any] | None = None,
    identity: Any = None,
) -> Path:
    """Write ``recordings`` into a new store at ``out`` and return its path.

    Args:
        recordings: :class:`ArrayRecording` (or the writer's own
            :class:`~clinseq.timeline.records.Recording`), in a deterministic order.
        out: the store folder; it must not exist. An unfinished earlier call for the same ``out``
            is resumed: recordings already committed are skipped (by recording id).
        dataset: the manifest's ``dataset`` (samplers and evaluation read it).
        source: what the recordings came from (recorded in the manifest).
        patients: the ``patients`` table (``patient_id``, ``split``: ``train``/``val``/``test`` or
            null, other static columns); default one row per patient without a split.
        part_max_bytes: a signal part is committed (and resume can restart after it) at this size.
        manifest_extra: further manifest entries.
        identity: anything JSON-serialisable that names the inputs (e.g. their paths and sizes). An
            unfinished earlier call is resumed only when ``dataset``, ``source``, ``part_max_bytes`` and
            ``identity`` are the same (its recordings are assumed to come in the same order).
    """
    writer = StoreWriter(
        out,
        dataset=dataset,
        source=source,
        part_max_bytes=part_max_bytes,
        identity={
            "write_store": {"dataset": dataset, "source": None if source is None else str(source)},
            "part_max_bytes": part_max_bytes,
            "inputs": identity,
        },
    )
    try:
        done = writer.done_keys
        seen: set[int] = set()
        for position, item in enumerate(recordings, start=1):
            recording = item if isinstance(item, Recording) else item.to_recording(position)
            if recording.recording_id in seen:
                raise ValueError(f"recording_id {recording.recording_id} is given twice")
            seen.add(recording.recording_id)
            key = str(recording.recording_id)
            if key not in done:
                writer.add(recording, key=key)
        return writer.finish(patients, manifest_extra=manifest_extra)
    finally:
        writer.release()
