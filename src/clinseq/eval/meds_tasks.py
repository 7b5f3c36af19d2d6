"""EHR tasks in MEDS terms: labels keyed by (subject_id, prediction_time) → probe at label fractions.

Protocol of :func:`evaluate_meds_task` (issue 12, items 2–3):

1. labels in the MEDS label schema (:mod:`clinseq.eval.meds_labels`: any Parquet, or ACES on a
   MEDS-DEV task config); rows of subjects the store does not hold are dropped (counted);
2. subject-level splits: the store's own (``patients.parquet`` ``split``: train / val / test), checked
   disjoint; ``test_splits`` and ``val_splits`` say which of them score and choose C;
3. for each label row, the events up to its ``prediction_time`` (never later:
   :class:`~clinseq.eval.ehr_features.PredictionTimeEvents`) → one frozen embedding per encoder
   (e.g. the pretrained encoder and the same encoder at its random initialisation);
4. for each label fraction: that fraction of the training subjects with a label (nested, seeded,
   :func:`~clinseq.data.splits.label_fraction_subset`; all their label rows), a linear probe on the
   embeddings (:func:`~clinseq.eval.probe.fit_linear_probe`), and the non-neural baseline: counts of
   each code in the same input window → logistic regression (:mod:`clinseq.eval.code_counts`);
5. test AUROC and AUPRC with subject-bootstrap 95 % CIs (:func:`~clinseq.eval.metrics.evaluate_predictions`
   resamples subjects, so a subject's several prediction times stay together), the same resamples for
   every model, and paired differences against the pretrained encoder.

C is chosen on the validation rows when they hold both labels; otherwise (tiny data) it is fixed (``C``,
default the middle of the grid) and the report says so (``details.C_fixed``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from clinseq.data.event_sequences import CodeVocabulary, ValueNormalizer
from clinseq.data.splits import assert_no_leakage, store_split
from clinseq.eval.code_counts import COUNT_CS, fit_count_baseline
from clinseq.eval.ehr_features import PredictionTimeEvents, embed_at_prediction_times
from clinseq.eval.meds_labels import check_labels
from clinseq.eval.metrics import MetricCI
from clinseq.eval.probe import DEFAULT_CS, fit_linear_probe
from clinseq.eval.report import (
    PLOT_NAME,
    ProbeReport,
    _check_fractions,
    _differences,
    _report,
    _run,
    _slug,
    _Task,
    plot_auroc_vs_label_fraction,
)
from clinseq.utils import ConfigError

if TYPE_CHECKING:
    import torch

    from clinseq.timeline import TimelineStore

__all__ = ["COUNTS_NAME", "MedsTask", "evaluate_meds_task", "format_meds_table", "meds_task"]

#: The report name of the count baseline.
COUNTS_NAME = "code counts + LR"


class MedsTask:
    """A binary MEDS task over one store: its label rows, their subjects, and the fold of each row.

    Attributes:
        name: the task's name (e.g. ``mortality/in_icu/first_24h``).
        labels: the label rows kept (subjects in the store's train/val/test splits), in order.
        n_dropped: label rows dropped because the store does not hold (or split) their subject.
        folds: ``_Task`` of :mod:`clinseq.eval.report`: y (n, 1), subjects, split, val/test masks.
    """

    def __init__(self, name: str, labels: pl.DataFrame, n_dropped: int, folds: _Task) -> None:
        self.name, self.labels, self.n_dropped, self.folds = name, labels, n_dropped, folds

    def counts(self) -> dict[str, dict[str, int]]:
        """fold → {rows, subjects, positives} (train = every training subject's rows)."""
        t = self.folds
        in_train = np.isin(t.patients, t.split["train"])
        out = {}
        for fold, mask in (("train", in_train), ("val", t.in_val), ("test", t.in_test)):
            out[fold] = {
                "rows": int(mask.sum()),
                "subjects": len(np.unique(t.patients[mask])),
                "positives": int(t.y[mask, 0].sum()),
            }
        return out


def meds_task(
    store: TimelineStore,
    labels: pl.DataFrame,
    name: str,
    test_splits: Sequence[str] = ("test",),
    val_splits: Sequence[str] = ("val",),
    splits: Mapping[str, np.ndarray] | None = None,
) -> MedsTask:
    """The rows of ``labels`` whose subjects are split, with their folds (see the module docstring).

    ``splits`` (split name → subject ids) defaults to the store's own
    (:func:`~clinseq.data.splits.store_split`); pass the pretraining split when it was another one, so
    that no test subject was pretrained on.
    """
    labels = check_labels(labels, f"labels of {name}")
    splits = store_split(store) if splits is None else {k: np.asarray(v, np.int64) for k, v in splits.items()}
    unknown = [s for s in (*test_splits, *val_splits) if s not in splits]
    if unknown:
        raise ConfigError(f"{store.path}: no subject in split(s) {unknown}; the store has {sorted(splits)}")
    if set(test_splits) & set(val_splits) or "train" in (*test_splits, *val_splits):
        raise ConfigError(
            f"test_splits {list(test_splits)} and val_splits {list(val_splits)} must be disjoint and not "
            "hold 'train'"
        )
    groups = {
        "train": splits.get("train", np.zeros(0, np.int64)),
        "val": np.unique(np.concatenate([splits[s] for s in val_splits] or [np.zeros(0, np.int64)])),
        "test": np.unique(np.concatenate([splits[s] for s in test_splits])),
    }
    assert_no_leakage(groups)
    known = np.concatenate(list(groups.values()))
    kept = labels.filter(pl.col("subject_id").is_in(known.tolist()))
    subjects = kept["subject_id"].to_numpy().astype(np.int64)
    y = kept["boolean_value"].to_numpy().astype(np.uint8)[:, None]
    in_val, in_test = np.isin(subjects, groups["val"]), np.isin(subjects, groups["test"])
    if not in_test.any():
        raise ConfigError(f"task {name!r}: no label row of a test subject ({list(test_splits)})")
    if not np.isin(subjects, groups["train"]).any():
        raise ConfigError(f"task {name!r}: no label row of a training subject")
    folds = _Task(np.arange(len(kept), dtype=np.int64), y, [name], subjects, groups, in_val, in_test)
    return MedsTask(name, kept, labels.height - kept.height, folds)


def _probe_scorer(z: np.ndarray, t: _Task, C: float | None, Cs: Sequence[float]):  # noqa: ANN202
    """Linear probe on embeddings; C on the validation rows when they hold both labels, else fixed."""
    y_val = t.y[t.in_val]
    can_choose = C is None and y_val.size and 0 < y_val.sum() < len(y_val)
    fixed = None if can_choose else (C if C is not None else sorted(Cs)[len(Cs) // 2])

    def score(in_train: np.ndarray) -> tuple[np.ndarray, float | None, dict[str, Any]]:
        if fixed is not None:
            probe = fit_linear_probe(z[in_train], t.y[in_train], C=fixed)
            return probe.decision_function(z[t.in_test]), probe.C, {"C_fixed": True}
        probe = fit_linear_probe(z[in_train], t.y[in_train], z[t.in_val], y_val, Cs=Cs)
        details = {"val_auroc_by_C": {f"{c:g}": v for c, v in probe.val_auroc.items()}}
        return probe.decision_function(z[t.in_test]), probe.C, details

    return score


def _count_scorer(counts: sp.csr_matrix, t: _Task, C: float | None, Cs: Sequence[float], min_rows: int):  # noqa: ANN202
    def score(in_train: np.ndarray) -> tuple[np.ndarray, float | None, dict[str, Any]]:
        model = fit_count_baseline(
            counts[in_train],
            t.y[in_train, 0],
            counts[t.in_val],
            t.y[t.in_val, 0],
            C=C,
            Cs=Cs,
            min_rows=min_rows,
        )
        details = {"n_codes": len(model.columns), "C_fixed": not model.val_auroc}
        if model.val_auroc:
            details["val_auroc_by_C"] = {f"{c:g}": v for c, v in model.val_auroc.items()}
        return model.decision_function(counts[t.in_test])[:, None], model.C, details

    return score


def evaluate_meds_task(
    encoders: Mapping[str, torch.nn.Module],
    store: TimelineStore,
    labels: pl.DataFrame,
    *,
    task: str,
    vocab: CodeVocabulary,
    normalizer: ValueNormalizer,
    max_len: int = 256,
    input_window_s: float | None = None,
    fractions: Sequence[float] = (0.1, 1.0),
    seeds: Sequence[int] = (0,),
    n_boot: int = 1000,
    test_splits: Sequence[str] = ("test",),
    val_splits: Sequence[str] = ("val",),
    splits: Mapping[str, np.ndarray] | None = None,
    C: float | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    count_baseline: bool = True,
    count_min_rows: int = 1,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    out_dir: str | Path | None = None,
    print_table: bool = True,
) -> dict[int, dict[str, ProbeReport]]:
    """Evaluate frozen EHR encoders (and the count baseline) on one MEDS task (module docstring).

    Args:
        encoders: name → event encoder (``EventTransformer``); the first is the one the others are
            compared with (e.g. ``{"pretrained": enc, "random init": enc0}``).
        store: the EHR store the labels refer to.
        labels: MEDS labels (``subject_id``, ``prediction_time``, ``boolean_value``).
        task: the task's name in reports and file names.
        vocab, normalizer: the pretraining vocabulary and value statistics.
        max_len: events per input (the most recent up to ``prediction_time``).
        input_window_s: seconds of history before ``prediction_time`` (None: all).
        fractions, seeds: label fractions of the training subjects and their draws.
        n_boot: subject-bootstrap resamples.
        test_splits, val_splits: splits that are scored / choose C (e.g. ``("val", "test")`` and ``()``
            on the 100-subject demo, where each fold alone holds a handful of positives).
        splits: split name → subject ids (default: the store's own split); the pretraining split.
        C, Cs: fixed inverse L2 strength, or the grid searched on the validation rows.
        count_baseline: also evaluate counts of each code + logistic regression.
        count_min_rows: the count baseline's codes are those in at least this many training rows.
        out_dir: writes ``eval_<task>.json`` (each seed's reports, fold counts, differences) and
            ``<task>_auroc_vs_label_fraction.png`` there.
        print_table: print the AUROC and AUPRC tables.

    Returns:
        seed → name → :class:`~clinseq.eval.report.ProbeReport` (the count baseline as
        :data:`COUNTS_NAME`).
    """
    if not encoders:
        raise ConfigError("encoders is empty; pass e.g. {'pretrained': enc, 'random init': enc0}")
    fractions = _check_fractions(fractions)
    meds = meds_task(store, labels, task, test_splits, val_splits, splits)
    t = meds.folds
    events = PredictionTimeEvents(
        store.event_index, meds.labels, vocab, normalizer, max_len=max_len, input_window_s=input_window_s
    )
    scorers = {}
    for name, encoder in encoders.items():
        z = embed_at_prediction_times(encoder, events, batch_size=batch_size, device=device)
        scorers[name] = ("linear_probe", _probe_scorer(z, t, C, Cs))
    if count_baseline:
        from clinseq.eval.code_counts import code_count_matrix

        counts = code_count_matrix(events)
        scorers[COUNTS_NAME] = ("count_lr", _count_scorer(counts, t, C, COUNT_CS, count_min_rows))
    out: dict[int, dict[str, ProbeReport]] = {}
    for seed in seeds:
        reports = {}
        for name, (method, score) in scorers.items():
            results = _run(t, task, fractions, int(seed), n_boot, score)
            reports[name] = _report(t, task, name, method, None, int(seed), n_boot, results)
        out[int(seed)] = reports
        if print_table:
            print(format_meds_table(meds, reports, "auroc"))
            print()
            print(format_meds_table(meds, reports, "auprc"))
    if out_dir is not None:
        _write(meds, out, Path(out_dir), {"max_len": max_len, "input_window_s": input_window_s})
    return out


def _paired(reports: Mapping[str, ProbeReport]) -> dict[str, dict[float, dict[str, MetricCI]]]:
    """other name → fraction → metric: paired difference (first encoder − other)."""
    names = list(reports)
    first = names[0]
    out = {}
    for other in names[1:]:
        diffs = _differences({first: reports[first], other: reports[other]}, other)[first]
        out[other] = diffs
    return out


def format_meds_table(meds: MedsTask, reports: Mapping[str, ProbeReport], metric: str = "auroc") -> str:
    """One row per label fraction, one column per model (``point [low, high]``), then the paired
    differences of the first model against each other one."""
    names = list(reports)
    first = reports[names[0]]
    c = meds.counts()
    test, train = c["test"], c["train"]
    title = (
        f"{meds.name} · {metric.upper()} [95 % CI, subject bootstrap, n={first.n_boot}] · test "
        f"{test['subjects']} subjects / {test['rows']} predictions ({test['positives']} positive) · train "
        f"{train['subjects']} subjects / {train['rows']} ({train['positives']} positive)"
    )
    diffs = _paired(reports)
    header = ["labels"] + names + [f"Δ {names[0]} − {n}" for n in diffs]
    rows = []
    for r in first.results:
        row = [f"{100 * r.fraction:g} % ({r.n_train_patients} subj.)"]
        row += [str(getattr(reports[n].result(r.fraction), metric)) for n in names]
        for n in diffs:
            ci = diffs[n][r.fraction][metric]
            row.append(
                f"{ci.point:+.3f}" if np.isnan(ci.low) else f"{ci.point:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"
            )
        rows.append(row)
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(header)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _write(
    meds: MedsTask, by_seed: Mapping[int, Mapping[str, ProbeReport]], out: Path, options: dict
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    slug = _slug(meds.name.replace("/", "_"))
    payload = {
        "task": meds.name,
        "folds": meds.counts(),
        "n_label_rows_dropped": meds.n_dropped,
        "options": options,
        "seeds": {
            str(seed): {
                "reports": {n: r.to_dict() for n, r in reports.items()},
                "differences": {
                    n: {f"{f:g}": {m: ci.to_dict() for m, ci in d.items()} for f, d in per.items()}
                    for n, per in _paired(reports).items()
                },
            }
            for seed, reports in by_seed.items()
        },
    }
    (out / f"eval_{slug}.json").write_text(json.dumps(payload, indent=1))
    first_seed = next(iter(by_seed))
    plot_auroc_vs_label_fraction(by_seed[first_seed], out / f"{slug}_{PLOT_NAME}")
