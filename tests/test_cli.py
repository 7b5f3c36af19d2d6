"""The ``clinseq`` command line on the real PTB-XL subset."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


def _spy(monkeypatch, module: str, name: str) -> list[dict]:
    """Record the keyword arguments of every call of ``module.name`` (which still runs)."""
    import importlib

    mod = importlib.import_module(module)
    real, calls = getattr(mod, name), []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, name, spy)
    return calls


def test_convert_meds_and_mimic_iv_pass_workers_and_shard_size(tmp_path, monkeypatch, capsys):
    from .conftest import real_data

    demo = real_data("mimic_iv_demo")
    from clinseq.timeline import TimelineStore

    meds_calls = _spy(monkeypatch, "clinseq.io.meds", "import_meds")
    args = ["convert", "meds", str(demo / "meds"), str(tmp_path / "meds"), "--quiet"]
    assert main([*args, "--workers", "2", "--subjects-per-shard", "6"]) == 0
    assert meds_calls[-1]["workers"] == 2 and meds_calls[-1]["subjects_per_shard"] == 6
    store = TimelineStore.open(tmp_path / "meds")
    n_subjects = len(store.event_index.subject_ids)
    shards = sorted((tmp_path / "meds" / "events" / "data").glob("*.parquet"))
    assert n_subjects > 6 and len(shards) == -(-n_subjects // 6)  # ceil: the shard size reached the store
    assert main(["convert", "meds", str(demo / "meds"), str(tmp_path / "meds2"), "--quiet"]) == 0
    assert meds_calls[-1] == {"progress": False}  # unset: nothing passed, the converter's own defaults

    mimic_calls = _spy(monkeypatch, "clinseq.io.mimic_iv", "convert_mimic_iv")
    args = ["convert", "mimic-iv", str(demo), str(tmp_path / "mimic"), "--tables", "patients", "admissions"]
    assert main([*args, "--workers", "2", "--subjects-per-shard", "30", "--quiet"]) == 0
    assert mimic_calls[-1]["workers"] == 2 and mimic_calls[-1]["subjects_per_shard"] == 30
    n_subjects = len(TimelineStore.open(tmp_path / "mimic").event_index.subject_ids)
    assert len(list((tmp_path / "mimic" / "events" / "data").glob("*.parquet"))) == -(-n_subjects // 30)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--workers", "0"])
    assert exit_info.value.code == 2 and "expected a whole number >= 1, got 0" in capsys.readouterr().err


def test_bench_out_reaches_the_suites(tmp_path, monkeypatch):
    import clinseq.bench

    seen = {}

    def fake_main(suites, *, device, quick, out_dir):
        seen.update(suites=suites, device=device, quick=quick, out_dir=out_dir)
        return 0

    monkeypatch.setattr(clinseq.bench, "main", fake_main)
    assert main(["bench", "pretrain", "--quick", "--out", str(tmp_path / "results")]) == 0
    assert seen == {"suites": ["pretrain"], "device": "cpu", "quick": True, "out_dir": tmp_path / "results"}
    assert main(["bench", "loader"]) == 0 and seen["out_dir"] is None
