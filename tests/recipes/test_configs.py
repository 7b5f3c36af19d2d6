"""Every recipe config under recipes/ (recursively) loads, validates and documents its exact command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clinseq.train import load_config, validate_components
from clinseq.train.run import load_recipe

from .conftest import RECIPES, REPO

# recipes/meds_dev/ holds MEDS-DEV model entries (model.yaml), not pretraining recipes.
CONFIGS = sorted(p for p in RECIPES.rglob("*.yaml") if "meds_dev" not in p.relative_to(RECIPES).parts)
REQUIRED = {
    "ptbxl/pclr.yaml", "ptbxl/cpc.yaml", "ptbxl/polywindow.yaml", "ptbxl/comet.yaml", "ptbxl/pmq.yaml",
    "ptbxl/simclr.yaml", "mimic_iv/patient_contrast.yaml", "mimic_iv/ecg_ehr.yaml", "eeg/cpc.yaml",
    "eeg/patient_contrast.yaml",
}  # fmt: skip


def _id(path: Path) -> str:
    return str(path.relative_to(RECIPES))


def test_the_required_recipes_exist() -> None:
    assert REQUIRED <= {_id(p) for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_loads_and_validates(path: Path) -> None:
    profiles = [None]
    if re.search(r"^profiles:\s*$", path.read_text(), re.M):
        profiles += list(load_config_profiles(path))
    for profile in profiles:
        config = load_config(path, profile=profile)
        validate_components(config)
        assert config.recipe_path().is_file()
    assert callable(load_recipe(load_config(path)).run)


def load_config_profiles(path: Path) -> list[str]:
    import yaml

    return list((yaml.safe_load(path.read_text()) or {}).get("profiles") or {})


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_header_gives_the_exact_command(path: Path) -> None:
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    relative = path.relative_to(REPO)
    assert f"clinseq pretrain {relative}" in header
    if "smoke" in load_config_profiles(path):
        assert f"clinseq pretrain {relative} --profile smoke" in header


def test_ecg_ehr_says_its_data_is_missing_from_the_shared_subsets() -> None:
    text = (RECIPES / "mimic_iv" / "ecg_ehr.yaml").read_text()
    assert "NO MIMIC-IV-ECG subset" in text
    assert "smoke" not in load_config_profiles(RECIPES / "mimic_iv" / "ecg_ehr.yaml")
