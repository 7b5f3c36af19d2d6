"""Patient event timelines: the MEDS event layout of a store and its memory-mapped per-patient index.

A store that holds events has (design §2)::

    events/                 a MEDS v0.4 dataset (data/*.parquet, metadata/...)
    events.arrow            the same events, sorted by (subject_id, time, code, numeric_value,
                            text_value), uncompressed Arrow IPC, one record batch per shard
    events_index.parquet    subject_id, start, end, n_static: each subject's rows [start, end) of
                            events.arrow; the first n_static of them have a null time (static events)

:class:`EventIndex` memory-maps ``events.arrow`` and answers ``patient_events`` by slicing that patient's
row range and binary-searching the time column inside it, so a query costs O(log n + k) for a patient
with n events of which k are returned, independent of the dataset's size.

Boundary semantics (``start``/``end``): **half-open [start, end)**. An event at exactly ``end`` is *not*
returned: ``context_events`` asks for ``[T - window, T)`` before a recording at ``T``, so an event
charted at the recording's own timestamp (which may be its result) never leaks into its context.
Static events (MEDS ``time`` null, e.g. ``GENDER//F``) hold at every time; they are returned first,
whatever the bounds, unless ``include_static=False``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from clinseq.utils import StoreError

if TYPE_CHECKING:
    from clinseq.timeline.store import TimelineStore

EVENTS_DIR = "events"
EVENTS_ARROW = "events.arrow"
EVENTS_INDEX = "events_index.parquet"

#: The event columns every store holds (MEDS v0.4 core columns; polars types).
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.Int64(),
    "time": pl.Datetime("us"),
    "code": pl.String(),
    "numeric_value": pl.Float32(),
    "text_value": pl.String(),
}
#: The same as an Arrow schema, exactly as ``meds.DataSchema`` wants it (text_value is large_string).
EVENT_ARROW_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("time", pa.timestamp("us")),
        pa.field("code", pa.string(), nullable=False),
        pa.field("numeric_value", pa.float32()),
        pa.field("text_value", pa.large_string()),
    ]
)
#: Sort order of every event table clinseq writes: static (null time) events first within a subject,
#: then by time; ties broken by the remaining columns so that the order is a pure function of the data.
EVENT_SORT = ["subject_id", "time", "code", "numeric_value", "text_value"]

_INDEX_SCHEMA = {"subject_id": pl.Int64(), "start": pl.Int64(), "end": pl.Int64(), "n_static": pl.Int64()}


def empty_events() -> pl.DataFrame:
    """An event table with the standard columns and no rows."""
    return pl.DataFrame(schema=EVENT_SCHEMA)


def sort_events(events: pl.DataFrame) -> pl.DataFrame:
    """Sort events in clinseq's canonical order (:data:`EVENT_SORT`, nulls first)."""
    return events.sort(EVENT_SORT, nulls_last=False, maintain_order=True)


def to_arrow_events(events: pl.DataFrame) -> pa.Table:
    """The five event columns as an Arrow table with :data:`EVENT_ARROW_SCHEMA` (MEDS types)."""
    table = events.select(list(EVENT_SCHEMA)).to_arrow()
    return table.cast(EVENT_ARROW_SCHEMA)


class EventIndexWriter:
    """Writes ``events.arrow`` and ``events_index.parquet`` from sorted shards, one shard at a time.

    Shards must come in increasing subject order, each sorted by :data:`EVENT_SORT`, and a subject must
    lie in one shard only (the MEDS rule): memory stays at one shard whatever the dataset's size.
    """

    def __init__(self, store_tmp_path: str | os.PathLike[str]) -> None:
        self.root = Path(store_tmp_path)
        self.root.mkdir(parents=True, exist_ok=True)
        self._sink = pa.OSFile(str(self.root / EVENTS_ARROW), "wb")
        self._writer = pa.ipc.new_file(self._sink, EVENT_ARROW_SCHEMA)
        self._index: list[pl.DataFrame] = []
        self.n_events = 0
        self._last_subject: int | None = None

    def add_shard(self, events: pl.DataFrame) -> None:
        """Append one sorted shard (a polars frame with the :data:`EVENT_SCHEMA` columns)."""
        if events.height == 0:
            return
        subjects = events["subject_id"].to_numpy()
        if np.any(np.diff(subjects) < 0):
            raise StoreError("event shard is not sorted by subject_id: sort it with sort_events() first")
        if self._last_subject is not None and subjects[0] <= self._last_subject:
            raise StoreError(
                f"event shards overlap: subject {subjects[0]} comes after subject {self._last_subject}; "
                "each subject must lie in one shard and shards must come in subject order"
            )
        # Row range per subject from the run boundaries of the sorted subject_id column.
        starts = np.flatnonzero(np.concatenate([[True], subjects[1:] != subjects[:-1]]))
        ends = np.concatenate([starts[1:], [len(subjects)]])
        is_static = events["time"].is_null().to_numpy()
        n_static = np.add.reduceat(is_static.astype(np.int64), starts)
        self._index.append(
            pl.DataFrame(
                {
                    "subject_id": subjects[starts],
                    "start": starts + self.n_events,
                    "end": ends + self.n_events,
                    "n_static": n_static,
                },
                schema=_INDEX_SCHEMA,
            )
        )
        # One record batch per shard: a patient never spans two batches, so a slice stays zero-copy.
        table = to_arrow_events(events).combine_chunks()
        for batch in table.to_batches(max_chunksize=table.num_rows):
            self._writer.write_batch(batch)
        self.n_events += events.height
        self._last_subject = int(subjects[-1])

    def finish(self) -> Path:
        """Close ``events.arrow`` and write ``events_index.parquet`` (last: its presence marks success)."""
        self._writer.close()
        self._sink.close()
        index = pl.concat(self._index) if self._index else pl.DataFrame(schema=_INDEX_SCHEMA)
        index.write_parquet(self.root / EVENTS_INDEX)
        return self.root / EVENTS_INDEX

    def abort(self) -> None:
        """Close the files after an error (the caller removes the temporary folder)."""
        try:
            self._writer.close()
        finally:
            self._sink.close()


def write_event_index(events: pl.LazyFrame | pl.DataFrame, store_tmp_path: str | os.PathLike[str]) -> Path:
    """Sort ``events`` and write ``events.arrow`` + ``events_index.parquet`` into ``store_tmp_path``.

    This materialises all events at once; converters of large sources write shard by shard with
    :class:`EventIndexWriter` instead. Returns the path of the index file.
    """
    frame = events.collect() if isinstance(events, pl.LazyFrame) else events
    missing = [c for c in EVENT_SCHEMA if c not in frame.columns]
    if missing:
        raise StoreError(f"events need the columns {list(EVENT_SCHEMA)}; missing {missing}")
    frame = sort_events(frame.select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()]))
    writer = EventIndexWriter(store_tmp_path)
    try:
        writer.add_shard(frame)
    except Exception:
        writer.abort()
        raise
    return writer.finish()


def _to_us(value: datetime | np.datetime64 | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[us]").astype(np.int64))
    if not isinstance(value, datetime):
        raise TypeError(
            f"start/end must be a naive datetime (the data's clock) or None, got {type(value).__name__}"
        )
    if value.tzinfo is not None:
        raise ValueError(
            f"start/end must be naive datetimes (MEDS times carry no time zone), got {value!r}: "
            "drop the tzinfo with value.replace(tzinfo=None)"
        )
    return int((value - datetime(1970, 1, 1)) / timedelta(microseconds=1))


@dataclass(frozen=True)
class _Range:
    start: int
    end: int
    n_static: int


class EventIndex:
    """Per-patient random access to a store's events (memory-mapped ``events.arrow``).

    Open with :meth:`open`; the map is reopened after a fork (DataLoader workers) and dropped when
    pickled. ``patient_events`` returns a polars DataFrame with the :data:`EVENT_SCHEMA` columns.
    """

    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self.path = Path(store_path)
        index_path = self.path / EVENTS_INDEX
        try:
            index = pl.read_parquet(index_path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise StoreError(f"{index_path}: cannot read the event index ({exc})") from exc
        self._subjects = index["subject_id"].to_numpy()
        self._starts = index["start"].to_numpy()
        self._ends = index["end"].to_numpy()
        self._n_static = index["n_static"].to_numpy()
        self._row_of = {int(s): i for i, s in enumerate(self._subjects)}
        self._pid: int | None = None

    @classmethod
    def open(cls, store_path: str | os.PathLike[str]) -> EventIndex | None:
        """The store's event index, or None when the store holds no events."""
        if not (Path(store_path) / EVENTS_INDEX).exists():
            return None
        return cls(store_path)

    # -- the memory map, per process ----------------------------------------------------------------
    def _open_map(self) -> None:
        arrow_path = self.path / EVENTS_ARROW
        try:
            self._map = pa.memory_map(str(arrow_path))
            reader = pa.ipc.open_file(self._map)
            batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        except (OSError, pa.ArrowInvalid) as exc:
            raise StoreError(f"{arrow_path}: cannot read the events ({exc})") from exc
        self._batches = batches
        self._batch_start = np.cumsum([0] + [b.num_rows for b in batches]).astype(np.int64)
        # Time as int64 µs per batch; nulls (static events) read as whatever bytes they hold, which is
        # harmless because only rows after each subject's n_static static rows are ever searched.
        self._times = [
            np.frombuffer(b.column("time").buffers()[1], dtype=np.int64)[
                b.column("time").offset : b.column("time").offset + b.num_rows
            ]
            for b in batches
        ]
        # The same file as a polars frame (polars maps uncompressed IPC), sliced by patient_events.
        self._frame = pl.read_ipc(arrow_path)
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, object]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_map", "_batches", "_times", "_frame")}
        state["_pid"] = None
        return state

    def _ensure_open(self) -> None:
        if self._pid != os.getpid():
            self._open_map()

    # -- queries ------------------------------------------------------------------------------------
    @property
    def subject_ids(self) -> np.ndarray:
        """Subjects that have at least one event, ascending (int64)."""
        return self._subjects

    @property
    def n_events(self) -> int:
        """Total number of events in the store."""
        return int(self._ends[-1]) if len(self._ends) else 0

    def row_range(self, patient_id: int) -> tuple[int, int, int]:
        """``(start, end, n_static)`` rows of ``events.arrow`` for a patient; ``(0, 0, 0)`` if none."""
        i = self._row_of.get(int(patient_id))
        if i is None:
            return 0, 0, 0
        return int(self._starts[i]), int(self._ends[i]), int(self._n_static[i])

    def _locate(self, row: int) -> int:
        return int(np.searchsorted(self._batch_start, row, side="right") - 1)

    def _rows(
        self, patient_id: int, start: datetime | None, end: datetime | None, include_static: bool
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        """Global row ranges ``(static rows, timed rows in [start, end))`` of one patient."""
        lo, hi, n_static = self.row_range(patient_id)
        if hi == lo:
            return (0, 0), (0, 0)
        first_timed = lo + n_static
        t_lo, t_hi = first_timed, hi
        start_us, end_us = _to_us(start), _to_us(end)
        if start_us is not None or end_us is not None:
            b = self._locate(lo)
            base = int(self._batch_start[b])
            times = self._times[b][first_timed - base : hi - base]
            if start_us is not None:
                t_lo = first_timed + int(np.searchsorted(times, start_us, side="left"))
            if end_us is not None:
                t_hi = first_timed + int(np.searchsorted(times, end_us, side="left"))
            t_hi = max(t_hi, t_lo)
        static = (lo, first_timed) if include_static else (lo, lo)
        return static, (t_lo, t_hi)

    def patient_arrow(
        self,
        patient_id: int,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        include_static: bool = True,
    ) -> pa.Table:
        """Like :meth:`patient_events` without the code filter, as a zero-copy Arrow table (the
        fastest access: no polars frame is built)."""
        self._ensure_open()
        (s_lo, s_hi), (t_lo, t_hi) = self._rows(patient_id, start, end, include_static)
        pieces = []
        for a, b in ((s_lo, s_hi), (t_lo, t_hi)):
            if b > a:
                k = self._locate(a)
                base = int(self._batch_start[k])
                pieces.append(self._batches[k].slice(a - base, b - a))
        return pa.Table.from_batches(pieces, schema=EVENT_ARROW_SCHEMA)

    def patient_events(
        self,
        patient_id: int,
        start: datetime | None = None,
        end: datetime | None = None,
        codes: Sequence[str] | None = None,
        *,
        include_static: bool = True,
    ) -> pl.DataFrame:
        """One patient's events in time order, static (null-time) events first.

        Args:
            patient_id: the MEDS ``subject_id``. A patient without events gives an empty frame.
            start, end: naive datetimes; events with ``start <= time < end`` are returned (half-open:
                an event at exactly ``end`` is excluded, see the module docstring). None = unbounded.
            codes: keep only these codes (exact match). None = all.
            include_static: also return the static events (null time), which hold at every time.

        Returns:
            polars DataFrame ``subject_id`` i64, ``time`` datetime[µs], ``code`` str, ``numeric_value``
            f32, ``text_value`` str, in :data:`EVENT_SORT` order. Cost: O(log n + k) for a patient with
            n events and k returned, independent of the dataset's size.
        """
        if start is not None and end is not None and end < start:
            raise ValueError(f"end ({end}) is before start ({start}): pass start <= end")
        self._ensure_open()
        (s_lo, s_hi), (t_lo, t_hi) = self._rows(patient_id, start, end, include_static)
        if s_hi == s_lo or s_hi == t_lo:  # one zero-copy slice (no static rows, or they are adjacent)
            first = s_lo if s_hi == t_lo else t_lo
            out = self._frame.slice(first, t_hi - first)
        elif t_hi == t_lo:
            out = self._frame.slice(s_lo, s_hi - s_lo)
        else:
            out = self._frame.slice(s_lo, s_hi - s_lo).vstack(self._frame.slice(t_lo, t_hi - t_lo))
        if codes is not None:
            if isinstance(codes, str):
                raise TypeError(
                    f"codes must be a sequence of codes, got the single string {codes!r}: pass [{codes!r}]"
                )
            out = out.filter(pl.col("code").is_in(list(codes)))
        return out

    def iter_patients(self, patient_ids: Iterable[int] | None = None) -> Iterable[tuple[int, pl.DataFrame]]:
        """``(patient_id, events)`` for each patient (all subjects when None), in the given order."""
        for pid in self._subjects if patient_ids is None else patient_ids:
            yield int(pid), self.patient_events(int(pid))


def context_events(
    store: TimelineStore,
    recording_id: int,
    window_s: float,
    codes: Sequence[str] | None = None,
    *,
    include_static: bool = True,
) -> pl.DataFrame:
    """The events of a recording's patient in the ``window_s`` seconds before the recording starts.

    The window is ``[start_time - window_s, start_time)``: strictly before the recording, so nothing
    charted at or after the recording's timestamp (its own machine read-out, later diagnoses) leaks
    into its context. Static events are included unless ``include_static=False``.

    Args:
        store: an open :class:`~clinseq.timeline.store.TimelineStore` holding recordings and events.
        recording_id: the recording; it must have a ``start_time``.
        window_s: length of the look-back window in seconds (> 0).
        codes: keep only these codes. None = all.
    """
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0 seconds, got {window_s}: pass e.g. window_s=86400 (one day)")
    row = store.recordings.filter(pl.col("recording_id") == int(recording_id))
    if row.height == 0:
        raise StoreError(f"{store.path}: no recording with recording_id={recording_id}")
    start_time = row["start_time"][0]
    if start_time is None:
        raise StoreError(
            f"{store.path}: recording {recording_id} has no start_time, so no window before it exists"
        )
    patient_id = int(row["patient_id"][0])
    window_start = start_time - timedelta(seconds=float(window_s))
    return store.event_index.patient_events(
        patient_id, start=window_start, end=start_time, codes=codes, include_static=include_static
    )
