"""Annotations as store events, against the peer readers: WFDB annotation files (wfdb.rdann) and EDF+
annotations (mne.read_annotations). Peer-written files are made in ``tmp_path`` from real records."""

from __future__ import annotations

import shutil
from datetime import date, datetime, time, timedelta
from pathlib import Path

import mne
import numpy as np
import polars as pl
import pytest
import wfdb

from clinseq.errors import SourceError
from clinseq.io import EEGSource, WFDBSource, convert
from clinseq.timeline import TimelineStore


def _rdann_events(path: Path, ext: str) -> tuple[np.ndarray, list[str], list[str | None]]:
    ann = wfdb.rdann(str(path), ext)
    aux = [(a or "").rstrip("\x00").strip() or None for a in (ann.aux_note or [""] * len(ann.sample))]
    return ann.sample, [f"WFDB//{ext}//{s}" for s in ann.symbol], aux


def test_mit_bih_beat_labels_equal_rdann(wfdb_samples_root, tmp_path):
    """Record 100 has no start date: its 2274 labels are the recording's events (by sample), not on a
    patient timeline, and the manifest says so."""
    store = TimelineStore.open(convert(WFDBSource(wfdb_samples_root), tmp_path / "s", progress=False))
    row = store.recordings.filter(pl.col("source") == "100").row(0, named=True)
    assert row["annotators"] == ["atr"]
    events = store.recording_events(row["recording_id"])
    sample, code, aux = _rdann_events(wfdb_samples_root / "100", "atr")
    np.testing.assert_array_equal(events["sample"].to_numpy(), sample)
    assert events["code"].to_list() == code and events["text_value"].to_list() == aux
    assert store.manifest["annotations"]["written"] == len(sample) == 2274
    assert store.manifest["annotations"]["not_on_timeline_no_start_time"] == len(sample)
    window = store.recording_events(row["recording_id"], 3600, 360)  # seconds 10 to 11
    assert window["sample"].to_list() == [s for s in sample.tolist() if 3600 <= s < 3960]


def test_dated_record_annotations_are_on_the_patient_timeline(wfdb_samples_root, tmp_path):
    """MIT-BIH 100 rewritten by wfdb with a start date and its labels (plus a rhythm note) rewritten by
    wrann: the store's timeline events equal rdann's, timed start + sample / fs."""
    ref = wfdb.rdrecord(str(wfdb_samples_root / "100"), physical=False, sampto=36000)
    db = tmp_path / "db"
    db.mkdir()
    start = datetime(2150, 3, 14, 9, 30, 0)
    wfdb.wrsamp(
        "r100", fs=360, units=ref.units, sig_name=ref.sig_name, d_signal=ref.d_signal, fmt=["212", "212"],
        adc_gain=ref.adc_gain, baseline=ref.baseline, base_date=start.date(), base_time=start.time(),
        write_dir=str(db),
    )  # fmt: skip
    ann = wfdb.rdann(str(wfdb_samples_root / "100"), "atr", sampto=36000)
    aux = [(a or "").rstrip("\x00") for a in ann.aux_note]
    aux[10] = "(AFIB"
    wfdb.wrann("r100", "atr", ann.sample, symbol=ann.symbol, aux_note=aux, fs=360, write_dir=str(db))
    (db / "r100.qrs").write_bytes(b"\x00")  # an odd byte count: wfdb.rdann cannot read it
    store = TimelineStore.open(convert(WFDBSource(db), tmp_path / "s", progress=False))
    row = store.recordings.row(0, named=True)
    assert row["start_time"] == start
    sample, code, want_aux = _rdann_events(db / "r100", "atr")
    assert want_aux[10] == "(AFIB"
    timeline = store.event_index.patient_events(row["patient_id"])
    assert timeline["code"].to_list() == code
    assert timeline["text_value"].to_list() == want_aux
    want_times = [start + timedelta(microseconds=round(s / 360 * 1e6)) for s in sample.tolist()]
    assert timeline["time"].to_list() == want_times
    assert store.manifest["annotations"]["on_timeline"] == len(sample)
    # the unreadable annotation file is listed, not dropped silently
    (unread,) = store.manifest["annotations"]["unread_files"]
    assert unread.startswith("r100.qrs: wfdb.rdann cannot read it")


def test_edf_annotations_equal_mne(eegmat_root, tmp_path):
    """A Sleep-EDF-style file (EEG 100 Hz + 1 Hz channels) written by pyedflib with sleep stages: the
    stages are events of the session's first recording and on the patient's timeline."""
    from tests.io.test_edf_peers import STAGES, _real, _write_psg

    pytest.importorskip("pyedflib")
    src = tmp_path / "psg"
    src.mkdir()
    path = src / "SC4001E0-PSG.edf"
    _write_psg(path, _real(eegmat_root), seconds=120)
    store = TimelineStore.open(convert(EEGSource(src), tmp_path / "s", progress=False))
    want = mne.read_annotations(path)
    assert list(want.description) == [text for _, _, text in STAGES]
    rec = store.recordings.sort("rate_group")
    for row in rec.iter_rows(named=True):  # both rates see the session's annotations
        events = store.recording_events(row["recording_id"])
        assert events["code"].to_list() == [f"EDF//{d}" for d in want.description]
        np.testing.assert_allclose(events["onset_s"].to_numpy(), want.onset)
        np.testing.assert_allclose(events["duration_s"].to_numpy(), want.duration)
    timeline = store.event_index.patient_events(rec["patient_id"][0])
    start = datetime.combine(date(1989, 4, 24), time(16, 13))
    assert timeline["time"].to_list() == [start + timedelta(seconds=float(o)) for o in want.onset]
    assert timeline["numeric_value"].to_list() == pytest.approx(list(want.duration))
    assert store.manifest["annotations"]["written"] == len(want)


def test_eegmat_has_no_annotations_and_no_event_tables(eegmat_root, tmp_path):
    src = tmp_path / "one"
    src.mkdir()
    shutil.copy(eegmat_root / "Subject02_2.edf", src / "Subject02_2.edf")
    store = TimelineStore.open(convert(EEGSource(src), tmp_path / "s", progress=False))
    want = mne.read_annotations(src / "Subject02_2.edf")
    assert store.recording_events(22).height == len(want)


def _fail_at(monkeypatch, source_class, fail_key):
    """Make ``source_class`` fail on one record, like a run that dies there. The class itself is patched
    (not subclassed): a conversion's identity names the source class and its options, and only the same
    conversion may adopt the leftover folder."""
    load = source_class.load

    def failing_load(self, item):
        if item.key == fail_key:
            raise SourceError(item.path, "simulated failure")
        return load(self, item)

    monkeypatch.setattr(source_class, "load", failing_load)


def test_resumed_conversion_keeps_every_annotation_once(
    wfdb_samples_root, wfdb_formats_root, tmp_path, monkeypatch
):
    """Records with annotations, several rates and segments, one part each: a conversion that stops after
    the annotated record and resumes gives the same recordings, annotations and manifest."""
    src = tmp_path / "db"
    shutil.copytree(wfdb_formats_root, src)
    for ext in ("hea", "dat", "atr"):
        shutil.copy(wfdb_samples_root / f"100.{ext}", src / f"100.{ext}")
    reference = TimelineStore.open(
        convert(WFDBSource(src), tmp_path / "ref", part_max_bytes=1, progress=False)
    )
    keys = [item.key for item in WFDBSource(src).index()]
    assert keys.index("100") < keys.index("flacformats")
    out = tmp_path / "store"
    _fail_at(monkeypatch, WFDBSource, "flacformats")
    with pytest.raises(SourceError, match="simulated failure"):
        convert(WFDBSource(src), out, part_max_bytes=1, progress=False)
    monkeypatch.undo()
    resumed = TimelineStore.open(convert(WFDBSource(src), out, part_max_bytes=1, progress=False))
    assert resumed.manifest["resumed_from"]
    assert resumed.recordings.drop("part", "row").equals(reference.recordings.drop("part", "row"))
    assert pl.read_parquet(out / "recording_events.parquet").equals(
        pl.read_parquet(tmp_path / "ref" / "recording_events.parquet")
    )
    assert resumed.manifest["annotations"] == reference.manifest["annotations"]
    assert resumed.manifest["annotations"]["written"] == 2274
