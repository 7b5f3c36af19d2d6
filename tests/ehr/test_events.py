"""EventIndex: half-open windows, static events, per-patient slices equal brute force; cross-modal stores."""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clinseq.io.meds import attach_events, export_meds
from clinseq.timeline import StoreWriter, TimelineStore
from clinseq.timeline.events import EventIndex, context_events, write_event_index
from clinseq.timeline.records import Recording
from clinseq.utils import StoreError

T0 = datetime(2150, 1, 1)


@pytest.fixture()
def small_index(tmp_path: Path) -> EventIndex:
    events = pl.DataFrame(
        {
            "subject_id": [2, 1, 1, 1, 1, 2, 1],
            "time": [T0, None, T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2), None, T0],
            "code": ["B", "GENDER//F", "A", "B", "A", "GENDER//M", "C"],
            "numeric_value": [None, None, 1.0, 2.0, 3.0, None, None],
            "text_value": [None, None, None, "x", None, None, None],
        },
        schema_overrides={"numeric_value": pl.Float32, "time": pl.Datetime("us")},
    )
    write_event_index(events.lazy(), tmp_path)
    index = EventIndex.open(tmp_path)
    assert index is not None
    return index


def test_open_returns_none_without_events(tmp_path: Path) -> None:
    assert EventIndex.open(tmp_path) is None


def test_half_open_window_and_static_first(small_index: EventIndex) -> None:
    everything = small_index.patient_events(1)
    assert everything["code"].to_list() == ["GENDER//F", "A", "C", "B", "A"]  # ties at T0 sorted by code
    window = small_index.patient_events(1, start=T0, end=T0 + timedelta(hours=2))
    # [start, end): T0 included, T0 + 2 h excluded; the static event comes first.
    assert window["code"].to_list() == ["GENDER//F", "A", "C", "B"]
    timed = small_index.patient_events(1, start=T0 + timedelta(hours=1), include_static=False)
    assert timed["code"].to_list() == ["B", "A"]
    assert small_index.patient_events(1, end=T0, include_static=False).height == 0
    assert small_index.patient_events(1, codes=["A"])["numeric_value"].to_list() == [1.0, 3.0]
    assert small_index.patient_events(99).height == 0  # no events: empty, same columns
    assert small_index.patient_events(99).columns == everything.columns
    assert small_index.n_events == 7 and small_index.subject_ids.tolist() == [1, 2]
    with pytest.raises(ValueError, match="before start"):
        small_index.patient_events(1, start=T0, end=T0 - timedelta(seconds=1))
    with pytest.raises(TypeError, match="single string"):
        small_index.patient_events(1, codes="A")


def test_pickled_index_reopens(small_index: EventIndex) -> None:
    clone = pickle.loads(pickle.dumps(small_index))
    assert clone.patient_events(2).equals(small_index.patient_events(2))


def test_slices_equal_brute_force_on_the_demo(mimic_store: Path) -> None:
    index = EventIndex.open(mimic_store)
    assert index is not None
    all_events = pl.read_parquet(mimic_store / "events" / "data" / "*.parquet")
    rng = np.random.default_rng(0)
    for pid in rng.choice(index.subject_ids, size=8, replace=False):
        mine = all_events.filter(pl.col("subject_id") == pid)
        assert index.patient_events(int(pid)).equals(mine)
        times = mine["time"].drop_nulls()
        a, b = sorted(rng.choice(times.to_numpy(), size=2))
        a, b = a.astype(datetime), b.astype(datetime)
        expected = pl.concat(
            [mine.filter(pl.col("time").is_null()), mine.filter((pl.col("time") >= a) & (pl.col("time") < b))]
        )
        assert index.patient_events(int(pid), start=a, end=b).equals(expected)
        lo, hi, n_static = index.row_range(int(pid))
        assert hi - lo == mine.height and n_static == mine["time"].null_count()


def test_store_patient_events_use_the_index(mimic_store: Path) -> None:
    store = TimelineStore.open(mimic_store)
    pid = int(store.patients["patient_id"][0])
    assert store.patient(pid).events().equals(EventIndex.open(mimic_store).patient_events(pid))


# -- cross-modal: a store with recordings of MIMIC-IV subjects gets their events attached --------------
def _ecg_store(path: Path, recordings: list[tuple[int, int, datetime]]) -> Path:
    writer = StoreWriter(path, dataset="mimic-iv-ecg-test")
    rng = np.random.default_rng(0)
    for rid, pid, start in recordings:
        samples = rng.integers(-500, 500, size=(2, 500), dtype=np.int16)
        writer.add(
            Recording(
                rid,
                pid,
                start,
                "ecg",
                500.0,
                samples,
                ["I", "II"],
                ["mV", "mV"],
                [200.0, 200.0],
                [0.0, 0.0],
                source=f"ecg/{rid}",
            ),
            key=str(rid),
        )
    patients = pl.DataFrame({"patient_id": sorted({p for _, p, _ in recordings}), "split": "train"})
    return writer.finish(patients)


def test_attach_events_and_context_before_a_recording(mimic_store: Path, tmp_path: Path) -> None:
    meds_root = export_meds(mimic_store, tmp_path / "meds")
    admissions = (
        pl.read_parquet(mimic_store / "events" / "data" / "*.parquet")
        .filter(pl.col("code").str.starts_with("HOSPITAL_DISCHARGE"))
        .group_by("subject_id")
        .agg(pl.col("time").first())
        .sort("subject_id")
        .head(3)
    )
    # An ECG at the first discharge time of three subjects: the window ends exactly at events.
    recs = [(i + 1, int(s), t) for i, (s, t) in enumerate(admissions.iter_rows())]
    store_path = _ecg_store(tmp_path / "store", recs)
    attach_events(store_path, meds_root)
    store = TimelineStore.open(store_path)
    manifest = json.loads((store_path / "manifest.json").read_text())
    assert manifest["events"]["n_subjects"] == 3
    assert set(EventIndex.open(store_path).subject_ids.tolist()) == {r[1] for r in recs}
    all_events = pl.read_parquet(mimic_store / "events" / "data" / "*.parquet")
    for rid, pid, start in recs:
        got = context_events(store, rid, window_s=7 * 86400)
        lo = start - timedelta(days=7)
        mine = all_events.filter(pl.col("subject_id") == pid)
        expected = pl.concat(
            [
                mine.filter(pl.col("time").is_null()),
                mine.filter((pl.col("time") >= lo) & (pl.col("time") < start)),
            ]
        )
        assert got.equals(expected)
        assert (got["time"].drop_nulls() < start).all()  # nothing at or after the recording
        assert mine.filter(pl.col("time") == start).height > 0  # ... although events exist at that time
    with pytest.raises(StoreError, match="already holds events"):
        attach_events(store_path, meds_root)
    assert not list(store_path.glob(".attach-tmp-*"))
    with pytest.raises(ValueError, match="window_s must be > 0"):
        context_events(store, 1, window_s=0)
