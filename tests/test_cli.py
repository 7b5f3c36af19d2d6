"""The ``clinseq`` command line on the real PTB-XL subset."""

from __future__ import annotations

import subprocess
import sys

from clinseq.cli import main


def test_convert_and_info(ptbxl_root, tmp_path, capsys):
    out = tmp_path / "store"
    assert main(["convert", "ptbxl", str(ptbxl_root), str(out), "--workers", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "recordings 400" in printed and "patients with ≥2: 25" in printed
    assert main(["info", str(out)]) == 0
    assert "dataset    ptbxl" in capsys.readouterr().out


def test_errors_are_one_line_with_exit_code_2(ptbxl_root, tmp_path, capsys):
    assert main(["convert", "ptbxl", str(ptbxl_root), str(tmp_path / "s"), "--sampling-rate-hz", "250"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clinseq: error: ") and "unknown sampling rate 250 Hz" in err
    assert main(["info", str(tmp_path / "nowhere")]) == 2


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "clinseq.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "convert" in result.stdout


def test_convert_eeg_with_layout_and_resampling(tmp_path, capsys):
    from clinseq.timeline import TimelineStore
    from clinseq.utils import data_root

    eegmat = data_root() / "eeg" / "eegmat"
    if not eegmat.exists():
        import pytest

        pytest.skip(f"real data {eegmat} is absent (EEGMAT: https://physionet.org/content/eegmat/1.0.0/)")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("Subject02_2.edf", "Subject03_2.edf", "subject-info.csv"):
        (src / name).write_bytes((eegmat / name).read_bytes())
    (src / "Subject04_2.edf").write_bytes((eegmat / "Subject04_2.edf").read_bytes()[:9000])  # truncated
    out = tmp_path / "store"
    args = ["convert", "eeg", str(src), str(out), "--layout", "auto", "--resample-hz", "250", "--quiet"]
    assert main([*args, "--on-error", "skip"]) == 0
    printed = capsys.readouterr().out
    assert "dataset    eegmat" in printed and "eeg  250 Hz: 2 recordings" in printed
    assert "Subject04_2.edf: truncated" in printed  # listed under skipped
    assert TimelineStore.open(out).manifest["options"]["resample_hz"] == 250.0
    assert main(["convert", "eeg", str(src), str(tmp_path / "s2"), "--quiet"]) == 2
    assert "Subject04_2.edf: truncated" in capsys.readouterr().err
    assert main(["convert", "eeg", str(src), str(tmp_path / "s3"), "--layout", "bids"]) == 2
    assert "unknown EEG layout 'bids'" in capsys.readouterr().err
