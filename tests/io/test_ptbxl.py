"""PTB-XL through the real loader: the store equals wfdb's own reading of every record."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import wfdb

from clinseq.errors import SourceError, StoreError
from clinseq.io import PTBXLSource, convert
from clinseq.timeline import TimelineStore


def _database_rows(root):
    with (root / "ptbxl_database.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_counts_equal_the_database_csv(ptbxl_store, ptbxl_root):
    rows = _database_rows(ptbxl_root)
    assert ptbxl_store.recordings.height == len(rows)
    assert ptbxl_store.patients.height == len({int(float(r["patient_id"])) for r in rows})
    assert sorted(ptbxl_store.recordings["recording_id"].to_list()) == sorted(int(r["ecg_id"]) for r in rows)
    assert ptbxl_store.manifest["counts"]["recordings"] == len(rows)
    repeat = ptbxl_store.recordings.group_by("patient_id").len().filter(pl_len() >= 2)
    assert repeat.height == 25  # the subset's documented repeat patients (PCLR positives)


def pl_len():
    import polars as pl

    return pl.col("len")


def test_windows_equal_wfdb_rdrecord(ptbxl_store, ptbxl_root):
    rng = np.random.default_rng(0)
    rec = ptbxl_store.recordings
    for row in rec.sample(40, seed=1).iter_rows(named=True):
        ref = wfdb.rdrecord(str(ptbxl_root / row["source"]))
        ref_adc = wfdb.rdrecord(str(ptbxl_root / row["source"]), physical=False).d_signal
        for _ in range(3):
            length = int(rng.integers(1, row["n_samples"]))
            start = int(rng.integers(0, row["n_samples"] - length + 1))
            channels = sorted(rng.choice(12, size=int(rng.integers(1, 13)), replace=False).tolist())
            physical = ptbxl_store.read_window(row["recording_id"], start, length, channels=channels)
            adc = ptbxl_store.read_window(row["recording_id"], start, length, channels=channels, units="adc")
            np.testing.assert_allclose(physical, ref.p_signal[start : start + length, channels].T, atol=1e-6)
            np.testing.assert_array_equal(adc, ref_adc[start : start + length, channels].T)
        assert row["channel_names"] == ref.sig_name
        assert row["units"] == ["mV"] * 12
        assert row["gain"] == list(ref.adc_gain)


def test_adc_window_is_a_view_of_the_memory_map(ptbxl_store):
    rid = int(ptbxl_store.recordings["recording_id"][0])
    window = ptbxl_store.read_window(rid, 10, 200, units="adc")
    assert window.dtype == np.int16
    assert not window.flags.owndata and not window.flags.writeable  # read-only view of the mmap
    assert window.base is not None


def test_labels_and_splits(ptbxl_store, ptbxl_root):
    rows = {int(r["ecg_id"]): r for r in _database_rows(ptbxl_root)}
    rec = ptbxl_store.recordings
    first = rec.filter(rec["recording_id"] == 1).row(0, named=True)
    assert first["labels_all"] == ["LVOLT", "NORM", "SR"]
    assert first["labels_superdiagnostic"] == ["NORM"]
    assert first["labels_rhythm"] == ["SR"]
    assert first["labels_form"] == ["LVOLT"]
    for row in rec.iter_rows(named=True):
        codes = eval(rows[row["recording_id"]]["scp_codes"])  # the csv's own python-literal dicts
        assert set(row["labels_all"]) == set(codes)
        assert json.loads(row["scp_codes"]) == codes
        assert row["strat_fold"] == int(rows[row["recording_id"]]["strat_fold"])
    split_of = dict(zip(ptbxl_store.patients["patient_id"], ptbxl_store.patients["split"], strict=True))
    for row in rec.iter_rows(named=True):
        want = {10: "test", 9: "val"}.get(row["strat_fold"], "train")
        assert split_of[row["patient_id"]] == want


def test_patient_timeline(ptbxl_store):
    counts = ptbxl_store.recordings.group_by("patient_id").len().sort("len", descending=True)
    pid, n = counts.row(0)
    timeline = ptbxl_store.patient(pid)
    assert timeline.recordings.height == n >= 2
    assert timeline.recordings["start_time"].is_sorted()
    with pytest.raises(StoreError, match="no patient"):
        ptbxl_store.patient(-5)
    with pytest.raises(StoreError, match="no events"):
        timeline.events()


def test_window_outside_recording_is_an_error(ptbxl_store):
    rid = int(ptbxl_store.recordings["recording_id"][0])
    with pytest.raises(StoreError, match="outside recording"):
        ptbxl_store.read_window(rid, 900, 200)
    with pytest.raises(StoreError, match="no recording"):
        ptbxl_store.read_window(10**9, 0, 10)


def test_500hz_missing_files_are_listed_when_skipped(ptbxl_root, tmp_path):
    # The subset lacks 109 of the records500 files: raise names the first, skip lists them all.
    with pytest.raises(
        SourceError, match=r"_hr\.hea: listed in ptbxl_database\.csv \(ecg_id=\d+\) but missing"
    ):
        convert(PTBXLSource(ptbxl_root, 500), tmp_path / "raise", progress=False)
    n_present = len(list((ptbxl_root / "records500").rglob("*.hea")))
    rows = _database_rows(ptbxl_root)
    store = TimelineStore.open(
        convert(PTBXLSource(ptbxl_root, 500), tmp_path / "skip", on_error="skip", workers=2, progress=False)
    )
    listed = {r["filename_hr"] for r in rows}
    on_disk = {
        str(p.relative_to(ptbxl_root).with_suffix("")) for p in (ptbxl_root / "records500").rglob("*.hea")
    }
    assert store.recordings.height == len(listed & on_disk) <= n_present
    skipped = store.manifest["skipped"]
    assert {s["key"] for s in skipped} == listed - on_disk
    assert all("missing on disk" in s["reason"] for s in skipped)
    assert set(store.recordings["sampling_rate_hz"].to_list()) == {500.0}


def test_unknown_sampling_rate(ptbxl_root):
    with pytest.raises(SourceError, match="unknown sampling rate 250 Hz"):
        PTBXLSource(ptbxl_root, 250)
