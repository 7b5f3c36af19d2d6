"""Header values and wrong roots (issue 14.5, 6, 7, 9): a WFDB gain, baseline or sampling rate that is
not a finite number, an EDF physical range that is not one, are errors naming the file, signal and
field; workers die with their parent; an empty index, a folder where a CSV is expected, a non-UTF-8
RECORDS file and ``--workers 0`` are one-line errors. On copies of real records."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clinseq.cli import main
from clinseq.errors import SourceError
from clinseq.io import PTBXLSource, convert
from clinseq.io.edf import parse_edf_header


def _first_header(root: Path) -> Path:
    return PTBXLSource(root, 100).index()[0].path


def _edit_signal_line(hea: Path, signal_index: int, field: int, value: str) -> None:
    lines = hea.read_text().splitlines()
    tokens = lines[1 + signal_index].split(" ")
    tokens[field] = value
    lines[1 + signal_index] = " ".join(tokens)
    hea.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("gain", ["abc", "nan", "inf", "-inf", "1e400"])
def test_wfdb_gain_not_a_finite_number(mini_ptbxl, tmp_path, gain):
    hea = _first_header(mini_ptbxl)
    _edit_signal_line(hea, 2, 2, f"{gain}(0)/mV")
    with pytest.raises(
        SourceError, match=rf"{hea.name}: signal 2 \(III\): ADC gain '{gain}' is not a finite"
    ):
        convert(PTBXLSource(mini_ptbxl, 100), tmp_path / "out", progress=False)


def test_wfdb_baseline_and_rate_not_finite(mini_ptbxl, tmp_path):
    hea = _first_header(mini_ptbxl)
    original = hea.read_text()
    _edit_signal_line(hea, 0, 2, "1000.0(nan)/mV")
    with pytest.raises(SourceError, match=r"signal 0 \(I\): baseline 'nan' is not a finite number"):
        convert(PTBXLSource(mini_ptbxl, 100), tmp_path / "out", progress=False)
    hea.write_text(original.replace(" 12 100 ", " 12 inf ", 1))
    with pytest.raises(SourceError, match=r"record line: sampling rate 'inf' is not a finite number > 0"):
        convert(PTBXLSource(mini_ptbxl, 100), tmp_path / "out", progress=False)


@pytest.mark.parametrize("value, problem", [("nan", "is nan, not a finite number"), ("abc", "not a number")])
def test_edf_physical_range_not_finite(eegmat_root, value, problem):
    path = sorted(eegmat_root.glob("*.edf"))[0]
    data = bytearray(path.read_bytes())
    n = int(data[252:256].decode())
    offset = 256 + n * (16 + 80 + 8) + 1 * 8  # physical minimum of signal 2
    data[offset : offset + 8] = value.ljust(8).encode()
    with pytest.raises(SourceError, match=rf"signal 2 \('[^']+'\) physical minimum .*{problem}"):
        parse_edf_header(bytes(data), path)


SLOW_WORKERS = textwrap.dedent(
    """
    import sys, time
    from clinseq.io import PTBXLSource, convert
    load = PTBXLSource.load
    def slow(self, item):
        time.sleep(3)
        return load(self, item)
    PTBXLSource.load = slow
    convert(PTBXLSource(sys.argv[1], 100), sys.argv[2], workers=2, progress=False)
    """
)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_end_with_their_parent(mini_ptbxl, tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen(
        [sys.executable, "-c", SLOW_WORKERS, str(mini_ptbxl), str(tmp_path / "out")], env=env
    )
    deadline = time.time() + 60
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = _children(parent.pid)
    assert len(workers) >= 2, "the conversion did not start its workers"
    os.kill(parent.pid, sig)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), f"workers {workers} outlived their parent"


def test_wrong_roots_and_bad_files_are_one_line_errors(mini_ptbxl, wfdb_samples_root, tmp_path, capsys):
    def run(*args: str) -> str:
        assert main(list(args)) == 2
        err = capsys.readouterr().err
        assert err.startswith("clinseq: error: ") and "Traceback" not in err
        return err

    # a PTB-XL database with no rows: nothing to convert
    csv = mini_ptbxl / "ptbxl_database.csv"
    content = csv.read_text()
    csv.write_text(content.splitlines(keepends=True)[0])
    assert "found nothing to convert" in run(
        "convert", "ptbxl", str(mini_ptbxl), str(tmp_path / "a"), "--quiet"
    )
    # a folder where the CSV is expected
    csv.unlink()
    csv.mkdir()
    assert "ptbxl_database.csv" in run("convert", "ptbxl", str(mini_ptbxl), str(tmp_path / "b"), "--quiet")
    # a RECORDS file that is not text
    wf = tmp_path / "wf"
    wf.mkdir()
    for f in wfdb_samples_root.glob("100.*"):
        shutil.copy(f, wf)
    (wf / "RECORDS").write_bytes(b"100\n\xff\xfe1\n")
    err = run("convert", "wfdb", str(wf), str(tmp_path / "c"), "--quiet")
    assert "RECORDS: line 2: byte 0xff is not UTF-8 text" in err
    assert not any((tmp_path / name).exists() for name in "abc")


def test_workers_zero_is_refused(mini_ptbxl, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "ptbxl", str(mini_ptbxl), str(tmp_path / "out"), "--workers", "0"])
    assert exit_info.value.code == 2
    assert "--workers: expected a whole number >= 1, got 0" in capsys.readouterr().err
