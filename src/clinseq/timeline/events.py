"""The event layout of a store (design §2): file names, schemas and the canonical event order.

A store that holds events has::

    events/                 a MEDS v0.4 dataset (data/*.parquet, metadata/...)
    events.arrow            the same events, sorted by (subject_id, time, code, numeric_value,
                            text_value), uncompressed Arrow IPC, one record batch per shard, with the
                            strings as ``string_view`` and one extra column ``code_index`` (int32)
    events_codes.parquet    ``code``: row i is the code whose ``code_index`` is i
    events_index.parquet    subject_id, start, end, n_static: each subject's rows [start, end) of
                            events.arrow; the first n_static of them have a null time (static events)

:mod:`clinseq.timeline.events_write` writes it (events in any order → sorted shards → these files),
:mod:`clinseq.timeline.events_read` reads it (:class:`~clinseq.timeline.events_read.EventIndex`,
per-patient slices of the memory-mapped ``events.arrow``).
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

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
#: The ``events_index.parquet`` columns: each subject's rows ``[start, end)`` of ``events.arrow``, the
#: first ``n_static`` of them static (null time).
SUBJECT_INDEX_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.Int64(),
    "start": pl.Int64(),
    "end": pl.Int64(),
    "n_static": pl.Int64(),
}
#: Column of a sorted shard (:func:`clinseq.timeline.events_sort.canonical_sort`): each event's row in
#: the shard's sorted code list, which the index writer turns into ``code_index``.
LOCAL_CODE = "_local_code"


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
