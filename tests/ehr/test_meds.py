"""MEDS import (the official MIMIC-IV demo in MEDS) and export → import round trips."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import meds
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinseq.errors import SourceError, StoreError
from clinseq.io.meds import export_meds, import_meds
from clinseq.timeline.events import EVENT_SCHEMA, EVENT_SORT, EVENTS_ARROW, sort_events
from clinseq.timeline.events_read import EventIndex
from clinseq.timeline.events_write import EventStager, StagedEvents, write_events


def _arrow_events(store: Path) -> pa.Table:
    with pa.memory_map(str(store / EVENTS_ARROW)) as source:
        return pa.ipc.open_file(source).read_all()


def test_official_meds_demo_imports_and_slices(meds_demo_root: Path, tmp_path: Path) -> None:
    store = import_meds(meds_demo_root, tmp_path / "store", progress=False)
    source = pl.read_parquet(meds_demo_root / "data" / "**" / "*.parquet").select(
        "subject_id", "time", "code", "numeric_value", "text_value"
    )
    index = EventIndex.open(store)
    assert index is not None
    assert index.n_events == source.height
    assert len(index.subject_ids) == source["subject_id"].n_unique()
    patients = pl.read_parquet(store / "patients.parquet")
    assert set(patients["split"]) == {"val", "test"}  # tuning / held_out shards of the demo copy
    pid = int(index.subject_ids[0])
    mine = index.patient_events(pid)
    expected = source.filter(pl.col("subject_id") == pid)
    # Same events (as multisets): the store re-sorts ties by code; the source keeps its own tie order.
    assert mine.sort(pl.all(), nulls_last=False).equals(expected.sort(pl.all(), nulls_last=False))
    assert mine["time"].drop_nulls().is_sorted()
    first_admit = mine.filter(pl.col("code").str.starts_with("HOSPITAL_ADMISSION"))["time"][0]
    before = index.patient_events(pid, end=first_admit, include_static=False)
    assert before.height > 0 and (before["time"] < first_admit).all()
    codes = pl.read_parquet(store / "events" / "metadata" / "codes.parquet")
    assert codes.filter(pl.col("code").str.starts_with("LAB//"))["description"].is_not_null().any()


def test_export_then_import_gives_identical_events(mimic_store: Path, tmp_path: Path) -> None:
    out = export_meds(mimic_store, tmp_path / "meds")
    for shard in sorted((out / "data").glob("*.parquet")):
        meds.DataSchema.validate(pq.read_table(shard))
    assert json.loads((out / "metadata" / "dataset.json").read_text())["dataset_name"] == "MIMIC-IV"
    again = import_meds(out, tmp_path / "again", progress=False, subjects_per_shard=7)
    assert _arrow_events(again).equals(_arrow_events(mimic_store))
    a = pl.read_parquet(again / "patients.parquet").select("patient_id", "split")
    b = pl.read_parquet(mimic_store / "patients.parquet").select("patient_id", "split")
    assert a.equals(b)
    with pytest.raises(StoreError, match="already exists"):
        export_meds(mimic_store, out)


def test_import_rejects_bad_meds(tmp_path: Path) -> None:
    src = tmp_path / "bad"
    (src / "data").mkdir(parents=True)
    pl.DataFrame({"subject_id": [1], "time": [None], "kode": ["A"]}).write_parquet(src / "data" / "0.parquet")
    with pytest.raises(SourceError, match=r"0\.parquet: missing required MEDS column 'code'"):
        import_meds(src, tmp_path / "out", progress=False)
    pl.DataFrame({"subject_id": ["p1"], "time": [None], "code": ["A"]}).write_parquet(
        src / "data" / "0.parquet"
    )
    with pytest.raises(SourceError, match="'subject_id' must be an integer"):
        import_meds(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))
    with pytest.raises(SourceError, match="no \\*.parquet"):
        import_meds(tmp_path / "empty", tmp_path / "out", progress=False)


# -- the shared event writer: staged in any order, batches and files, written in the canonical order ------
_SUBJECTS = [3, 5, 8, 13, 21, 1 << 40]
_WRITER_CODES = ["A", "B", "LAB//50912//mg/dL", "LAB//50912//UNK", "é", ""]


@st.composite
def _staged_events(draw: st.DrawFn) -> tuple[pl.DataFrame, list[list[int]], list[int]]:
    """Events, how they are cut into staged files and batches (row counts), and the shard breaks."""
    n = draw(st.integers(1, 50))
    times = st.one_of(
        st.none(), st.integers(0, 40).map(lambda s: datetime(2150, 1, 1) + timedelta(seconds=s))
    )
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(_SUBJECTS),
                times,
                st.sampled_from(_WRITER_CODES),
                st.one_of(st.none(), st.sampled_from([0.0, -1.5, 2.0])),
                st.one_of(st.none(), st.sampled_from(["x", "y"])),
            ),
            min_size=n,
            max_size=n,
        )
    )
    events = pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row")
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    batches = [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    files, start = [], 0
    for k in draw(st.lists(st.integers(1, 3), min_size=len(batches), max_size=len(batches))):
        if start < len(batches):
            files.append(batches[start : start + k])
            start += k
    breaks = sorted(draw(st.sets(st.sampled_from(_SUBJECTS[1:]), max_size=3)))
    return events, files, breaks


@given(_staged_events())
@settings(max_examples=25, deadline=None)
def test_staged_events_are_written_in_the_canonical_order(case: tuple) -> None:
    """Code numbers differ between staged files (each numbers its codes in order of appearance): the
    shards must still hold every event once, in :func:`sort_events` order, whole subjects per shard."""
    events, files, breaks = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        staged, row = [], 0
        for i, batches in enumerate(files):
            stager = EventStager(root / "_staging" / f"{i}.arrow", breaks)
            for size in batches:
                stager.add(events.slice(row, size))
                row += size
            staged.append(StagedEvents.load(stager.finish().path))  # as a resumed run reads it
        summary = write_events(staged, root, n_shards=len(breaks) + 1, dataset_meta={}, workers=2)
        expected = sort_events(events)
        assert pl.from_arrow(_arrow_events(root)).select(EVENT_SORT).equals(expected, null_equal=True)
        shards = sorted((root / "events" / "data").glob("*.parquet"))
        written = pl.concat([pl.read_parquet(s) for s in shards])
        assert written.select(EVENT_SORT).equals(expected, null_equal=True)
        bounds = [-(1 << 62), *breaks, 1 << 62]
        for shard in shards:
            k = int(shard.stem)
            ids = pl.read_parquet(shard)["subject_id"]
            assert ids.is_between(bounds[k], bounds[k + 1], closed="left").all()
        counts = summary.codes.select("code", "count").sort("code")
        assert counts.equals(events.group_by("code").agg(pl.len().cast(pl.Int64).alias("count")).sort("code"))
