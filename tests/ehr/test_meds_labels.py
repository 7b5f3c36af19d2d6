"""MEDS labels: ACES on MEDS-DEV task configs over a clinseq store (real MIMIC-IV demo), any labels
Parquet, and predictions in the MEDS prediction schema checked by meds-evaluation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import meds
import numpy as np
import polars as pl
import pytest

from clinseq.errors import ConfigError
from clinseq.eval.meds_labels import (
    MEDS_DEV_TASKS,
    aces_labels,
    check_labels,
    meds_dev_task,
    read_labels,
    write_labels,
)
from clinseq.eval.meds_predictions import predictions_frame, score_predictions, validate_predictions

pytest.importorskip("aces", reason="needs ACES: pip install -e '.[meds]' (the dev extra brings it)")
meds_evaluation_schema = pytest.importorskip(
    "meds_evaluation.schema", reason="needs meds-evaluation ([meds])"
)

MORTALITY, READMISSION = "mortality/in_icu/first_24h", "readmission/general_hospital/30d"


@pytest.fixture(scope="module")
def demo_labels(mimic_store: Path) -> dict[str, pl.DataFrame]:
    return {task: aces_labels(task, mimic_store) for task in (MORTALITY, READMISSION)}


def test_meds_dev_task_configs_ship_with_clinseq() -> None:
    assert {MORTALITY, READMISSION} <= set(MEDS_DEV_TASKS)
    assert "trigger: icu_admission" in meds_dev_task(MORTALITY).read_text()
    with pytest.raises(ConfigError, match="unknown MEDS-DEV task"):
        meds_dev_task("mortality/in_hospital/nope")


def test_aces_labels_from_meds_dev_configs_over_a_clinseq_store(demo_labels: dict[str, pl.DataFrame]) -> None:
    # The counts ACES gives on the demo's 100 subjects (issue 12): 74 ICU stays (9 deaths), 218 discharges
    # (48 readmitted within 30 days).
    summary = {t: (df.height, int(df["boolean_value"].sum())) for t, df in demo_labels.items()}
    assert summary == {MORTALITY: (74, 9), READMISSION: (218, 48)}
    for labels in demo_labels.values():
        meds.LabelSchema.align(labels.to_arrow())  # the MEDS label schema, as meds itself checks it
        assert labels["prediction_time"].is_not_null().all()


def test_aces_labels_agree_with_the_official_meds_demo(
    demo_labels: dict[str, pl.DataFrame], meds_demo_root: Path
) -> None:
    """Over the 20 subjects the official MEDS demo copy holds, ACES labels the same (subject, time) the same
    way on both ETLs. Not every prediction time exists in both: two subjects' ICU stays sit exactly one day
    apart between the two ETLs, and one discharge has later data (past the 30-day censoring window) only in
    clinseq's."""
    for task, labels in demo_labels.items():
        official = aces_labels(task, meds_demo_root)
        ours = labels.filter(pl.col("subject_id").is_in(official["subject_id"].unique().to_list()))
        both = ours.join(official, on=["subject_id", "prediction_time"], how="inner", suffix="_official")
        assert both.height >= 0.5 * official.height > 0, task
        assert (both["boolean_value"] == both["boolean_value_official"]).all(), task


def test_read_labels_accepts_files_and_folders_and_rejects_bad_tables(tmp_path: Path) -> None:
    labels = pl.DataFrame(
        {
            "subject_id": [3, 1, 1],
            "prediction_time": [datetime(2100, 1, 2), datetime(2100, 1, 3), datetime(2100, 1, 1)],
            "boolean_value": [True, False, True],
        }
    )
    write_labels(labels.head(2), tmp_path / "a" / "part0.parquet")
    write_labels(labels.tail(1), tmp_path / "a" / "nested" / "part1.parquet")
    got = read_labels(tmp_path / "a")
    assert got["subject_id"].to_list() == [1, 1, 3]  # sorted by (subject_id, prediction_time)
    assert got["prediction_time"].to_list()[:2] == [datetime(2100, 1, 1), datetime(2100, 1, 3)]
    assert got.schema["subject_id"] == pl.Int64 and got.schema["prediction_time"] == pl.Datetime("us")
    with pytest.raises(ConfigError, match="missing"):
        check_labels(labels.drop("boolean_value"))
    with pytest.raises(ConfigError, match="null prediction_time"):
        check_labels(labels.with_columns(pl.lit(None, pl.Datetime("us")).alias("prediction_time")))
    with pytest.raises(ConfigError, match="no such labels"):
        read_labels(tmp_path / "nothing")


def test_predictions_pass_meds_evaluation_schema_and_scoring(demo_labels: dict[str, pl.DataFrame]) -> None:
    labels = demo_labels[READMISSION]
    y = labels["boolean_value"].to_numpy()
    rng = np.random.default_rng(0)
    probabilities = np.clip(0.5 * y + 0.5 * rng.uniform(size=len(y)), 0, 1)  # informative scores
    frame = predictions_frame(labels, probabilities)
    meds_evaluation_schema.PredictionSchema.align(frame.to_arrow())  # raises when not valid
    metrics = score_predictions(frame)
    for weighting in ("samples_equally_weighted", "subjects_equally_weighted"):
        assert 0.8 < metrics[weighting]["roc_auc_score"] <= 1.0
    expected = float((probabilities >= 0.5).astype(bool).sum())
    assert frame["predicted_boolean_value"].sum() == expected
    with pytest.raises(ConfigError, match="not all null|needs"):
        validate_predictions(labels)
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        predictions_frame(labels, probabilities + 2.0)


def test_meds_dev_input_windows_are_all_history_up_to_prediction_time(tmp_path: Path) -> None:
    """Every shipped MEDS-DEV task's input window is unbounded before its prediction time (what the
    featurizers read); a user config with a later start is recognised (and announced)."""
    from clinseq.eval import AcesTask, get_task

    assert all(get_task(f"mimic-iv/{t}").input_start() is None for t in MEDS_DEV_TASKS)
    text = meds_dev_task(MORTALITY).read_text().replace("    start: null\n", "    start: end - 7d\n", 1)
    config = tmp_path / "last_week.yaml"
    config.write_text(text)
    task = AcesTask(config)
    assert task.name == "last_week" and task.input_start() == "end - 7d"
