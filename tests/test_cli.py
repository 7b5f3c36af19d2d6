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
