"""MEDS import (the official MIMIC-IV demo in MEDS) and export → import round trips."""

from __future__ import annotations

import json
from pathlib import Path

import meds
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clinseq.io.meds import export_meds, import_meds
from clinseq.timeline.events import EVENTS_ARROW, EventIndex
from clinseq.utils import SourceError, StoreError


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
