"""Labelled prediction tasks: what a probe is trained and scored on, for every modality.

A task turns a store into :class:`Examples`: one row per labelled example, keyed either

- by **recording** (``recording_id``; PTB-XL statements, EEGMAT rest vs arithmetic), or
- by **(subject_id, prediction_time)** (EHR; the MEDS label schema: ``subject_id``, ``prediction_time``,
  ``boolean_value``) — the representation of such an example may use only the subject's events at or
  before ``prediction_time``,

with the multi-hot labels ``y`` (n, K), the class names, the subject of each example (the unit of every
split and of the bootstrap) and, where the data define one, a fixed ``train``/``val``/``test`` split by
subject. A task without a fixed split is evaluated by subject-level cross-fitting
(:mod:`clinseq.eval.protocol`).

Named tasks (:data:`TASKS`, :func:`get_task`):

=========================  ========================================================================
``ptbxl/<label set>``      PTB-XL benchmark label sets (all, diagnostic, subdiagnostic, superdiagnostic,
                           form, rhythm) per ECG; split ``strat_fold`` 1–8 / 9 / 10
``eegmat/condition``       EEGMAT: rest (``SubjectNN_1.edf``) vs mental arithmetic (``SubjectNN_2.edf``)
                           per recording; no fixed split
``eegmat/count_quality``   EEGMAT: the subject's count quality (``subject-info.csv``: 1 good, 0 bad), one
                           example per subject keyed by the subject's arithmetic recording
                           (``_2``); no fixed split
=========================  ========================================================================

Any labels table a user brings is a task too (:class:`LabelsTable`, ``clinseq eval RUN --labels FILE``):
a Parquet/CSV with ``recording_id`` and label columns, or a MEDS label table.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from clinseq.data.splits import assert_no_leakage, ptbxl_split
from clinseq.errors import ConfigError
from clinseq.eval.labels import PTBXL_TASKS, ptbxl_task_labels

if TYPE_CHECKING:
    from clinseq.timeline import TimelineStore

__all__ = [
    "PREDICTION_TIME_KEYS",
    "RECORDING_KEYS",
    "SPLITS",
    "TASKS",
    "EEGMATTask",
    "Examples",
    "LabelsTable",
    "PTBXLTask",
    "Task",
    "all_recordings",
    "default_tasks",
    "get_task",
    "store_split",
    "task_names",
]

#: Key columns of an example labelled per recording.
RECORDING_KEYS = ("recording_id",)
#: Key columns of an example labelled at a time of a subject's timeline (MEDS label schema).
PREDICTION_TIME_KEYS = ("subject_id", "prediction_time")
#: The split names of :attr:`Examples.split`.
SPLITS = ("train", "val", "test")
#: MEDS split names (``metadata/subject_splits.parquet``) and common aliases → ours.
_SPLIT_ALIASES = {
    "train": "train",
    "tuning": "val",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "held_out": "test",
    "test": "test",
    "eval": "test",
}


@dataclass(frozen=True)
class Examples:
    """The labelled examples of a task on one store.

    Attributes:
        task: the task's name.
        keys: one row per example: ``recording_id`` (and ``patient_id``), or ``subject_id`` and
            ``prediction_time`` (timestamp[us]); rows in the order of ``y``.
        y: (n, K) uint8 multi-hot labels (K = 1 for a binary task).
        classes: the K class names.
        subjects: (n,) int64 subject (patient) of each example: splits and bootstrap are by subject.
        split: (n,) ``"train"``/``"val"``/``"test"`` per example when the data fix a split by subject,
            else None (the protocol then cross-fits over subject folds).
    """

    task: str
    keys: pl.DataFrame
    y: np.ndarray
    classes: list[str]
    subjects: np.ndarray
    split: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.keys.height
        if self.y.ndim != 2 or self.y.shape != (n, len(self.classes)):
            raise ConfigError(
                f"task {self.task!r}: y must be (n examples, K classes) = ({n}, {len(self.classes)}), "
                f"got {self.y.shape}"
            )
        if self.subjects.shape != (n,):
            raise ConfigError(f"task {self.task!r}: subjects must be ({n},), got {self.subjects.shape}")
        if n == 0:
            raise ConfigError(f"task {self.task!r} has no labelled example in this store")
        if self.key_kind == "recording" and self.keys["recording_id"].n_unique() != n:
            raise ConfigError(f"task {self.task!r}: a recording is labelled twice; give each one row")
        if self.split is not None:
            if self.split.shape != (n,) or not set(np.unique(self.split)) <= set(SPLITS):
                raise ConfigError(f"task {self.task!r}: split must hold only {SPLITS} per example")
            assert_no_leakage(
                *(self.subjects[self.split == s] for s in SPLITS), names=[f"{self.task} {s}" for s in SPLITS]
            )

    @property
    def key_kind(self) -> str:
        """``"recording"`` or ``"prediction_time"``: how the examples are keyed."""
        return "recording" if "recording_id" in self.keys.columns else "prediction_time"

    @property
    def recording_ids(self) -> np.ndarray:
        """(n,) int64 recording of each example (recording-keyed tasks only)."""
        if self.key_kind != "recording":
            raise ConfigError(f"task {self.task!r} is keyed by (subject_id, prediction_time), not recording")
        return self.keys["recording_id"].to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return self.keys.height


class Task(ABC):
    """A labelled prediction task: ``examples(store)`` gives its :class:`Examples` on that store.

    Attributes:
        name: the task's name (files and tables are named after it).
        datasets: the store ``manifest["dataset"]`` values the task reads (empty: any store).
    """

    name: str = ""
    datasets: tuple[str, ...] = ()

    @abstractmethod
    def examples(self, store: TimelineStore) -> Examples:
        """The labelled examples of this task in ``store``."""

    def check_store(self, store: TimelineStore) -> None:
        """Raise :class:`ConfigError` when ``store`` is not a dataset this task reads."""
        dataset = store.manifest.get("dataset")
        if self.datasets and dataset not in self.datasets:
            raise ConfigError(
                f"task {self.name!r} reads {' or '.join(self.datasets)} stores; {store.path} is a "
                f"{dataset!r} store. Pick a task of that dataset ({', '.join(task_names(dataset))}) or "
                "bring labels (--labels FILE)"
            )


def _recording_keys(store: TimelineStore, recording_ids: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
    rec = store.recordings.select("recording_id", "patient_id")
    keys = pl.DataFrame({"recording_id": np.asarray(recording_ids, np.int64)}).join(
        rec, on="recording_id", how="left", maintain_order="left"
    )
    missing = keys.filter(pl.col("patient_id").is_null())["recording_id"].to_list()
    if missing:
        raise ConfigError(f"recording_id(s) not in {store.path}: {missing[:10]}")
    return keys, keys["patient_id"].to_numpy().astype(np.int64)


class PTBXLTask(Task):
    """A PTB-XL benchmark label set (:func:`~clinseq.eval.labels.ptbxl_task_labels`), split by
    ``strat_fold`` (1–8 train, 9 val, 10 test; by patient)."""

    datasets = ("ptbxl",)

    def __init__(self, label_set: str = "superdiagnostic") -> None:
        if label_set not in PTBXL_TASKS:
            raise ConfigError(f"PTB-XL label set must be one of {PTBXL_TASKS}, got {label_set!r}")
        self.label_set = label_set
        self.name = f"ptbxl/{label_set}"

    def examples(self, store: TimelineStore) -> Examples:
        self.check_store(store)
        labels = ptbxl_task_labels(store, self.label_set)
        keys, subjects = _recording_keys(store, labels.recording_ids)
        folds = ptbxl_split(store)
        split = np.full(len(subjects), "train", dtype=object)
        split[np.isin(subjects, folds["val"])] = "val"
        split[np.isin(subjects, folds["test"])] = "test"
        return Examples(self.name, keys, labels.y, list(labels.classes), subjects, split.astype(str))


class EEGMATTask(Task):
    """EEGMAT (Zyma et al. 2019, PhysioNet ``eegmat``) tasks, from a store of ``clinseq convert eeg``.

    - ``condition``: every recording, positive class ``task`` (mental arithmetic, ``_2``) against
      ``rest`` (``_1``); each subject has one of each, so the classes are balanced in every subject fold.
    - ``count_quality``: one example per subject, its arithmetic recording (``_2``), labelled with the
      subject's count quality from ``subject-info.csv`` (1 good, 0 bad): can the EEG during the task tell
      who counted well?

    EEGMAT has no official split: the protocol cross-fits over subject folds.
    """

    datasets = ("eegmat",)
    KINDS = ("condition", "count_quality")

    def __init__(self, kind: str = "condition") -> None:
        if kind not in self.KINDS:
            raise ConfigError(f"EEGMAT task must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.name = f"eegmat/{kind}"

    def examples(self, store: TimelineStore) -> Examples:
        self.check_store(store)
        rec = store.recordings
        need = {"recording_id", "patient_id", "condition", "count_quality"}
        if not need <= set(rec.columns):
            raise ConfigError(
                f"{store.path}: EEGMAT recordings need columns {sorted(need)}, got {rec.columns}; convert "
                "the folder as published (with subject-info.csv): clinseq convert eeg SRC OUT"
            )
        rec = rec.sort("recording_id")
        if self.kind == "condition":
            rec = rec.filter(pl.col("condition").is_in(["rest", "task"]))
            y = (rec["condition"] == "task").to_numpy().astype(np.uint8)[:, None]
            classes = ["task"]
        else:
            rec = rec.filter((pl.col("condition") == "task") & pl.col("count_quality").is_not_null())
            y = rec["count_quality"].to_numpy().astype(np.uint8)[:, None]
            classes = ["good_count"]
        keys, subjects = _recording_keys(store, rec["recording_id"].to_numpy())
        return Examples(self.name, keys, y, classes, subjects, None)


class LabelsTable(Task):
    """Labels a user brings: a Parquet or CSV file (or a DataFrame), keyed by recording or MEDS-style.

    - Keyed by recording: a ``recording_id`` column and either one column per class (0/1 or bool) or
      one binary label column (``boolean_value``, ``label``); every other column is a class.
    - MEDS label schema: ``subject_id``, ``prediction_time`` and ``boolean_value`` (``integer_value``,
      ``float_value``, ``categorical_value`` are ignored); one binary class.

    The split is the store's subject split (``patients.split``; MEDS ``train``/``tuning``/``held_out``)
    when every labelled subject has one, else none (cross-fitting).
    """

    def __init__(self, source: str | Path | pl.DataFrame, name: str | None = None) -> None:
        if isinstance(source, pl.DataFrame):
            self.frame, self.path = source, None
        else:
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"labels file {path} does not exist")
            try:
                self.frame = (
                    pl.read_csv(path, try_parse_dates=True)
                    if path.suffix == ".csv"
                    else (pl.read_parquet(path))
                )
            except Exception as exc:  # polars raises several types for an unreadable file
                raise ConfigError(f"labels file {path}: cannot read it as Parquet or CSV ({exc})") from exc
            self.path = path
        self.name = name or (self.path.stem if self.path is not None else "labels")

    def _where(self) -> str:
        return f"labels {self.path}" if self.path is not None else "labels table"

    def examples(self, store: TimelineStore) -> Examples:
        frame = self.frame
        if "recording_id" in frame.columns:
            classes = [c for c in frame.columns if c not in ("recording_id", "patient_id", "subject_id")]
            if not classes:
                raise ConfigError(f"{self._where()}: no label column beside recording_id")
            frame = frame.sort("recording_id")
            y = self._binary(frame.select(classes))
            keys, subjects = _recording_keys(store, frame["recording_id"].to_numpy())
            if "boolean_value" in classes and len(classes) == 1:
                classes = [self.name]
        elif set(PREDICTION_TIME_KEYS) <= set(frame.columns):
            if "boolean_value" not in frame.columns:
                raise ConfigError(
                    f"{self._where()}: a MEDS label table needs boolean_value (binary tasks); got "
                    f"{frame.columns}"
                )
            frame = frame.sort(*PREDICTION_TIME_KEYS)
            keys = frame.select(
                pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us"))
            )
            if keys.is_duplicated().any():
                raise ConfigError(f"{self._where()}: a (subject_id, prediction_time) is labelled twice")
            y = self._binary(frame.select("boolean_value"))
            subjects = keys["subject_id"].to_numpy()
            classes = [self.name]
        else:
            raise ConfigError(
                f"{self._where()}: expected a recording_id column, or subject_id + prediction_time + "
                f"boolean_value (MEDS label schema); got {frame.columns}"
            )
        return Examples(self.name, keys, y, classes, subjects, store_split(store, subjects))

    def _binary(self, labels: pl.DataFrame) -> np.ndarray:
        values = labels.cast(pl.Int64, strict=False)
        if any(values[c].null_count() for c in values.columns):
            raise ConfigError(
                f"{self._where()}: label columns {labels.columns} hold missing or non-0/1 values"
            )
        y = values.to_numpy()
        if not np.isin(y, (0, 1)).all():
            raise ConfigError(f"{self._where()}: label columns {labels.columns} must hold 0/1 (or bool)")
        return y.astype(np.uint8)


def all_recordings(store: TimelineStore, modality: str | None = None) -> Examples:
    """Every recording of ``store`` (of one ``modality``) as unlabelled examples (K = 0): what
    ``clinseq embed`` embeds when no task is named."""
    rec = store.recordings
    if modality is not None and "modality" in rec.columns:
        rec = rec.filter(pl.col("modality") == modality)
    if rec.height == 0:
        raise ConfigError(
            f"{store.path} holds no recordings{f' of modality {modality}' if modality else ''} to embed; "
            "for events (EHR) pass labels with subject_id and prediction_time"
        )
    keys, subjects = _recording_keys(store, rec.sort("recording_id")["recording_id"].to_numpy())
    return Examples("recordings", keys, np.zeros((keys.height, 0), np.uint8), [], subjects, None)


def store_split(store: TimelineStore, subjects: np.ndarray) -> np.ndarray | None:
    """Per-example split from the store's ``patients.split`` (MEDS names mapped), or None when the store
    has no split for every subject of ``subjects``, or the split lacks a val or test subject."""
    patients = store.patients
    if "split" not in patients.columns:
        return None
    of = dict(zip(patients["patient_id"].to_list(), patients["split"].to_list(), strict=True))
    split = [_SPLIT_ALIASES.get(str(of.get(int(s))).lower()) for s in subjects]
    if any(s is None for s in split) or not {"train", "val", "test"} <= set(split):
        return None
    return np.asarray(split, dtype=str)


#: Task name → factory. Other modalities register theirs here (e.g. EHR tasks from ACES configs).
TASKS: dict[str, Callable[[], Task]] = {
    **{f"ptbxl/{label_set}": (lambda s=label_set: PTBXLTask(s)) for label_set in PTBXL_TASKS},
    **{f"eegmat/{kind}": (lambda k=kind: EEGMATTask(k)) for kind in EEGMATTask.KINDS},
}


def task_names(dataset: str | None = None) -> list[str]:
    """The registered task names (those of one dataset: the part before ``/``)."""
    return [n for n in TASKS if dataset is None or n.split("/")[0] == dataset]


def get_task(task: str | Task) -> Task:
    """A task by name (:data:`TASKS`), or ``task`` itself."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        close = difflib.get_close_matches(str(task), list(TASKS), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"unknown task {task!r}{hint} (tasks: {', '.join(TASKS)})")
    return TASKS[task]()


def default_tasks(dataset: str | None) -> Sequence[str]:
    """The tasks evaluated on a store of ``dataset`` when none is named."""
    ehr = ["mimic-iv/mortality/in_icu/first_24h", "mimic-iv/readmission/general_hospital/30d"]
    return {
        "ptbxl": ["ptbxl/superdiagnostic"],
        "eegmat": ["eegmat/condition", "eegmat/count_quality"],
        "mimic-iv": ehr,  # clinseq's MIMIC-IV ETL
        "MIMIC-IV": ehr,  # the official MIMIC-IV MEDS ETL (clinseq convert meds)
    }.get(dataset or "", [])
