"""The converted MIMIC-IV demo holds exactly the same content as before the conversion was sped up.

The digests below were computed from the store that the converter of commit 7141d14 (before the
integer-coded staging, the ranked shard sort and zstd shards) wrote for the demo. They hash values, not
file bytes, so Parquet compression or row-group settings do not change them, while any change to an
event, its order, a code number, the index or the metadata tables does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clinseq.timeline.events import EVENTS_ARROW, INDEX_ARROW_SCHEMA

#: file → sha256 of its content (see :func:`_digest`), for the demo converted with the defaults.
DEMO_DIGESTS = {
    "events.arrow": "940ed2d80bfe8cedad0d122bd6aebd2bb0937978669d08dbd5871423831a9730",
    "events/data": "3994e1accdb9dc76c648d8c26f7605556b1060c4bca8201792b3ad4971b9d9c5",
    "events_index.parquet": "f55e960800c5be2a856508fdf5c78782b4354373c42f85b7375aae4eeba9d774",
    "events_codes.parquet": "04802bd313a04fbbf57e9607057fdbe5014e6e1a140a83c3bae03e6a4a700007",
    "events/metadata/codes.parquet": "eae3c771583438d201a07b1af29d3801641b248cc8c5b9baf38a9137d4049b71",
    "events/metadata/subject_splits.parquet": (
        "b63f12702a09ebe6d2d78b69254890d17512b12cb0cc87cde140a7bf1700c813"
    ),
    "patients.parquet": "1e70bb5dbb77c1de341bb0c0bedc1777d0f88ea73e2d656957b929e9e2d0885a",
}


def _hash_column(h: hashlib._Hash, s: pl.Series) -> None:
    """Name, null mask and values (strings joined by NUL, times as int64 µs) of one column."""
    h.update(s.name.encode())
    h.update(s.is_null().to_numpy().tobytes())
    if s.dtype == pl.String:
        h.update("\x00".join(v or "" for v in s.to_list()).encode())
    elif s.dtype == pl.Datetime("us"):
        h.update(s.dt.epoch("us").fill_null(0).to_numpy().tobytes())
    else:
        h.update(s.fill_null(0).to_numpy().tobytes())


def _hash_table(h: hashlib._Hash, table: pa.Table) -> None:
    h.update(str(table.schema).encode())  # the Arrow types as a reader gets them (MEDS types)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    for name in frame.columns:
        s = frame[name]
        if s.dtype == pl.List(pl.String):
            s = s.list.join("|")
        elif s.dtype == pl.Date:
            s = s.cast(pl.Int32)
        elif s.dtype == pl.String:
            s = s.cast(pl.String)
        _hash_column(h, s)


def _digest(store: Path) -> dict[str, str]:
    out = {}
    with pa.memory_map(str(store / EVENTS_ARROW)) as source:
        table = pa.ipc.open_file(source).read_all()
    assert table.schema.equals(INDEX_ARROW_SCHEMA)
    h = hashlib.sha256()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    for name in frame.columns:
        _hash_column(h, frame[name].cast(pl.String) if frame[name].dtype == pl.String else frame[name])
    out["events.arrow"] = h.hexdigest()
    h = hashlib.sha256()
    for shard in sorted((store / "events" / "data").glob("*.parquet")):
        h.update(shard.name.encode())
        _hash_table(h, pq.read_table(shard))
    out["events/data"] = h.hexdigest()
    for name in DEMO_DIGESTS:
        if name.endswith(".parquet"):
            h = hashlib.sha256()
            _hash_table(h, pq.read_table(store / name))
            out[name] = h.hexdigest()
    return out


def test_the_demo_store_is_unchanged(mimic_store: Path) -> None:
    assert _digest(mimic_store) == DEMO_DIGESTS
