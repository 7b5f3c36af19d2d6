"""Shared fixtures: the real datasets (skipped with instructions when absent) and converted stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tests run from anywhere: default the data root to ../shared/data beside the checkout.
os.environ.setdefault("CLINSEQ_DATA", str(REPO_ROOT.parent / "shared" / "data"))


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# Triton decides between compiling and interpreting when a kernel is defined, so the interpreter must be
# chosen before anything imports clinseq.kernels. Without a GPU, the kernel tests run interpreted (fp32).
if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")

HOW_TO_GET = {
    "ptbxl": "PTB-XL is open on PhysioNet: https://physionet.org/content/ptb-xl/1.0.3/ "
    "(wget -r -N -c -np https://physionet.org/files/ptb-xl/1.0.3/) — put it at $CLINSEQ_DATA/ptbxl",
    "wfdb_samples": "PhysioNet sample records (wfdb-python's sample-data/) at $CLINSEQ_DATA/wfdb_samples",
    "wfdb_formats": "wfdb-python's format/layout test records (sample-data/: 100skew, 100-no-len, "
    "flacformats,"
    " mixedsignals, multi-segment/041s) at $CLINSEQ_DATA/wfdb_formats",
    "eeg/eegmat": "EEGMAT is open on PhysioNet: https://physionet.org/content/eegmat/1.0.0/ — put the EDF "
    "files at $CLINSEQ_DATA/eeg/eegmat",
    "mimic_iv_demo": "the MIMIC-IV demo is open on PhysioNet: "
    "https://physionet.org/content/mimic-iv-demo/2.2/ "
    "— put hosp/ and icu/ at $CLINSEQ_DATA/mimic_iv_demo (meds/ holds its MEDS version)",
}


def real_data(name: str) -> Path:
    """Path of a real dataset under the data root, or skip the test saying how to get it."""
    from clinseq.utils import data_root

    path = data_root() / name
    if not path.exists():
        pytest.skip(f"real data {path} is absent. {HOW_TO_GET.get(name, '')}")
    return path


@pytest.fixture(scope="session")
def ptbxl_root() -> Path:
    return real_data("ptbxl")


@pytest.fixture(scope="session")
def wfdb_samples_root() -> Path:
    return real_data("wfdb_samples")


@pytest.fixture(scope="session")
def wfdb_formats_root() -> Path:
    return real_data("wfdb_formats")


@pytest.fixture(scope="session")
def eegmat_root() -> Path:
    return real_data("eeg/eegmat")


@pytest.fixture(scope="session")
def ptbxl_store(tmp_path_factory: pytest.TempPathFactory, ptbxl_root: Path):
    """The real PTB-XL subset at 100 Hz converted once per test session."""
    from clinseq.io import PTBXLSource, convert
    from clinseq.timeline import TimelineStore

    out = tmp_path_factory.mktemp("stores") / "ptbxl100"
    return TimelineStore.open(convert(PTBXLSource(ptbxl_root, 100), out, workers=2, progress=False))


def copy_mini_ptbxl(ptbxl_root: Path, dst: Path, n: int) -> list[str]:
    """A copy of PTB-XL with the first ``n`` rows of the real database and their 100 Hz records (the
    real files, copied: tests may damage them)."""
    import csv
    import io
    import shutil

    dst.mkdir(parents=True)
    rows = list(csv.reader(io.StringIO((ptbxl_root / "ptbxl_database.csv").read_text())))
    header, body = rows[0], rows[1 : n + 1]
    with (dst / "ptbxl_database.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    shutil.copy(ptbxl_root / "scp_statements.csv", dst)
    names = [row[header.index("filename_lr")] for row in body]
    for name in names:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        for ext in (".hea", ".dat"):
            shutil.copy(ptbxl_root / (name + ext), dst / (name + ext))
    return names


@pytest.fixture
def mini_ptbxl(ptbxl_root: Path, tmp_path: Path) -> Path:
    """A fresh copy of 6 real PTB-XL records (100 Hz) with their database rows, in a temporary folder."""
    copy_mini_ptbxl(ptbxl_root, tmp_path / "ptbxl", 6)
    return tmp_path / "ptbxl"


@pytest.fixture(scope="session")
def mimic_demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MIMIC-IV demo converted to events, as the MIMIC-IV recipe converts it."""
    from clinseq.io.mimic_iv import convert_mimic_iv

    out = tmp_path_factory.mktemp("stores") / "mimic_iv_demo"
    return convert_mimic_iv(real_data("mimic_iv_demo"), out, progress=False)
