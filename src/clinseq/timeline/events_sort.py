"""The canonical event order (:data:`~clinseq.timeline.events.EVENT_SORT`), computed fast.

:func:`canonical_sort` sorts a frame of events; :func:`sort_ranked` sorts events whose codes are already
numbered (the staged shards of :mod:`clinseq.timeline.events_write`) and, when subject, time and code
fit in 63 bits, does it with one integer argsort.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from clinseq.timeline.events import EVENT_SCHEMA, LOCAL_CODE


def canonical_sort(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """Sort events in the canonical ``EVENT_SORT`` order, fast; returns ``(sorted, codes)``.

    ``codes`` are the distinct codes, sorted, and the sorted frame gains ``_local_code`` (UInt32), each
    event's row in ``codes``, which the index writer (:mod:`clinseq.timeline.events_write`) turns into
    ``code_index``. The order equals :func:`~clinseq.timeline.events.sort_events` (tested); see
    :func:`sort_ranked` for how it is computed.
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
