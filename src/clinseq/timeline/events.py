"""Patient event timelines: the MEDS event layout of a store and its memory-mapped per-patient index.

A store that holds events has (design §2)::

    events/                 a MEDS v0.4 dataset (data/*.parquet, metadata/...)
    events.arrow            the same events, sorted by (subject_id, time, code, numeric_value,
                            text_value), uncompressed Arrow IPC, one record batch per shard, with the
                            strings as ``string_view`` and one extra column ``code_index`` (int32)
    events_codes.parquet    ``code``: row i is the code whose ``code_index`` is i
    events_index.parquet    subject_id, start, end, n_static: each subject's rows [start, end) of
                            events.arrow; the first n_static of them have a null time (static events)

:class:`EventIndex` memory-maps ``events.arrow`` and wraps it, without a copy, as polars frames (polars
imports ``string_view``, int64, timestamp and float32 Arrow buffers as they are, so the events stay in
the page cache, shared by every process and DataLoader worker, and a store larger than memory opens in
milliseconds). A query finds the patient's row range in the index, binary-searches the int64 view of the
time column inside it and returns a zero-copy slice: O(log n + 1) for a patient with n events, whatever
the dataset's size. A code filter looks the requested codes up once (cached), marks them in a boolean
table over ``code_index`` and keeps the matching rows of that slice: O(k) more numpy work.

**As-of semantics at the boundaries.** ``events(start, end)`` is what was *recorded as of* ``end``,
from ``start`` on: the half-open interval **[start, end)**. ``start`` is inclusive and ``end``
exclusive, so

- consecutive windows ``[a, b)``, ``[b, c)`` partition a timeline: no event is counted twice or lost;
- ``events(end=T)`` never holds an event timed at ``T`` itself. ``context_events`` asks for
  ``[T - window, T)`` before a recording at ``T``, so a result charted at the recording's own timestamp
  (possibly its consequence) never leaks into its context, and ``events(end=dischtime)`` holds none of
  that admission's diagnoses (they are timed at its discharge, when coders assign them);
- static events (MEDS ``time`` null, e.g. ``GENDER//F``) hold at every time: they come first, whatever
  the bounds, unless ``include_static=False``.

Times are compared to the microsecond on the data's own (naive) clock. Date-only source fields (MIMIC-IV
``chartdate``, ``dod``) are timed at midnight, so ``events(end=T)`` includes a date-only event of T's day
when T is after midnight, although it may have been recorded later that day (see the data card).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clinseq.utils import StoreError

if TYPE_CHECKING:
    from clinseq.timeline.store import TimelineStore

EVENTS_DIR = "events"
EVENTS_ARROW = "events.arrow"
EVENTS_INDEX = "events_index.parquet"
EVENTS_CODES = "events_codes.parquet"

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
#: ``events.arrow``: the event columns with ``string_view`` strings (polars' own layout, so that they
#: are imported without a copy) and ``code_index``, the row of the code in ``events_codes.parquet``.
INDEX_ARROW_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("time", pa.timestamp("us")),
        pa.field("code", pa.string_view(), nullable=False),
        pa.field("numeric_value", pa.float32()),
        pa.field("text_value", pa.string_view()),
        pa.field("code_index", pa.int32(), nullable=False),
    ]
)
#: Sort order of every event table clinseq writes: static (null time) events first within a subject,
#: then by time; ties broken by the remaining columns so that the order is a pure function of the data.
EVENT_SORT = ["subject_id", "time", "code", "numeric_value", "text_value"]
CODE_INDEX = "code_index"

_INDEX_SCHEMA = {"subject_id": pl.Int64(), "start": pl.Int64(), "end": pl.Int64(), "n_static": pl.Int64()}
_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
# Above this many separate runs of matching rows, one gather beats slicing and stacking the runs.
_MAX_RUNS = 14
_CODE_CACHE = 64
# A code set queried this many times in a shard gets a view there: its rows, gathered once, so that a
# filtered query is one or two slices. Views hold at most _VIEW_ROWS rows in all (least recently used
# dropped first), and none is built for a code set matching over _VIEW_SHARE of a shard's events (a
# window then holds long runs, which the per-query path slices cheaply).
_VIEW_AFTER = 8
_VIEW_ROWS = 2_000_000
_VIEW_SHARE = 0.25
# Bumped in every forked child: an index opened before a fork reopens its map in the child (one
# integer comparison per query, instead of a getpid() call).
_FORK_GENERATION = [0]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _FORK_GENERATION.__setitem__(0, _FORK_GENERATION[0] + 1))


def empty_events() -> pl.DataFrame:
    """An event table with the standard columns and no rows."""
    return pl.DataFrame(schema=EVENT_SCHEMA)


def sort_events(events: pl.DataFrame) -> pl.DataFrame:
    """Sort events in clinseq's canonical order (:data:`EVENT_SORT`, nulls first).

    Rows tied on every sort column are identical, so the order is a pure function of the event multiset.
    """
    return events.sort(EVENT_SORT, nulls_last=False)


def to_arrow_events(events: pl.DataFrame) -> pa.Table:
    """The five event columns as an Arrow table with :data:`EVENT_ARROW_SCHEMA` (MEDS types)."""
    table = events.select(list(EVENT_SCHEMA)).to_arrow()
    return table.cast(EVENT_ARROW_SCHEMA)


LOCAL_CODE = "_local_code"


def canonical_sort(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """Sort events in the canonical :data:`EVENT_SORT` order, fast; returns ``(sorted, codes)``.

    ``codes`` are the distinct codes, sorted, and the sorted frame gains ``_local_code`` (UInt32), each
    event's row in ``codes``, which :class:`EventIndexWriter` turns into ``code_index``. The order equals
    :func:`sort_events` (tested); see :func:`sort_ranked` for how it is computed.
    """
    events = events.rechunk()  # gathers are much faster on one chunk
    # A fresh Series: a unique() of views would keep every buffer of ``events`` referenced.
    codes = pl.Series("code", events["code"].unique().sort().to_list(), pl.String)
    rank = events["code"].cast(pl.Enum(codes)).to_physical()  # the code's rank, by hashing
    return sort_ranked(events.drop("code").with_columns(rank.alias(LOCAL_CODE)), codes)


def sort_ranked(frame: pl.DataFrame, codes: pl.Series) -> tuple[pl.DataFrame, pl.Series]:
    """:func:`canonical_sort` for events whose code is given as its row in ``codes`` (sorted, distinct).

    ``frame`` holds ``subject_id``, ``time``, ``numeric_value``, ``text_value`` and ``_local_code``
    (UInt32, the row in ``codes``); codes of several sources can be ranked once in one sorted list, so
    that sorting a shard compares, hashes and copies no string. Returns ``(sorted, shard_codes)`` as
    :func:`canonical_sort` does: ``shard_codes`` the codes the events use (sorted), ``_local_code``
    each event's row in it, ``code`` rebuilt from it.

    Sorting by the code's rank is sorting by the code (sorted codes' byte order = string order). When
    subject rank, time offset and code rank fit in 63 bits together (whole-second times, as MIMIC-IV's,
    over up to a few centuries), one UInt64 key replaces the first three sort columns: one integer
    argsort, then ``numeric_value`` and ``text_value`` order only the rows that tie on the key (same
    subject, time and code).
    """
    frame = frame.rechunk()
    rank = frame[LOCAL_CODE].to_numpy()
    if len(rank) and len(codes) > 1:
        present = np.bincount(rank, minlength=len(codes)).astype(bool)
        if not present.all():  # the shard's own codes: fewer key bits, a shorter code list
            codes = codes.filter(pl.Series(present))
            lookup = np.cumsum(present, dtype=np.uint32) - np.uint32(1)
            frame = frame.with_columns(pl.Series(LOCAL_CODE, lookup[rank]))
    elif not len(rank):
        codes = codes.clear()
    tail = ["numeric_value", "text_value"]
    packed = _packed_key(frame, len(codes))
    if packed is None:
        out = frame.sort(["subject_id", "time", LOCAL_CODE, *tail], nulls_last=False)
        return out.with_columns(codes.gather(out[LOCAL_CODE]).alias("code")).select(
            *EVENT_SCHEMA, LOCAL_CODE
        ), codes
    key = packed.key
    # numpy's stable sort (timsort) gains from the runs that staged tables leave in the key.
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    del key
    tied = sorted_key[1:] == sorted_key[:-1]
    if tied.any():
        in_tie = np.zeros(len(order), dtype=bool)
        in_tie[1:] |= tied
        in_tie[:-1] |= tied
        positions = np.flatnonzero(in_tie)
        rows = pl.Series(order[positions], dtype=pl.Int64)
        # Tie groups are contiguous and in key order: sorting them by (key, tail) fixes each group.
        fixed = (
            frame.select(pl.col(tail).gather(rows))
            .with_columns(pl.Series("_key", sorted_key[positions]), rows.alias("_row"))
            .sort(["_key", *tail], nulls_last=False)["_row"]
        )
        order[positions] = fixed.to_numpy()
    del tied
    # Subject, time and code are read back from the sorted key; only the values are gathered. The
    # code strings are rebuilt from the sorted code list: every view then points into that one small
    # buffer, not into the input's (a sorted shard keeps no staged or mapped memory alive).
    values = frame.select(tail)[pl.Series(order, dtype=pl.Int64)]
    del frame, order
    subject, time, local = packed.unpack(sorted_key)
    out = pl.DataFrame(
        [
            pl.Series("subject_id", subject),
            pl.Series("time", time),
            codes.gather(local).alias("code"),
            values["numeric_value"],
            values["text_value"],
            pl.Series(LOCAL_CODE, local),
        ]
    )
    return out, codes


class _PackedKey(NamedTuple):
    """Per event: subject rank · time offset · code rank in one uint64, and what reads them back."""

    key: np.ndarray
    subjects: np.ndarray  # the distinct subject ids, ascending (rank → id)
    t_min: int  # seconds; time offset 1 is t_min, 0 a static (null-time) event
    t_bits: int
    c_bits: int

    def unpack(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(subject_id int64, time datetime64[us] with NaT for static, code rank uint32)`` of keys."""
        local = (key & np.uint64((1 << self.c_bits) - 1)).astype(np.uint32)
        offset = ((key >> np.uint64(self.c_bits)) & np.uint64((1 << self.t_bits) - 1)).view(np.int64)
        subject = self.subjects[key >> np.uint64(self.t_bits + self.c_bits)]
        static = offset == 0
        offset += self.t_min - 1
        offset *= 1_000_000
        time = offset.view("datetime64[us]")
        time[static] = np.datetime64("NaT")
        return subject, time, local


def _packed_key(frame: pl.DataFrame, n_codes: int) -> _PackedKey | None:
    """subject rank · time offset · code rank as one uint64 per event (static events first), or None
    when that does not fit in 63 bits or times are not whole seconds.

    Works in place on two arrays of the frame's length: fresh memory is not free (page faults).
    """
    if frame.height == 0:
        return None
    micros = frame["time"].to_numpy(writable=True).view(np.int64)  # null → NaT, the smallest int64
    static = micros == np.iinfo(np.int64).min
    key = np.remainder(micros, 1_000_000).view(np.uint64)
    key[static] = 0
    if key.any():
        return None
    np.floor_divide(micros, 1_000_000, out=micros)  # seconds
    t_min = int(micros.min(where=~static, initial=np.iinfo(np.int64).max))
    t_max = int(micros.max(where=~static, initial=np.iinfo(np.int64).min))
    if t_min > t_max:  # only static events
        t_min = t_max = 0
    subject = frame["subject_id"].to_numpy()
    s_min, s_span = int(subject.min()), int(subject.max()) - int(subject.min())
    if s_span < (1 << 22):  # dense ids (a shard's range): rank through a lookup table
        present = np.zeros(s_span + 1, dtype=bool)
        present[subject - s_min] = True
        distinct = np.flatnonzero(present) + s_min
        lookup = np.cumsum(present, dtype=np.int64)
        np.subtract(subject, s_min, out=key.view(np.int64))
        np.take(lookup, key.view(np.int64), out=key.view(np.int64))  # rank + 1
        key -= np.uint64(1)
    else:
        distinct = np.sort(frame["subject_id"].unique().to_numpy())
        key[:] = np.searchsorted(distinct, subject)
    t_bits = (t_max - t_min + 1).bit_length()  # offsets 1.. for timed events, 0 for static ones
    c_bits = max(n_codes - 1, 1).bit_length()
    s_bits = max(len(distinct) - 1, 1).bit_length()
    if s_bits + t_bits + c_bits > 63:
        return None
    micros -= t_min - 1
    micros[static] = 0
    offset = micros.view(np.uint64)
    key <<= np.uint64(t_bits + c_bits)
    offset <<= np.uint64(c_bits)
    key |= offset
    key |= frame[LOCAL_CODE].to_numpy()
    return _PackedKey(key, distinct.astype(np.int64), t_min, t_bits, c_bits)


class EventIndexWriter:
    """Writes ``events.arrow``, ``events_codes.parquet`` and ``events_index.parquet``, shard by shard.

    Shards must come in increasing subject order, each sorted by :data:`EVENT_SORT`, and a subject must
    lie in one shard only (the MEDS rule): memory stays at one shard whatever the dataset's size. Codes
    get their ``code_index`` in order of first appearance; :attr:`code_counts` counts their events.
    """

    def __init__(self, store_tmp_path: str | os.PathLike[str]) -> None:
        self.root = Path(store_tmp_path)
        self.root.mkdir(parents=True, exist_ok=True)
        self._sink = pa.OSFile(str(self.root / EVENTS_ARROW), "wb")
        self._writer = pa.ipc.new_file(self._sink, INDEX_ARROW_SCHEMA)
        self._index: list[pl.DataFrame] = []
        self._code_id: dict[str, int] = {}
        self._counts = np.zeros(0, np.int64)
        self.n_events = 0
        self._last_subject: int | None = None

    def add_shard(self, events: pl.DataFrame, codes: pl.Series | None = None) -> None:
        """Append one sorted shard: a polars frame with the :data:`EVENT_SCHEMA` columns, and, as
        :func:`canonical_sort` returns them, ``_local_code`` and its ``codes`` (else computed here)."""
        if events.height == 0:
            return
        if codes is None or LOCAL_CODE not in events.columns:
            codes = events["code"].unique().sort()
            events = events.with_columns(events["code"].cast(pl.Enum(codes)).to_physical().alias(LOCAL_CODE))
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
        # Global ids in order of first appearance in the canonical order: the same ids however the
        # events are sharded. A dict lookup per distinct code of the shard only.
        local = events[LOCAL_CODE]
        names = codes.to_list()
        remap = np.zeros(len(names), np.int32)
        for i in local.unique(maintain_order=True).to_list():
            remap[i] = self._code_id.setdefault(names[i], len(self._code_id))
        code_index = remap[local.to_numpy()]
        self._counts = np.concatenate(
            [self._counts, np.zeros(len(self._code_id) - len(self._counts), np.int64)]
        )
        self._counts += np.bincount(code_index, minlength=len(self._counts))
        # string_view is polars' own string layout: the reader imports it without a copy.
        table = (
            events.select(*EVENT_SCHEMA)
            .with_columns(pl.Series(CODE_INDEX, code_index))
            .to_arrow(compat_level=pl.CompatLevel.newest())
            .cast(INDEX_ARROW_SCHEMA)
            .combine_chunks()
        )
        # One record batch per shard: a patient never spans two batches, so a slice stays zero-copy.
        for batch in table.to_batches(max_chunksize=max(table.num_rows, 1)):
            self._writer.write_batch(batch)
        self.n_events += events.height
        self._last_subject = int(subjects[-1])

    @property
    def code_counts(self) -> pl.DataFrame:
        """``code``, ``count``: events per code written so far, in ``code_index`` order."""
        return pl.DataFrame(
            {"code": list(self._code_id), "count": self._counts},
            schema={"code": pl.String, "count": pl.Int64},
        )

    def finish(self) -> Path:
        """Close ``events.arrow``, write the code list and, last (its presence marks success), the
        subject index ``events_index.parquet``."""
        self._writer.close()
        self._sink.close()
        pq.write_table(self.code_counts.select("code").to_arrow(), self.root / EVENTS_CODES)
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
    """Sort ``events`` and write ``events.arrow`` + ``events_codes.parquet`` + ``events_index.parquet``.

    This materialises all events at once; converters of large sources write shard by shard with
    :class:`EventIndexWriter` instead. Returns the path of the index file.
    """
    frame = events.collect() if isinstance(events, pl.LazyFrame) else events
    missing = [c for c in EVENT_SCHEMA if c not in frame.columns]
    if missing:
        raise StoreError(f"events need the columns {list(EVENT_SCHEMA)}; missing {missing}")
    frame, codes = canonical_sort(frame.select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()]))
    writer = EventIndexWriter(store_tmp_path)
    try:
        writer.add_shard(frame, codes)
    except Exception:
        writer.abort()
        raise
    return writer.finish()


def _to_us(value: datetime | np.datetime64 | None) -> int | None:
    """Microseconds since 1970-01-01 of a naive datetime (None stays None)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError(
                f"start/end must be naive datetimes (MEDS times carry no time zone), got {value!r}: "
                "drop the tzinfo with value.replace(tzinfo=None)"
            )
        return (value - _EPOCH) // _US
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[us]").astype(np.int64))
    raise TypeError(
        f"start/end must be a naive datetime (the data's clock) or None, got {type(value).__name__}"
    )


class EventIndex:
    """Per-patient random access to a store's events (memory-mapped ``events.arrow``).

    Open with :meth:`open`; the map is reopened after a fork (DataLoader workers) and dropped when
    pickled. ``patient_events`` returns a polars DataFrame with the :data:`EVENT_SCHEMA` columns.

    Memory: the index arrays (≈ 120 bytes per subject) and, for code sets asked for repeatedly (8 times
    in a shard), a copy of their rows in that shard, so that such a filtered query is a slice: at most
    2 M rows in all (≈ 100 MB), least recently used dropped first. Everything else stays in the map.
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
        if len(self._subjects) > 1 and np.any(np.diff(self._subjects) <= 0):
            raise StoreError(f"{index_path}: subject ids are not strictly increasing (corrupt index)")
        # A dict answers in ~0.1 µs where a binary search costs ~1 µs (about 90 bytes per subject).
        self._row_of = dict(zip(self._subjects.tolist(), range(len(self._subjects)), strict=True))
        self._pid: tuple[int, int] | None = None
        self._code_id: dict[str, int] | None = None
        self._codes: pl.Series | None = None
        self._reset_caches()

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
        if not reader.schema.equals(INDEX_ARROW_SCHEMA):
            raise StoreError(
                f"{arrow_path}: written by an older clinseq (schema {reader.schema.types}, expected "
                f"{INDEX_ARROW_SCHEMA.types}); convert the source again, or re-import its events/ folder "
                "with clinseq convert meds"
            )
        self._batches = batches
        columns = list(EVENT_SCHEMA)
        # Zero-copy: polars adopts the mapped buffers (string_view, int64, timestamp, float32).
        self._frames = [pl.from_arrow(b.select(columns)) for b in batches]
        self._batch_start = np.cumsum([0] + [b.num_rows for b in batches]).astype(np.int64)
        self._batch_of = np.searchsorted(self._batch_start, self._starts, side="right") - 1
        self._times = [_int64_view(b.column("time")) for b in batches]
        self._code_ids = [b.column(CODE_INDEX).to_numpy(zero_copy_only=True) for b in batches]
        self._empty = pl.DataFrame(schema=EVENT_SCHEMA)
        self._reset_caches()
        self._pid = (os.getpid(), _FORK_GENERATION[0])

    def __getstate__(self) -> dict[str, object]:
        dropped = (
            "_views",
            "_view_uses",
            "_code_masks",
            "_map",
            "_batches",
            "_frames",
            "_times",
            "_code_ids",
            "_empty",
            "_batch_start",
            "_batch_of",
        )
        state = {k: v for k, v in self.__dict__.items() if k not in dropped}
        state["_pid"] = None
        return state

    def _ensure_open(self) -> None:
        pid = self._pid
        if pid is None or pid[1] != _FORK_GENERATION[0] or pid[0] != os.getpid():
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

    @property
    def codes(self) -> pl.Series:
        """Every code in the store; ``codes[i]`` is the code whose ``code_index`` is i."""
        if self._codes is None:
            self._codes = pl.read_parquet(self.path / EVENTS_CODES)["code"]
        return self._codes

    def row_range(self, patient_id: int) -> tuple[int, int, int]:
        """``(start, end, n_static)`` rows of ``events.arrow`` for a patient; ``(0, 0, 0)`` if none."""
        i = self._row_of.get(int(patient_id))
        if i is None:
            return 0, 0, 0
        return self._starts.item(i), self._ends.item(i), self._n_static.item(i)

    def _rows(
        self, patient_id: int, start: object, end: object, include_static: bool
    ) -> tuple[int, int, int, int, int]:
        """``(batch, static_lo, static_hi, timed_lo, timed_hi)``: rows of the batch for one query."""
        i = self._row_of.get(int(patient_id))
        if i is None:
            return 0, 0, 0, 0, 0
        b = self._batch_of.item(i)
        base = self._batch_start.item(b)
        lo, hi = self._starts.item(i) - base, self._ends.item(i) - base
        first_timed = lo + self._n_static.item(i)
        t_lo, t_hi = first_timed, hi
        if start is not None or end is not None:
            times = self._times[b][first_timed:hi]
            if start is not None:
                t_lo = first_timed + int(times.searchsorted(_to_us(start), "left"))
            if end is not None:
                t_hi = first_timed + int(times.searchsorted(_to_us(end), "left"))
            t_hi = max(t_hi, t_lo)
        return b, lo, first_timed if include_static else lo, t_lo, t_hi

    def patient_arrow(
        self,
        patient_id: int,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        include_static: bool = True,
    ) -> pa.Table:
        """Like :meth:`patient_events` without the code filter, as a zero-copy Arrow table of the
        mapped file (columns of :data:`INDEX_ARROW_SCHEMA`: strings as ``string_view``, and
        ``code_index``)."""
        _check_bounds(start, end)
        self._ensure_open()
        b, s_lo, s_hi, t_lo, t_hi = self._rows(patient_id, start, end, include_static)
        pieces = [self._batches[b].slice(lo, hi - lo) for lo, hi in ((s_lo, s_hi), (t_lo, t_hi)) if hi > lo]
        return pa.Table.from_batches(pieces, schema=INDEX_ARROW_SCHEMA)

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
            start, end: naive datetimes (or ``numpy.datetime64``); events with ``start <= time < end``
                are returned: what was recorded as of ``end``, from ``start`` on (half-open; see the
                module docstring). None = unbounded.
            codes: keep only these codes (exact match). None = all.
            include_static: also return the static events (null time), which hold at every time.

        Returns:
            polars DataFrame ``subject_id`` i64, ``time`` datetime[µs], ``code`` str, ``numeric_value``
            f32, ``text_value`` str, in :data:`EVENT_SORT` order, sharing memory with the mapped file
            (read-only). Cost: O(log n) for a patient with n events, plus O(k) with ``codes`` for k
            events in the window, independent of the dataset's size.
        """
        _check_bounds(start, end)
        self._ensure_open()
        b, s_lo, s_hi, t_lo, t_hi = self._rows(patient_id, start, end, include_static)
        frame = self._frames[b] if self._frames else self._empty
        if codes is not None:
            if isinstance(codes, str):
                raise TypeError(
                    f"codes must be a sequence of codes, got the single string {codes!r}: pass [{codes!r}]"
                )
            view = self._code_view(b, codes)
            if view is None:
                return self._filtered(frame, b, codes, (s_lo, s_hi), (t_lo, t_hi))
            # The view's rows are a subsequence of the shard's: the query's row bounds map to it.
            frame = view[1]
            s_lo, s_hi, t_lo, t_hi = view[0].searchsorted((s_lo, s_hi, t_lo, t_hi)).tolist()
        if s_hi == s_lo or s_hi == t_lo:  # one zero-copy slice (no static rows, or they are adjacent)
            first = s_lo if s_hi == t_lo else t_lo
            return frame.slice(first, t_hi - first)
        if t_hi == t_lo:
            return frame.slice(s_lo, s_hi - s_lo)
        return frame.slice(s_lo, s_hi - s_lo).vstack(frame.slice(t_lo, t_hi - t_lo))

    # -- code filters -------------------------------------------------------------------------------
    def _reset_caches(self) -> None:
        """Per-process caches: code tables and code-set views (rebuilt after a fork or unpickling)."""
        self._code_masks: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._views: OrderedDict[tuple[int, tuple[str, ...]], tuple[np.ndarray, pl.DataFrame]] = OrderedDict()
        self._view_uses: dict[tuple[int, tuple[str, ...]], int] = {}
        self._view_rows = 0

    def _code_view(self, b: int, codes: Sequence[str]) -> tuple[np.ndarray, pl.DataFrame] | None:
        """The rows of shard ``b`` whose code is in ``codes`` and those events (a copy), once the code
        set has been asked for ``_VIEW_AFTER`` times there; None before (or for too common codes)."""
        key = (b, codes if isinstance(codes, tuple) else tuple(codes))
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        uses = self._view_uses.get(key, 0) + 1
        if len(self._view_uses) > 4096:  # one-off code sets: forget the counts now and then
            self._view_uses.clear()
        self._view_uses[key] = uses
        if uses != _VIEW_AFTER or not self._code_ids:
            return None
        ids = self._code_ids[b]
        rows = np.flatnonzero(self._code_mask(codes)[ids])
        if len(rows) > _VIEW_SHARE * len(ids) or len(rows) > _VIEW_ROWS:
            return None
        view = (rows, self._frames[b][pl.Series(rows, dtype=pl.Int64)])
        self._views[key] = view
        self._view_rows += len(rows)
        while self._view_rows > _VIEW_ROWS:
            _, (old_rows, _) = self._views.popitem(last=False)
            self._view_rows -= len(old_rows)
        return view

    def _code_mask(self, codes: Sequence[str]) -> np.ndarray:
        """Boolean table over ``code_index``: True for the requested codes (LRU-cached per code list)."""
        key = tuple(codes)
        mask = self._code_masks.get(key)
        if mask is not None:
            self._code_masks.move_to_end(key)
            return mask
        mask = np.zeros(len(self.codes) + 1, dtype=bool)  # +1: never empty
        mask[self._code_ids_of(key)] = True
        self._code_masks[key] = mask
        if len(self._code_masks) > _CODE_CACHE:
            self._code_masks.popitem(last=False)
        return mask

    def _code_ids_of(self, codes: Sequence[str]) -> list[int]:
        """``code_index`` of the requested codes that the store holds (unknown codes match nothing)."""
        if self._code_id is None:
            self._code_id = {c: i for i, c in enumerate(self.codes.to_list())}
        get = self._code_id.get
        return [i for i in map(get, codes) if i is not None]

    def _filtered(
        self,
        frame: pl.DataFrame,
        b: int,
        codes: Sequence[str],
        static: tuple[int, int],
        timed: tuple[int, int],
    ) -> pl.DataFrame:
        ids = self._code_ids[b] if self._code_ids else np.zeros(0, np.int32)
        wanted = self._code_ids_of(codes)
        t_lo, t_hi = timed
        if len(wanted) <= 2:  # one or two codes: compare the window's code ids directly
            taken = [r for r in range(*static) if ids[r] in wanted]
            if t_hi > t_lo and wanted:
                window = ids[t_lo:t_hi]
                hits = (
                    window == wanted[0] if len(wanted) == 1 else (window == wanted[0]) | (window == wanted[1])
                )
                taken += (hits.nonzero()[0] + t_lo).tolist()
        else:  # more: a boolean table over code_index, cached per code list
            mask = self._code_mask(codes)
            taken = [r for r in range(*static) if mask[ids[r]]]
            if t_hi > t_lo:
                taken += (np.flatnonzero(mask[ids[t_lo:t_hi]]) + t_lo).tolist()
        if not taken:
            return self._empty.clear()
        # Contiguous runs of matching rows become zero-copy slices, stacked (~2.4 µs a run); past
        # _MAX_RUNS runs one gather (~30 µs) is cheaper.
        runs: list[list[int]] = []
        for r in taken:
            if runs and r == runs[-1][1]:
                runs[-1][1] += 1
            else:
                if len(runs) == _MAX_RUNS:
                    return frame[pl.Series(taken, dtype=pl.UInt32)]
                runs.append([r, r + 1])
        out = frame.slice(runs[0][0], runs[0][1] - runs[0][0])
        for lo, hi in runs[1:]:
            out = out.vstack(frame.slice(lo, hi - lo))
        return out

    def iter_patients(self, patient_ids: Iterable[int] | None = None) -> Iterable[tuple[int, pl.DataFrame]]:
        """``(patient_id, events)`` for each patient (all subjects when None), in the given order."""
        for pid in self._subjects if patient_ids is None else patient_ids:
            yield int(pid), self.patient_events(int(pid))


def _int64_view(column: pa.Array) -> np.ndarray:
    """The int64 values of a (timestamp) column, nulls included as whatever they hold, without a copy.

    Nulls are harmless: only rows after each subject's static (null-time) rows are ever searched.
    """
    data = column.buffers()[1]
    return np.frombuffer(data, dtype=np.int64)[column.offset : column.offset + len(column)]


def _check_bounds(start: object, end: object) -> None:
    if start is not None and end is not None and end < start:  # type: ignore[operator]
        raise ValueError(f"end ({end}) is before start ({start}): pass start <= end")


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
