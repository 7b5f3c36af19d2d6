"""Stores of the real subsets shared by the recipe tests (converted once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinseq.utils import data_root

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"


def _real(name: str, how: str) -> Path:
    path = data_root() / name
    if not path.exists():
        pytest.skip(f"real data {path} is absent: {how} (or set CLINSEQ_DATA)")
    return path


@pytest.fixture(scope="session")
def eegmat_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real EEGMAT subset resampled to 128 Hz, as the EEG recipes convert it."""
    from clinseq.io import convert
    from clinseq.io.eeg import EEGSource

    root = _real("eeg/eegmat", "EEGMAT is open on PhysioNet: https://physionet.org/content/eegmat/1.0.0/")
    out = tmp_path_factory.mktemp("stores") / "eegmat128"
    return convert(EEGSource(root, resample_hz=128), out, workers=2, progress=False)
