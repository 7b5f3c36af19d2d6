"""The evaluation the recipes call: PTB-XL task → label fractions → probe → macro AUROC/AUPRC with CIs.

Protocol of :func:`evaluate_encoder` (design §7):

1. labels of the task (:func:`~clinseq.eval.labels.ptbxl_task_labels`, benchmark conventions);
2. PTB-XL's split by patient (``strat_fold`` 1–8 train, 9 val, 10 test; :func:`ptbxl_split`);
3. one embedding per labelled recording (:func:`~clinseq.eval.embeddings.extract_embeddings`);
4. for each label fraction: that fraction of the training patients who have an ECG labelled for the
   task (:func:`label_fraction_subset`: ``ceil(fraction · n)`` patients, nested — the 1 % patients ⊂ the
   10 % patients ⊂ all — and seeded; every labelled ECG of a chosen patient is used), a leakage check
   between them, the validation and the test patients, then the probe
   (:func:`~clinseq.eval.probe.fit_linear_probe`, C on the validation fold) or
   :func:`~clinseq.eval.finetune.fine_tune`;
5. test-fold macro AUROC and AUPRC over the classes with both labels in the test fold, with 95 %
   patient-level bootstrap CIs (:func:`~clinseq.eval.metrics.evaluate_predictions`).

The bootstrap seed is the run's ``seed`` for every fraction and encoder, so encoders compared on one
store see the same resamples and :func:`compare_encoders` reports paired differences. The CIs cover the
sampling of **test patients** only; the choice of the training patients at small fractions is a further
source of variance that one seed does not show (repeat with other seeds to see it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from clinseq.data.splits import assert_no_leakage, label_fraction_subset, ptbxl_split
from clinseq.eval.embeddings import Preprocess, extract_embeddings
from clinseq.eval.finetune import fine_tune
from clinseq.eval.labels import ptbxl_task_labels
from clinseq.eval.metrics import MetricCI, PredictionMetrics, evaluate_predictions, paired_difference
from clinseq.eval.probe import DEFAULT_CS, fit_linear_probe
from clinseq.utils import ConfigError

if TYPE_CHECKING:
    import torch

    from clinseq.models import Encoder
    from clinseq.timeline import TimelineStore

__all__ = [
    "FractionResult",
    "ProbeReport",
    "compare_encoders",
    "compare_encoders_over_seeds",
    "evaluate_encoder",
    "evaluate_features",
    "format_table",
    "plot_auroc_vs_label_fraction",
]

PLOT_NAME = "auroc_vs_label_fraction.png"
#: ``score(in_train mask) -> (test scores (n_test, K), C or None, details)``: one way to fit and score.
Scorer = Callable[[np.ndarray], tuple[np.ndarray, float | None, dict[str, Any]]]
DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)


@dataclass
class FractionResult:
    """Test metrics of one label fraction.

    Attributes:
        fraction: share of the training patients whose labels were used.
        n_train_patients, n_train_recordings: the labelled training set actually used.
        n_constant_classes: classes without both labels in that training set (constant score).
        C: the probe's inverse L2 strength (None for fine-tuning).
        metrics: test macro AUROC/AUPRC with CIs, per-class values.
        train_patient_ids: the labelled training patients (sorted; not serialised).
        details: method-specific record (validation AUROC per C, fine-tuning history).
    """

    fraction: float
    n_train_patients: int
    n_train_recordings: int
    n_constant_classes: int
    C: float | None
    metrics: PredictionMetrics
    train_patient_ids: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def auroc(self) -> MetricCI:
        return self.metrics.auroc

    @property
    def auprc(self) -> MetricCI:
        return self.metrics.auprc

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        m = self.metrics
        return {
            "fraction": self.fraction,
            "n_train_patients": self.n_train_patients,
            "n_train_recordings": self.n_train_recordings,
            "n_constant_classes": self.n_constant_classes,
            "C": self.C,
            "macro_auroc": m.auroc.to_dict(),
            "macro_auprc": m.auprc.to_dict(),
            "n_classes_evaluated": m.n_classes_evaluated,
            "per_class_auroc": {
                c: _finite(v) for c, v, e in zip(classes, m.per_class_auroc, m.evaluated, strict=True) if e
            },
            "per_class_auprc": {
                c: _finite(v) for c, v, e in zip(classes, m.per_class_auprc, m.evaluated, strict=True) if e
            },
            "details": _jsonable(self.details),
        }


@dataclass
class ProbeReport:
    """Everything :func:`evaluate_encoder` measured for one encoder on one task."""

    name: str
    task: str
    method: str
    classes: list[str]
    evaluated_classes: list[str]
    n_test_patients: int
    n_test_recordings: int
    n_val_recordings: int
    window_s: float | None
    seed: int
    n_boot: int
    results: list[FractionResult]

    def result(self, fraction: float) -> FractionResult:
        """The result of one label fraction."""
        for r in self.results:
            if math.isclose(r.fraction, fraction):
                return r
        raise ConfigError(f"no result for fraction {fraction}; have {[r.fraction for r in self.results]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "method": self.method,
            "classes": self.classes,
            "n_classes": len(self.classes),
            "evaluated_classes": self.evaluated_classes,
            "n_classes_evaluated": len(self.evaluated_classes),
            "n_test_patients": self.n_test_patients,
            "n_test_recordings": self.n_test_recordings,
            "n_val_recordings": self.n_val_recordings,
            "window_s": self.window_s,
            "seed": self.seed,
            "n_boot": self.n_boot,
            "results": [r.to_dict(self.classes) for r in self.results],
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (NaN → null)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return _finite(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "encoder"


@dataclass
class _Task:
    """The labelled recordings of a task with their patients and fold masks."""

    recording_ids: np.ndarray
    y: np.ndarray
    classes: list[str]
    patients: np.ndarray
    split: dict[str, np.ndarray]
    in_val: np.ndarray
    in_test: np.ndarray


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    out = sorted({float(f) for f in fractions})
    if not out or any(not 0.0 < f <= 1.0 for f in out):
        raise ConfigError(f"fractions must be values in (0, 1], got {list(fractions)}; e.g. (0.01, 0.1, 1.0)")
    return out


def _task(store: TimelineStore, task: str) -> _Task:
    labels = ptbxl_task_labels(store, task)
    split = ptbxl_split(store)
    assert_no_leakage(split)
    rec = store.recordings
    patient_of = dict(zip(rec["recording_id"].to_list(), rec["patient_id"].to_list(), strict=True))
    patients = np.array([patient_of[int(r)] for r in labels.recording_ids], np.int64)
    in_val = np.isin(patients, split["val"])
    in_test = np.isin(patients, split["test"])
    if not in_test.any() or not in_val.any():
        raise ConfigError(
            f"task {task!r} has {int(in_val.sum())} labelled validation and {int(in_test.sum())} test "
            "recordings; both folds (strat_fold 9 and 10) need labelled ECGs"
        )
    return _Task(labels.recording_ids, labels.y, list(labels.classes), patients, split, in_val, in_test)


def _run(
    t: _Task,
    task: str,
    fractions: Sequence[float],
    seed: int,
    n_boot: int,
    score: Callable[[np.ndarray], tuple[np.ndarray, float | None, dict[str, Any]]],
) -> list[FractionResult]:
    """For each fraction: training patients (nested), leakage check, ``score(in_train)``, test metrics.

    ``score`` returns (test scores (n_test, K), C or None, details).
    """
    # The pool is the training patients with at least one ECG labelled for the task: as in the benchmark,
    # unlabelled ECGs are dropped before the fractions are taken (e.g. "form" labels only ~1/4 of ECGs).
    pool = np.unique(t.patients[np.isin(t.patients, t.split["train"])])
    results = []
    for fraction in _check_fractions(fractions):
        train_patients = label_fraction_subset(pool, fraction, seed)
        assert_no_leakage(
            train_patients, t.split["val"], t.split["test"], names=[f"train {fraction:g}", "val", "test"]
        )
        in_train = np.isin(t.patients, train_patients)
        if not in_train.any():
            raise ConfigError(
                f"label fraction {fraction:g} selects {len(train_patients)} training patient(s) with no "
                f"{task!r} label; use a larger fraction"
            )
        y_train = t.y[in_train]
        n_constant = int((y_train.min(axis=0) == y_train.max(axis=0)).sum())
        scores, c_used, details = score(in_train)
        metrics = evaluate_predictions(
            t.y[t.in_test], scores, t.patients[t.in_test], n_boot=n_boot, seed=seed
        )
        results.append(
            FractionResult(
                fraction=fraction,
                n_train_patients=len(np.unique(t.patients[in_train])),
                n_train_recordings=int(in_train.sum()),
                n_constant_classes=n_constant,
                C=c_used,
                metrics=metrics,
                train_patient_ids=np.unique(t.patients[in_train]),
                details=details,
            )
        )
    return results


def _report(
    t: _Task, task: str, name: str, method: str, window_s: float | None, seed: int, n_boot: int, results: list
) -> ProbeReport:
    evaluated = results[0].metrics.evaluated
    return ProbeReport(
        name=name,
        task=task,
        method=method,
        classes=t.classes,
        evaluated_classes=[c for c, e in zip(t.classes, evaluated, strict=True) if e],
        n_test_patients=len(np.unique(t.patients[t.in_test])),
        n_test_recordings=int(t.in_test.sum()),
        n_val_recordings=int(t.in_val.sum()),
        window_s=window_s,
        seed=seed,
        n_boot=n_boot,
        results=results,
    )


def _write(report: ProbeReport, out_dir: str | Path | None) -> None:
    if out_dir is not None:
        out = Path(out_dir)
        report.save(out / f"eval_{_slug(report.name)}_{report.task}.json")
        plot_auroc_vs_label_fraction({report.name: report}, out / PLOT_NAME)


def _probe_scorer(
    z: np.ndarray, t: _Task, C: float | None, Cs: Sequence[float]
) -> Callable[[np.ndarray], tuple[np.ndarray, float | None, dict[str, Any]]]:
    def score(in_train: np.ndarray) -> tuple[np.ndarray, float | None, dict[str, Any]]:
        probe = fit_linear_probe(z[in_train], t.y[in_train], z[t.in_val], t.y[t.in_val], C=C, Cs=Cs)
        details = {"val_auroc_by_C": {f"{c:g}": v for c, v in probe.val_auroc.items()}}
        return probe.decision_function(z[t.in_test]), probe.C, details

    return score


def evaluate_features(
    features: np.ndarray,
    recording_ids: Sequence[int] | np.ndarray,
    store: TimelineStore,
    task: str = "superdiagnostic",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    seed: int = 0,
    out_dir: str | Path | None = None,
    name: str = "features",
    C: float | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    n_boot: int = 1000,
) -> ProbeReport:
    """The linear-probe protocol of :func:`evaluate_encoder` on precomputed features.

    Args:
        features: (n, D) one row per recording of ``recording_ids`` (e.g. from
            :func:`~clinseq.eval.embeddings.extract_embeddings`, or hand-crafted features); it must cover
            every recording labelled for the task.
        recording_ids: (n,) the recording of each row.
        store, task, fractions, seed, out_dir, name, C, Cs, n_boot: as for :func:`evaluate_encoder`.
    """
    t = _task(store, task)
    features = np.asarray(features)
    recording_ids = np.asarray(recording_ids, np.int64)
    if features.ndim != 2 or features.shape[0] != len(recording_ids):
        raise ConfigError(
            f"features must be (n, D) with one row per recording id ({len(recording_ids)}), "
            f"got {features.shape}"
        )
    row_of = {int(r): i for i, r in enumerate(recording_ids)}
    missing = [int(r) for r in t.recording_ids if int(r) not in row_of]
    if missing:
        raise ConfigError(
            f"features lack {len(missing)} recording(s) labelled for {task!r}, e.g. {missing[:10]}; "
            "compute features for every labelled recording (ptbxl_task_labels(store, task).recording_ids)"
        )
    z = features[[row_of[int(r)] for r in t.recording_ids]]
    results = _run(t, task, fractions, seed, n_boot, _probe_scorer(z, t, C, Cs))
    report = _report(t, task, name, "linear_probe", None, seed, n_boot, results)
    _write(report, out_dir)
    return report


def evaluate_encoder(
    encoder: Encoder,
    store: TimelineStore,
    task: str = "superdiagnostic",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    seed: int = 0,
    out_dir: str | Path | None = None,
    name: str = "encoder",
    method: Literal["linear_probe", "fine_tune"] = "linear_probe",
    window_s: float | None = None,
    channels: Sequence[str] | Sequence[int] | None = None,
    preprocess: Preprocess | None = None,
    C: float | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    n_boot: int = 1000,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    finetune_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> ProbeReport:
    """Evaluate an encoder on a PTB-XL task at several label fractions (see the module docstring).

    Args:
        encoder: the encoder to evaluate; its weights are never modified (fine-tuning trains a copy), but
            it is moved to ``device``.
        store: a PTB-XL store (``clinseq convert ptbxl``).
        task: ``all``, ``diagnostic``, ``subdiagnostic``, ``superdiagnostic``, ``form`` or ``rhythm``.
        fractions: label fractions in (0, 1] of the training patients, e.g. (0.01, 0.1, 1.0).
        seed: seeds the label-fraction subsets, the bootstrap and fine-tuning.
        out_dir: if given, writes ``eval_<name>_<task>.json`` and the AUROC-vs-fraction plot there.
        name: the encoder's name in the report, table and plot.
        method: ``"linear_probe"`` (logistic regression on frozen embeddings) or ``"fine_tune"``.
        window_s: embed by averaging windows of this many seconds (None: whole recordings); use the
            pretraining window length for encoders trained on windows.
        channels, preprocess: as for :func:`~clinseq.eval.embeddings.extract_embeddings`.
        C, Cs: fixed inverse L2 strength, or the grid searched on the validation fold (linear probe).
        n_boot: bootstrap resamples for the CIs (0: none).
        batch_size: windows per forward pass when embedding.
        device: where the encoder runs (default: where its parameters are).
        finetune_options: extra keyword arguments of :func:`~clinseq.eval.finetune.fine_tune`
            (e.g. ``{"train_encoder": True, "epochs": 20}``).
        progress: show progress bars.

    Returns:
        :class:`ProbeReport`, one :class:`FractionResult` per fraction (ascending).
    """
    reports = _evaluate_encoder_seeds(
        encoder, store, task, fractions, [seed], {seed: out_dir}, name=name, method=method,
        window_s=window_s, channels=channels, preprocess=preprocess, C=C, Cs=Cs, n_boot=n_boot,
        batch_size=batch_size, device=device, finetune_options=finetune_options, progress=progress,
    )  # fmt: skip
    return reports[seed]


def _evaluate_encoder_seeds(
    encoder: Encoder,
    store: TimelineStore,
    task: str,
    fractions: Sequence[float],
    seeds: Sequence[int],
    out_dirs: Mapping[int, str | Path | None],
    *,
    name: str = "encoder",
    method: Literal["linear_probe", "fine_tune"] = "linear_probe",
    window_s: float | None = None,
    channels: Sequence[str] | Sequence[int] | None = None,
    preprocess: Preprocess | None = None,
    C: float | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    n_boot: int = 1000,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    finetune_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[int, ProbeReport]:
    """:func:`evaluate_encoder` for each of ``seeds`` (report of seed k written to ``out_dirs[k]``).

    The linear probe's embeddings do not depend on the seed (it only draws the label-fraction patients
    and the bootstrap): they are extracted once and shared by every seed and fraction.
    """
    if method not in ("linear_probe", "fine_tune"):
        raise ConfigError(f"method must be 'linear_probe' or 'fine_tune', got {method!r}")
    if finetune_options and method != "fine_tune":
        raise ConfigError("finetune_options given but method='linear_probe'; pass method='fine_tune'")
    _check_fractions(fractions)
    t = _task(store, task)
    probe_score = None
    if method == "linear_probe":
        z = extract_embeddings(
            encoder,
            store,
            t.recording_ids,
            window_s=window_s,
            channels=channels,
            preprocess=preprocess,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        probe_score = _probe_scorer(z, t, C, Cs)

    def fine_tune_scorer(seed: int) -> Scorer:
        def score(in_train: np.ndarray) -> tuple[np.ndarray, float | None, dict[str, Any]]:
            tuned = fine_tune(
                encoder,
                store,
                t.recording_ids[in_train],
                t.y[in_train],
                t.recording_ids[t.in_val],
                t.y[t.in_val],
                window_s=window_s,
                channels=channels,
                preprocess=preprocess,
                device=device,
                seed=seed,
                progress=progress,
                **dict(finetune_options or {}),
            )
            scores = tuned.decision_function(store, t.recording_ids[t.in_test], batch_size=batch_size)
            return scores, None, {"best_epoch": tuned.best_epoch, "history": tuned.history}

        return score

    reports = {}
    for seed in seeds:
        score = probe_score if probe_score is not None else fine_tune_scorer(seed)
        results = _run(t, task, fractions, seed, n_boot, score)
        report = _report(t, task, name, method, window_s, seed, n_boot, results)
        _write(report, out_dirs.get(seed))
        reports[seed] = report
    return reports


def _differences(
    reports: Mapping[str, ProbeReport], baseline: str
) -> dict[str, dict[float, dict[str, MetricCI]]]:
    """name → fraction → {"auroc", "auprc"}: paired (name − baseline) differences with CIs."""
    base = reports[baseline]
    out: dict[str, dict[float, dict[str, MetricCI]]] = {}
    for name, report in reports.items():
        if name == baseline:
            continue
        if (report.n_boot, report.seed, report.n_test_recordings) != (
            base.n_boot,
            base.seed,
            base.n_test_recordings,
        ):
            raise ConfigError(
                f"{name!r} and {baseline!r} were not scored on the same resamples (n_boot, seed, test set); "
                "evaluate both with the same settings"
            )
        out[name] = {}
        for r in report.results:
            b = base.result(r.fraction)
            out[name][r.fraction] = {
                "auroc": paired_difference(
                    r.auroc.point, r.metrics.auroc_boot, b.auroc.point, b.metrics.auroc_boot
                ),
                "auprc": paired_difference(
                    r.auprc.point, r.metrics.auprc_boot, b.auprc.point, b.metrics.auprc_boot
                ),
            }
    return out


def format_table(
    reports: Mapping[str, ProbeReport],
    metric: Literal["auroc", "auprc"] = "auroc",
    baseline: str | None = None,
) -> str:
    """A readable table: one row per label fraction, one column per encoder, ``point [low, high]``.

    With two or more reports, a last column per non-baseline encoder gives the paired difference
    ``encoder − baseline`` with its CI (baseline: the last report unless named).
    """
    if not reports:
        raise ConfigError("no reports to tabulate")
    names = list(reports)
    first = reports[names[0]]
    baseline = baseline if baseline is not None else names[-1]
    if baseline not in reports:
        raise ConfigError(f"baseline {baseline!r} is not one of {names}")
    diffs = _differences(reports, baseline) if len(reports) > 1 else {}
    title = (
        f"PTB-XL {first.task} · {first.method.replace('_', ' ')} · macro {metric.upper()} "
        f"[{round(100 * first.results[0].metrics.auroc.confidence)} % CI, patient bootstrap, "
        f"n={first.n_boot}] · "
        f"test {first.n_test_patients} patients / {first.n_test_recordings} ECGs · "
        f"{len(first.evaluated_classes)}/{len(first.classes)} classes evaluated"
    )
    header = ["labels"] + names + [f"Δ {n} − {baseline}" for n in diffs]
    rows = []
    for r in first.results:
        row = [f"{100 * r.fraction:g} % ({r.n_train_patients} pat.)"]
        row += [str(getattr(reports[n].result(r.fraction), metric)) for n in names]
        row += [_signed(diffs[n][r.fraction][metric]) for n in diffs]
        rows.append(row)
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(header)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _signed(ci: MetricCI) -> str:
    if np.isnan(ci.low):
        return f"{ci.point:+.3f}"
    return f"{ci.point:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"


def plot_auroc_vs_label_fraction(reports: Mapping[str, ProbeReport], path: str | Path) -> Path | None:
    """Macro AUROC against label fraction (log axis) with CI error bars, one line per encoder.

    matplotlib is an optional extra (``pip install clinseq[plot]``): without it the plot is skipped
    with a one-line notice and None is returned.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print(f"matplotlib is not installed: skipping {path} (pip install 'clinseq[plot]')")
        return None
    if not reports:
        raise ConfigError("no reports to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.subplots()
    n = len(reports)
    for i, (name, report) in enumerate(reports.items()):
        # Small multiplicative offsets keep the error bars of several encoders apart on the log axis.
        shift = 1.0 + 0.06 * (i - (n - 1) / 2)
        x = np.array([100 * r.fraction * shift for r in report.results])
        pts = np.array([r.auroc.point for r in report.results])
        low = np.array([r.auroc.low for r in report.results])
        high = np.array([r.auroc.high for r in report.results])
        yerr = np.vstack([np.nan_to_num(pts - low), np.nan_to_num(high - pts)])
        ax.errorbar(x, pts, yerr=yerr, marker="o", capsize=3, label=name)
    first = next(iter(reports.values()))
    ax.set_xscale("log")
    ax.set_xticks(
        [100 * r.fraction for r in first.results], [f"{100 * r.fraction:g} %" for r in first.results]
    )
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("labelled training patients")
    ax.set_ylabel("macro AUROC (95 % CI)")
    ax.set_title(
        f"PTB-XL {first.task}: {first.n_test_patients} test patients, {len(first.evaluated_classes)} classes",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def compare_encoders(
    encoders: Mapping[str, Encoder],
    store: TimelineStore,
    task: str = "superdiagnostic",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    seed: int = 0,
    out_dir: str | Path | None = None,
    baseline: str | None = None,
    print_table: bool = True,
    **kwargs: Any,
) -> dict[str, ProbeReport]:
    """Evaluate several encoders identically, print a table with CIs and paired differences.

    Example: ``compare_encoders({"pretrained": enc, "random init": enc0}, store, out_dir=run_dir)``.

    Args:
        encoders: name → encoder, evaluated in this order.
        store, task, fractions, seed: as for :func:`evaluate_encoder` (same for every encoder, so the
            label subsets and bootstrap resamples are shared).
        out_dir: if given, writes ``eval_<task>.json`` (all reports and the differences) and
            ``auroc_vs_label_fraction.png`` there.
        baseline: the encoder the others are compared with (default: the last one, e.g. "random init").
        print_table: print the AUROC and AUPRC tables.
        kwargs: further :func:`evaluate_encoder` options (``window_s``, ``method``, ``n_boot``, ...).

    Returns:
        name → :class:`ProbeReport`.

    See :func:`compare_encoders_over_seeds` for several label-fraction seeds (each encoder embedded once).
    """
    return _compare(encoders, store, task, fractions, [seed], {seed: out_dir}, baseline, print_table, kwargs)[
        seed
    ]


def compare_encoders_over_seeds(
    encoders: Mapping[str, Encoder],
    store: TimelineStore,
    task: str = "superdiagnostic",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    seeds: Sequence[int] = (0,),
    out_dir: str | Path | None = None,
    baseline: str | None = None,
    print_table: bool = True,
    **kwargs: Any,
) -> dict[int, dict[str, ProbeReport]]:
    """:func:`compare_encoders` for each label-fraction seed, embedding each encoder only once.

    The seed draws the label-fraction patients, the bootstrap resamples (and fine-tuning's
    randomness); the frozen embeddings of the linear probe do not depend on it, so they are extracted
    once per encoder and reused for every seed and fraction. The reports (and files) are those of
    ``compare_encoders(..., seed=k, out_dir=out_dir / f"seed{k}")`` for each k.

    Args:
        encoders, store, task, fractions, baseline, print_table, kwargs: as for :func:`compare_encoders`.
        seeds: the label-fraction seeds, e.g. (0, 1, 2) to see the variance of the small fractions.
        out_dir: if given, each seed's ``eval_<task>.json`` and plot go to ``out_dir/seed<k>/``.

    Returns:
        seed → name → :class:`ProbeReport`.
    """
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in seeds):
        raise ConfigError(f"seeds must be a non-empty list of integers, got {seeds!r}; e.g. seeds=(0, 1, 2)")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must differ from each other (each writes seed<k>/), got {seeds}")
    out_dirs = {int(s): (Path(out_dir) / f"seed{int(s)}" if out_dir is not None else None) for s in seeds}
    return _compare(encoders, store, task, fractions, list(out_dirs), out_dirs, baseline, print_table, kwargs)


def _compare(
    encoders: Mapping[str, Encoder],
    store: TimelineStore,
    task: str,
    fractions: Sequence[float],
    seeds: Sequence[int],
    out_dirs: Mapping[int, str | Path | None],
    baseline: str | None,
    print_table: bool,
    kwargs: Mapping[str, Any],
) -> dict[int, dict[str, ProbeReport]]:
    if not encoders:
        raise ConfigError("encoders is empty; pass e.g. {'pretrained': enc, 'random init': enc0}")
    if "out_dir" in kwargs or "name" in kwargs:
        raise ConfigError("compare_encoders sets out_dir and name itself; pass out_dir= directly")
    names = list(encoders)
    baseline = baseline if baseline is not None else names[-1]
    if baseline not in encoders:
        raise ConfigError(f"baseline {baseline!r} is not one of {names}")
    by_encoder = {
        name: _evaluate_encoder_seeds(enc, store, task, fractions, seeds, {}, name=name, **kwargs)
        for name, enc in encoders.items()
    }
    out: dict[int, dict[str, ProbeReport]] = {}
    for seed in seeds:
        reports = {name: by_encoder[name][seed] for name in names}
        if print_table:
            print(format_table(reports, "auroc", baseline))
            print()
            print(format_table(reports, "auprc", baseline))
        seed_dir = out_dirs.get(seed)
        if seed_dir is not None:
            _write_comparison(reports, task, baseline, Path(seed_dir))
        out[seed] = reports
    return out


def _write_comparison(reports: Mapping[str, ProbeReport], task: str, baseline: str, out: Path) -> None:
    """``eval_<task>.json`` (every report and the paired differences) and the plot, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    diffs = _differences(reports, baseline) if len(reports) > 1 else {}
    payload = {
        "task": task,
        "baseline": baseline,
        "reports": {n: r.to_dict() for n, r in reports.items()},
        "differences": {
            n: {f"{f:g}": {m: ci.to_dict() for m, ci in d.items()} for f, d in per.items()}
            for n, per in diffs.items()
        },
    }
    (out / f"eval_{task}.json").write_text(json.dumps(payload, indent=1))
    plot_auroc_vs_label_fraction(reports, out / PLOT_NAME)
