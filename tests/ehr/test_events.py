"""EventIndex: half-open windows, static events, per-patient slices equal brute force; cross-modal stores."""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinseq.errors import StoreError
from clinseq.io.meds import attach_events, export_meds
from clinseq.timeline import StoreWriter, TimelineStore
from clinseq.timeline.events import EVENT_SORT, LOCAL_CODE, sort_events
from clinseq.timeline.events_read import EventIndex
from clinseq.timeline.events_sort import canonical_sort
from clinseq.timeline.events_write import write_event_index
from clinseq.timeline.records import Recording

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
    small_index.patient_events(1, codes=["A"])  # caches built before pickling are not carried
    clone = pickle.loads(pickle.dumps(small_index))
    assert clone.patient_events(2).equals(small_index.patient_events(2))
    for _ in range(10):  # past the view threshold too
        assert clone.patient_events(1, codes=["A", "C"]).equals(
            small_index.patient_events(1, codes=["A", "C"])
        )


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


def _brute(mine: pl.DataFrame, start=None, end=None, codes=None, include_static=True) -> pl.DataFrame:
    """What a query must return, by filtering the patient's MEDS rows."""
    timed = mine.filter(pl.col("time").is_not_null())
    if start is not None:
        timed = timed.filter(pl.col("time") >= start)
    if end is not None:
        timed = timed.filter(pl.col("time") < end)
    parts = [mine.filter(pl.col("time").is_null())] if include_static else []
    out = pl.concat([*parts, timed])
    return out if codes is None else out.filter(pl.col("code").is_in(codes))


def test_code_filters_equal_brute_force_on_the_demo(mimic_store: Path) -> None:
    index = EventIndex.open(mimic_store)
    assert index is not None
    all_events = pl.read_parquet(mimic_store / "events" / "data" / "*.parquet")
    rng = np.random.default_rng(1)
    for pid in rng.choice(index.subject_ids, size=6, replace=False):
        mine = all_events.filter(pl.col("subject_id") == pid)
        codes = mine["code"].unique().sort().to_list()
        times = np.sort(mine["time"].drop_nulls().to_numpy())
        a, b = times[len(times) // 4].astype(datetime), times[3 * len(times) // 4].astype(datetime)
        one = [str(rng.choice(codes))]
        many = [str(c) for c in rng.choice(codes, size=min(40, len(codes)), replace=False)]
        two = [str(c) for c in rng.choice(codes, size=min(2, len(codes)), replace=False)]
        for query_codes in (one, two, many, [*one, "NOT A CODE"], ["NOT A CODE"], []):
            for start, end, static in ((None, None, True), (a, b, True), (a, None, False), (None, b, True)):
                got = index.patient_events(int(pid), start, end, codes=query_codes, include_static=static)
                assert got.equals(_brute(mine, start, end, query_codes, static)), (pid, query_codes, start)
        # Many scattered matches take the gather path; a few take slices: both give the same rows.
        assert index.patient_events(int(pid), codes=codes).equals(mine)


def test_repeated_code_sets_use_a_view_and_equal_brute_force(mimic_store: Path) -> None:
    index = EventIndex.open(mimic_store)
    assert index is not None
    all_events = pl.read_parquet(mimic_store / "events" / "data" / "*.parquet")
    codes = ["LAB//50912//mg/dL", "GENDER//F", "HOSPITAL_DISCHARGE//HOME"]  # timed and static codes
    for pid in index.subject_ids[:30]:
        mine = all_events.filter(pl.col("subject_id") == pid)
        times = np.sort(mine["time"].drop_nulls().to_numpy())
        a, b = times[len(times) // 5].astype(datetime), times[4 * len(times) // 5].astype(datetime)
        for start, end, static in ((None, None, True), (a, b, True), (a, b, False), (b, None, True)):
            got = index.patient_events(int(pid), start, end, codes=codes, include_static=static)
            assert got.equals(_brute(mine, start, end, codes, static)), (pid, start, end, static)
    assert index._views  # the code set was asked for often enough: later queries used its view
    assert index.patient_events(int(index.subject_ids[0]), codes=[]).height == 0


def test_as_of_boundaries_on_the_demo(mimic_store: Path) -> None:
    """start is inclusive, end exclusive: consecutive windows partition a timeline, and the events
    as of an admission's discharge hold none of its (discharge-timed) diagnoses."""
    index = EventIndex.open(mimic_store)
    assert index is not None
    events = pl.read_parquet(mimic_store / "events" / "data" / "*.parquet")
    discharges = events.filter(pl.col("code").str.starts_with("HOSPITAL_DISCHARGE//")).head(20)
    n_diagnoses = 0
    for pid, t in discharges.select("subject_id", "time").iter_rows():
        diagnoses_now = events.filter(
            (pl.col("subject_id") == pid) & (pl.col("time") == t) & pl.col("code").str.starts_with("DIAG")
        ).height
        before = index.patient_events(pid, end=t)
        assert not before.filter(pl.col("time") == t).height  # nothing at the boundary itself
        upto = index.patient_events(pid, end=t + timedelta(microseconds=1))
        at_t = upto.filter(pl.col("code").str.starts_with("DIAG") & (pl.col("time") == t)).height
        assert at_t == diagnoses_now
        n_diagnoses += at_t
        at = index.patient_events(pid, start=t, include_static=False)
        assert at["time"].min() == t  # start is inclusive
        # [None, t) + [t, None) is the whole timeline, each event once.
        whole = index.patient_events(pid)
        assert pl.concat([before, at]).equals(whole)
    assert n_diagnoses > 0  # the boundary case is exercised


def test_index_maps_the_file_instead_of_copying_it(mimic_store: Path) -> None:
    """The events stay in the page cache (file-backed pages), not in the process's own memory."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs Linux /proc to tell file-backed from anonymous memory")

    def anon_kib() -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith("RssAnon"))
        return int(line.split()[1])

    size_kib = (mimic_store / "events.arrow").stat().st_size // 1024
    warm = EventIndex.open(mimic_store)  # polars' and numpy's one-time set-up is not the index's
    assert warm is not None and sum(warm.patient_events(int(p)).height for p in warm.subject_ids)
    before = anon_kib()
    index = EventIndex.open(mimic_store)
    assert index is not None
    n = sum(index.patient_events(int(p)).height for p in index.subject_ids)
    grown = anon_kib() - before
    assert n == index.n_events
    assert grown < size_kib // 2, f"opening grew anonymous memory by {grown} KiB for a {size_kib} KiB file"


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
    assert store.verify() == []  # the attached files are in the manifest's file table
    assert set(EventIndex.open(store_path).subject_ids.tolist()) == {r[1] for r in recs}
    all_events = pl.read_parquet(mimic_store / "events" / "data" / "*.parquet")
    for rid, pid, start in recs:
        got = store.context_events(rid, window_s=7 * 86400)
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
        store.context_events(1, window_s=0)


# -- the canonical order ----------------------------------------------------------------------------------
_CODES = ["A", "B", "LAB//50912//mg/dL", "LAB//50912//UNK", "Z", "a", "é", ""]


@st.composite
def _event_frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(0, 40))
    whole_seconds = draw(st.booleans())  # the packed-key path needs whole seconds
    wide = draw(st.booleans())  # times seconds apart or spread over five centuries (large offsets)
    step = 1_000_000 if whole_seconds else 1
    span = 16_000_000_000 * 1_000_000 if wide else 10 * step
    times = st.one_of(
        st.none(), st.integers(0, span // step).map(lambda k: T0 + timedelta(microseconds=k * step))
    )
    values = st.one_of(st.none(), st.sampled_from([0.0, -1.5, 2.0, float("nan"), float("inf")]))
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from([1, 2, 7, 10_000_000, 1 << 40]),  # dense and sparse subject ids
                times,
                st.sampled_from(_CODES),
                values,
                st.one_of(st.none(), st.sampled_from(["x", "y", "___"])),
            ),
            min_size=n,
            max_size=n,
        )
    )
    return pl.DataFrame(
        rows,
        schema={
            "subject_id": pl.Int64,
            "time": pl.Datetime("us"),
            "code": pl.String,
            "numeric_value": pl.Float32,
            "text_value": pl.String,
        },
        orient="row",
    )


@given(_event_frames())
@settings(max_examples=150, deadline=None)
def test_canonical_sort_equals_the_reference_order(events: pl.DataFrame) -> None:
    fast, codes = canonical_sort(events)
    assert fast.select(EVENT_SORT).equals(sort_events(events), null_equal=True)
    assert codes.is_sorted() and codes.n_unique() == codes.len()
    assert (codes.gather(fast[LOCAL_CODE]) == fast["code"]).all()


def test_code_index_is_the_row_of_the_code_list(mimic_store: Path) -> None:
    import pyarrow as pa

    with pa.memory_map(str(mimic_store / "events.arrow")) as source:
        table = pa.ipc.open_file(source).read_all()
    codes = EventIndex.open(mimic_store).codes
    frame = pl.from_arrow(table)
    assert (codes.gather(frame["code_index"]) == frame["code"]).all()
    assert codes.n_unique() == codes.len() == frame["code"].n_unique()


def test_arrow_slices_hold_the_same_events(mimic_store: Path) -> None:
    index = EventIndex.open(mimic_store)
    assert index is not None
    pid = int(index.subject_ids[3])
    times = index.patient_events(pid)["time"].drop_nulls()
    a, b = times[len(times) // 3], times[2 * len(times) // 3]
    for start, end, static in ((None, None, True), (a, b, True), (a, b, False)):
        table = index.patient_arrow(pid, start, end, include_static=static)
        frame = pl.from_arrow(table)
        assert frame.select(EVENT_SORT).equals(index.patient_events(pid, start, end, include_static=static))
        assert (index.codes.gather(frame["code_index"]) == frame["code"]).all()
