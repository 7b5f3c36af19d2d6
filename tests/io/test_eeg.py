"""EEG through the real loader, on the real EEGMAT EDF files (and renamed / edited copies of them).

Independent references: ``mne.io.read_raw_edf(...).get_data()`` for physical values, a few lines of
numpy below for the integers stored in the EDF data records, ``subject-info.csv`` read with ``csv``.
"""

from __future__ import annotations

import csv
import re
import shutil
from datetime import datetime
from pathlib import Path

import mne
import numpy as np
import pytest

from clinseq.errors import ConfigError, SourceError
from clinseq.io import EEGSource, convert
from clinseq.io.eeg_channels import canonical_electrode, normalize_channel
from clinseq.io.eeg_layouts import tuh_subject_number
from clinseq.timeline import TimelineStore

EEGMAT_NAMES = [
    "Fp1", "Fp2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6", "P3", "P4", "O1", "O2",
    "Fz", "Cz", "Pz", "A2-A1", "ECG",
]  # fmt: skip
SIGNAL_FIELDS = (
    ("label", 16), ("transducer", 80), ("dimension", 8), ("physical_min", 8), ("physical_max", 8),
    ("digital_min", 8), ("digital_max", 8), ("prefiltering", 80), ("samples_per_record", 8), ("reserved", 32),
)  # fmt: skip


# -- an independent reading of the EDF files ----------------------------------------------------------
def _n_signals(data: bytes) -> int:
    return int(data[252:256])


def _field(data: bytes, name: str, signal: int) -> tuple[int, int]:
    """Byte offset and width of one per-signal header field."""
    ns, offset = _n_signals(data), 256
    for field, width in SIGNAL_FIELDS:
        if field == name:
            return offset + signal * width, width
        offset += width * ns
    raise KeyError(name)


def _get(data: bytes, name: str, signal: int) -> str:
    offset, width = _field(data, name, signal)
    return data[offset : offset + width].decode("latin-1").strip()


def _put(data: bytearray, name: str, signal: int, value: str) -> None:
    offset, width = _field(data, name, signal)
    data[offset : offset + width] = value.ljust(width).encode("latin-1")


def edf_integers(path: Path) -> dict[str, np.ndarray]:
    """Label → the int16 samples of each signal, straight from the data records."""
    data = path.read_bytes()
    ns, header_bytes, n_records = _n_signals(data), int(data[184:192]), int(data[236:244])
    spr = [int(_get(data, "samples_per_record", i)) for i in range(ns)]
    records = np.frombuffer(data, "<i2", offset=header_bytes).reshape(n_records, sum(spr))
    starts = np.cumsum([0, *spr])
    return {
        _get(data, "label", i): records[:, starts[i] : starts[i + 1]].reshape(-1)
        for i in range(ns)
        if _get(data, "label", i) != "EDF Annotations"
    }


def mne_microvolts(path: Path, **kw) -> np.ndarray:
    return mne.io.read_raw_edf(path, verbose="error", **kw).get_data() * 1e6


@pytest.fixture(scope="module")
def eegmat_store(eegmat_root, tmp_path_factory) -> TimelineStore:
    out = tmp_path_factory.mktemp("eeg") / "eegmat"
    return TimelineStore.open(convert(EEGSource(eegmat_root), out, workers=2, progress=False))


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


# -- EEGMAT as published ------------------------------------------------------------------------------
def test_counts_ids_and_subject_info_equal_the_files(eegmat_store, eegmat_root):
    files = sorted(eegmat_root.glob("*.edf"))
    parsed = [re.fullmatch(r"Subject(\d+)_([12])\.edf", f.name) for f in files]
    rec = eegmat_store.recordings
    assert eegmat_store.manifest["dataset"] == "eegmat"
    assert eegmat_store.manifest["options"]["layout"] == "eegmat"  # detected ("auto")
    listed = {line.split()[1] for line in (eegmat_root / "SHA256SUMS.txt").read_text().splitlines()}
    # every file, against PhysioNet's list
    assert eegmat_store.manifest["sha256sums_checked_files"] == len(listed & {f.name for f in files})
    assert rec.height == len(files) > 0
    assert rec["source"].to_list() == [f.name for f in files]
    assert rec["recording_id"].to_list() == [10 * int(m[1]) + int(m[2]) for m in parsed]
    assert eegmat_store.patients["patient_id"].to_list() == sorted({int(m[1]) for m in parsed})
    assert rec["condition"].to_list() == ["rest" if m[2] == "1" else "task" for m in parsed]
    with (eegmat_root / "subject-info.csv").open(newline="") as f:
        info = {int(r["Subject"][7:]): r for r in csv.DictReader(f)}
    for row in eegmat_store.patients.iter_rows(named=True):
        source = info[row["patient_id"]]
        assert row["n_recordings"] == 2
        assert (row["age"], row["sex"], row["count_quality"]) == (
            int(source["Age"]),
            source["Gender"],
            int(source["Count quality"]),
        )
    assert set(rec["modality"]) == {"eeg"} and set(rec["sampling_rate_hz"]) == {500.0}


def test_windows_equal_mne_and_the_edf_integers(eegmat_store, eegmat_root):
    rng = np.random.default_rng(0)
    for row in eegmat_store.recordings.iter_rows(named=True):  # every recording
        path = eegmat_root / row["source"]
        ref = mne_microvolts(path)
        ints = edf_integers(path)
        ref_adc = np.stack([ints[label] for label in row["source_channel_names"]])
        assert ref.shape == ref_adc.shape == (row["n_channels"], row["n_samples"])
        scale = np.abs(ref).max(axis=1, keepdims=True)
        for _ in range(6):
            length = int(rng.integers(1, 5000))
            start = int(rng.integers(0, row["n_samples"] - length + 1))
            channels = sorted(rng.choice(21, size=int(rng.integers(1, 22)), replace=False).tolist())
            got = eegmat_store.read_window(row["recording_id"], start, length, channels=channels)
            want = ref[channels, start : start + length]
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-6 * scale[channels].max())
            adc = eegmat_store.read_window(row["recording_id"], start, length, channels=channels, units="adc")
            assert adc.dtype == np.int16
            np.testing.assert_array_equal(adc, ref_adc[channels, start : start + length])
        np.testing.assert_array_equal(eegmat_store.read_recording(row["recording_id"], units="adc"), ref_adc)


def test_channels_units_and_start_time(eegmat_store, eegmat_root):
    for row in eegmat_store.recordings.iter_rows(named=True):
        raw = mne.io.read_raw_edf(eegmat_root / row["source"], verbose="error")
        assert row["channel_names"] == EEGMAT_NAMES
        assert row["source_channel_names"] == raw.ch_names
        assert row["channel_types"] == ["eeg"] * 20 + ["ecg"]
        assert row["units"] == ["uV"] * 21  # the ECG channel is in mV in the file: read back in µV
        assert row["start_time"] == raw.info["meas_date"].replace(tzinfo=None)
        assert row["dropped_channels"] == [] and row["annotations"] == []
        assert row["sample_dtype"] == "int16" and row["file_format"] == "edf"


def test_adc_window_is_a_view_of_the_memory_map(eegmat_store):
    window = eegmat_store.read_window(21, 1000, 500, units="adc")
    assert not window.flags.owndata and not window.flags.writeable


# -- channel names -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("label", "name", "kind"),
    [
        ("EEG FP1-REF", "Fp1", "eeg"),  # TUH, average-reference montage
        ("EEG FP1-LE", "Fp1", "eeg"),  # TUH, linked ears
        ("EEG FZ-REF", "Fz", "eeg"),
        ("Fc5.", "FC5", "eeg"),  # EEGMMIDB pads labels with dots
        ("Fcz.", "FCz", "eeg"),
        ("T9..", "T9", "eeg"),
        ("Iz..", "Iz", "eeg"),
        ("FP1", "Fp1", "eeg"),
        ("EEG T3", "T3", "eeg"),  # old nomenclature kept as recorded
        ("EEG A2-A1", "A2-A1", "eeg"),  # a bipolar derivation keeps both ends
        ("FP1-F7", "Fp1-F7", "eeg"),
        ("ECG ECG", "ECG", "ecg"),
        ("EEG EKG1-REF", "EKG1", "ecg"),  # TUH files ECG under the EEG prefix
        ("EEG LOC-REF", "LOC", "eog"),
        ("EOG horizontal", "EOG horizontal", "eog"),
        ("EMG-REF", "EMG", "emg"),
        ("PHOTIC-REF", "PHOTIC", "stim"),
        ("IBI", "IBI", "misc"),
        ("EEG 26-REF", "26", "eeg"),
        ("EEG SP1-REF", "SP1", "eeg"),
    ],
)
def test_channel_names_are_normalised(label, name, kind):
    assert normalize_channel(label) == (name, kind)


def test_modern_ten_twenty_names_on_request():
    old = ["EEG T3-REF", "EEG T4-REF", "EEG T5-REF", "EEG T6-REF", "T5-O1"]
    assert [normalize_channel(x, ten_twenty="modern")[0] for x in old] == ["T7", "T8", "P7", "P8", "P7-O1"]


def test_every_standard_10_05_name_is_its_own_canonical_spelling():
    # mne's 10-05 montage (Oostenveld & Praamstra 2001) is the independent list of spellings.
    kind = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    names = mne.channels.make_standard_montage(kind).ch_names
    assert len(names) > 300
    for name in names:
        assert canonical_electrode(name.upper()) == name
        assert canonical_electrode(name.lower()) == name
    assert canonical_electrode("EKG1") is None and canonical_electrode("F11") is None


# -- resampling ---------------------------------------------------------------------------------------
def test_resample_gives_mnes_own_resample(eegmat_root, tmp_path):
    src = tmp_path / "src"
    names = ["Subject03_2.edf", "Subject07_2.edf"]
    for name in names:
        _copy(eegmat_root / name, src / name)
    store = TimelineStore.open(
        convert(EEGSource(src, resample_hz=128), tmp_path / "s", progress=False)  # 500 → 128 Hz
    )
    assert store.manifest["options"]["resample_hz"] == 128.0
    for row, name in zip(store.recordings.iter_rows(named=True), names, strict=True):
        raw = mne.io.read_raw_edf(src / name, preload=True, verbose="error")
        assert row["n_samples"] == round(raw.n_times * 128 / 500)  # 31000 samples at 500 Hz → 7936
        assert row["sampling_rate_hz"] == 128.0 and row["sample_dtype"] == "float32"
        assert row["gain"] == [1.0] * 21 and row["baseline"] == [0.0] * 21
        want = raw.resample(128, verbose="error").get_data() * 1e6
        got = store.read_recording(row["recording_id"])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


# -- the other published layouts, built from the real files -------------------------------------------
def _add_annotation(path: Path, record: int, tal: bytes) -> None:
    """Write an EDF+ annotation (a time-stamped annotation list) into one record of a real file."""
    data = bytearray(path.read_bytes())
    ns, header_bytes = _n_signals(data), int(data[184:192])
    spr = [int(_get(data, "samples_per_record", i)) for i in range(ns)]
    assert _get(data, "label", ns - 1) == "EDF Annotations"
    start = header_bytes + record * sum(spr) * 2 + sum(spr[:-1]) * 2
    keeping = f"+{record}\x14\x14\x00".encode()  # the record's own time-keeping TAL, as in the file
    assert data[start : start + len(keeping)] == keeping
    data[start + len(keeping) : start + len(keeping) + len(tal)] = tal
    path.write_bytes(bytes(data))


def test_eegmmidb_layout(eegmat_root, tmp_path):
    src = tmp_path / "eegmmidb" / "files"
    layout = {
        "S001/S001R01.edf": "Subject02_1.edf",
        "S001/S001R04.edf": "Subject02_2.edf",
        "S002/S002R14.edf": "Subject05_2.edf",
    }
    for dst, name in layout.items():
        _copy(eegmat_root / name, src / dst)
    _add_annotation(src / "S001/S001R04.edf", 3, b"+3.25\x154.1\x14T1\x14\x00")
    source = EEGSource(src)
    assert source.layout == "eegmmidb" and source.dataset == "eegmmidb"
    store = TimelineStore.open(convert(source, tmp_path / "s", progress=False))
    rec = store.recordings
    assert rec["recording_id"].to_list() == [101, 104, 214]
    assert rec["patient_id"].to_list() == [1, 1, 2]
    assert rec["run"].to_list() == [1, 4, 14]
    assert rec["task"].to_list() == [
        "baseline_eyes_open",
        "imagine_left_right_fist",
        "imagine_both_fists_feet",
    ]
    assert store.patients["n_recordings"].to_list() == [2, 1]
    assert rec["annotations"].to_list()[1] == [{"onset_s": 3.25, "duration_s": 4.1, "description": "T1"}]
    raw = mne.io.read_raw_edf(src / "S001/S001R04.edf", verbose="error")
    assert [(a["onset"], a["duration"], a["description"]) for a in raw.annotations] == [(3.25, 4.1, "T1")]
    for row in rec.iter_rows(named=True):
        want = mne_microvolts(eegmat_root / layout[row["source"]])
        np.testing.assert_allclose(store.read_recording(row["recording_id"]), want, rtol=1e-6, atol=1e-3)


def test_tuh_layouts(eegmat_root, tmp_path):
    # TUEG v2: edf/{000}/{subject}/s{NNN}_{date}/{montage}/{subject}_s{NNN}_t{NNN}.edf
    tueg = tmp_path / "tueg" / "edf" / "000"
    files = {
        "aaaaaaab/s001_2015_12_30/01_tcp_ar/aaaaaaab_s001_t000.edf": "Subject02_2.edf",
        "aaaaaaab/s001_2015_12_30/01_tcp_ar/aaaaaaab_s001_t001.edf": "Subject03_2.edf",
        "aaaaaaab/s002_2016_01_04/02_tcp_le/aaaaaaab_s002_t000.edf": "Subject04_2.edf",
        "aaaaaabc/s001_2010_05_01/01_tcp_ar/aaaaaabc_s001_t000.edf": "Subject05_2.edf",
    }
    for dst, name in files.items():
        _copy(eegmat_root / name, tueg / dst)
    source = EEGSource(tmp_path / "tueg")
    assert source.layout == "tuh" and source.dataset == "tuh_eeg"
    store = TimelineStore.open(convert(source, tmp_path / "s", progress=False))
    rec = store.recordings
    assert tuh_subject_number("aaaaaaab") == 1 and tuh_subject_number("aaaaaabc") == 26 + 2
    assert tuh_subject_number("00000058") == 58
    assert rec["patient_id"].to_list() == [1, 1, 1, 28]
    assert rec["recording_id"].to_list() == [10**6 + 1000, 10**6 + 1001, 10**6 + 2000, 28 * 10**6 + 1000]
    assert rec["montage"].to_list() == ["01_tcp_ar", "01_tcp_ar", "02_tcp_le", "01_tcp_ar"]
    assert [str(d) for d in rec["session_date"]] == ["2015-12-30", "2015-12-30", "2016-01-04", "2010-05-01"]
    assert rec["edf_sex"].to_list() == ["M", "M", "M", "M"]  # the EDF patient field's sex token
    assert store.patients["n_recordings"].to_list() == [3, 1]
    for row in rec.iter_rows(named=True):
        want = edf_integers(eegmat_root / files[row["source"].removeprefix("edf/000/")])
        got = store.read_recording(row["recording_id"], units="adc")
        np.testing.assert_array_equal(got, np.stack([want[label] for label in row["source_channel_names"]]))

    # TUAB v3: edf/{train|eval}/{normal|abnormal}/01_tcp_ar/{subject}_s{NNN}_t{NNN}.edf
    tuab = tmp_path / "tuab" / "edf"
    _copy(eegmat_root / "Subject06_2.edf", tuab / "train/normal/01_tcp_ar/aaaaamye_s001_t000.edf")
    _copy(eegmat_root / "Subject07_2.edf", tuab / "eval/abnormal/01_tcp_ar/aaaaaaaa_s004_t000.edf")
    ab = TimelineStore.open(
        convert(EEGSource(tmp_path / "tuab", layout="tuh"), tmp_path / "ab", progress=False)
    )
    assert ab.recordings["tuh_label"].to_list() == ["abnormal", "normal"]  # sorted by patient
    assert ab.patients.select("subject", "split").rows() == [("aaaaaaaa", "test"), ("aaaaamye", "train")]


def test_tuh_duplicate_montage_is_an_error_of_that_file(eegmat_root, tmp_path):
    base = tmp_path / "tusz" / "edf" / "eval" / "aaaaaqvx" / "s003_2015_08_24"
    _copy(eegmat_root / "Subject02_2.edf", base / "01_tcp_ar" / "aaaaaqvx_s003_t000.edf")
    _copy(eegmat_root / "Subject03_2.edf", base / "03_tcp_ar_a" / "aaaaaqvx_s003_t000.edf")
    with pytest.raises(SourceError, match=r"03_tcp_ar_a/aaaaaqvx_s003_t000\.edf: same recording id"):
        convert(EEGSource(tmp_path / "tusz"), tmp_path / "s", progress=False)
    store = TimelineStore.open(
        convert(EEGSource(tmp_path / "tusz"), tmp_path / "s", on_error="skip", progress=False)
    )
    assert store.recordings["montage"].to_list() == ["01_tcp_ar"]
    (skipped,) = store.manifest["skipped"]
    assert "03_tcp_ar_a" in skipped["key"] and "keep one of the two" in skipped["reason"]


def test_flat_layout_with_a_patient_regex_and_a_fif_file(eegmat_root, tmp_path):
    src = tmp_path / "flat"
    _copy(eegmat_root / "Subject08_2.edf", src / "sub-01" / "rest.edf")
    _copy(eegmat_root / "Subject09_2.edf", src / "sub-01" / "task.edf")
    raw = mne.io.read_raw_edf(eegmat_root / "Subject10_2.edf", preload=True, verbose="error")
    (src / "sub-17").mkdir()
    raw.save(src / "sub-17" / "task_raw.fif", verbose="error")  # the real recording, in mne's FIF
    source = EEGSource(src, patient_regex=r"(?P<patient>sub-\d+)/")
    assert source.layout == "flat"
    store = TimelineStore.open(convert(source, tmp_path / "s", progress=False))
    rec = store.recordings
    assert rec["source"].to_list() == ["sub-01/rest.edf", "sub-01/task.edf", "sub-17/task_raw.fif"]
    assert store.patients.height == 2 and sorted(store.patients["patient_key"]) == ["sub-01", "sub-17"]
    assert rec["patient_id"].n_unique() == 2 and rec["recording_id"].to_list() == [0, 1, 2]
    fif = rec.row(2, named=True)
    assert fif["file_format"] == "fif" and fif["sample_dtype"] == "float32"
    assert fif["channel_names"] == EEGMAT_NAMES and fif["units"] == ["uV"] * 21
    want = mne.io.read_raw_fif(src / "sub-17" / "task_raw.fif", verbose="error").get_data() * 1e6
    np.testing.assert_allclose(store.read_recording(2), want, rtol=1e-6, atol=1e-4)


def _edf_to_bdf(src: Path, dst: Path) -> None:
    """Re-encode a real EDF as BDF (24-bit): every integer × 256, digital range × 256 (same µV)."""
    data = src.read_bytes()
    ns, header_bytes, n_records = _n_signals(data), int(data[184:192]), int(data[236:244])
    spr = [int(_get(data, "samples_per_record", i)) for i in range(ns)]
    header = bytearray(data[:header_bytes])
    header[0:8] = b"\xffBIOSEMI"
    header[192:236] = b"24BIT".ljust(44)
    for i in range(ns):
        if _get(data, "label", i) == "EDF Annotations":
            _put(header, "label", i, "BDF Annotations")
        else:
            for name in ("digital_min", "digital_max"):
                _put(header, name, i, str(int(_get(data, name, i)) * 256))
    records = np.frombuffer(data, "<i2", offset=header_bytes).reshape(n_records, sum(spr))
    starts = np.cumsum([0, *spr])
    blocks = []
    for i in range(ns):
        chunk = records[:, starts[i] : starts[i + 1]]
        if _get(data, "label", i) == "EDF Annotations":
            text = np.frombuffer(chunk.tobytes(), np.uint8).reshape(n_records, -1)
            blocks.append(np.concatenate([text, np.zeros((n_records, spr[i]), np.uint8)], axis=1))
        else:
            v = chunk.astype(np.int32) * 256
            blocks.append(
                np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], -1)
                .astype(np.uint8)
                .reshape(n_records, -1)
            )
    dst.write_bytes(bytes(header) + np.concatenate(blocks, axis=1).tobytes())


def test_bdf_keeps_24_bit_integers(eegmat_root, tmp_path):
    src = tmp_path / "bdf"
    src.mkdir()
    _edf_to_bdf(eegmat_root / "Subject04_2.edf", src / "Subject04_2.bdf")
    store = TimelineStore.open(convert(EEGSource(src), tmp_path / "s", progress=False))
    row = store.recordings.row(0, named=True)
    assert row["sample_dtype"] == "int32" and row["file_format"] == "bdf"
    ints = edf_integers(eegmat_root / "Subject04_2.edf")
    want_adc = np.stack([ints[label] for label in row["source_channel_names"]]).astype(np.int32) * 256
    np.testing.assert_array_equal(store.read_recording(row["recording_id"], units="adc"), want_adc)
    want = mne.io.read_raw_bdf(src / "Subject04_2.bdf", verbose="error").get_data() * 1e6
    np.testing.assert_allclose(store.read_recording(row["recording_id"]), want, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(want, mne_microvolts(eegmat_root / "Subject04_2.edf"), rtol=1e-9, atol=1e-9)


# -- mixed sampling rates -----------------------------------------------------------------------------
def _mixed_rate_copy(eegmat_root: Path, dst: Path, rates: dict[int, int], relabel: dict[int, str]) -> Path:
    """A real file whose header gives some signals other samples-per-record (bytes per record kept)."""
    data = bytearray((eegmat_root / "Subject02_2.edf").read_bytes())
    assert sum(rates.values()) == 500 * len(rates)
    for i, spr in rates.items():
        _put(data, "samples_per_record", i, str(spr))
    for i, label in relabel.items():
        _put(data, "label", i, label)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))
    return dst


def _pyedflib_signals(path: Path) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
    """(label, rate Hz, stored integers, physical µV for voltages) of every signal, by pyedflib (a peer
    reader that keeps each signal at its own rate)."""
    import pyedflib

    from clinseq.io.edf import unit_scale

    with pyedflib.EdfReader(str(path)) as reader:
        out = []
        for i in range(reader.signals_in_file):
            _, factor = unit_scale(reader.getPhysicalDimension(i))
            out.append(
                (
                    reader.getLabel(i),
                    reader.getSampleFrequency(i),
                    reader.readSignal(i, digital=True),
                    reader.readSignal(i) * factor,
                )
            )
        return out


def test_mixed_rates_give_one_recording_per_rate(eegmat_root, tmp_path):
    # A2-A1 relabelled as an EOG at 750 Hz and the ECG at 250 Hz; the 19 EEG channels stay at 500 Hz.
    path = _mixed_rate_copy(
        eegmat_root, tmp_path / "m" / "Subject02_2.edf", {19: 750, 20: 250}, {19: "EOG A2-A1"}
    )
    store = TimelineStore.open(convert(EEGSource(path.parent), tmp_path / "s", progress=False))
    rec = store.recordings.sort("rate_group")
    assert rec["sampling_rate_hz"].to_list() == [500.0, 750.0, 250.0]
    assert rec["channel_names"].to_list() == [EEGMAT_NAMES[:19], ["A2-A1"], ["ECG"]]
    assert rec["channel_types"].to_list() == [["eeg"] * 19, ["eog"], ["ecg"]]
    assert rec["session_id"].to_list() == [22, 22, 22] and rec["recording_id"][0] == 22
    assert rec["dropped_channels"].to_list() == [[], [], []]
    peer = _pyedflib_signals(path)
    for row in rec.iter_rows(named=True):
        adc = store.read_recording(row["recording_id"], units="adc")
        physical = store.read_recording(row["recording_id"])
        for c, label in enumerate(row["source_channel_names"]):
            _, rate, want_adc, want = next(p for p in peer if p[0] == label)
            assert rate == row["sampling_rate_hz"]
            np.testing.assert_array_equal(adc[c], want_adc)
            np.testing.assert_allclose(physical[c], want, rtol=1e-6, atol=1e-3)


def test_mixed_rates_drop_or_raise_on_request(eegmat_root, tmp_path):
    path = _mixed_rate_copy(
        eegmat_root, tmp_path / "m" / "Subject02_2.edf", {19: 750, 20: 250}, {19: "EOG A2-A1"}
    )
    source = EEGSource(path.parent, mixed_rates="drop")
    store = TimelineStore.open(convert(source, tmp_path / "s", progress=False))
    row = store.recordings.row(0, named=True)
    assert store.recordings.height == 1
    assert row["channel_names"] == EEGMAT_NAMES[:19] and row["sampling_rate_hz"] == 500.0
    assert row["dropped_channels"] == ["EOG A2-A1 (750 Hz)", "ECG ECG (250 Hz)"]
    want = mne_microvolts(eegmat_root / "Subject02_2.edf")[:19]
    np.testing.assert_allclose(store.read_recording(row["recording_id"]), want, rtol=1e-6, atol=1e-3)
    with pytest.raises(
        SourceError, match=r"Subject02_2\.edf: channels at another rate than the EEG's 500 Hz"
    ):
        convert(EEGSource(path.parent, mixed_rates="raise"), tmp_path / "r", progress=False)


def test_eeg_channels_at_two_rates_are_two_recordings(eegmat_root, tmp_path):
    path = _mixed_rate_copy(eegmat_root, tmp_path / "m" / "Subject02_2.edf", {0: 250, 1: 750}, {})
    store = TimelineStore.open(convert(EEGSource(path.parent), tmp_path / "s", progress=False))
    rec = store.recordings.sort("rate_group")
    # the first EEG channel's rate first, then in order of appearance
    assert rec["sampling_rate_hz"].to_list() == [250.0, 750.0, 500.0]
    assert sum(rec["n_channels"]) == 21


# -- bad input ----------------------------------------------------------------------------------------
def _edit(path: Path, offset: int, value: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(value)] = value
    path.write_bytes(bytes(data))


BAD_EDF = {
    "signal_count_not_a_number": (
        lambda p: _edit(p, 252, b"2x  "),
        r"broken EDF header: number of signals \(bytes 252-255\) is '2x', not a number",
    ),
    "header_size_disagrees": (
        lambda p: _edit(p, 184, b"5632    "),
        r"broken EDF header: header size is 5632 bytes but 22 signals need 5888",
    ),
    "version": (lambda p: _edit(p, 0, b"1       "), r"broken EDF header: version field is b'1       '"),
    "physical_min_garbage": (
        lambda p: _edit(p, _field(p.read_bytes(), "physical_min", 3)[0], b"-5.8e+0x"),
        r"broken EDF header: signal 4 \('EEG F4'\) physical minimum is '-5.8e\+0x', not a number",
    ),
    "uncalibrated": (
        lambda p: _edit(p, _field(p.read_bytes(), "digital_max", 2)[0], b"-32768  "),
        r"signal 3 \('EEG F3'\) digital range \[-32768, -32768\] is not an increasing range",
    ),
    "truncated": (
        lambda p: p.write_bytes(p.read_bytes()[:700_000]),
        r"truncated: the header says 62 data records of 21114 bytes \(1314956 bytes with the header\), "
        r"the file has 700000",
    ),
    "record_count_too_small": (
        lambda p: _edit(p, 236, b"60      "),
        r"holds 62 whole data records but the header says 60",
    ),
    "unknown_sampling_rate": (
        lambda p: _edit(p, 244, b"0       "),
        r"broken EDF header: data record duration is 0.0 s, so the sampling rates are unknown",
    ),
    "zero_samples_per_record": (
        lambda p: _edit(p, _field(p.read_bytes(), "samples_per_record", 5)[0], b"0       "),
        r"signal 6 \('EEG F8'\) has 0 samples per data record: unknown sampling rate",
    ),
    "discontinuous_overlapping": (
        lambda p: (
            _edit(p, 192, b"EDF+D") or p.write_bytes(p.read_bytes().replace(b"+1\x14\x14", b"+0\x14\x14", 1))
        ),
        r"EDF\+D data records: data records overlap or are not in time order",
    ),
    "tiny": (lambda p: p.write_bytes(p.read_bytes()[:100]), r"broken EDF header: the file has 100 bytes"),
}


@pytest.fixture
def mini_eegmat(eegmat_root, tmp_path) -> Path:
    root = tmp_path / "eegmat"
    for name in ("Subject02_2.edf", "Subject03_2.edf", "Subject04_2.edf", "subject-info.csv"):
        _copy(eegmat_root / name, root / name)
    return root


@pytest.mark.parametrize("case", sorted(BAD_EDF))
def test_bad_edf_raises_naming_the_file_and_is_listed_when_skipped(mini_eegmat, tmp_path, case):
    corrupt, message = BAD_EDF[case]
    corrupt(mini_eegmat / "Subject03_2.edf")
    with pytest.raises(SourceError, match=message) as info:
        convert(EEGSource(mini_eegmat), tmp_path / "raise", progress=False)
    assert info.value.path.endswith("Subject03_2.edf")
    assert not (tmp_path / "raise").exists()
    store = TimelineStore.open(
        convert(EEGSource(mini_eegmat), tmp_path / "skip", on_error="skip", progress=False)
    )
    assert store.recordings["source"].to_list() == ["Subject02_2.edf", "Subject04_2.edf"]
    (skipped,) = store.manifest["skipped"]
    assert skipped["key"] == "Subject03_2.edf" and re.search(message, skipped["reason"])


def test_checksum_disagreeing_with_sha256sums_is_an_error(eegmat_root, tmp_path):
    root = tmp_path / "eegmat"
    for name in ("Subject05_2.edf", "Subject06_2.edf", "SHA256SUMS.txt"):
        _copy(eegmat_root / name, root / name)
    store = TimelineStore.open(convert(EEGSource(root), tmp_path / "ok", progress=False))
    assert store.recordings.height == 2 and store.manifest["sha256sums_checked_files"] == 2
    path = root / "Subject06_2.edf"
    data = bytearray(path.read_bytes())
    data[100_000] ^= 0x01  # one flipped bit in the samples: the header still checks out
    path.write_bytes(bytes(data))
    with pytest.raises(
        SourceError, match=r"Subject06_2\.edf: SHA-256 [0-9a-f]{64} differs from SHA256SUMS\.txt"
    ):
        convert(EEGSource(root), tmp_path / "bad", progress=False)


def test_a_file_mne_cannot_read(eegmat_root, tmp_path):
    root = tmp_path / "flat"
    _copy(eegmat_root / "Subject02_2.edf", root / "a.edf")
    (root / "b_raw.fif").write_bytes((eegmat_root / "Subject02_2.edf").read_bytes()[:4096])  # not a FIF
    with pytest.raises(SourceError, match=r"b_raw\.fif: mne cannot read it"):
        convert(EEGSource(root), tmp_path / "s", progress=False)


def test_layout_errors(eegmat_root, mini_eegmat, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown EEG layout 'bids': expected one of"):
        EEGSource(mini_eegmat, layout="bids")
    with pytest.raises(ConfigError, match="resample_hz must be a positive number"):
        EEGSource(mini_eegmat, resample_hz=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no EEG files"):
        EEGSource(tmp_path / "empty")
    # An explicit layout the names do not follow: each file is an error of its own.
    with pytest.raises(SourceError, match=r"Subject02_2\.edf: file name does not follow the eegmmidb layout"):
        convert(EEGSource(mini_eegmat, layout="eegmmidb"), tmp_path / "s", progress=False)
    # auto: most files follow a layout but one does not → say so rather than fall back to flat.
    _copy(eegmat_root / "Subject05_2.edf", mini_eegmat / "extra" / "night.edf")
    with pytest.raises(SourceError, match=r"night\.edf: 3 of 4 files under .* follow the eegmat layout"):
        EEGSource(mini_eegmat)
    store = TimelineStore.open(
        convert(EEGSource(mini_eegmat, layout="eegmat"), tmp_path / "skip", on_error="skip", progress=False)
    )
    assert [s["key"] for s in store.manifest["skipped"]] == ["extra/night.edf"]
    assert store.recordings.height == 3


# -- resume --------------------------------------------------------------------------------------------
def _fail_at(monkeypatch, fail_key):
    """EEGSource fails on one file, like a run that dies there. The class is patched, not subclassed: a
    conversion's identity names the source class and its options, and only the same conversion may adopt
    the leftover folder."""
    load = EEGSource.load

    def failing_load(self, item):
        if item.key == fail_key:
            raise SourceError(item.path, "simulated failure")
        return load(self, item)

    monkeypatch.setattr(EEGSource, "load", failing_load)


def test_resume_after_an_interruption_equals_uninterrupted(eegmat_root, eegmat_store, tmp_path, monkeypatch):
    part = 2_000_000  # about one rest or two task recordings per part: several parts to resume from
    reference = convert(EEGSource(eegmat_root), tmp_path / "ref", part_max_bytes=part, progress=False)
    out = tmp_path / "store"
    _fail_at(monkeypatch, "Subject07_1.edf")
    with pytest.raises(SourceError, match="simulated failure"):
        convert(EEGSource(eegmat_root), out, part_max_bytes=part, progress=False)
    monkeypatch.undo()
    (tmp,) = tmp_path.glob("store.tmp-*")
    assert len(list((tmp / "signals").glob("*.commit.json"))) >= 4
    convert(EEGSource(eegmat_root), out, part_max_bytes=part, progress=False)
    a, b = TimelineStore.open(out), TimelineStore.open(reference)
    assert a.manifest["resumed_from"] == tmp.name
    assert a.recordings.equals(b.recordings) and a.patients.equals(b.patients)
    names = sorted(p.name for p in (out / "signals").iterdir())
    assert names == sorted(p.name for p in (reference / "signals").iterdir()) and len(names) > 4
    for name in names:
        assert (out / "signals" / name).read_bytes() == (reference / "signals" / name).read_bytes()
    # and the same samples as the one-part store
    for rid in a.recordings["recording_id"]:
        np.testing.assert_array_equal(
            a.read_recording(rid, units="adc"), eegmat_store.read_recording(rid, "adc")
        )


def test_start_time_rules():
    from clinseq.io.edf import edf_start_time as _edf_start_time

    assert _edf_start_time("Startdate 01-JAN-2012 12 X NeuroCom", "01.01.12", "00.00.00", True) == datetime(
        2012, 1, 1
    )
    assert _edf_start_time("Startdate X X X X", "01.01.85", "00.00.00", True) is None  # anonymised
    assert _edf_start_time("", "24.12.97", "13.05.09", False) == datetime(1997, 12, 24, 13, 5, 9)
    assert _edf_start_time("", "24.12.84", "13.05.09", False) == datetime(2084, 12, 24, 13, 5, 9)
    assert _edf_start_time("", "xx.12.84", "13.05.09", False) is None
