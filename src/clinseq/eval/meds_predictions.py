"""Predictions in the MEDS prediction schema, checked and scored by ``meds-evaluation``.

A prediction table is the label table (:mod:`clinseq.eval.meds_labels`) plus

================================  =======  =========================================================
``predicted_boolean_probability``  float32  the model's probability that ``boolean_value`` is True
``predicted_boolean_value``        bool     ``probability >= threshold`` (default 0.5)
================================  =======  =========================================================

(``meds_evaluation.schema.PredictionSchema`` of meds-evaluation 0.0.6, on MEDS 0.4), one row per label
row. :func:`validate_predictions` aligns a table with that schema when ``meds-evaluation`` is installed
(``pip install "clinseq[meds]"``) and otherwise checks the same columns and types itself;
:func:`score_predictions` runs ``meds_evaluation.evaluate_binary_classification`` (AUROC, AUPRC, …,
samples- and subjects-equally weighted), as the MEDS-DEV harness does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from clinseq.errors import ConfigError
from clinseq.eval.meds_labels import LABEL_SCHEMA, check_labels

__all__ = [
    "PREDICTED_PROBABILITY",
    "PREDICTED_VALUE",
    "predictions_frame",
    "score_predictions",
    "validate_predictions",
    "write_predictions",
]

PREDICTED_PROBABILITY = "predicted_boolean_probability"
PREDICTED_VALUE = "predicted_boolean_value"


def predictions_frame(
    labels: pl.DataFrame, probabilities: np.ndarray, threshold: float = 0.5
) -> pl.DataFrame:
    """The label rows with the model's probabilities (n,) and thresholded decisions, checked."""
    labels = check_labels(labels, "labels of the predictions")
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if p.shape != (labels.height,):
        raise ConfigError(f"need one probability per label row ({labels.height}), got shape {p.shape}")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ConfigError("probabilities must be finite and in [0, 1]")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
    frame = labels.with_columns(
        pl.Series(PREDICTED_PROBABILITY, p.astype(np.float32), dtype=pl.Float32),
        pl.Series(PREDICTED_VALUE, p >= threshold, dtype=pl.Boolean),
    )
    return validate_predictions(frame)


def validate_predictions(frame: pl.DataFrame, source: str = "predictions") -> pl.DataFrame:
    """The frame aligned with meds-evaluation's ``PredictionSchema`` (its own check when installed).

    Raises:
        ConfigError: missing or mistyped columns, nulls in the label columns, or both prediction
            columns absent or all null.
    """
    present = [c for c in (PREDICTED_PROBABILITY, PREDICTED_VALUE) if c in frame.columns]
    if not present or all(frame[c].null_count() == frame.height for c in present):
        raise ConfigError(
            f"{source}: needs {PREDICTED_PROBABILITY} (float32) and/or {PREDICTED_VALUE} (bool), not all null"
        )
    label_cols = [c for c in frame.columns if c not in (PREDICTED_PROBABILITY, PREDICTED_VALUE)]
    check_labels(frame.select(label_cols), source)  # raises on a bad label part
    frame = frame.with_columns(pl.col(c).cast(LABEL_SCHEMA[c]) for c in label_cols if c in LABEL_SCHEMA)
    try:
        from meds_evaluation.schema import PredictionSchema
    except ImportError:
        casts = {PREDICTED_PROBABILITY: pl.Float32, PREDICTED_VALUE: pl.Boolean}
        return frame.with_columns(pl.col(c).cast(casts[c]) for c in present)
    try:
        return pl.from_arrow(PredictionSchema.align(frame.to_arrow()))
    except Exception as exc:  # flexible_schema raises its own SchemaValidationError / TableValidationError
        raise ConfigError(f"{source}: not valid under meds-evaluation's PredictionSchema: {exc}") from exc


def write_predictions(frame: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Validate and write predictions as Parquet (MEDS-DEV reads ``{output_dir}/predictions.parquet``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    validate_predictions(frame, str(path)).write_parquet(path)
    return path


def score_predictions(frame: pl.DataFrame, samples_per_subject: int = 4, seed: int = 0) -> dict[str, Any]:
    """meds-evaluation's binary-classification metrics of a prediction table.

    Raises:
        ConfigError: meds-evaluation is not installed.
    """
    try:
        from meds_evaluation.evaluate import evaluate_binary_classification
    except ImportError as exc:
        raise ConfigError(f'meds-evaluation is not installed ({exc}); pip install -e ".[meds]"') from exc
    return evaluate_binary_classification(
        validate_predictions(frame), samples_per_subject=samples_per_subject, resampling_seed=seed
    )
