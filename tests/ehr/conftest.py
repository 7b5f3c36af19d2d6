"""Shared fixtures: the MIMIC-IV demo (real data) converted once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinseq.utils import data_root

GET_DATA = (
    "needs the MIMIC-IV Clinical Database Demo v2.2 (hosp/, icu/, meds/) under "
    "$CLINSEQ_DATA/mimic_iv_demo (default ../shared/data/mimic_iv_demo): download it from "
    "https://physionet.org/content/mimic-iv-demo/2.2/ "
    "and its MEDS version from https://physionet.org/content/mimic-iv-demo-meds/, or set CLINSEQ_DATA"
)


@pytest.fixture(scope="session")
def demo_root() -> Path:
    root = data_root() / "mimic_iv_demo"
    if not (root / "hosp" / "patients.csv.gz").exists():
        pytest.skip(GET_DATA)
    return root


@pytest.fixture(scope="session")
def meds_demo_root(demo_root: Path) -> Path:
    root = demo_root / "meds"
    if not (root / "data").is_dir():
        pytest.skip(GET_DATA)
    return root


@pytest.fixture(scope="session")
def mimic_store(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clinseq.io.mimic_iv import convert_mimic_iv

    return convert_mimic_iv(demo_root, tmp_path_factory.mktemp("mimic") / "store", progress=False)
