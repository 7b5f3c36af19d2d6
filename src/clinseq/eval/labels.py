"""PTB-XL classification tasks as multi-hot label matrices, following ecg_ptbxl_benchmarking.

The PTB-XL benchmark (Strodthoff et al. 2021, IEEE JBHI 25:1519; code: ``ecg_ptbxl_benchmarking``,
``utils.compute_label_aggregations`` and ``utils.select_data``) defines six tasks on the SCP statements:
``all`` (every statement, 71 on the full data), ``diagnostic`` (44), ``subdiagnostic`` (23),
``superdiagnostic`` (5: NORM, MI, STTC, CD, HYP), ``form`` (19) and ``rhythm`` (12). Its conventions, kept
here:

- the class vocabulary is computed on the **whole** dataset (all folds) and keeps the classes with more
  than ``min_samples`` positive ECGs — the benchmark runs with ``min_samples = 0``, i.e. every class that
  occurs at least once (our ``min_count = 1``);
- ECGs with no label of the task are **dropped** (e.g. ECGs without any diagnostic statement are not in
  the diagnostic tasks);
- statements count whatever their likelihood, classes are sorted by name (``MultiLabelBinarizer``).

On a small subset (the 400-ECG PTB-XL subset), many classes then have 0 or 1 positive in the test fold.
We do not drop them from the vocabulary (the probe is trained on them where it can be); the *metrics*
average over the classes that have both labels in the evaluated set and report that class count
(:mod:`clinseq.eval.metrics`).

The label sets per ECG are read from the store's ``labels_<task>`` columns written by
:class:`clinseq.io.ptbxl.PTBXLSource`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import polars as pl

from clinseq.errors import ConfigError

if TYPE_CHECKING:
    from clinseq.timeline import TimelineStore

__all__ = ["PTBXL_TASKS", "PTBXLLabels", "ptbxl_task_labels"]

#: The six PTB-XL benchmark tasks.
PTBXL_TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")


class PTBXLLabels(NamedTuple):
    """The examples of one task: ``recording_ids`` (n,) int64 sorted, ``y`` (n, K) uint8 multi-hot,
    ``classes`` the K class names (sorted)."""

    recording_ids: np.ndarray
    y: np.ndarray
    classes: list[str]


def ptbxl_task_labels(
    store: TimelineStore | pl.DataFrame, task: str = "superdiagnostic", *, min_count: int = 1
) -> PTBXLLabels:
    """Multi-hot labels of a PTB-XL task for every ECG of the store that has at least one of its labels.

    Args:
        store: a PTB-XL store (or its ``recordings`` frame) with ``labels_<task>`` list columns.
        task: one of :data:`PTBXL_TASKS`.
        min_count: keep the classes with at least this many positive ECGs in the whole store (all folds);
            1 reproduces the benchmark's ``min_samples = 0``.

    Returns:
        :class:`PTBXLLabels` ``(recording_ids, y, classes)``, rows sorted by ``recording_id``.
    """
    if task not in PTBXL_TASKS:
        raise ConfigError(f"task must be one of {PTBXL_TASKS}, got {task!r}")
    if min_count < 1:
        raise ConfigError(f"min_count must be >= 1 positive ECG per class, got {min_count}")
    frame = store if isinstance(store, pl.DataFrame) else store.recordings
    column = f"labels_{task}"
    if column not in frame.columns or "recording_id" not in frame.columns:
        raise ConfigError(
            f"expected PTB-XL recordings with 'recording_id' and '{column}', got columns {frame.columns}; "
            "convert the source with clinseq.io.ptbxl.PTBXLSource (clinseq convert ptbxl SRC OUT)"
        )
    frame = frame.select("recording_id", column).sort("recording_id")
    counts = frame.explode(column).drop_nulls(column).group_by(column).len()
    classes = sorted(counts.filter(pl.col("len") >= min_count)[column].to_list())
    if not classes:
        raise ConfigError(
            f"no class of task {task!r} has >= {min_count} positive ECGs in the {frame.height} recordings; "
            "lower min_count or use a larger subset"
        )
    index = {c: k for k, c in enumerate(classes)}
    ids, rows = [], []
    for rid, labels in zip(frame["recording_id"].to_list(), frame[column].to_list(), strict=True):
        ks = [index[c] for c in (labels or []) if c in index]
        if ks:  # the benchmark drops ECGs with no label of the task
            ids.append(rid)
            rows.append(ks)
    y = np.zeros((len(ids), len(classes)), np.uint8)
    for i, ks in enumerate(rows):
        y[i, ks] = 1
    return PTBXLLabels(np.asarray(ids, np.int64), y, classes)
