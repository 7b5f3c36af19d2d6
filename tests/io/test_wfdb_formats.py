"""WFDB formats and layouts beyond the basic ones, against wfdb.rdrecord (the peer reader).

Real records: ``$CLINSEQ_DATA/wfdb_formats`` (wfdb-python's own test records: skew, no signal length,
FLAC 508/516/524, multi-frequency, multi-segment). Peer-written cases (multi-segment with gaps and
missing channels, format 32, headers without descriptions) are written in ``tmp_path`` by wfdb's own
writer from the real MIT-BIH record 100.
"""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import wfdb

from clinseq.io import WFDBSource, convert
from clinseq.io.wfdb_folder import wfdb_recordings
from clinseq.timeline import TimelineStore
from clinseq.timeline.records import GROUP_ID_STRIDE


def _assert_equals_rdrecord(store: TimelineStore, root: Path) -> int:
    """Every rate group of every recording equals wfdb.rdrecord's expanded physical signals; returns
    how many channels were compared."""
    compared = 0
    rec = store.recordings
    for source in rec["source"].unique().sort().to_list():
        ref = wfdb.rdrecord(str(root / source), smooth_frames=False)
        rows = rec.filter(rec["source"] == source).sort("rate_group")
        names = [n for names in rows["channel_names"].to_list() for n in names]
        assert sorted(names) == sorted(str(n) for n in ref.sig_name)  # no channel dropped
        for row in rows.iter_rows(named=True):
            assert row["session_id"] == row["recording_id"] % GROUP_ID_STRIDE
            got = store.read_recording(row["recording_id"])
            assert got.dtype == np.float32
            for c, name in enumerate(row["channel_names"]):
                j = [str(n) for n in ref.sig_name].index(name)
                want = ref.e_p_signal[j]
                assert row["sampling_rate_hz"] == pytest.approx(ref.fs * ref.samps_per_frame[j])
                assert got[c].shape == want.shape
                np.testing.assert_allclose(got[c], want, rtol=2**-23, atol=1e-12, equal_nan=True)
                np.testing.assert_array_equal(np.isnan(got[c]), np.isnan(want))
                compared += 1
    return compared


def test_every_record_equals_rdrecord(wfdb_formats_root, tmp_path):
    store = TimelineStore.open(convert(WFDBSource(wfdb_formats_root), tmp_path / "s", progress=False))
    assert store.manifest["skipped"] == []
    sources = set(store.recordings["source"])
    assert sources == {"100-no-len", "100skew", "flacformats", "mixedsignals", "multi-segment/041s/041s"}
    assert _assert_equals_rdrecord(store, wfdb_formats_root) == 2 + 2 + 3 + 6 + 7
    rec = store.recordings
    # multi-frequency: one recording per rate, linked by session_id
    mixed = rec.filter(rec["source"] == "mixedsignals").sort("rate_group")
    assert mixed["n_samples"].to_list() == [57600, 28800, 14400]
    assert mixed["session_id"].n_unique() == 1
    # the skewed record's stored ADC values are wfdb's (skew applied)
    skew = rec.filter(rec["source"] == "100skew").row(0, named=True)
    ref = wfdb.rdrecord(str(wfdb_formats_root / "100skew"), physical=False)
    np.testing.assert_array_equal(store.read_recording(skew["recording_id"], units="adc"), ref.d_signal.T)


def _segment(d: np.ndarray, name: str, out: Path, sig_name, fmt, gain, baseline) -> None:
    wfdb.wrsamp(
        name, fs=360, units=["mV"] * len(sig_name), sig_name=sig_name, d_signal=np.ascontiguousarray(d),
        fmt=fmt, adc_gain=gain, baseline=baseline, write_dir=str(out),
    )  # fmt: skip


def _master(out: Path, name: str, seg_name: list[str], seg_len: list[int]) -> None:
    master = wfdb.MultiRecord(
        record_name=name, n_sig=2, fs=360, sig_len=sum(seg_len), seg_name=seg_name, seg_len=seg_len
    )
    master.n_seg = len(seg_name)  # wfdb's writer checks this field but its constructor does not set it
    master.wrheader(write_dir=str(out))


@pytest.fixture(scope="module")
def segmented_root(wfdb_samples_root, tmp_path_factory) -> Path:
    """Multi-segment records written by wfdb from real MIT-BIH 100 samples: a fixed layout (wfdb reads no
    gap there), and a variable layout with a gap, an empty segment, and a last segment that lacks MLII
    and recalibrates V5 (format 16, another gain and baseline)."""
    d = wfdb.rdrecord(str(wfdb_samples_root / "100"), physical=False, sampto=6000).d_signal
    out = tmp_path_factory.mktemp("segmented")
    _segment(d[:2000], "fa", out, ["MLII", "V5"], ["212", "212"], [200, 200], [1024, 1024])
    _segment(d[3000:5000], "fb", out, ["MLII", "V5"], ["212", "212"], [200, 200], [1024, 1024])
    _master(out, "fixed", ["fa", "fb"], [2000, 2000])
    _segment(d[:1500], "va", out, ["MLII", "V5"], ["212", "212"], [200, 200], [1024, 1024])
    _segment((d[2000:3500, 1:] - 1024) * 2, "vb", out, ["V5"], ["16"], [400], [0])
    # The layout header (length 0, signal files "~") is written as text: wfdb's writer refuses "~".
    (out / "variable_layout.hea").write_text(
        "variable_layout 2 360 0\n~ 212 200/mV 12 1024 0 0 0 MLII\n~ 212 200/mV 12 1024 0 0 0 V5\n"
    )
    _master(out, "variable", ["variable_layout", "va", "~", "vb"], [0, 1500, 300, 1500])
    # wfdb's writer refuses an empty segment; its reader takes one (PhysioNet's headers have them)
    text = (out / "variable.hea").read_text().replace("variable/4", "variable/5")
    (out / "variable.hea").write_text(text.replace("~ 300\n", "~ 300\n~ 0\n"))
    assert wfdb.rdheader(str(out / "variable")).seg_len == [0, 1500, 300, 0, 1500]
    return out


def test_multisegment_records_equal_rdrecord(segmented_root, tmp_path):
    source = WFDBSource(segmented_root)
    assert [item.key for item in source.index()] == ["fixed", "variable"]  # segments are not records
    store = TimelineStore.open(convert(source, tmp_path / "s", progress=False))
    assert _assert_equals_rdrecord(store, segmented_root) == 4
    rec = store.recordings.sort("recording_id")
    assert rec["n_samples"].to_list() == [4000, 3300]
    fixed, variable = rec.row(0, named=True), rec.row(1, named=True)
    assert fixed["sample_dtype"] == "int16"  # stored integers: lossless
    assert variable["sample_dtype"] == "float32"  # V5 recalibrated between segments: physical values
    # read in worker processes, the file-backed samples travel by path: the same store
    parallel = TimelineStore.open(convert(source, tmp_path / "p", workers=2, progress=False))
    for rid in rec["recording_id"].to_list():
        np.testing.assert_array_equal(
            parallel.read_recording(rid, units="adc"), store.read_recording(rid, units="adc")
        )
    signal = store.read_recording(variable["recording_id"])
    assert np.isnan(signal[0, 1500:]).all() and not np.isnan(signal[0, :1500]).any()  # MLII missing
    assert np.isnan(signal[1, 1500:1800]).all()  # the gap


def test_a_long_record_is_never_held_in_memory(wfdb_samples_root, tmp_path):
    """120 segments of 20 000 frames: the loader holds one segment at a time (its output is file-backed),
    so its peak memory does not grow with the record's length."""
    d = wfdb.rdrecord(str(wfdb_samples_root / "100"), physical=False, sampto=20000).d_signal
    out = tmp_path / "long"
    out.mkdir()
    _segment(d, "seg", out, ["MLII", "V5"], ["16", "16"], [200, 200], [1024, 1024])
    names = []
    for k in range(120):
        name = f"s{k:03d}"
        shutil.copy(out / "seg.dat", out / f"{name}.dat")
        (out / f"{name}.hea").write_text((out / "seg.hea").read_text().replace("seg", name))
        names.append(name)
    (out / "seg.hea").unlink()
    (out / "seg.dat").unlink()
    _master(out, "long", names, [20000] * 120)
    total_bytes = 2 * 20000 * 120 * 2
    tracemalloc.start()
    recordings = wfdb_recordings(out / "long", recording_id=0, patient_id=0, source="long")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert recordings[0].samples.shape == (2, 2_400_000)
    assert isinstance(recordings[0].samples, np.memmap)
    assert peak < total_bytes / 4, f"peak {peak} bytes while loading a {total_bytes}-byte record"
    np.testing.assert_array_equal(recordings[0].samples[:, 20000 * 119 :], d.T)


def test_format_32_precision_worst_case(wfdb_samples_root, tmp_path):
    """A format-32 channel with values near ±2³¹ and a non-power-of-two gain: read_window returns
    float32 within half a float32 ulp of wfdb's float64 value (calibration in float64)."""
    base = wfdb.rdrecord(str(wfdb_samples_root / "100"), physical=False, sampto=5000).d_signal
    d = np.clip(base.astype(np.int64) * 2**20 - 2**30, -(2**31) + 1, 2**31 - 1).astype(np.int64)
    d[0] = [2**31 - 1, -(2**31) + 1]
    wfdb.wrsamp(
        "r32", fs=360, units=["mV", "mV"], sig_name=["MLII", "V5"], d_signal=d, fmt=["32", "32"],
        adc_gain=[2**31 / 7.3, 1e9 / 3], baseline=[-12345, 987654], write_dir=str(tmp_path),
    )  # fmt: skip
    (tmp_path / "db").mkdir()
    for ext in (".hea", ".dat"):
        shutil.move(tmp_path / f"r32{ext}", tmp_path / "db" / f"r32{ext}")
    store = TimelineStore.open(convert(WFDBSource(tmp_path / "db"), tmp_path / "s", progress=False))
    got = store.read_window(0, 0, 5000)
    want = wfdb.rdrecord(str(tmp_path / "db" / "r32")).p_signal.T
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))  # one rounding, of the float64 value
    np.testing.assert_array_equal(store.read_window(0, 0, 5000, units="adc"), d.T)


def test_headers_without_signal_descriptions_get_unique_names(wfdb_samples_root, tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    shutil.copy(wfdb_samples_root / "100.dat", db / "100.dat")
    lines = (wfdb_samples_root / "100.hea").read_text().splitlines()
    # Signal lines keep file, format, gain, resolution, zero, initial value and checksum, no description.
    lines = [" ".join(line.split()[:7]) if line.startswith("100.dat") else line for line in lines]
    (db / "100.hea").write_text("\n".join(lines) + "\n")
    assert wfdb.rdheader(str(db / "100")).sig_name == [None, None]
    store = TimelineStore.open(convert(WFDBSource(db), tmp_path / "s", progress=False))
    assert store.recordings["channel_names"].to_list() == [["signal_0", "signal_1"]]
