"""Task labels in the MEDS label schema: read any labels Parquet, or extract them with ACES.

A MEDS label table (``meds.LabelSchema``, MEDS v0.4) has one row per prediction:

=======================  ===============  ===============================================================
column                   type             meaning
=======================  ===============  ===============================================================
``subject_id``           int64            the subject (a store's ``patient_id``)
``prediction_time``      timestamp[µs]    when the prediction is made: events at or before it may be used
``boolean_value``        bool             the binary label (the tasks here are binary)
``integer_value``,       int64, float32,  other label kinds (optional; kept, not used)
``float_value``,         string
``categorical_value``
=======================  ===============  ===============================================================

Labels come from anywhere: ACES (Xu et al. 2024, "ACES: Automatic Cohort Extraction System for
Event-Stream Datasets"), MEDS-DEV, or a user's own code: :func:`read_labels` reads a file or a folder
of Parquet files and checks the schema. :func:`aces_labels` runs ACES itself (``es-aces``, installed by
``pip install "clinseq[meds]"``) on a task config and its predicates over the MEDS shards of a store
(``store/events/data/*.parquet``) or of any MEDS dataset; clinseq does not re-implement ACES. The
MEDS-DEV task configs and MIMIC-IV predicates ship with clinseq (:func:`meds_dev_task`,
:func:`meds_dev_predicates`; ``clinseq/eval/meds_dev_tasks/README.md`` says why they are copied).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from clinseq.errors import ConfigError

__all__ = [
    "LABEL_SCHEMA",
    "MEDS_DEV_TASKS",
    "aces_labels",
    "check_labels",
    "meds_dev_predicates",
    "meds_dev_task",
    "meds_shards",
    "read_labels",
    "write_labels",
]

#: The MEDS label schema (``meds.LabelSchema`` of meds 0.4) as polars types.
LABEL_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.Int64(),
    "prediction_time": pl.Datetime("us"),
    "boolean_value": pl.Boolean(),
    "integer_value": pl.Int64(),
    "float_value": pl.Float32(),
    "categorical_value": pl.String(),
}
_REQUIRED = ("subject_id", "prediction_time", "boolean_value")

_TASKS_ROOT = Path(__file__).parent / "meds_dev_tasks"
#: The MEDS-DEV (0.0.14) task names that ship with clinseq, e.g. ``mortality/in_icu/first_24h``.
MEDS_DEV_TASKS: tuple[str, ...] = tuple(
    sorted(
        p.relative_to(_TASKS_ROOT / "tasks").with_suffix("").as_posix()
        for p in (_TASKS_ROOT / "tasks").rglob("*.yaml")
    )
)


def check_labels(frame: pl.DataFrame, source: str = "labels") -> pl.DataFrame:
    """A binary label table checked against the MEDS label schema, typed and sorted.

    Args:
        frame: columns ``subject_id``, ``prediction_time``, ``boolean_value`` (and optionally the other
            label columns of :data:`LABEL_SCHEMA`; other columns are dropped).
        source: where the frame came from (named in errors).

    Returns:
        the frame with the :data:`LABEL_SCHEMA` types, sorted by (subject_id, prediction_time).

    Raises:
        ConfigError: a required column is missing, cannot be cast, or holds nulls.
    """
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{source}: not a MEDS binary label table: missing {missing} (has {frame.columns}); a label "
            "table needs subject_id (int64), prediction_time (timestamp[us]) and boolean_value (bool)"
        )
    kept = [c for c in LABEL_SCHEMA if c in frame.columns]
    try:
        out = frame.select(
            pl.col(c).cast(LABEL_SCHEMA[c], strict=True) if frame.schema[c] != LABEL_SCHEMA[c] else pl.col(c)
            for c in kept
        )
    except pl.exceptions.PolarsError as exc:
        types = {c: str(frame.schema[c]) for c in kept}
        raise ConfigError(
            f"{source}: label columns cannot be cast to the MEDS label schema {types}: {exc}"
        ) from exc
    for column in _REQUIRED:
        nulls = out[column].null_count()
        if nulls:
            raise ConfigError(f"{source}: {nulls} row(s) have a null {column}; every label needs one")
    return out.sort("subject_id", "prediction_time", maintain_order=True)


def read_labels(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Labels from a Parquet file, or from every ``*.parquet`` under a folder (MEDS-DEV's ``labels_dir``).

    Returns:
        :func:`check_labels` of their concatenation.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise ConfigError(f"{path}: no *.parquet label files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"{path}: no such labels file or folder")
    frames = []
    for file in files:
        try:
            frames.append(check_labels(pl.read_parquet(file), str(file)))
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ConfigError(f"{file}: cannot read labels ({exc})") from exc
    return check_labels(pl.concat(frames, how="diagonal_relaxed"), str(path))


def write_labels(labels: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a label table (checked) as Parquet; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_labels(labels, str(path)).write_parquet(path)
    return path


def meds_dev_task(name: str) -> Path:
    """The shipped MEDS-DEV task config of ``name`` (e.g. ``readmission/general_hospital/30d``)."""
    path = _TASKS_ROOT / "tasks" / f"{name.strip('/')}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown MEDS-DEV task {name!r}; shipped tasks: {', '.join(MEDS_DEV_TASKS)}")
    return path


def meds_dev_predicates(dataset: str = "MIMIC-IV") -> Path:
    """The shipped MEDS-DEV predicates of a dataset (MIMIC-IV's match clinseq's MIMIC-IV codes)."""
    path = _TASKS_ROOT / "datasets" / dataset / "predicates.yaml"
    if not path.is_file():
        have = sorted(p.parent.name for p in (_TASKS_ROOT / "datasets").glob("*/predicates.yaml"))
        raise ConfigError(f"no MEDS-DEV predicates for dataset {dataset!r}; shipped: {have}")
    return path


def meds_shards(data: str | os.PathLike[str]) -> list[Path]:
    """The MEDS data shards of a clinseq store (``events/data``), a MEDS dataset root (``data/``) or a
    folder of shards, sorted."""
    root = Path(data)
    for folder in (root / "events" / "data", root / "data", root):
        files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
        if files:
            return files
    raise ConfigError(
        f"{root}: no MEDS data shards; pass a clinseq EHR store (events/data/*.parquet), a MEDS dataset "
        "(data/**/*.parquet) or a folder of MEDS shards"
    )


def _resolve_task(task: str | os.PathLike[str]) -> Path:
    path = Path(task)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{path}: no such ACES task config")
        return path
    return meds_dev_task(str(task))


def aces_labels(
    task: str | os.PathLike[str],
    data: str | os.PathLike[str],
    predicates: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    subjects: Sequence[int] | None = None,
) -> pl.DataFrame:
    """Extract a task's labels with ACES, one MEDS shard at a time (a subject lives in one shard).

    Args:
        task: a MEDS-DEV task name (:data:`MEDS_DEV_TASKS`) or the path of any ACES task config.
        data: a clinseq EHR store, a MEDS dataset root, or a folder of MEDS shards (:func:`meds_shards`).
        predicates: an ACES predicates file overriding the config's placeholders (``???``); default for a
            MEDS-DEV task name: MEDS-DEV's MIMIC-IV predicates; None for a config path: the config's own.
        out: also write the labels there as Parquet.
        subjects: keep only these subjects' labels.

    Returns:
        the labels in the MEDS label schema (:func:`check_labels`).

    Raises:
        ConfigError: ACES is not installed (``pip install "clinseq[meds]"``), or a path is wrong.
    """
    try:
        from aces import config as aces_config
        from aces import predicates as aces_predicates
        from aces import query as aces_query
        from omegaconf import DictConfig
    except ImportError as exc:
        raise ConfigError(
            f'ACES is not installed ({exc}); install the MEDS extra: pip install -e ".[meds]" (or '
            "pip install es-aces), or bring a labels Parquet file instead"
        ) from exc
    config_path = _resolve_task(task)
    if predicates is None and Path(task).suffix not in (".yaml", ".yml"):
        predicates = meds_dev_predicates()
    predicates_path = Path(predicates) if predicates is not None else None
    if predicates_path is not None and not predicates_path.is_file():
        raise ConfigError(f"{predicates_path}: no such ACES predicates file")
    cfg = aces_config.TaskExtractorConfig.load(config_path=config_path, predicates_path=predicates_path)
    frames = []
    for shard in meds_shards(data):
        predicates_df = aces_predicates.get_predicates_df(
            cfg, DictConfig({"standard": "meds", "path": str(shard)})
        )
        result = aces_query.query(cfg, predicates_df)
        if result.height == 0 or "label" not in result.columns:
            continue
        frames.append(
            result.select(
                pl.col("subject_id"),
                pl.col("index_timestamp").alias("prediction_time"),
                pl.col("label").cast(pl.Boolean).alias("boolean_value"),
            )
        )
    empty = pl.DataFrame(schema={c: LABEL_SCHEMA[c] for c in _REQUIRED})
    labels = check_labels(pl.concat(frames) if frames else empty, f"ACES on {config_path.name}")
    if subjects is not None:
        labels = labels.filter(pl.col("subject_id").is_in(list(subjects)))
    if out is not None:
        write_labels(labels, out)
    return labels
