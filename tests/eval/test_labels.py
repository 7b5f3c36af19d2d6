"""PTB-XL task labels against an independent reading of the published CSVs (benchmark conventions)."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clinseq.errors import ConfigError
from clinseq.eval.labels import PTBXL_TASKS, ptbxl_task_labels


def _benchmark_labels(root: Path, task: str) -> dict[int, set[str]]:
    """ecg_ptbxl_benchmarking's compute_label_aggregations, re-written from its definition on the raw CSVs."""
    with (root / "scp_statements.csv").open(newline="") as f:
        statements = {row[""]: row for row in csv.DictReader(f)}
    out = {}
    with (root / "ptbxl_database.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            codes = ast.literal_eval(row["scp_codes"]).keys()
            diag = [c for c in codes if c in statements and statements[c]["diagnostic"] == "1.0"]
            if task == "all":
                labels = set(codes)
            elif task == "diagnostic":
                labels = set(diag)
            elif task == "subdiagnostic":
                labels = {statements[c]["diagnostic_subclass"] for c in diag} - {""}
            elif task == "superdiagnostic":
                labels = {statements[c]["diagnostic_class"] for c in diag} - {""}
            else:
                labels = {c for c in codes if c in statements and statements[c][task] == "1.0"}
            out[int(row["ecg_id"])] = labels
    return out


@pytest.mark.parametrize("task", PTBXL_TASKS)
def test_task_labels_match_the_benchmark_definition(ptbxl_store, ptbxl_root: Path, task: str) -> None:
    expected = _benchmark_labels(ptbxl_root, task)
    kept = {ecg: labels for ecg, labels in expected.items() if labels}  # ECGs without a label are dropped
    classes = sorted(set().union(*kept.values()))  # min_samples = 0: every class that occurs

    got = ptbxl_task_labels(ptbxl_store, task)
    assert got.classes == classes
    rec = ptbxl_store.recordings
    ecg_of = dict(zip(rec["recording_id"].to_list(), rec["ecg_id"].to_list(), strict=True))
    assert sorted(ecg_of[r] for r in got.recording_ids.tolist()) == sorted(kept)
    assert np.all(np.diff(got.recording_ids) > 0)
    assert got.y.shape == (len(kept), len(classes)) and got.y.dtype == np.uint8
    for rid, row in zip(got.recording_ids.tolist(), got.y, strict=True):
        assert {classes[k] for k in np.flatnonzero(row)} == kept[ecg_of[rid]]
    if task == "superdiagnostic":
        assert classes == ["CD", "HYP", "MI", "NORM", "STTC"]


def test_min_count_drops_rare_classes_and_their_only_ecgs(ptbxl_store) -> None:
    full = ptbxl_task_labels(ptbxl_store, "rhythm")
    counts = full.y.sum(axis=0)
    assert counts.min() == 1  # the subset has a rhythm seen once (SVTAC)
    pruned = ptbxl_task_labels(ptbxl_store, "rhythm", min_count=2)
    assert pruned.classes == [c for c, n in zip(full.classes, counts, strict=True) if n >= 2]
    assert (pruned.y.sum(axis=1) > 0).all()


def test_bad_task_or_store_raises(ptbxl_store) -> None:
    with pytest.raises(ConfigError, match="task must be one of"):
        ptbxl_task_labels(ptbxl_store, "superclass")
    with pytest.raises(ConfigError, match="labels_rhythm"):
        ptbxl_task_labels(pl.DataFrame({"recording_id": [1]}), "rhythm")
    with pytest.raises(ConfigError, match="min_count"):
        ptbxl_task_labels(ptbxl_store, "rhythm", min_count=0)
