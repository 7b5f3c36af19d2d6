"""EHR tasks defined by ACES configs (MEDS-DEV's among them), as tasks of :func:`clinseq.eval.evaluate`.

:class:`AcesTask` labels a store's subjects with ACES (:func:`~clinseq.eval.meds_labels.aces_labels`)
and hands the MEDS labels to the evaluation protocol as examples keyed by (subject_id, prediction_time).
Featurizers read only each subject's events at or before its prediction time
(:class:`~clinseq.eval.ehr_features.EventFeatures`, :class:`~clinseq.eval.code_counts.CodeCountFeatures`).

Registered names (:data:`~clinseq.eval.tasks.TASKS`): ``mimic-iv/<MEDS-DEV task>`` for every shipped
MEDS-DEV task with MEDS-DEV's MIMIC-IV predicates, e.g. ``mimic-iv/mortality/in_icu/first_24h`` and
``mimic-iv/readmission/general_hospital/30d`` (the default tasks of a MIMIC-IV store).

Inputs: every featurizer reads all of a subject's history up to and including ``prediction_time`` — the
input window of every MEDS-DEV task (``input: start: null, end_inclusive: True, index_timestamp: end``).
A config whose input window starts later gets the same inputs (more history, never later events) and a
printed notice.

Split: the store's subject split (MEDS train / tuning / held_out) when its validation and test subjects
each have both labels of the task; otherwise (e.g. the 100-subject demo, whose 10-subject folds hold
0–2 positive stays) the protocol's subject-level cross-fitting, and the report says which
(``protocol``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from clinseq.eval.meds_labels import MEDS_DEV_TASKS, aces_labels
from clinseq.eval.tasks import TASKS, Examples, LabelsTable, Task

if TYPE_CHECKING:
    from clinseq.timeline import TimelineStore

__all__ = ["MIMIC_IV_TASKS", "AcesTask"]

#: Store datasets (``manifest["dataset"]``) that MEDS-DEV's MIMIC-IV predicates fit: clinseq's MIMIC-IV
#: ETL and the official MIMIC-IV MEDS ETL.
_MIMIC_IV = ("mimic-iv", "MIMIC-IV")


class AcesTask(Task):
    """A binary task whose labels ACES extracts from a store (module docstring).

    Args:
        config: a MEDS-DEV task name (e.g. ``mortality/in_icu/first_24h``) or an ACES task YAML.
        predicates: an ACES predicates YAML (default for MEDS-DEV names: their MIMIC-IV predicates).
        name: the task's name in tables and files (default ``mimic-iv/<config>`` for MEDS-DEV names).
        datasets: the store datasets the task reads (default: MIMIC-IV stores for MEDS-DEV names).

    Labels are extracted once per store and kept (``labels(store)``).
    """

    def __init__(
        self,
        config: str | os.PathLike[str],
        predicates: str | os.PathLike[str] | None = None,
        name: str | None = None,
        datasets: tuple[str, ...] | None = None,
    ) -> None:
        self.config, self.predicates = config, predicates
        is_path = Path(config).suffix in (".yaml", ".yml")
        self.name = name or (Path(config).stem if is_path else f"mimic-iv/{str(config).strip('/')}")
        self.datasets = datasets if datasets is not None else (() if is_path else _MIMIC_IV)
        self._labels: dict[str, pl.DataFrame] = {}

    def input_start(self) -> object:
        """The ``start`` of the config's ``input`` window (None: unbounded, as in every MEDS-DEV task)."""
        import yaml

        from clinseq.eval.meds_labels import meds_dev_task

        path = (
            Path(self.config)
            if Path(self.config).suffix in (".yaml", ".yml")
            else meds_dev_task(str(self.config))
        )
        windows = (yaml.safe_load(path.read_text()) or {}).get("windows") or {}
        start = (windows.get("input") or {}).get("start")
        return None if start is None or str(start).strip().lower() in ("null", "none") else start

    def labels(self, store: TimelineStore) -> pl.DataFrame:
        """The task's MEDS labels on ``store`` (ACES over the store's MEDS shards)."""
        key = str(Path(store.path).resolve())
        if key not in self._labels:
            start = self.input_start()
            if start is not None:
                print(
                    f"{self.name}: the input window starts at {start!r}; clinseq's EHR inputs are all of a "
                    "subject's events up to prediction_time (more history than the window, never later)"
                )
            self._labels[key] = aces_labels(self.config, store.path, predicates=self.predicates)
        return self._labels[key]

    def examples(self, store: TimelineStore) -> Examples:
        self.check_store(store)
        ex = LabelsTable(self.labels(store), name=self.name).examples(store)
        if ex.split is not None and not all(_both_labels(ex, fold) for fold in ("val", "test")):
            ex = Examples(ex.task, ex.keys, ex.y, ex.classes, ex.subjects, None)
        return ex


def _both_labels(ex: Examples, fold: str) -> bool:
    y = ex.y[ex.split == fold, 0]
    return bool(y.size) and 0 < int(y.sum()) < y.size


#: The registered MIMIC-IV task names (``mimic-iv/<MEDS-DEV task>``).
MIMIC_IV_TASKS = tuple(f"mimic-iv/{task}" for task in MEDS_DEV_TASKS)
TASKS.update({f"mimic-iv/{task}": (lambda t=task: AcesTask(t)) for task in MEDS_DEV_TASKS})
