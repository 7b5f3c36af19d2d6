"""The MIMIC-IV recipe ends with the EHR table (real demo): pretrained vs random init vs code counts, on a
MEDS-DEV task labelled by ACES; ``clinseq eval`` re-evaluates the run and ``clinseq embed`` writes its
embeddings keyed by (subject_id, prediction_time)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from clinseq.cli import main

pytest.importorskip("aces", reason="needs ACES: pip install -e '.[meds]' (the dev extra brings it)")

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mimic_iv" / "patient_contrast.yaml"
MORTALITY = "mimic-iv/mortality/in_icu/first_24h"


@pytest.mark.slow
def test_mimic_recipe_ends_with_the_ehr_table(mimic_store: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = [
        "pretrain",
        str(RECIPE),
        "--profile",
        "smoke",
        "--out",
        str(run),
        "--set",
        f"data.store={mimic_store}",
    ]
    for item in (
        "train.progress=false",
        "train.max_steps=3",
        f"eval.tasks=[{MORTALITY}]",
        "eval.fractions=[1.0]",
    ):
        args += ["--set", item]
    args += ["--set", "eval.n_boot=50"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert MORTALITY in printed and "5-fold cross-fit" in printed
    for row in ("pretrained", "random init", "code counts + LR"):
        assert row in printed
    saved = json.loads((run / "eval" / "seed0" / "eval_mimic-iv_mortality_in_icu_first_24h.json").read_text())
    assert set(saved["reports"]) == {"pretrained", "random init", "code counts + LR"}
    assert saved["reports"]["pretrained"]["n_test_examples"] == 74  # every ICU stay scored once
    # Re-evaluated from the checkpoint without retraining: the same table.
    again = tmp_path / "again"
    assert main(["eval", str(run), "--out", str(again), "--quiet"]) == 0
    redone = json.loads((again / "seed0" / "eval_mimic-iv_mortality_in_icu_first_24h.json").read_text())
    for name, report in saved["reports"].items():
        assert redone["reports"][name]["results"] == report["results"], name
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(mimic_store), str(run), str(out), "--task", MORTALITY]) == 0
    table = pl.read_parquet(out)
    assert table.height == 74 and {"subject_id", "prediction_time", "embedding"} <= set(table.columns)
