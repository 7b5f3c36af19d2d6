"""The one evaluation entry point: :func:`evaluate` — featurizers × task → probe at label fractions → CIs.

For any task (:mod:`clinseq.eval.tasks`: labels keyed by recording or by (subject_id, prediction_time)):

1. the task's labelled examples on the store, with their subjects;
2. the subject folds (:func:`subject_folds`): the data's own train/val/test split when the task has one
   (PTB-XL ``strat_fold``, a store's MEDS subject splits), else **cross-fitting** over ``k`` subject folds
   (fold i is the test set, fold i+1 the validation set, the rest trains; every example is scored once,
   by the probe that never saw its subject), stratified by label for binary tasks. No subject is in two
   of a fold's sets (checked);
3. one feature vector per example from each featurizer (a pretrained encoder, the same encoder at random
   init, a non-neural baseline...; :mod:`clinseq.eval.features`) — computed once and shared by every
   seed, fraction and fold;
4. for each label fraction: that fraction of each fold's training subjects (``ceil(fraction · n)``,
   nested — the 1 % subjects ⊂ the 10 % ⊂ all — and seeded; every labelled example of a chosen subject
   is used), a leakage check, then the probe (:func:`~clinseq.eval.probe.fit_linear_probe`, C chosen on
   the validation subjects) or :func:`~clinseq.eval.finetune.fine_tune`;
5. macro AUROC and AUPRC over the classes with both labels among the scored examples, with 95 %
   subject-level bootstrap CIs (:func:`~clinseq.eval.metrics.evaluate_predictions`), and the paired
   difference of every row against the baseline row on the same resamples.

The bootstrap and fraction seed is the same for every featurizer, so rows are compared on the same
training subjects and resamples. The CIs cover the sampling of the **test subjects** only; the draw of
the training subjects at small fractions is a further source of variance (repeat over ``seeds`` to see
it). Cross-fitted scores of different folds come from different probes and are pooled into one AUROC
(pooled out-of-fold predictions), which is slightly conservative. So that those scores are on one scale,
cross-fitting chooses **one C for all folds**: the C of the grid with the best mean validation AUROC over
the folds (a C chosen per fold, 1e-4 in one fold and 10 in the next, gives logits of very different
spreads, and pooling them can turn folds that each rank perfectly into a poor pooled AUROC).

Example (the recipes' evaluate phase)::

    from clinseq.eval import EvalOptions, evaluate
    result = evaluate({"pretrained": enc, "random init": enc0}, store, "ptbxl/superdiagnostic",
                      EvalOptions(fractions=(0.1, 1.0), window_s=5.0), out_dir=run_dir / "eval")
    print(result.table())
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from clinseq.data.splits import assert_no_leakage, label_fraction_subset
from clinseq.errors import ConfigError
from clinseq.eval.embeddings import Preprocess
from clinseq.eval.features import EncoderFeatures, Featurizer, check_features
from clinseq.eval.finetune import fine_tune
from clinseq.eval.metrics import evaluate_predictions
from clinseq.eval.probe import DEFAULT_CS, fit_linear_probe
from clinseq.eval.report import (
    FractionResult,
    ProbeReport,
    differences,
    format_table,
    plot_auroc_vs_label_fraction,
    slug,
)
from clinseq.eval.tasks import Examples, Task, get_task

if TYPE_CHECKING:
    import torch

    from clinseq.timeline import TimelineStore

__all__ = ["EvalOptions", "Evaluation", "Fold", "evaluate", "subject_folds"]

#: ``score(in_train, in_val, in_test, C=None) -> (test scores (n_test, K), C or None, details)``; a
#: linear-probe scorer fits at ``C`` when given, else chooses it on ``in_val`` (details["val_auroc_by_C"]).
Scorer = Callable[..., tuple[np.ndarray, float | None, dict[str, Any]]]


@dataclass
class EvalOptions:
    """How :func:`evaluate` runs the protocol (every field has a default).

    Protocol:
        fractions: label fractions of the training subjects, each in (0, 1].
        seeds: label-fraction/bootstrap seeds; one report per seed.
        n_boot: subject bootstrap resamples for the 95 % CIs (0: none).
        method: ``linear_probe`` (frozen features) or ``fine_tune`` (encoders only).
        C, Cs: fixed inverse L2 strength of the probe, or the grid searched on the validation subjects.
        folds: subject folds for cross-fitting a task without a split of its own.
        finetune: extra keyword arguments of :func:`~clinseq.eval.finetune.fine_tune`.
        baseline: the row the others are compared with (default: the last featurizer).
        print_table: print the AUROC and AUPRC tables.
        progress: progress bars.
    Embedding (used when a featurizer is given as a bare encoder, wrapped in
    :class:`~clinseq.eval.features.EncoderFeatures`):
        window_s: window length in seconds, None = whole recordings; channels, preprocess, batch_size,
        device: as for :func:`~clinseq.eval.embeddings.extract_embeddings`.
    """

    fractions: Sequence[float] = (0.01, 0.1, 1.0)
    seeds: Sequence[int] = (0,)
    n_boot: int = 1000
    method: Literal["linear_probe", "fine_tune"] = "linear_probe"
    C: float | None = None
    Cs: Sequence[float] = DEFAULT_CS
    folds: int = 5
    finetune: Mapping[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    print_table: bool = True
    progress: bool = True
    window_s: float | None = None
    channels: Sequence[str] | Sequence[int] | None = None
    preprocess: Preprocess | None = None
    batch_size: int = 64
    device: str | torch.device | None = None

    def __post_init__(self) -> None:
        fractions = sorted({float(f) for f in self.fractions})
        if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
            raise ConfigError(
                f"fractions must be values in (0, 1], got {list(self.fractions)}; e.g. (0.01, 0.1, 1.0)"
            )
        self.fractions = tuple(fractions)
        seeds = list(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in seeds):
            raise ConfigError(f"seeds must be a non-empty list of integers, got {seeds!r}; e.g. (0, 1, 2)")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must differ from each other (each writes seed<k>/), got {seeds}")
        self.seeds = tuple(int(s) for s in seeds)
        if self.method not in ("linear_probe", "fine_tune"):
            raise ConfigError(f"method must be 'linear_probe' or 'fine_tune', got {self.method!r}")
        if self.finetune and self.method != "fine_tune":
            raise ConfigError("finetune options given but method='linear_probe'; pass method='fine_tune'")
        if self.n_boot < 0:
            raise ConfigError(f"n_boot must be >= 0 resamples, got {self.n_boot}")
        if self.folds < 3:
            raise ConfigError(f"folds must be >= 3 (test, validation and training folds), got {self.folds}")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The option names (the keys ``eval.options`` of a recipe config may set)."""
        return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class Fold:
    """Boolean masks over the examples: who trains, who chooses C, who is scored."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def subject_folds(examples: Examples, folds: int = 5, seed: int = 0) -> list[Fold]:
    """The task's split as one :class:`Fold`, or ``folds`` cross-fitting folds by subject.

    Cross-fitting: subjects are dealt into ``k = min(folds, n_subjects)`` groups (seeded by ``seed``;
    stratified by label for single-class tasks, ``StratifiedGroupKFold``); fold i tests on group i,
    validates on group i+1 and trains on the rest. Raises :class:`LeakageError` if a subject were in two
    sets of a fold.
    """
    subjects = examples.subjects
    if examples.split is not None:
        split = examples.split
        out = [Fold(split == "train", split == "val", split == "test")]
    else:
        n_subjects = len(np.unique(subjects))
        k = min(folds, n_subjects)
        if k < 3:
            raise ConfigError(
                f"task {examples.task!r} has {n_subjects} subject(s): cross-fitting needs at least 3 "
                "(test, validation and training subjects)"
            )
        group = _fold_of_examples(examples, k, seed)
        out = [Fold(~np.isin(group, [i, (i + 1) % k]), group == (i + 1) % k, group == i) for i in range(k)]
    for i, f in enumerate(out):
        if not (f.train.any() and f.val.any() and f.test.any()):
            raise ConfigError(
                f"task {examples.task!r}, fold {i}: {int(f.train.sum())} training, {int(f.val.sum())} "
                f"validation and {int(f.test.sum())} test examples; every set needs examples"
            )
        assert_no_leakage(
            subjects[f.train], subjects[f.val], subjects[f.test],
            names=[f"{examples.task} fold {i} train", "val", "test"],
        )  # fmt: skip
    return out


def _fold_of_examples(examples: Examples, k: int, seed: int) -> np.ndarray:
    """Group index (0..k-1) of each example; all examples of a subject share it."""
    if examples.y.shape[1] == 1:
        from sklearn.model_selection import StratifiedGroupKFold

        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        group = np.empty(len(examples), np.int64)
        for i, (_, test) in enumerate(
            splitter.split(np.zeros(len(examples)), examples.y[:, 0], examples.subjects)
        ):
            group[test] = i
        return group
    unique = np.unique(examples.subjects)
    order = np.random.default_rng(seed).permutation(unique)
    of = {int(s): i for i, chunk in enumerate(np.array_split(order, k)) for s in chunk}
    return np.array([of[int(s)] for s in examples.subjects], np.int64)


@dataclass
class Evaluation:
    """What :func:`evaluate` measured: seed → featurizer name → :class:`ProbeReport`."""

    task: str
    baseline: str
    reports: dict[int, dict[str, ProbeReport]]

    def table(self, metric: Literal["auroc", "auprc"] = "auroc", seed: int | None = None) -> str:
        """The printed table of one seed (default the first)."""
        seed = next(iter(self.reports)) if seed is None else seed
        return format_table(self.reports[seed], metric, self.baseline)

    def save(self, out_dir: str | Path) -> list[Path]:
        """Per seed: ``seed<k>/eval_<task>.json`` (every report and the paired differences) and
        ``seed<k>/auroc_<task>.png``. Returns the JSON paths."""
        paths = []
        for seed, reports in self.reports.items():
            out = Path(out_dir) / f"seed{seed}"
            out.mkdir(parents=True, exist_ok=True)
            diffs = differences(reports, self.baseline) if len(reports) > 1 else {}
            payload = {
                "task": self.task,
                "baseline": self.baseline,
                "reports": {n: r.to_dict() for n, r in reports.items()},
                "differences": {
                    n: {f"{f:g}": {m: ci.to_dict() for m, ci in d.items()} for f, d in per.items()}
                    for n, per in diffs.items()
                },
            }
            path = out / f"eval_{slug(self.task)}.json"
            path.write_text(json.dumps(payload, indent=1))
            plot_auroc_vs_label_fraction(reports, out / f"auroc_{slug(self.task)}.png")
            paths.append(path)
        return paths


def _as_featurizer(value: Any, options: EvalOptions) -> Featurizer:
    if hasattr(value, "embed") and hasattr(value, "parameters"):  # a clinseq encoder (nn.Module)
        return EncoderFeatures(
            value, window_s=options.window_s, channels=options.channels, preprocess=options.preprocess,
            batch_size=options.batch_size, device=options.device, progress=options.progress,
        )  # fmt: skip
    if not callable(value):
        raise ConfigError(
            f"a featurizer must be an encoder or a callable (store, examples) -> features, got {value!r}"
        )
    return value


def _probe_scorer(z: np.ndarray, ex: Examples, options: EvalOptions) -> Scorer:
    def score(in_train: np.ndarray, in_val: np.ndarray, in_test: np.ndarray, C: float | None = None):
        probe = fit_linear_probe(
            z[in_train], ex.y[in_train], z[in_val], ex.y[in_val], C=options.C if C is None else C,
            Cs=options.Cs,
        )  # fmt: skip
        details = {"val_auroc_by_C": {f"{c:g}": v for c, v in probe.val_auroc.items()}}
        return probe.decision_function(z[in_test]), probe.C, details

    return score


def _fine_tune_scorer(
    featurizer: Featurizer, store: TimelineStore, ex: Examples, options: EvalOptions, seed: int
) -> Scorer:
    if not isinstance(featurizer, EncoderFeatures) or ex.key_kind != "recording":
        raise ConfigError("method='fine_tune' needs encoders (EncoderFeatures) and a recording-keyed task")
    ids = ex.recording_ids
    f = featurizer

    def score(in_train: np.ndarray, in_val: np.ndarray, in_test: np.ndarray):
        tuned = fine_tune(
            f.encoder, store, ids[in_train], ex.y[in_train], ids[in_val], ex.y[in_val],
            window_s=f.window_s, channels=f.channels, preprocess=f.preprocess, device=f.device, seed=seed,
            progress=options.progress, **dict(options.finetune),
        )  # fmt: skip
        scores = tuned.decision_function(store, ids[in_test], batch_size=f.batch_size)
        return scores, None, {"best_epoch": tuned.best_epoch, "history": tuned.history}

    return score


def _run(
    ex: Examples, folds: list[Fold], options: EvalOptions, seed: int, score: Scorer
) -> list[FractionResult]:
    """For each fraction and fold: training subjects (nested), leakage check, ``score``; pooled metrics."""
    scored = np.logical_or.reduce([f.test for f in folds])
    results = []
    for fraction in options.fractions:
        scores = np.full(ex.y.shape, np.nan)
        n_subjects, n_examples, n_constant, cs, details, chosen_all = [], [], [], [], [], []
        for i, f in enumerate(folds):
            # The pool is the fold's training subjects with a labelled example of the task.
            pool = np.unique(ex.subjects[f.train])
            chosen = label_fraction_subset(pool, fraction, seed)
            assert_no_leakage(
                chosen, ex.subjects[f.val], ex.subjects[f.test],
                names=[f"train {fraction:g} (fold {i})", "val", "test"],
            )  # fmt: skip
            in_train = f.train & np.isin(ex.subjects, chosen)
            if not in_train.any():
                raise ConfigError(
                    f"label fraction {fraction:g} selects {len(chosen)} training subject(s) with no "
                    f"{ex.task!r} label; use a larger fraction"
                )
            y_train = ex.y[in_train]
            n_constant.append(int((y_train.min(axis=0) == y_train.max(axis=0)).sum()))
            fold_scores, c, det = score(in_train, f.val, f.test)
            scores[f.test] = fold_scores
            n_subjects.append(len(chosen))
            n_examples.append(int(in_train.sum()))
            cs.append(c)
            details.append(det)
            chosen_all.append((chosen, in_train))
        common_c = _common_c(details) if len(folds) > 1 else None
        if common_c is not None:  # refit the folds whose own choice differed, at the common C
            for i, f in enumerate(folds):
                if cs[i] != common_c:
                    scores[f.test], cs[i], _ = score(chosen_all[i][1], f.val, f.test, C=common_c)
        chosen_all = [chosen for chosen, _ in chosen_all]
        metrics = evaluate_predictions(
            ex.y[scored], scores[scored], ex.subjects[scored], n_boot=options.n_boot, seed=seed
        )
        one_c = cs[0] if len(set(cs)) == 1 else None
        results.append(
            FractionResult(
                fraction=fraction,
                n_train_subjects=round(float(np.mean(n_subjects))),
                n_train_examples=round(float(np.mean(n_examples))),
                n_constant_classes=max(n_constant),
                C=one_c,
                metrics=metrics,
                train_subject_ids=np.unique(np.concatenate(chosen_all)),
                details=details[0] if len(folds) == 1 else {"C_by_fold": cs, "folds": details},
            )
        )
    return results


def _common_c(details: list[dict[str, Any]]) -> float | None:
    """The C with the best mean validation AUROC over the folds (ties: the smallest C), or None when the
    folds' C was fixed (no validation curves) or some fold's curve is missing."""
    curves = [d.get("val_auroc_by_C") for d in details]
    if not curves or not all(curves):
        return None
    grid = sorted({float(c) for curve in curves for c in curve})
    values = np.array([[curve.get(f"{c:g}", np.nan) for curve in curves] for c in grid], dtype=float)
    defined = ~np.isnan(values)
    if not defined.any():
        return None
    means = np.where(defined, values, 0.0).sum(axis=1) / np.maximum(defined.sum(axis=1), 1)
    means[~defined.any(axis=1)] = -np.inf
    return grid[int(np.argmax(means))]


def _report(
    ex: Examples, folds: list[Fold], name: str, options: EvalOptions, seed: int, results: list
) -> ProbeReport:
    scored = np.logical_or.reduce([f.test for f in folds])
    evaluated = results[0].metrics.evaluated
    return ProbeReport(
        name=name,
        task=ex.task,
        method=options.method,
        protocol="split" if len(folds) == 1 else f"{len(folds)}-fold cross-fit",
        classes=list(ex.classes),
        evaluated_classes=[c for c, e in zip(ex.classes, evaluated, strict=True) if e],
        n_test_subjects=len(np.unique(ex.subjects[scored])),
        n_test_examples=int(scored.sum()),
        n_val_examples=round(float(np.mean([f.val.sum() for f in folds]))),
        seed=seed,
        n_boot=options.n_boot,
        results=results,
    )


def evaluate(
    featurizers: Mapping[str, Any],
    store: TimelineStore,
    task: str | Task,
    options: EvalOptions | None = None,
    *,
    out_dir: str | Path | None = None,
) -> Evaluation:
    """Run the probe protocol (module docstring) for every featurizer on one task.

    Args:
        featurizers: row name → a clinseq encoder (embedded with the options' window_s, channels, ...)
            or any :class:`~clinseq.eval.features.Featurizer`; evaluated in this order. E.g.
            ``{"pretrained": enc, "random init": enc0}`` or with a ``"counts + LR"`` baseline callable.
        store: the store the task's examples live in.
        task: a task name (:data:`~clinseq.eval.tasks.TASKS`, e.g. ``"ptbxl/superdiagnostic"``,
            ``"eegmat/condition"``) or a :class:`~clinseq.eval.tasks.Task` (e.g.
            ``LabelsTable("labels.parquet")``).
        options: :class:`EvalOptions` (default: its defaults).
        out_dir: if given, :meth:`Evaluation.save` writes each seed's JSON and plot there.

    Returns:
        :class:`Evaluation` (seed → name → :class:`ProbeReport`).
    """
    options = options or EvalOptions()
    if not featurizers:
        raise ConfigError("featurizers is empty; pass e.g. {'pretrained': enc, 'random init': enc0}")
    names = list(featurizers)
    baseline = options.baseline if options.baseline is not None else names[-1]
    if baseline not in featurizers:
        raise ConfigError(f"baseline {baseline!r} is not one of {names}")
    ex = get_task(task).examples(store)
    folds = subject_folds(ex, options.folds)
    by_name: dict[str, Any] = {}
    for name, value in featurizers.items():
        featurizer = _as_featurizer(value, options)
        if options.method == "linear_probe":
            z = check_features(name, featurizer(store, ex), len(ex))
            by_name[name] = lambda seed, z=z: _probe_scorer(z, ex, options)
        else:
            by_name[name] = lambda seed, f=featurizer: _fine_tune_scorer(f, store, ex, options, seed)
    reports: dict[int, dict[str, ProbeReport]] = {}
    for seed in options.seeds:
        reports[seed] = {
            name: _report(ex, folds, name, options, seed, _run(ex, folds, options, seed, make(seed)))
            for name, make in by_name.items()
        }
    result = Evaluation(ex.task, baseline, reports)
    if options.print_table:
        for seed in options.seeds:
            print(result.table("auroc", seed))
            print()
            print(result.table("auprc", seed))
            print()
    if out_dir is not None:
        result.save(out_dir)
    return result
