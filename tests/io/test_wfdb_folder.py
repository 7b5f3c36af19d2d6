"""Generic WFDB folders and MIMIC-IV-ECG's layout, on real PhysioNet records."""

from __future__ import annotations

import shutil

import numpy as np
import wfdb

from clinseq.io import MIMICIVECGSource, WFDBSource, convert
from clinseq.timeline import TimelineStore


def test_every_sample_record_equals_rdrecord(wfdb_samples_root, tmp_path):
    # Formats 16 and 212, a .mat signal file with a byte offset, 2 to 15 channels, 250 to 1000 Hz.
    store = TimelineStore.open(convert(WFDBSource(wfdb_samples_root), tmp_path / "s", progress=False))
    names = sorted(p.stem for p in wfdb_samples_root.glob("*.hea"))
    assert store.recordings["source"].to_list() == names
    rng = np.random.default_rng(0)
    for row in store.recordings.iter_rows(named=True):
        ref = wfdb.rdrecord(str(wfdb_samples_root / row["source"]))
        ref_adc = wfdb.rdrecord(str(wfdb_samples_root / row["source"]), physical=False).d_signal
        assert row["sampling_rate_hz"] == ref.fs and row["n_samples"] == ref.sig_len
        for _ in range(5):
            length = int(rng.integers(1, min(row["n_samples"], 5000)))
            start = int(rng.integers(0, row["n_samples"] - length + 1))
            got = store.read_window(row["recording_id"], start, length)
            want = ref.p_signal[start : start + length].T
            np.testing.assert_allclose(
                got, want, rtol=1e-6, atol=1e-6 * np.nanmax(np.abs(want)), equal_nan=True
            )
            adc = store.read_window(row["recording_id"], start, length, units="adc")
            np.testing.assert_array_equal(adc, ref_adc[start : start + length].T)


def _mimic_layout(ptbxl_root, root, records):
    """MIMIC-IV-ECG's published layout holding real PTB-XL 500 Hz records (renamed to study ids)."""
    lines = ["subject_id,study_id,file_name,ecg_time,path"]
    for i, (src, subject) in enumerate(records):
        study = 40000000 + i
        rel = f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"
        (root / rel).parent.mkdir(parents=True)
        header = (ptbxl_root / (src + ".hea")).read_text().replace(src.split("/")[-1], str(study))
        (root / (rel + ".hea")).write_text(header)
        shutil.copy(ptbxl_root / (src + ".dat"), root / (rel + ".dat"))
        lines.append(f"{subject},{study},{study},2180-07-{10 + i} 08:0{i}:00,{rel}")
    (root / "record_list.csv").write_text("\n".join(lines) + "\n")


def test_mimic_iv_ecg_layout(ptbxl_root, tmp_path):
    src = tmp_path / "mimic-iv-ecg"
    hr = sorted(p.stem for p in (ptbxl_root / "records500/00000").glob("*.hea"))[:3]
    records = [
        (f"records500/00000/{hr[0]}", 10000032),
        (f"records500/00000/{hr[1]}", 10000032),
        (f"records500/00000/{hr[2]}", 10000084),
    ]
    _mimic_layout(ptbxl_root, src, records)
    store = TimelineStore.open(convert(MIMICIVECGSource(src), tmp_path / "s", progress=False))
    assert store.recordings["recording_id"].to_list() == [40000000, 40000001, 40000002]
    assert store.recordings["patient_id"].to_list() == [10000032, 10000032, 10000084]
    assert store.patient(10000032).recordings.height == 2
    assert str(store.recordings["start_time"][0]) == "2180-07-10 08:00:00"
    ref = wfdb.rdrecord(str(ptbxl_root / records[2][0]))
    np.testing.assert_allclose(store.read_recording(40000002), ref.p_signal.T, atol=1e-6)
    # Without record_list.csv the ids come from the paths.
    (src / "record_list.csv").unlink()
    by_path = TimelineStore.open(convert(MIMICIVECGSource(src), tmp_path / "s2", progress=False))
    assert by_path.recordings["patient_id"].to_list() == [10000032, 10000032, 10000084]


def test_mimic_iv_ecg_counts_and_a_record_missing_on_disk(ptbxl_root, tmp_path):
    import csv

    import pytest

    from clinseq.errors import SourceError

    src = tmp_path / "mimic-iv-ecg"
    hr = sorted(p.stem for p in (ptbxl_root / "records500/00000").glob("*.hea"))[:5]
    subjects = [10000032, 10000032, 10000084, 10000117, 10000117]
    _mimic_layout(ptbxl_root, src, [(f"records500/00000/{h}", s) for h, s in zip(hr, subjects, strict=True)])
    with (src / "record_list.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    store = TimelineStore.open(convert(MIMICIVECGSource(src), tmp_path / "s", progress=False))
    assert store.recordings.height == len(rows)  # counts equal the source csv
    assert store.patients.height == len({r["subject_id"] for r in rows})
    assert sorted(store.recordings["recording_id"]) == sorted(int(r["study_id"]) for r in rows)
    missing = rows[2]["path"]
    for ext in (".hea", ".dat"):
        (src / (missing + ext)).unlink()
    with pytest.raises(
        SourceError,
        match=rf"{missing}\.hea: listed in record_list\.csv \(study_id=40000002\) but missing on disk",
    ):
        convert(MIMICIVECGSource(src), tmp_path / "raise", progress=False)
    skip = TimelineStore.open(
        convert(MIMICIVECGSource(src), tmp_path / "skip", on_error="skip", progress=False)
    )
    assert skip.recordings.height == len(rows) - 1
    assert [s["key"] for s in skip.manifest["skipped"]] == [missing]
