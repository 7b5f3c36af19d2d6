"""clinseq as a MEDS-DEV model: the three commands of ``recipes/meds_dev/clinseq/model.yaml``.

MEDS-DEV (the MEDS benchmark harness) runs a model through shell commands on ``{dataset_dir}`` (a MEDS
dataset: ``data/**/*.parquet`` + ``metadata/subject_splits.parquet``), ``{labels_dir}`` (the MEDS label
Parquet files of one task) and ``{output_dir}``; each stage's ``output_dir`` is the next stage's
``{model_initialization_dir}``:

======================  ===================================================================================
unsupervised · train    :func:`pretrain`: the MEDS dataset → ``output_dir/store`` (``clinseq convert meds``);
                        self-supervised pretraining of a recipe on its **train** subjects (``data.split:
                        store``: MEDS train / tuning / held_out) → ``output_dir/run``
supervised · train      :func:`fit_probe`: the run's frozen encoder embeds each label's history up to its
                        ``prediction_time``; a logistic regression on the train subjects' labels, C chosen
                        on the tuning subjects → ``output_dir/probe.npz`` + ``output_dir/clinseq_model.json``
supervised · predict    :func:`predict`: probabilities for the labels of one split's subjects →
                        ``output_dir/predictions.parquet`` (MEDS prediction schema, validated)
======================  ===================================================================================

The run is rebuilt by :func:`~clinseq.train.restore.load_run` (its vocabulary and value statistics
refitted from the pretraining subjects exactly as pretraining fitted them), so the checkpoint holds only
weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from clinseq.data.splits import split_of_store
from clinseq.errors import ConfigError
from clinseq.eval.ehr_features import PredictionTimeEvents, embed_at_prediction_times
from clinseq.eval.meds_labels import read_labels
from clinseq.eval.meds_predictions import predictions_frame, write_predictions
from clinseq.eval.probe import DEFAULT_CS, LinearProbe, fit_linear_probe
from clinseq.train.restore import SavedRun, load_run
from clinseq.train.run import CONFIG_FILE, resolve_run, run_recipe

__all__ = ["MEDS_SPLIT_TO_STORE", "fit_probe", "predict", "pretrain"]

#: MEDS split names → the store's (``patients.parquet``) split names.
MEDS_SPLIT_TO_STORE = {"train": "train", "tuning": "val", "held_out": "test"}
STORE_DIR, RUN_DIR, PROBE_FILE, MODEL_FILE = "store", "run", "probe.npz", "clinseq_model.json"
PREDICTIONS_FILE = "predictions.parquet"


def pretrain(
    dataset_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    config: str | os.PathLike[str],
    *,
    profile: str | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    progress: bool = False,
) -> Path:
    """MEDS dataset → ``output_dir/store`` → pretraining run ``output_dir/run`` (returns the run folder).

    The recipe ``config`` is run with ``data.store`` = the imported store, ``data.split=store`` (so the
    tuning and held-out subjects are never pretrained on) and ``eval.enabled=false``.
    """
    from clinseq.io.meds import import_meds

    output_dir = Path(output_dir)
    store = output_dir / STORE_DIR
    if not (store / "manifest.json").is_file():
        output_dir.mkdir(parents=True, exist_ok=True)
        import_meds(dataset_dir, store, progress=progress)
    settings = [
        f"data.store={store.resolve()}",
        "data.source=meds",
        "data.split=store",
        "eval.enabled=false",
        *overrides,
    ]
    cfg, _ = resolve_run(config, profile=profile, overrides=settings, out=output_dir / RUN_DIR)
    run_recipe(cfg)
    return output_dir / RUN_DIR


def _load(run_dir: str | os.PathLike[str]) -> SavedRun:
    run = load_run(run_dir)
    if run.config.data.sampler != "events":
        raise ConfigError(f"{run_dir}: not an EHR run (data.sampler={run.config.data.sampler!r})")
    return run


def _embed(run: SavedRun, labels: pl.DataFrame) -> np.ndarray:
    """The pretrained encoder's embeddings of each label's history up to its prediction time."""
    f = run.featurizers["pretrained"]
    events = PredictionTimeEvents(run.store.event_index, labels, f.vocab, f.normalizer, f.max_len)
    return embed_at_prediction_times(f.encoder, events)


def _split_rows(run: SavedRun, labels: pl.DataFrame, split: str) -> pl.DataFrame:
    store_name = MEDS_SPLIT_TO_STORE.get(split, split)
    splits = split_of_store(run.store)
    if store_name not in splits:
        raise ConfigError(f"{run.store.path}: no subject in split {split!r}; the store has {sorted(splits)}")
    return labels.filter(pl.col("subject_id").is_in(splits[store_name].tolist()))


def _check_subjects(run: SavedRun, labels: pl.DataFrame, where: str) -> None:
    known = set(run.store.patients["patient_id"].to_list())
    missing = sorted(set(labels["subject_id"].to_list()) - known)
    if missing:
        raise ConfigError(
            f"{where}: {len(missing)} labelled subject(s) are not in the model's store {run.store.path}, "
            f"e.g. {missing[:10]}; the labels must come from the dataset the model was pretrained on"
        )


def fit_probe(
    labels_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    init_dir: str | os.PathLike[str],
    *,
    Cs: tuple[float, ...] = DEFAULT_CS,
) -> Path:
    """Supervised training: a logistic-regression probe on the frozen run's embeddings (module doc)."""
    init_dir, output_dir = Path(init_dir), Path(output_dir)
    run_dir = init_dir / RUN_DIR if (init_dir / RUN_DIR / CONFIG_FILE).is_file() else init_dir
    run = _load(run_dir)
    labels = read_labels(labels_dir)
    _check_subjects(run, labels, str(labels_dir))
    train, val = _split_rows(run, labels, "train"), _split_rows(run, labels, "tuning")
    if train.height == 0:
        raise ConfigError(f"{labels_dir}: no label of a train subject; nothing to fit the probe on")
    z_train = _embed(run, train)
    y_train = train["boolean_value"].to_numpy().astype(np.uint8)[:, None]
    y_val = val["boolean_value"].to_numpy().astype(np.uint8)[:, None]
    if val.height and 0 < y_val.sum() < val.height:
        z_val = _embed(run, val)
        probe = fit_linear_probe(z_train, y_train, z_val, y_val, Cs=Cs)
    else:  # tuning labels of one class only: C cannot be chosen on them
        probe = fit_linear_probe(z_train, y_train, C=sorted(Cs)[len(Cs) // 2])
    output_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        output_dir / PROBE_FILE, mean=probe.mean, scale=probe.scale, coef=probe.coef,
        intercept=probe.intercept, constant=probe.constant, C=np.float64(probe.C),
    )  # fmt: skip
    info: dict[str, Any] = {
        "run_dir": str(Path(run.run_dir).resolve()),
        "n_train_labels": train.height,
        "n_tuning_labels": val.height,
        "C": probe.C,
        "val_auroc_by_C": {f"{c:g}": v for c, v in probe.val_auroc.items()},
    }
    (output_dir / MODEL_FILE).write_text(json.dumps(info, indent=1))
    return output_dir


def predict(
    labels_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    init_dir: str | os.PathLike[str],
    *,
    split: str = "held_out",
) -> Path:
    """Supervised prediction: ``output_dir/predictions.parquet`` for the labels of ``split``'s subjects."""
    init_dir = Path(init_dir)
    model_file = init_dir / MODEL_FILE
    if not model_file.is_file():
        raise ConfigError(f"{init_dir}: no {MODEL_FILE}; pass the output folder of the supervised train step")
    info = json.loads(model_file.read_text())
    run = _load(info["run_dir"])
    with np.load(init_dir / PROBE_FILE) as f:
        probe = LinearProbe(f["mean"], f["scale"], f["coef"], f["intercept"], f["constant"], float(f["C"]))
    labels = read_labels(labels_dir)
    _check_subjects(run, labels, str(labels_dir))
    rows = _split_rows(run, labels, split)
    if rows.height == 0:
        raise ConfigError(f"{labels_dir}: no label of a {split!r} subject to predict")
    z = _embed(run, rows)
    probabilities = probe.predict_proba(z)[:, 0]
    return write_predictions(predictions_frame(rows, probabilities), Path(output_dir) / PREDICTIONS_FILE)
