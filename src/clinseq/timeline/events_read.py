"""Read a store's events: per-patient random access (layout: :mod:`clinseq.timeline.events`).

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
- ``events(end=T)`` never holds an event timed at ``T`` itself. ``TimelineStore.context_events``
  asks for ``[T - window, T)`` before a recording at ``T``, so a result charted at the recording's own
  timestamp (possibly its consequence) never leaks into its context, and ``events(end=dischtime)``
  holds none of that admission's diagnoses (they are timed at its discharge, when coders assign them);
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

import numpy as np
import polars as pl
import pyarrow as pa

from clinseq.errors import StoreError
from clinseq.timeline.events import (
    CODE_INDEX,
    EVENT_SCHEMA,
    EVENTS_ARROW,
    EVENTS_CODES,
    EVENTS_INDEX,
    INDEX_ARROW_SCHEMA,
)

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
