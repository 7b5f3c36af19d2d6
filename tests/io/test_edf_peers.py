"""EDF+ layouts written by a peer library (pyedflib) from a real EEGMAT recording, against the peer
readers (pyedflib at each signal's own rate, mne): mixed rates (Sleep-EDF style), EDF+D, annotation-only.

Every file is written in ``tmp_path`` by the test; nothing generated is committed.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import mne
import numpy as np
import pytest

from clinseq.io import EEGSource, convert
from clinseq.io.edf import unit_scale
from clinseq.timeline import TimelineStore

pyedflib = pytest.importorskip("pyedflib", reason="pyedflib (dev extra) writes the EDF test files")

# Sleep-EDF's PSG channels: EEG and EOG at 100 Hz, the others at 1 Hz.
SLEEP_EDF = [
    ("EEG Fpz-Cz", "uV", 100, "EEG Fp1"),
    ("EEG Pz-Oz", "uV", 100, "EEG Pz"),
    ("EOG horizontal", "uV", 100, "EEG A2-A1"),
    ("Resp oro-nasal", "", 1, "EEG O1"),
    ("EMG submental", "uV", 1, "EEG O2"),
    ("Temp rectal", "DegC", 1, "EEG Cz"),
    ("Event marker", "", 1, "EEG Fz"),
]
STAGES = [(0.0, 30.0, "Sleep stage W"), (30.0, 30.0, "Sleep stage 1"), (60.0, 60.0, "Sleep stage 2")]


def _real(eegmat_root: Path) -> dict[str, np.ndarray]:
    raw = mne.io.read_raw_edf(eegmat_root / "Subject02_1.edf", verbose="error")
    return dict(zip(raw.ch_names, raw.get_data() * 1e6, strict=True))


def _write_psg(path: Path, real: dict[str, np.ndarray], seconds: int, annotations=STAGES) -> None:
    """A Sleep-EDF-style EDF+ file written by pyedflib: real EEGMAT signals taken every 5th (100 Hz)
    or every 500th (1 Hz) sample (no filtering: the file only has to hold real values)."""
    writer = pyedflib.EdfWriter(str(path), len(SLEEP_EDF), file_type=pyedflib.FILETYPE_EDFPLUS)
    signals, headers = [], []
    for label, unit, rate, source in SLEEP_EDF:
        values = real[source][:: 500 // rate][: seconds * rate]
        lo, hi = float(np.floor(values.min())) - 1, float(np.ceil(values.max())) + 1
        headers.append(
            {"label": label, "dimension": unit, "sample_frequency": rate, "physical_min": lo,
             "physical_max": hi, "digital_min": -32768, "digital_max": 32767}
        )  # fmt: skip
        signals.append(np.ascontiguousarray(values))
    writer.setSignalHeaders(headers)
    writer.setStartdatetime(datetime(1989, 4, 24, 16, 13))
    writer.writeSamples(signals)
    for onset, duration, text in annotations:
        writer.writeAnnotation(onset, duration, text)
    writer.close()


def _peer(path: Path) -> dict[str, tuple[float, np.ndarray, np.ndarray]]:
    with pyedflib.EdfReader(str(path)) as reader:
        return {
            reader.getLabel(i): (
                reader.getSampleFrequency(i),
                reader.readSignal(i, digital=True),
                reader.readSignal(i) * unit_scale(reader.getPhysicalDimension(i))[1],
            )
            for i in range(reader.signals_in_file)
        }


def test_sleep_edf_style_file_keeps_every_channel_at_its_rate(eegmat_root, tmp_path):
    src = tmp_path / "psg"
    src.mkdir()
    path = src / "SC4001E0-PSG.edf"
    _write_psg(path, _real(eegmat_root), seconds=120)
    store = TimelineStore.open(convert(EEGSource(src), tmp_path / "s", progress=False))
    rec = store.recordings.sort("rate_group")
    assert rec["sampling_rate_hz"].to_list() == [100.0, 1.0]
    assert rec["n_samples"].to_list() == [12000, 120]
    assert rec["session_id"].n_unique() == 1 and rec["dropped_channels"].to_list() == [[], []]
    labels = [label for labels in rec["source_channel_names"].to_list() for label in labels]
    assert sorted(labels) == sorted(label for label, *_ in SLEEP_EDF)  # no channel dropped
    peer = _peer(path)
    for row in rec.iter_rows(named=True):
        adc = store.read_recording(row["recording_id"], units="adc")
        physical = store.read_recording(row["recording_id"])
        for c, label in enumerate(row["source_channel_names"]):
            rate, want_adc, want = peer[label]
            assert rate == row["sampling_rate_hz"]
            np.testing.assert_array_equal(adc[c], want_adc)
            np.testing.assert_allclose(physical[c], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    # mne reads the 100 Hz channels at their rate (it upsamples the 1 Hz ones to 100 Hz)
    raw = mne.io.read_raw_edf(path, verbose="error")
    eeg = rec.row(0, named=True)
    want = np.stack([raw.get_data(picks=[label])[0] * 1e6 for label in eeg["source_channel_names"]])
    np.testing.assert_allclose(store.read_recording(eeg["recording_id"]), want, rtol=1e-6, atol=1e-3)
    # the annotations are mne's, on each recording of the session
    ann = mne.read_annotations(path)
    for row in rec.iter_rows(named=True):
        got = row["annotations"]
        assert [a["description"] for a in got] == list(ann.description)
        np.testing.assert_allclose([a["onset_s"] for a in got], ann.onset)
        np.testing.assert_allclose([a["duration_s"] for a in got], ann.duration)


def _make_discontinuous(path: Path, shift_from: int, gap_s: int) -> None:
    """Mark a pyedflib EDF+C file as EDF+D and move every data record from ``shift_from`` on by
    ``gap_s`` seconds (its time-keeping annotation; the file holds no other annotation)."""
    data = bytearray(path.read_bytes())
    data[192:197] = b"EDF+D"
    n_signals = int(data[252:256])
    n_records = int(data[236:244])
    body = bytes(data[256 : 256 * (n_signals + 1)]).decode("latin-1")
    spr_at = 216 * n_signals  # the samples-per-record fields follow 16+80+8*5+80 bytes per signal
    spr = [int(body[spr_at + 8 * i : spr_at + 8 * (i + 1)]) for i in range(n_signals)]
    assert body[: 16 * n_signals][-16:].strip() == "EDF Annotations"  # pyedflib writes it last
    record = 2 * sum(spr)
    at = 2 * sum(spr[:-1])
    width = 2 * spr[-1]
    header = 256 * (n_signals + 1)
    for r in range(shift_from, n_records):
        start = header + r * record + at
        old = bytes(data[start : start + width])
        onset = float(re.match(rb"^\+(\d+(?:\.\d*)?)\x14\x14", old)[1])
        tal = f"+{onset + gap_s:g}\x14\x14\x00".encode()
        data[start : start + width] = tal + b"\x00" * (width - len(tal))
    path.write_bytes(bytes(data))


def test_edf_plus_d_keeps_the_gaps_as_missing_samples(eegmat_root, tmp_path):
    src = tmp_path / "d"
    src.mkdir()
    path = src / "disc.edf"
    _write_psg(path, _real(eegmat_root), seconds=60, annotations=[])
    _make_discontinuous(path, shift_from=20, gap_s=7)
    raw = mne.io.read_raw_edf(path, verbose="error")  # mne reads it, records end to end
    store = TimelineStore.open(convert(EEGSource(src), tmp_path / "s", progress=False))
    rec = store.recordings.sort("rate_group")
    assert rec["edf_discontinuous"].to_list() == [True, True]
    assert rec["n_samples"].to_list() == [6700, 67]
    eeg = rec.row(0, named=True)
    got = store.read_recording(eeg["recording_id"])
    want = np.stack([raw.get_data(picks=[label])[0] * 1e6 for label in eeg["source_channel_names"]])
    assert np.isnan(got[:, 2000:2700]).all()
    kept = np.concatenate([got[:, :2000], got[:, 2700:]], axis=1)
    np.testing.assert_allclose(kept, want, rtol=1e-6, atol=1e-3)
    slow = store.read_recording(rec.row(1, named=True)["recording_id"])
    assert np.isnan(slow[:, 20:27]).all() and not np.isnan(slow[:, :20]).any()


def test_annotation_only_edf_plus_says_what_it_is(tmp_path):
    """A Sleep-EDF-style hypnogram: one 'EDF Annotations' signal, record duration 0."""
    src = tmp_path / "h"
    src.mkdir()
    tal = b"+0\x14\x14\x00+0\x1530\x14Sleep stage W\x14\x00+30\x1530\x14Sleep stage 1\x14\x00"
    n_bytes = 2 * ((len(tal) + 1) // 2)
    fields = [
        "0".ljust(8), "X X X X".ljust(80), "Startdate 24-APR-1989 X X X".ljust(80), "24.04.89", "16.13.00",
        str(512).ljust(8), "EDF+C".ljust(44), "1".ljust(8), "0".ljust(8), "1".ljust(4),
        "EDF Annotations".ljust(16), "".ljust(80), "".ljust(8), "-1".ljust(8), "1".ljust(8),
        "-32768".ljust(8), "32767".ljust(8), "".ljust(80), str(n_bytes // 2).ljust(8), "".ljust(32),
    ]  # fmt: skip
    path = src / "SC4001EC-Hypnogram.edf"
    path.write_bytes("".join(fields).encode("latin-1") + tal.ljust(n_bytes, b"\x00"))
    assert list(mne.read_annotations(path).description) == ["Sleep stage W", "Sleep stage 1"]
    store = TimelineStore.open(convert(EEGSource(src), tmp_path / "s", on_error="skip", progress=False))
    (skipped,) = store.manifest["skipped"]
    assert "annotation-only EDF+ file" in skipped["reason"] and skipped["path"].endswith("Hypnogram.edf")


def test_resample_on_request_gives_one_recording_of_every_channel(eegmat_root, tmp_path):
    """``resample_hz``: every channel of a mixed-rate file at one rate (mne's FFT resampling of each
    rate group), one float32 recording; nothing dropped."""
    src = tmp_path / "psg"
    src.mkdir()
    path = src / "SC4001E0-PSG.edf"
    _write_psg(path, _real(eegmat_root), seconds=60)
    store = TimelineStore.open(convert(EEGSource(src, resample_hz=50), tmp_path / "s", progress=False))
    (row,) = store.recordings.iter_rows(named=True)
    assert row["sampling_rate_hz"] == 50.0 and row["n_samples"] == 3000 and row["sample_dtype"] == "float32"
    assert sorted(row["source_channel_names"]) == sorted(label for label, *_ in SLEEP_EDF)
    peer = _peer(path)
    got = store.read_recording(row["recording_id"])
    for c, label in enumerate(row["source_channel_names"]):
        rate, _, values = peer[label]
        info = mne.create_info(1, rate, ch_types="misc", verbose="error")
        want = (
            mne.io.RawArray(values[None], info, verbose="error").resample(50, verbose="error").get_data()[0]
        )
        np.testing.assert_allclose(got[c], want, rtol=1e-5, atol=1e-4 * np.abs(want).max())
