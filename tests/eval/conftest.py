"""The EEGMAT store of the evaluation tests: the real subset at 128 Hz, as the EEG recipes convert it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def eegmat_root():
    from clinseq.utils import data_root

    path = data_root() / "eeg" / "eegmat"
    if not path.exists():
        pytest.skip(
            f"real data {path} is absent. EEGMAT is open on PhysioNet: "
            "https://physionet.org/content/eegmat/1.0.0/ — put the EDF files at $CLINSEQ_DATA/eeg/eegmat"
        )
    return path


@pytest.fixture(scope="session")
def eegmat_store(eegmat_root, tmp_path_factory: pytest.TempPathFactory):
    from clinseq.io import convert
    from clinseq.io.eeg import EEGSource
    from clinseq.timeline import TimelineStore

    out = tmp_path_factory.mktemp("stores") / "eegmat128"
    return TimelineStore.open(
        convert(EEGSource(eegmat_root, resample_hz=128), out, workers=2, progress=False)
    )
