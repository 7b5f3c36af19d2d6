"""Evaluation: frozen embeddings, linear probes and fine-tuning at label fractions, metrics with CIs.

=================================  ====================================================================
``extract_embeddings``             one embedding per recording (whole recording or mean over windows)
``ptbxl_task_labels``              PTB-XL task → (recording_ids, multi-hot y, classes), benchmark rules
``fit_linear_probe``               standardised features → one-vs-rest logistic regression, C on val
``fine_tune``                      linear head (+ optionally the encoder), BCE, early stopping on val
``evaluate_predictions``           macro AUROC / AUPRC with patient-level bootstrap 95 % CIs
``evaluate_encoder``               the whole protocol for one encoder at 1/10/100 % labels → ProbeReport
``evaluate_features``              the same linear-probe protocol on precomputed features
``compare_encoders``               several encoders, printed table with CIs and paired differences
``compare_encoders_over_seeds``    the same for several label-fraction seeds, each encoder embedded once
``plot_auroc_vs_label_fraction``   the plot (matplotlib optional)
=================================  ====================================================================

Typical use (the README's main job)::

    from clinseq.eval import compare_encoders
    reports = compare_encoders({"pretrained": encoder, "random init": encoder0}, store,
                               task="superdiagnostic", fractions=(0.01, 0.1, 1.0), out_dir=run_dir)
"""

from clinseq.eval.embeddings import extract_embeddings, window_starts
from clinseq.eval.finetune import FineTuned, StandardisedLinear, fine_tune
from clinseq.eval.labels import PTBXL_TASKS, TaskLabels, ptbxl_task_labels
from clinseq.eval.metrics import (
    MetricCI,
    PredictionMetrics,
    auroc_per_class,
    average_precision_per_class,
    evaluate_predictions,
    paired_difference,
    patient_bootstrap_weights,
)
from clinseq.eval.probe import DEFAULT_CS, LinearProbe, fit_linear_probe
from clinseq.eval.report import (
    FractionResult,
    ProbeReport,
    compare_encoders,
    compare_encoders_over_seeds,
    evaluate_encoder,
    evaluate_features,
    format_table,
    plot_auroc_vs_label_fraction,
)

__all__ = [
    "DEFAULT_CS",
    "PTBXL_TASKS",
    "FineTuned",
    "FractionResult",
    "LinearProbe",
    "MetricCI",
    "PredictionMetrics",
    "ProbeReport",
    "StandardisedLinear",
    "TaskLabels",
    "auroc_per_class",
    "average_precision_per_class",
    "compare_encoders",
    "compare_encoders_over_seeds",
    "evaluate_encoder",
    "evaluate_features",
    "evaluate_predictions",
    "extract_embeddings",
    "fine_tune",
    "fit_linear_probe",
    "format_table",
    "paired_difference",
    "patient_bootstrap_weights",
    "plot_auroc_vs_label_fraction",
    "ptbxl_task_labels",
    "window_starts",
]
