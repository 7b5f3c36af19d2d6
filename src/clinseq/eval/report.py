"""What an evaluation measured: per-fraction results, one report per featurizer, table, JSON and plot.

:class:`ProbeReport` holds the test metrics of one featurizer (encoder or baseline) on one task at every
label fraction; :func:`format_table` prints several side by side with their paired differences against a
baseline row (the same subject resamples for every row), :func:`plot_auroc_vs_label_fraction` draws them.
The protocol that fills them is :func:`clinseq.eval.evaluate`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clinseq.errors import ConfigError
from clinseq.eval.metrics import MetricCI, PredictionMetrics, paired_difference

__all__ = [
    "FractionResult",
    "ProbeReport",
    "differences",
    "format_table",
    "plot_auroc_vs_label_fraction",
    "slug",
]


@dataclass
class FractionResult:
    """Test metrics of one label fraction.

    Attributes:
        fraction: share of the training subjects whose labels were used.
        n_train_subjects, n_train_examples: the labelled training set actually used (per fold; the mean
            over folds when the protocol cross-fits).
        n_constant_classes: classes without both labels in that training set (constant score; the most
            over folds).
        C: the probe's inverse L2 strength (None for fine-tuning, or when folds chose different values:
            see ``details["C_by_fold"]``).
        metrics: test macro AUROC/AUPRC with CIs, per-class values.
        train_subject_ids: the labelled training subjects (sorted, all folds; not serialised).
        details: method-specific record (validation AUROC per C, fine-tuning history).
    """

    fraction: float
    n_train_subjects: int
    n_train_examples: int
    n_constant_classes: int
    C: float | None
    metrics: PredictionMetrics
    train_subject_ids: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
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
            "n_train_subjects": self.n_train_subjects,
            "n_train_examples": self.n_train_examples,
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
    """Everything the protocol measured for one featurizer on one task.

    Attributes:
        name: the featurizer's row name ("pretrained", "random init", "counts + LR", …).
        task: the task's name; method: ``linear_probe`` or ``fine_tune``.
        protocol: ``"split"`` (the data's train/val/test split) or ``"k-fold cross-fit"`` (subject
            folds; every example is scored once, by the probe of the fold that held it out).
        classes, evaluated_classes: all classes, and those with both labels among the test examples.
        n_test_subjects, n_test_examples, n_val_examples: the scored set (and validation examples per
            fold, mean over folds when cross-fitting).
        seed: label-fraction and bootstrap seed; n_boot: subject resamples of the CIs.
        results: one :class:`FractionResult` per fraction (ascending).
    """

    name: str
    task: str
    method: str
    protocol: str
    classes: list[str]
    evaluated_classes: list[str]
    n_test_subjects: int
    n_test_examples: int
    n_val_examples: int
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
            "protocol": self.protocol,
            "classes": self.classes,
            "n_classes": len(self.classes),
            "evaluated_classes": self.evaluated_classes,
            "n_classes_evaluated": len(self.evaluated_classes),
            "n_test_subjects": self.n_test_subjects,
            "n_test_examples": self.n_test_examples,
            "n_val_examples": self.n_val_examples,
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


def slug(name: str) -> str:
    """``name`` made safe for a file name (``ptbxl/superdiagnostic`` → ``ptbxl_superdiagnostic``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "report"


def differences(
    reports: Mapping[str, ProbeReport], baseline: str
) -> dict[str, dict[float, dict[str, MetricCI]]]:
    """name → fraction → {"auroc", "auprc"}: paired (name − baseline) differences with CIs."""
    base = reports[baseline]
    out: dict[str, dict[float, dict[str, MetricCI]]] = {}
    for name, report in reports.items():
        if name == baseline:
            continue
        if (report.n_boot, report.seed, report.n_test_examples) != (
            base.n_boot,
            base.seed,
            base.n_test_examples,
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
    """A readable table: one row per label fraction, one column per featurizer, ``point [low, high]``.

    With two or more reports, a last column per non-baseline featurizer gives the paired difference
    ``name − baseline`` with its CI (baseline: the last report unless named).
    """
    if not reports:
        raise ConfigError("no reports to tabulate")
    names = list(reports)
    first = reports[names[0]]
    baseline = baseline if baseline is not None else names[-1]
    if baseline not in reports:
        raise ConfigError(f"baseline {baseline!r} is not one of {names}")
    diffs = differences(reports, baseline) if len(reports) > 1 else {}
    title = (
        f"{first.task} · {first.method.replace('_', ' ')} · macro {metric.upper()} "
        f"[{round(100 * first.results[0].metrics.auroc.confidence)} % CI, subject bootstrap, "
        f"n={first.n_boot}] · {first.protocol} · seed {first.seed} · "
        f"test {first.n_test_subjects} subjects / {first.n_test_examples} examples · "
        f"{len(first.evaluated_classes)}/{len(first.classes)} classes evaluated"
    )
    header = ["labels"] + names + [f"Δ {n} − {baseline}" for n in diffs]
    rows = []
    for r in first.results:
        row = [f"{100 * r.fraction:g} % ({r.n_train_subjects} subj.)"]
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
    """Macro AUROC against label fraction (log axis) with CI error bars, one line per featurizer.

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
        # Small multiplicative offsets keep the error bars of several rows apart on the log axis.
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
    ax.set_xlabel("labelled training subjects")
    ax.set_ylabel("macro AUROC (95 % CI)")
    ax.set_title(
        f"{first.task}: {first.n_test_subjects} test subjects, {len(first.evaluated_classes)} classes",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
