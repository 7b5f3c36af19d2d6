"""Read a timeline store: patients, recordings and zero-copy signal windows.

Signal parts are memory-mapped lazily, once per process: a store opened before a ``DataLoader`` forks
its workers reopens its maps in each worker (the maps are never shared across a fork), and a pickled
store (spawned workers) carries only its path and tables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa

from clinseq.errors import StoreError
from clinseq.timeline.calibration import exact_in_float32, to_physical
from clinseq.timeline.events import EVENTS_INDEX
from clinseq.timeline.events_read import EventIndex
from clinseq.timeline.writer import (
    FILES_KEY,
    FORMAT_VERSION,
    RECORDING_EVENT_COLUMNS,
    RECORDING_EVENTS,
    SIGNALS_DIR,
)

Units = Literal["physical", "adc"]


class _SignalPart:
    """One memory-mapped ``signals/part-NNNNN.arrow``: per row, the flat sample array and its offset."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._map = pa.memory_map(str(path))
            table = pa.ipc.open_file(self._map).read_all()
        except (OSError, pa.ArrowInvalid) as exc:
            raise StoreError(f"{path}: cannot read signal part ({exc})") from exc
        self._values: list[np.ndarray] = []
        row_batch, row_start = [], []
        for batch_index, chunk in enumerate(table.column("samples").chunks):
            # zero_copy_only: the values are a view into the memory map, never a copy.
            self._values.append(chunk.values.to_numpy(zero_copy_only=True))
            offsets = chunk.offsets.to_numpy()
            row_start.append(offsets[:-1])
            row_batch.append(np.full(len(chunk), batch_index, dtype=np.int32))
        self.row_batch = np.concatenate(row_batch) if row_batch else np.zeros(0, np.int32)
        self.row_start = np.concatenate(row_start) if row_start else np.zeros(0, np.int64)

    def flat(self, row: int, n_values: int) -> np.ndarray:
        start = int(self.row_start[row])
        return self._values[self.row_batch[row]][start : start + n_values]


def _check_channels(channels: Sequence[int] | slice, n_channels: int, recording_id: int) -> None:
    """Channel indices must be integers in ``[-n_channels, n_channels)``."""
    if isinstance(channels, slice):
        return
    if isinstance(channels, np.ndarray) and channels.dtype.kind in "iu":  # the common case, vectorised
        if channels.size == 0 or (channels.min() >= -n_channels and channels.max() < n_channels):
            return
    bad = [
        c.item() if isinstance(c, np.generic) else c
        for c in channels
        if isinstance(c, (bool, np.bool_))
        or not isinstance(c, (int, np.integer))
        or not -n_channels <= int(c) < n_channels
    ]
    if bad:
        raise StoreError(
            f"channels {bad} are not channel indices of recording {recording_id}, which has {n_channels} "
            f"channels: choose integers in 0..{n_channels - 1}"
        )


@dataclass
class PatientTimeline:
    """One patient's slice of a store: their recordings and (when the store holds events) events."""

    store: TimelineStore
    patient_id: int
    recordings: pl.DataFrame

    def events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        codes: Sequence[str] | None = None,
        *,
        include_static: bool = True,
    ) -> pl.DataFrame:
        """This patient's events in time order: times in ``[start, end)``, static (null-time) events
        first unless ``include_static=False`` (see :meth:`EventIndex.patient_events`). Raises
        :class:`StoreError` when the store holds no events."""
        return self.store.event_index.patient_events(
            self.patient_id, start=start, end=end, codes=codes, include_static=include_static
        )


class TimelineStore:
    """A dataset converted to clinseq's Arrow layout (design §2). Open with :meth:`open`.

    Attributes:
        path: the store folder.
        manifest: the parsed ``manifest.json`` (format version, dataset, source, counts, skipped items).
        patients: ``patients.parquet`` (``patient_id`` int64, ``split``, static attributes).
        recordings: ``recordings.parquet`` (``recording_id``, ``patient_id``, ``start_time``,
            ``modality``, ``sampling_rate_hz``, ``n_samples``, ``n_channels``, ``channel_names``,
            ``units``, ``gain``, ``baseline``, ``sample_dtype``, ``part``, ``row``, ``source`` and the
            dataset's own columns such as labels).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.exists():
            hint = ""
            if list(self.path.parent.glob(f"{self.path.name}.tmp-*")):
                hint = " (an unfinished conversion is beside it: run the same convert command to resume)"
            raise StoreError(f"{self.path}: not a clinseq store, no manifest.json{hint}")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StoreError(
                f"{manifest_path}: unreadable manifest ({type(exc).__name__}: {exc}); the store is damaged: "
                "convert the source again"
            ) from exc
        if not isinstance(self.manifest, dict):
            raise StoreError(f"{manifest_path}: not a clinseq manifest (a JSON object was expected)")
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"{manifest_path}: format_version {version!r}, this clinseq reads {FORMAT_VERSION}; "
                "convert the source again with this version"
            )
        self._check_sizes()
        self.patients: pl.DataFrame = self._table("patients.parquet")
        self.recordings: pl.DataFrame = self._table("recordings.parquet")
        self._build_lookup()
        self._parts: dict[int, _SignalPart] = {}
        self._parts_pid = os.getpid()

    def _check_sizes(self) -> None:
        """The cheap check of every open: each file the manifest lists exists with its recorded size
        (``clinseq verify`` checks the bytes)."""
        files = self.manifest.get(FILES_KEY) or {}
        for rel, info in files.items():
            path = self.path / rel
            try:
                size = path.stat().st_size
            except OSError:
                raise StoreError(
                    f"{path}: missing (the manifest lists it); the store is damaged: convert the source again"
                ) from None
            if size != info.get("bytes"):
                raise StoreError(
                    f"{path}: {size} bytes, the manifest recorded {info.get('bytes')}; the store is damaged "
                    "(truncated or changed after it was written): convert the source again"
                )

    def _table(self, name: str) -> pl.DataFrame:
        path = self.path / name
        try:
            return pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            what = "missing" if not path.exists() else f"unreadable ({type(exc).__name__}: {exc})"
            raise StoreError(f"{path}: {what}; the store is damaged: convert the source again") from exc

    def verify(self) -> list[str]:
        """Check every file the manifest lists: its size, and its SHA-256 where one was recorded (signal
        parts and tables). Returns the problems found (empty: the store is intact). Reads every byte."""
        import hashlib

        problems = []
        files = self.manifest.get(FILES_KEY)
        if not files:
            return [f"{self.path}: the manifest records no checksums (written by an older clinseq)"]
        for rel, info in files.items():
            path = self.path / rel
            if not path.is_file():
                problems.append(f"{path}: missing")
                continue
            size = path.stat().st_size
            if size != info.get("bytes"):
                problems.append(f"{path}: {size} bytes, the manifest recorded {info.get('bytes')}")
                continue
            if "sha256" in info:
                digest = hashlib.sha256()
                with path.open("rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                if digest.hexdigest() != info["sha256"]:
                    problems.append(
                        f"{path}: checksum mismatch (sha256 {digest.hexdigest()[:16]}…, "
                        f"recorded {info['sha256'][:16]}…): its bytes changed after writing"
                    )
        listed = set(files) | {"manifest.json"}
        for path in sorted(p for p in self.path.rglob("*") if p.is_file()):
            rel = path.relative_to(self.path).as_posix()
            if rel not in listed:
                problems.append(f"{path}: not listed in the manifest (added after the store was written)")
        return problems

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> TimelineStore:
        """Open the store at ``path`` (cheap: tables are read, signal parts are mapped on first use)."""
        return cls(path)

    def _build_lookup(self) -> None:
        rec = self.recordings
        ids = rec["recording_id"].to_numpy()
        self._row_of: dict[int, int] = {int(r): i for i, r in enumerate(ids)}
        if len(self._row_of) != len(ids):
            raise StoreError(f"{self.path}: recording_id values are not unique")
        self._part = rec["part"].to_numpy()
        self._row = rec["row"].to_numpy()
        self._n_samples = rec["n_samples"].to_numpy()
        self._n_channels = rec["n_channels"].to_numpy()
        # Per-channel calibration, flattened: recording i owns [ch_offset[i], ch_offset[i + 1]).
        self._ch_offset = np.concatenate([[0], np.cumsum(self._n_channels)]).astype(np.int64)
        # float64: the precision rule of read_window (calibration in float64, output float32).
        gain = rec["gain"].explode().to_numpy().astype(np.float64) if rec.height else np.zeros(0)
        baseline = rec["baseline"].explode().to_numpy().astype(np.float64) if rec.height else np.zeros(0)
        self._baseline = baseline
        self._gain = gain
        # Per recording: float32 calibration gives the float64 rule's bits (any channel subset of it too).
        dtypes = rec["sample_dtype"].to_list() if "sample_dtype" in rec.columns else [""] * rec.height
        self._exact32 = np.array(
            [
                exact_in_float32(gain[lo:hi], baseline[lo:hi], str(dtype))
                for lo, hi, dtype in zip(self._ch_offset[:-1], self._ch_offset[1:], dtypes, strict=True)
            ],
            dtype=bool,
        )
        # Recordings whose data hold the "missing sample" sentinel: physical reads mask them to NaN.
        self._invalid: dict[int, np.ndarray] = {}
        if "adc_invalid" in rec.columns:
            for i, sentinels in enumerate(rec["adc_invalid"].to_list()):
                if sentinels and any(v is not None for v in sentinels):
                    self._invalid[i] = np.array(
                        [np.nan if v is None else v for v in sentinels], dtype=np.float64
                    )

    # -- pickling / fork safety ---------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_parts"] = {}
        state.pop("event_index", None)
        return state

    def _signal_part(self, part: int) -> _SignalPart:
        if os.getpid() != self._parts_pid:  # forked: never reuse the parent's maps
            self._parts, self._parts_pid = {}, os.getpid()
        cached = self._parts.get(part)
        if cached is None:
            cached = self._parts[part] = _SignalPart(self.path / SIGNALS_DIR / f"part-{part:05d}.arrow")
        return cached

    # -- signals ------------------------------------------------------------------------------------
    def _index(self, recording_id: int) -> int:
        if isinstance(recording_id, (bool, np.bool_)) or not isinstance(recording_id, (int, np.integer)):
            raise TypeError(
                f"recording_id must be an integer, got {recording_id!r} ({type(recording_id).__name__})"
            )
        try:
            return self._row_of[int(recording_id)]
        except KeyError:
            raise StoreError(f"{self.path}: no recording with recording_id={recording_id}") from None

    def read_window(
        self,
        recording_id: int,
        start: int,
        length: int,
        channels: Sequence[int] | slice | None = None,
        units: Units = "physical",
    ) -> np.ndarray:
        """Samples ``[start, start + length)`` of one recording, shape ``(channels, length)``.

        Args:
            recording_id: the recording.
            start, length: in samples at the recording's ``sampling_rate_hz``.
            channels: channel indices (or a slice) to keep, in that order; all when None.
            units: ``"physical"`` → float32 in the recording's ``units`` (ECG mV, EEG µV), computed
                as ``(adc - baseline) / gain`` in float64 and rounded once to float32 (so a value is
                within half a float32 ulp of wfdb's / mne's float64 one, whatever the ADC width);
                stored sentinels (``adc_invalid``) and gaps read as NaN; ``"adc"`` → the stored values as
                a read-only view of the memory map (no copy, unless ``channels`` is a list, which numpy
                must gather).
        """
        i = self._index(recording_id)
        n_samples = int(self._n_samples[i])
        if start < 0 or length < 0 or start + length > n_samples:
            raise StoreError(
                f"window [{start}, {start + length}) is outside recording {recording_id}, which has "
                f"{n_samples} samples: choose 0 <= start and start + length <= {n_samples}"
            )
        n_channels = int(self._n_channels[i])
        flat = self._signal_part(int(self._part[i])).flat(int(self._row[i]), n_channels * n_samples)
        window = flat.reshape(n_channels, n_samples)[:, start : start + length]
        lo = self._ch_offset[i]
        baseline, gain = self._baseline[lo : lo + n_channels], self._gain[lo : lo + n_channels]
        invalid = self._invalid.get(i)
        if channels is not None:
            _check_channels(channels, n_channels, recording_id)
            window = window[channels]
            baseline, gain = baseline[channels], gain[channels]
            invalid = None if invalid is None else invalid[channels]
        if units == "adc":
            return window
        if units != "physical":
            raise ValueError(f"units must be 'physical' or 'adc', got {units!r}")
        # One precision rule for every sample type: (adc - baseline) / gain in float64 (exact for int16
        # and int32 ADC values, as wfdb and mne compute it), then rounded once to float32; float32
        # arithmetic where it gives the same bits (clinseq.timeline.calibration).
        physical = to_physical(window, baseline, gain, bool(self._exact32[i]))
        if invalid is not None:
            physical[window == invalid[:, None]] = np.nan
        return physical

    def read_recording(self, recording_id: int, units: Units = "physical") -> np.ndarray:
        """The whole recording, shape ``(channels, n_samples)`` (see :meth:`read_window`)."""
        n_samples = int(self._n_samples[self._index(recording_id)])
        return self.read_window(recording_id, 0, n_samples, units=units)

    # -- annotations --------------------------------------------------------------------------------
    @cached_property
    def _recording_events(self) -> pl.DataFrame:
        path = self.path / RECORDING_EVENTS
        if not path.exists():
            return pl.DataFrame(schema=RECORDING_EVENT_COLUMNS)
        return pl.read_parquet(path)

    def recording_events(self, recording_id: int, start: int = 0, length: int | None = None) -> pl.DataFrame:
        """The annotations (WFDB annotation files, EDF+ annotations) whose onset falls in the window
        ``[start, start + length)`` (samples at this recording's rate; the whole recording when
        ``length`` is None), with ``onset_s`` from the recording's first sample and ``sample`` (the
        onset in this recording's samples). A recording of a file with several rates sees the
        annotations of its session (``session_id``)."""
        i = self._index(recording_id)
        rate = float(self.recordings["sampling_rate_hz"][i])
        owner = int(recording_id)
        if "session_id" in self.recordings.columns and self.recordings["session_id"][i] is not None:
            owner = int(self.recordings["session_id"][i])
        end = int(self._n_samples[i]) if length is None else start + length
        events = self._recording_events.filter(pl.col("recording_id") == owner)
        sample = (pl.col("onset_s") * rate).round().cast(pl.Int64)
        return (
            events.with_columns(sample.alias("sample"))
            .filter((pl.col("sample") >= start) & (pl.col("sample") < end))
            .with_columns(pl.lit(int(recording_id), dtype=pl.Int64).alias("recording_id"))
        )

    # -- patients and events ------------------------------------------------------------------------
    @cached_property
    def _recordings_by_patient(self) -> dict[int, pl.DataFrame]:
        return {
            int(key[0]): frame
            for key, frame in self.recordings.partition_by("patient_id", as_dict=True).items()
        }

    def patient(self, patient_id: int) -> PatientTimeline:
        """One patient's timeline: their recordings (by start time) and their events."""
        pid = int(patient_id)
        recordings = self._recordings_by_patient.get(pid)
        if recordings is None:
            known = self.patients["patient_id"].to_numpy()
            if pid not in set(known.tolist()):
                raise StoreError(f"{self.path}: no patient with patient_id={pid}")
            recordings = self.recordings.clear()
        return PatientTimeline(self, pid, recordings.sort("start_time", nulls_last=True))

    @property
    def has_events(self) -> bool:
        return (self.path / EVENTS_INDEX).exists()

    @cached_property
    def event_index(self) -> EventIndex:
        """The memory-mapped event index (design §2); raises when the store holds no events."""
        index = EventIndex.open(self.path) if self.has_events else None
        if index is None:
            raise StoreError(
                f"{self.path}: this store holds no events; convert an EHR source "
                "(clinseq convert mimic-iv / meds) or attach events to it"
            )
        return index

    def context_events(
        self,
        recording_id: int,
        window_s: float,
        codes: Sequence[str] | None = None,
        *,
        include_static: bool = True,
    ) -> pl.DataFrame:
        """The events of a recording's patient in the ``window_s`` seconds before the recording starts:
        its EHR context (cross-modal ECG ↔ EHR pairs).

        The window is ``[start_time - window_s, start_time)``: strictly before the recording, so nothing
        charted at or after the recording's timestamp (its own machine read-out, later diagnoses) leaks
        into its context. Static events are included unless ``include_static=False``.

        Args:
            recording_id: the recording; it must have a ``start_time``.
            window_s: length of the look-back window in seconds (> 0).
            codes: keep only these codes. None = all.
        """
        if not window_s > 0:
            raise ValueError(
                f"window_s must be > 0 seconds, got {window_s}: pass e.g. window_s=86400 (one day)"
            )
        row = self.recordings.filter(pl.col("recording_id") == int(recording_id))
        if row.height == 0:
            raise StoreError(f"{self.path}: no recording with recording_id={recording_id}")
        start_time = row["start_time"][0]
        if start_time is None:
            raise StoreError(
                f"{self.path}: recording {recording_id} has no start_time, so no window before it exists"
            )
        patient_id = int(row["patient_id"][0])
        window_start = start_time - timedelta(seconds=float(window_s))
        return self.event_index.patient_events(
            patient_id, start=window_start, end=start_time, codes=codes, include_static=include_static
        )

    # -- summary ------------------------------------------------------------------------------------
    def summary(self) -> str:
        """A human-readable summary (what ``clinseq info`` prints)."""
        m = self.manifest
        rec = self.recordings
        lines = [
            f"store      {self.path}",
            f"dataset    {m.get('dataset')}  (format {m.get('format_version')}, "
            f"clinseq {m.get('clinseq_version')}, created {m.get('created_at')})",
            f"source     {m.get('source')}",
            f"patients   {self.patients.height}",
            f"recordings {rec.height}",
        ]
        if rec.height:
            by_mod = (
                rec.group_by("modality", "sampling_rate_hz")
                .agg(
                    pl.len().alias("n"),
                    (pl.col("n_samples") / pl.col("sampling_rate_hz")).sum().alias("seconds"),
                    pl.col("n_channels").max().alias("max_channels"),
                )
                .sort("modality", "sampling_rate_hz")
            )
            for row in by_mod.iter_rows(named=True):
                lines.append(
                    f"  {row['modality']:<4} {row['sampling_rate_hz']:g} Hz: {row['n']} recordings, "
                    f"{row['seconds'] / 3600:.2f} h, up to {row['max_channels']} channels"
                )
            per_patient = rec.group_by("patient_id").len()["len"]
            lines.append(
                f"  recordings per patient: mean {per_patient.mean():.2f}, max {per_patient.max()}, "
                f"patients with ≥2: {(per_patient >= 2).sum()}"
            )
            n_bytes = sum(p.stat().st_size for p in (self.path / SIGNALS_DIR).glob("part-*.arrow"))
            lines.append(f"  signals: {m['counts'].get('signal_parts')} part(s), {n_bytes / 2**20:.1f} MiB")
        if "split" in self.patients.columns and self.patients["split"].null_count() < self.patients.height:
            counts = self.patients.group_by("split").len().sort("split")
            lines.append(
                "splits     " + ", ".join(f"{r['split']}: {r['len']}" for r in counts.iter_rows(named=True))
            )
        if self.has_events:
            index = self.event_index
            lines.append(f"events     {index.n_events} events for {len(index.subject_ids)} subjects")
            events_info = m.get("events") or {}
            for table, info in (events_info.get("tables") or {}).items():
                written = sum(e.get("written", 0) for e in (info.get("events") or {}).values())
                dropped = sum(e.get("dropped_no_usable_time", 0) for e in (info.get("events") or {}).values())
                lines.append(
                    f"  {table:<20} {info.get('source_rows', '?'):>9} source rows → {written} events"
                    + (f" ({dropped} without a usable time dropped)" if dropped else "")
                )
            for key in ("missing_tables", "skipped_tables"):
                if events_info.get(key):
                    lines.append(f"  {key.replace('_', ' ')}: {', '.join(map(str, events_info[key]))}")
        skipped = m.get("skipped") or []
        lines.append(f"skipped    {len(skipped)}")
        for item in skipped[:10]:
            lines.append(f"  {item['path']}: {item['reason']}")
        return "\n".join(lines)
