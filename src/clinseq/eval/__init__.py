"""Evaluation: one protocol for every modality — a labelled task, featurizers, a probe at label fractions.

A **task** is labels keyed by recording (PTB-XL statements, EEGMAT rest vs arithmetic) or by
(subject_id, prediction_time) (EHR, the MEDS label schema); :func:`evaluate` runs the probe protocol
for any of them and any featurizers (encoders, baselines), with subject-level splits and CIs.

=================================  ====================================================================
``evaluate``                       featurizers × task → probe at label fractions → :class:`Evaluation`
``EvalOptions``                    fractions, seeds, bootstrap, probe/fine-tune, folds, embedding options
``Task``, ``TASKS``, ``get_task``  labelled tasks: ``ptbxl/<label set>``, ``eegmat/condition``,
                                   ``eegmat/count_quality``; ``LabelsTable`` for labels a user brings
``Examples``                       a task's examples on a store: keys, y, classes, subjects, split
``EncoderFeatures``                a waveform encoder as a featurizer (mean of window embeddings)
``FeatureTable``                   precomputed features (``clinseq embed`` Parquet) as a featurizer
``AcesTask``                       EHR task labelled by ACES (``mimic-iv/<MEDS-DEV task>`` registered)
``EventFeatures``                  an event encoder on the events up to each prediction time
``CodeCountFeatures``              the EHR baseline: counts of each code in the input window
``read_labels``, ``aces_labels``   MEDS labels from any Parquet, or extracted by ACES
``predictions_frame``              MEDS predictions, checked and scored by meds-evaluation
``extract_embeddings``             one embedding per recording (whole recording or mean over windows)
``fit_linear_probe``               standardised features → one-vs-rest logistic regression, C on val
``fine_tune``                      linear head (+ optionally the encoder), BCE, early stopping on val
``evaluate_predictions``           macro AUROC / AUPRC with subject-level bootstrap 95 % CIs
``ProbeReport``, ``format_table``  results of one featurizer; the printed table; the plot
=================================  ====================================================================

Typical use (the recipes' evaluate phase)::

    from clinseq.eval import EvalOptions, evaluate
    result = evaluate({"pretrained": encoder, "random init": encoder0}, store, "ptbxl/superdiagnostic",
                      EvalOptions(fractions=(0.01, 0.1, 1.0), window_s=5.0), out_dir=run_dir / "eval")
"""

from clinseq.eval.code_counts import COUNTS_NAME, CodeCountFeatures, event_featurizers
from clinseq.eval.ehr_features import EventFeatures, PredictionTimeEvents
from clinseq.eval.embeddings import extract_embeddings, window_starts
from clinseq.eval.features import (
    EncoderFeatures,
    FeatureTable,
    Featurizer,
    check_features,
    embedding_table,
)
from clinseq.eval.finetune import FineTuned, StandardisedLinear, fine_tune
from clinseq.eval.labels import PTBXL_TASKS, ptbxl_task_labels
from clinseq.eval.meds_labels import MEDS_DEV_TASKS, aces_labels, read_labels
from clinseq.eval.meds_predictions import predictions_frame, score_predictions, write_predictions
from clinseq.eval.meds_tasks import MIMIC_IV_TASKS, AcesTask  # registers mimic-iv/<MEDS-DEV task>
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
from clinseq.eval.protocol import EvalOptions, Evaluation, Fold, evaluate, subject_folds
from clinseq.eval.report import FractionResult, ProbeReport, format_table, plot_auroc_vs_label_fraction
from clinseq.eval.tasks import (
    PREDICTION_TIME_KEYS,
    RECORDING_KEYS,
    TASKS,
    EEGMATTask,
    Examples,
    LabelsTable,
    PTBXLTask,
    Task,
    all_recordings,
    default_tasks,
    get_task,
    task_names,
)

__all__ = [
    "COUNTS_NAME",
    "DEFAULT_CS",
    "MEDS_DEV_TASKS",
    "MIMIC_IV_TASKS",
    "PREDICTION_TIME_KEYS",
    "PTBXL_TASKS",
    "RECORDING_KEYS",
    "TASKS",
    "AcesTask",
    "CodeCountFeatures",
    "EventFeatures",
    "EEGMATTask",
    "EncoderFeatures",
    "EvalOptions",
    "Evaluation",
    "Examples",
    "FeatureTable",
    "Featurizer",
    "FineTuned",
    "Fold",
    "FractionResult",
    "LabelsTable",
    "LinearProbe",
    "MetricCI",
    "PTBXLTask",
    "PredictionMetrics",
    "PredictionTimeEvents",
    "ProbeReport",
    "StandardisedLinear",
    "Task",
    "aces_labels",
    "all_recordings",
    "auroc_per_class",
    "average_precision_per_class",
    "check_features",
    "default_tasks",
    "embedding_table",
    "evaluate",
    "evaluate_predictions",
    "event_featurizers",
    "extract_embeddings",
    "fine_tune",
    "fit_linear_probe",
    "format_table",
    "get_task",
    "paired_difference",
    "patient_bootstrap_weights",
    "plot_auroc_vs_label_fraction",
    "predictions_frame",
    "ptbxl_task_labels",
    "read_labels",
    "score_predictions",
    "subject_folds",
    "task_names",
    "window_starts",
    "write_predictions",
]
