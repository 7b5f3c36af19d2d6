"""People's own data: a store from in-memory arrays (``write_store``) and from a manifest CSV
(``clinseq convert manifest``) over real files of ../shared/data (WFDB, EDF, .npy) read the same
windows back."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import mne
import numpy as np
import polars as pl
import pytest
import wfdb

from clinseq.cli import main
from clinseq.io.sources import SOURCES
from clinseq.timeline import ArrayRecording, TimelineStore, write_store

N_WFDB = 4


def _own_folder(tmp_path: Path, ptbxl_root: Path, eegmat_root: Path) -> tuple[Path, list[ArrayRecording]]:
    """A user's folder: WFDB records, an EDF and .npy arrays, a manifest CSV with labels; and the
    same recordings as arrays (read by wfdb / mne, the peers)."""
    folder = tmp_path / "mine"
    (folder / "ecg").mkdir(parents=True)
    (folder / "eeg").mkdir()
    (folder / "arrays").mkdir()
    database = pl.read_csv(ptbxl_root / "ptbxl_database.csv").sort("ecg_id").head(N_WFDB + 2)
    rows, arrays = [], []
    for i, row in enumerate(database.iter_rows(named=True)):
        record = ptbxl_root / row["filename_lr"]
        signal = wfdb.rdrecord(str(record))
        rid = 100 + i
        label = int("NORM" in row["scp_codes"])
        patient = f"P{int(row['patient_id'])}"
        if i < N_WFDB:  # WFDB files
            for ext in (".hea", ".dat"):
                shutil.copyfile(record.with_suffix(ext), folder / "ecg" / (record.name + ext))
            rows.append(
                {"path": f"ecg/{record.name}", "patient_id": patient, "recording_id": rid, "start_time": None,
                 "sampling_rate_hz": None, "norm": label, "site": "a"}
            )  # fmt: skip
            start = signal.base_datetime
        else:  # the same ECG as a float .npy, channels first
            np.save(folder / "arrays" / f"{rid}.npy", signal.p_signal.T.astype(np.float32))
            start = datetime(2020, 1, 2, 3, 4, 5)
            rows.append(
                {"path": f"arrays/{rid}.npy", "patient_id": patient, "recording_id": rid,
                 "start_time": start.isoformat(), "sampling_rate_hz": 100.0, "norm": label, "site": "b"}
            )  # fmt: skip
        arrays.append(
            ArrayRecording(
                signal.p_signal.T, 100.0, list(signal.sig_name), "mV", patient_id=0, start_time=start,
                recording_id=rid, labels={"norm": label, "site": "a" if i < N_WFDB else "b"},
            )
        )  # fmt: skip
    edf = sorted(eegmat_root.glob("Subject*_2.edf"))[0]
    shutil.copyfile(edf, folder / "eeg" / edf.name)
    rows.append(
        {"path": f"eeg/{edf.name}", "patient_id": "S1", "recording_id": 900, "start_time": None,
         "sampling_rate_hz": 500.0, "norm": 0, "site": "c"}
    )  # fmt: skip
    raw = mne.io.read_raw_edf(edf, preload=True, verbose="error")
    arrays.append(
        ArrayRecording(
            raw.get_data() * 1e6, raw.info["sfreq"], raw.ch_names, "uV", patient_id=0, recording_id=900,
            labels={"norm": 0, "site": "c"}, modality="eeg",
        )
    )  # fmt: skip
    pl.DataFrame(rows).write_csv(folder / "ecgs.csv")
    return folder, arrays


def test_arrays_and_manifest_give_the_same_windows(
    tmp_path: Path, ptbxl_root: Path, eegmat_root: Path, capsys
) -> None:
    folder, arrays = _own_folder(tmp_path, ptbxl_root, eegmat_root)
    assert main(["convert", "manifest", str(folder / "ecgs.csv"), str(tmp_path / "from_csv"), "--quiet"]) == 0
    capsys.readouterr()
    from_csv = TimelineStore.open(tmp_path / "from_csv")
    from_arrays = TimelineStore.open(write_store(arrays, tmp_path / "from_arrays", part_max_bytes=100_000))

    recs = from_csv.recordings.sort("recording_id")
    assert recs["recording_id"].to_list() == [100 + i for i in range(N_WFDB + 2)] + [900]
    assert recs["norm"].to_list() == from_arrays.recordings.sort("recording_id")["norm"].to_list()
    assert recs["site"].to_list() == ["a"] * N_WFDB + ["b", "b", "c"]
    assert recs["modality"].to_list() == ["ecg"] * (N_WFDB + 2) + ["eeg"]
    # Text patient keys are numbered; the text is kept; WFDB keeps its ADC integers, .npy float32.
    assert recs["patient_key"][0].startswith("P") and recs["patient_key"][-1] == "S1"
    assert recs["sample_dtype"].to_list()[:N_WFDB] == ["int16"] * N_WFDB
    assert recs.filter(pl.col("recording_id") == 100 + N_WFDB)["start_time"][0] == datetime(
        2020, 1, 2, 3, 4, 5
    )
    assert from_csv.manifest["download"] is None
    for one in arrays:
        rid = one.recording_id
        n = from_csv.recordings.filter(pl.col("recording_id") == rid)["n_samples"][0]
        length = min(n, 1000)
        got = from_csv.read_window(rid, n - length, length)
        want = from_arrays.read_window(rid, n - length, length)
        assert got.shape == want.shape == (len(one.channel_names), length)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 if one.modality == "eeg" else 1e-6)
    for names in recs[N_WFDB : N_WFDB + 2]["channel_names"].to_list():
        assert names == [f"ch{i}" for i in range(12)]  # no channel_names column: ch0...


def test_write_store_resumes_after_an_interruption(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = [
        ArrayRecording(
            rng.normal(size=(2, 4000)), 250.0, ["a", "b"], "mV", patient_id=i // 2, labels={"y": i % 2}
        )
        for i in range(8)
    ]

    def stops_after(k: int):
        for i, one in enumerate(arrays):
            if i == k:
                raise KeyboardInterrupt
            yield one

    with pytest.raises(KeyboardInterrupt):
        write_store(stops_after(5), tmp_path / "s", part_max_bytes=60_000)
    assert not (tmp_path / "s").exists() and list(tmp_path.glob("s.tmp-*"))
    resumed = TimelineStore.open(write_store(arrays, tmp_path / "s", part_max_bytes=60_000))
    whole = TimelineStore.open(write_store(arrays, tmp_path / "w", part_max_bytes=60_000))
    assert resumed.manifest.get("resumed_from")
    assert resumed.recordings.drop("source").equals(whole.recordings.drop("source"))
    for rid in range(1, 9):
        np.testing.assert_array_equal(resumed.read_window(rid, 0, 4000), whole.read_window(rid, 0, 4000))
        np.testing.assert_array_equal(
            whole.read_window(rid, 0, 4000), arrays[rid - 1].samples.astype(np.float32)
        )


def test_manifest_errors_name_the_file_and_row(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 100), dtype=np.float32))
    pl.DataFrame({"path": ["x.npy"], "patient_id": [1], "y": [1]}).write_csv(tmp_path / "m.csv")
    assert main(["convert", "manifest", str(tmp_path / "m.csv"), str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clinseq: error:") and "x.npy" in err and "sampling_rate_hz" in err
    pl.DataFrame({"file": ["x.npy"], "patient_id": [1]}).write_csv(tmp_path / "bad.csv")
    assert main(["convert", "manifest", str(tmp_path / "bad.csv"), str(tmp_path / "out2"), "--quiet"]) == 2
    assert "missing columns ['path']" in capsys.readouterr().err
    assert "manifest" in SOURCES


def _readme_block(heading: str) -> list[str]:
    """The command lines of the first bash block after ``heading`` in the README."""
    lines = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    begin = next(i for i in range(start, len(lines)) if lines[i].strip() == "```bash")
    end = next(i for i in range(begin + 1, len(lines)) if lines[i].strip() == "```")
    return [line.strip() for line in lines[begin + 1 : end] if line.strip()]


@pytest.mark.slow
def test_readme_own_data_commands_run_on_a_csv_over_the_shared_data(
    tmp_path: Path, ptbxl_root: Path, monkeypatch, capsys
) -> None:
    """The README's "Your own data" commands, word for word, on a CSV of PTB-XL's first 60 ECGs with a
    ``norm`` label; only the pretraining's length and the probe's bootstrap are cut for time."""
    import shlex
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    database = pl.read_csv(ptbxl_root / "ptbxl_database.csv").sort("ecg_id").head(60)
    pl.DataFrame(
        {
            "path": [str(ptbxl_root / name) for name in database["filename_lr"]],
            "patient_id": [f"P{int(p)}" for p in database["patient_id"]],
            "recording_id": database["ecg_id"],
            "norm": [int("'NORM'" in codes) for codes in database["scp_codes"]],
        }
    ).write_csv(tmp_path / "my_ecgs.csv")
    monkeypatch.chdir(tmp_path)
    commands = _readme_block("## Your own data")
    assert [c.split()[:2] for c in commands] == [
        ["clinseq", "convert"], ["clinseq", "pretrain"], ["python", "-c"], ["clinseq", "eval"]
    ]  # fmt: skip
    faster = {
        "pretrain": ["--set", "train.max_steps=2", "--set", "data.sampler_kwargs.recordings_per_batch=8"],
        "eval": ["--n-boot", "20", "--fractions", "1.0", "--quiet"],
    }
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "python":
            subprocess.run([sys.executable, *argv[1:]], check=True, cwd=tmp_path)
            continue
        argv = [str(repo / a) if a.startswith("recipes/") else a for a in argv[1:]]
        assert main(argv + faster.get(argv[0], [])) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "macro AUROC" in out and "pretrained" in out and "random init" in out
    store = TimelineStore.open(tmp_path / "stores" / "mine")
    assert store.recordings.height == 60 and "norm" in store.recordings.columns
    assert list((tmp_path / "runs" / "mine" / "eval").rglob("*.json"))
