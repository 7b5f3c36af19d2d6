"""`clinseq eval RUN` and `clinseq embed STORE RUN OUT` on a real EEG run (marked slow; CI runs them).

A short EEG run evaluates itself at the end of the recipe; re-evaluating its checkpoint from the command
line must give the very same numbers (same pretrained weights, same random init, same folds and
resamples), and the embeddings written by `clinseq embed` must score the same as the pretrained row.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from clinseq.cli import main
from clinseq.eval import EvalOptions, FeatureTable, evaluate
from clinseq.timeline import TimelineStore

from .conftest import RECIPES

pytestmark = pytest.mark.slow

TASK = "eegmat/condition"
SETTINGS = ["train.max_steps=2", "train.checkpoint_every=2", "eval.n_boot=50", "eval.fractions=[1.0]"]
SETTINGS += [f"eval.tasks=[{TASK}]", "train.progress=false"]


@pytest.fixture(scope="module")
def run(eegmat_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eeg_run") / "run"
    args = [
        "pretrain",
        str(RECIPES / "eeg" / "patient_contrast.yaml"),
        "--profile",
        "smoke",
        "--out",
        str(out),
    ]
    for item in [f"data.store={eegmat_store}", *SETTINGS]:
        args += ["--set", item]
    assert main(args) == 0
    return out


def test_eval_of_a_run_equals_the_recipes_own_evaluation(run, tmp_path, capsys) -> None:
    name = "seed0/eval_eegmat_condition.json"
    recipe = json.loads((run / "eval" / name).read_text())
    capsys.readouterr()
    assert main(["eval", str(run), "--task", TASK, "--out", str(tmp_path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint step 2" in printed and "pretrained" in printed and "random init" in printed
    again = json.loads((tmp_path / name).read_text())
    assert again == recipe  # same weights, same random init, same folds and resamples


def test_embed_writes_what_the_probe_scores(run, eegmat_store, tmp_path, capsys) -> None:
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(eegmat_store), str(run), str(out), "--quiet"]) == 0
    table = pl.read_parquet(out)
    store = TimelineStore.open(eegmat_store)
    assert table.columns == ["recording_id", "patient_id", "embedding"]
    assert table["recording_id"].to_list() == sorted(store.recordings["recording_id"].to_list())
    assert table["embedding"].list.len().n_unique() == 1
    options = EvalOptions(fractions=(1.0,), n_boot=50, print_table=False, progress=False)
    from_file = evaluate({"file": FeatureTable(out)}, store, TASK, options).reports[0]["file"]
    recipe = json.loads((run / "eval" / "seed0" / "eval_eegmat_condition.json").read_text())
    want = recipe["reports"]["pretrained"]["results"][0]["macro_auroc"]["point"]
    assert from_file.results[0].auroc.point == pytest.approx(want, abs=1e-6)


def test_eval_errors_name_the_problem(run, tmp_path, capsys) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "no config.yaml there" in capsys.readouterr().err
    assert main(["eval", str(run), "--task", "ptbxl/superdiagnostic"]) == 2
    assert "reads ptbxl stores" in capsys.readouterr().err
    assert main(["eval", str(run), "--task", "eegmat/conditon"]) == 2
    assert "did you mean 'eegmat/condition'" in capsys.readouterr().err
