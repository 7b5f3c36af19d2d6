"""Labelled tasks on the real subsets: EEGMAT condition and count quality, subject-held-out folds, labels
tables keyed by recording or by (subject_id, prediction_time)."""

from __future__ import annotations

import csv
import re
from datetime import datetime

import numpy as np
import polars as pl
import pytest
import torch

from clinseq.data.splits import LeakageError
from clinseq.errors import ConfigError
from clinseq.eval import (
    TASKS,
    EvalOptions,
    Examples,
    LabelsTable,
    evaluate,
    get_task,
    subject_folds,
)
from clinseq.models import ResNet1d

CHANNELS = ["Fp1", "Fp2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6", "P3", "P4", "O1", "O2"]
CHANNELS += ["Fz", "Cz", "Pz"]


def _files(root) -> list[tuple[int, int]]:
    """(subject, k) of every EDF file: k = 1 rest, 2 mental arithmetic."""
    found = [re.fullmatch(r"Subject(\d+)_([12])\.edf", p.name) for p in sorted(root.glob("*.edf"))]
    return [(int(m[1]), int(m[2])) for m in found if m]


def test_condition_labels_every_recording_from_its_file_name(eegmat_store, eegmat_root) -> None:
    ex = get_task("eegmat/condition").examples(eegmat_store)
    files = _files(eegmat_root)
    assert len(ex) == len(files) == 40 and ex.key_kind == "recording" and ex.split is None
    truth = {10 * s + k: int(k == 2) for s, k in files}  # recording_id = 10 · subject + k (io/eeg.py)
    assert dict(zip(ex.recording_ids.tolist(), ex.y[:, 0].tolist(), strict=True)) == truth
    assert ex.subjects.tolist() == [rid // 10 for rid in ex.recording_ids.tolist()]
    assert ex.classes == ["task"]


def test_count_quality_is_one_example_per_subject_from_subject_info(eegmat_store, eegmat_root) -> None:
    ex = get_task("eegmat/count_quality").examples(eegmat_store)
    with (eegmat_root / "subject-info.csv").open(newline="") as f:
        quality = {int(r["Subject"][7:]): int(r["Count quality"]) for r in csv.DictReader(f)}
    subjects = sorted({s for s, _ in _files(eegmat_root)})
    assert ex.subjects.tolist() == subjects  # one example each
    assert ex.recording_ids.tolist() == [10 * s + 2 for s in subjects]  # the arithmetic recording
    assert ex.y[:, 0].tolist() == [quality[s] for s in subjects]
    assert 0 < ex.y.sum() < len(ex)


@pytest.mark.parametrize("name", ["eegmat/condition", "eegmat/count_quality"])
def test_cross_fit_folds_hold_out_subjects_and_score_each_example_once(eegmat_store, name) -> None:
    ex = get_task(name).examples(eegmat_store)
    folds = subject_folds(ex, 5)
    assert len(folds) == 5
    tested = np.sum([f.test for f in folds], axis=0)
    assert (tested == 1).all()  # every example scored exactly once
    for f in folds:
        assert not (f.train & f.val).any() and not (f.train & f.test).any() and not (f.val & f.test).any()
        sets = [set(ex.subjects[m].tolist()) for m in (f.train, f.val, f.test)]
        assert (
            not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        )  # no subject twice
        assert set().union(*sets) == set(ex.subjects.tolist())
        assert len(np.unique(ex.y[f.val, 0])) == 2  # stratified: C can be chosen on every fold
    assert [f.test.tolist() for f in folds] == [f.test.tolist() for f in subject_folds(ex, 5)]  # seeded


def test_a_split_sharing_a_subject_is_refused(eegmat_store) -> None:
    ex = get_task("eegmat/condition").examples(eegmat_store)
    split = np.where(np.arange(len(ex)) % 2 == 0, "train", "test")  # rest → train, task → test: leaks
    split[:4] = "val"
    with pytest.raises(LeakageError):
        Examples(ex.task, ex.keys, ex.y, ex.classes, ex.subjects, split)


def test_eegmat_probe_on_the_store(eegmat_store, tmp_path) -> None:
    """Random-init encoder vs features holding the answer: the plumbing reaches 1.0 and the CI is sane."""
    torch.manual_seed(0)
    encoder = ResNet1d(len(CHANNELS), widths=(8, 16), downsample=(4,), kernel_size=8)

    def answer(store, examples):  # features that hold the label
        return examples.y + 0.05 * np.random.default_rng(0).normal(size=examples.y.shape)

    options = EvalOptions(fractions=(0.5, 1.0), n_boot=100, window_s=10.0, channels=CHANNELS, progress=False)
    result = evaluate(
        {"answer": answer, "random init": encoder},
        eegmat_store,
        "eegmat/condition",
        options,
        out_dir=tmp_path,
    )
    reports = result.reports[0]
    assert reports["answer"].protocol == "5-fold cross-fit" and reports["answer"].n_test_examples == 40
    assert reports["answer"].result(1.0).auroc.point == 1.0
    r = reports["random init"].result(1.0)
    assert 0.0 <= r.auroc.low <= r.auroc.point <= r.auroc.high <= 1.0
    assert r.n_train_subjects == 12  # 20 subjects, 5 folds: 4 test, 4 validation, 12 train
    assert (tmp_path / "seed0" / "eval_eegmat_condition.json").is_file()
    # Cross-fitted scores are pooled, so every fold's probe uses one C: the best mean validation AUROC.
    for row in ("answer", "random init"):
        for fraction in (0.5, 1.0):
            res = reports[row].result(fraction)
            curves = [fold["val_auroc_by_C"] for fold in res.details["folds"]]
            grid = sorted(curves[0], key=float)
            means = [np.nanmean([curve[c] for curve in curves]) for c in grid]
            assert res.C == float(grid[int(np.nanargmax(means))])
            assert res.details["C_by_fold"] == [res.C] * 5


def test_labels_table_by_recording_and_meds_schema(eegmat_store, tmp_path) -> None:
    rec = eegmat_store.recordings.sort("recording_id")
    frame = rec.select("recording_id", (pl.col("condition") == "task").alias("boolean_value"))
    frame.write_parquet(tmp_path / "arith.parquet")
    ex = LabelsTable(tmp_path / "arith.parquet").examples(eegmat_store)
    same = get_task("eegmat/condition").examples(eegmat_store)
    assert ex.task == "arith" and ex.classes == ["arith"] and ex.split is None  # the store has no split
    np.testing.assert_array_equal(ex.y, same.y)
    np.testing.assert_array_equal(ex.subjects, same.subjects)

    meds = pl.DataFrame(
        {
            "subject_id": [2, 2, 3],
            "prediction_time": [datetime(2020, 1, 1), datetime(2020, 1, 2), datetime(2020, 1, 1)],
            "boolean_value": [True, False, True],
        }
    )
    ex = LabelsTable(meds, name="meds").examples(eegmat_store)
    assert ex.key_kind == "prediction_time" and ex.keys.columns == ["subject_id", "prediction_time"]
    assert ex.y[:, 0].tolist() == [1, 0, 1] and ex.subjects.tolist() == [2, 2, 3]
    with pytest.raises(ConfigError, match="keyed by \\(subject_id, prediction_time\\)"):
        _ = ex.recording_ids
    with pytest.raises(ConfigError, match="expected a recording_id column"):
        LabelsTable(pl.DataFrame({"x": [1]})).examples(eegmat_store)
    with pytest.raises(ConfigError, match="0/1"):
        LabelsTable(pl.DataFrame({"recording_id": [21], "y": [3]})).examples(eegmat_store)
    with pytest.raises(ConfigError, match="does not exist"):
        LabelsTable(tmp_path / "missing.parquet")


def test_registry_names_the_tasks() -> None:
    assert {"ptbxl/superdiagnostic", "eegmat/condition", "eegmat/count_quality"} <= set(TASKS)
    assert all(get_task(name).name == name for name in TASKS)
