"""Representation at prediction time: no event after ``prediction_time`` reaches the encoder or the
count baseline (real MIMIC-IV demo events), and the event reads stay zero-copy under the installed polars.

The leakage test gives each subject five prediction times (at 30–70 % of its timeline), labels each at
random, and plants a marker event one hour *after* every positive prediction time (a code of its own per
rank): each label is then predictable only from the future. At the first prediction time the inputs
must be identical with and without the markers; over all prediction times the probes must stay at
chance; an hour after the marker the same count baseline must find it (the positive control that shows
the test can fail).
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch

from clinseq.data.event_sequences import NO_TIME, CodeVocabulary, ValueNormalizer
from clinseq.data.splits import split_of_store
from clinseq.eval import (
    COUNTS_NAME,
    CodeCountFeatures,
    EvalOptions,
    Examples,
    LabelsTable,
    Task,
    evaluate,
    event_featurizers,
)
from clinseq.eval.code_counts import code_count_matrix
from clinseq.eval.ehr_features import PredictionTimeEvents, embed_at_prediction_times
from clinseq.io.meds import import_meds
from clinseq.models.event_transformer import EventTransformer
from clinseq.timeline import TimelineStore
from clinseq.timeline.events import EVENTS_DIR

MARKER = "LEAK//FUTURE_MARKER"
QUANTILES = (0.3, 0.4, 0.5, 0.6, 0.7)
CHANCE_BAND = 0.15  # |AUROC − 0.5| below this is chance here; the positive control must leave it


@pytest.fixture(scope="module")
def planted(mimic_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo's events plus a marker 1 h after each positive prediction time (five per subject)."""
    events = pl.read_parquet(mimic_store / EVENTS_DIR / "data" / "*.parquet")
    timed = events.drop_nulls("time")
    rows = [
        timed.group_by("subject_id")
        .agg(pl.col("time").sort().gather((pl.len() * q).cast(pl.Int64)).first().alias("prediction_time"))
        .with_columns(pl.lit(rank).alias("rank"))
        for rank, q in enumerate(QUANTILES)
    ]
    times = pl.concat(rows).unique(["subject_id", "prediction_time"], keep="first").sort("subject_id", "rank")
    rng = np.random.default_rng(0)
    labels = times.with_columns(pl.Series("boolean_value", rng.random(times.height) < 0.5))
    markers = labels.filter("boolean_value").select(
        "subject_id",
        (pl.col("prediction_time") + timedelta(hours=1)).alias("time"),
        (pl.lit(MARKER + "//") + pl.col("rank").cast(pl.String)).alias("code"),
        pl.lit(1.0, pl.Float32).alias("numeric_value"),
        pl.lit(None, events.schema["text_value"]).alias("text_value"),
    )
    root = tmp_path_factory.mktemp("planted")
    meds = root / "meds"
    shutil.copytree(mimic_store / EVENTS_DIR / "metadata", meds / "metadata")
    (meds / "data").mkdir(parents=True)
    pl.concat([events, markers.select(events.columns)]).sort("subject_id", "time").write_parquet(
        meds / "data" / "0.parquet"
    )
    store = TimelineStore.open(import_meds(meds, root / "store", progress=False))
    return {"store": store, "labels": labels, "original": TimelineStore.open(mimic_store)}


def _vocab(store: TimelineStore) -> tuple[CodeVocabulary, ValueNormalizer]:
    train = split_of_store(store)["train"]
    return CodeVocabulary.fit(store.event_index, train), ValueNormalizer.fit(store.event_index, train)


def test_no_event_after_prediction_time_reaches_the_encoder(planted: dict) -> None:
    store, original = planted["store"], planted["original"]
    labels = planted["labels"].filter(pl.col("rank") == 0).drop("rank")  # before every marker
    vocab, normalizer = _vocab(store)
    markers = [c for c in vocab.codes if c.startswith(MARKER)]
    assert len(markers) == len(QUANTILES)  # known codes: only the time rule keeps them out
    at = PredictionTimeEvents(store.event_index, labels, vocab, normalizer, max_len=64)
    without = PredictionTimeEvents(original.event_index, labels, vocab, normalizer, max_len=64)
    marker_indices = vocab.encode(markers)
    p_us = labels["prediction_time"].cast(pl.Int64).to_numpy()
    for i in range(len(at)):
        item, twin = at[i], without[i]
        assert item["window_end_us"] != NO_TIME and item["window_end_us"] <= p_us[i]
        assert not np.isin(marker_indices, item["codes"]).any()
        for key in ("codes", "time_delta_s", "values", "value_mask", "padding_mask"):
            np.testing.assert_array_equal(item[key], twin[key])
    # The count baseline reads the whole input window (no max_len): the same rule, checked against an
    # independent count of the events at or before each prediction time.
    counts = code_count_matrix(at)
    events = pl.read_parquet(store.path / EVENTS_DIR / "data" / "*.parquet")
    expected = (
        events.join(labels.select("subject_id", "prediction_time"), on="subject_id")
        .filter(pl.col("time").is_null() | (pl.col("time") <= pl.col("prediction_time")))
        .group_by("subject_id")
        .len()
        .sort("subject_id")
    )
    assert np.asarray(counts.sum(axis=1)).ravel().astype(int).tolist() == expected["len"].to_list()
    store_codes = store.event_index.codes.to_list()
    own = store_codes.index(f"{MARKER}//0")
    assert all(counts[:, store_codes.index(m)].nnz == 0 for m in markers)
    # Two hours later, a row's own marker is in the input of exactly the positive rows.
    later = labels.with_columns(pl.col("prediction_time") + timedelta(hours=2))
    seen = code_count_matrix(PredictionTimeEvents(store.event_index, later, vocab, normalizer))
    np.testing.assert_array_equal(seen[:, own].toarray().ravel() > 0, labels["boolean_value"].to_numpy())


class _CrossFitted(Task):
    """The labels as a task scored by 5-fold subject cross-fitting: every prediction is scored once."""

    def __init__(self, labels: pl.DataFrame, name: str) -> None:
        self.table, self.name = LabelsTable(labels, name=name), name

    def examples(self, store: TimelineStore) -> Examples:
        ex = self.table.examples(store)
        return Examples(ex.task, ex.keys, ex.y, ex.classes, ex.subjects, None)


@pytest.mark.slow
def test_a_label_known_only_after_prediction_time_stays_at_chance(planted: dict) -> None:
    store, labels = planted["store"], planted["labels"]
    vocab, normalizer = _vocab(store)
    markers = [f"{MARKER}//{rank}" for rank in range(len(QUANTILES))]
    torch.manual_seed(0)
    encoder = EventTransformer(len(vocab), dim=32, depth=1, n_heads=2)
    rows = event_featurizers({"random init": encoder}, vocab, normalizer, max_len=64)
    rows["future markers"] = CodeCountFeatures(codes=markers)  # the one thing that gives the label away
    # A fixed C: cross-fitted scores of different folds are pooled, so they must share one scale.
    options = EvalOptions(fractions=(1.0,), n_boot=200, folds=5, C=1.0, print_table=False, progress=False)
    at = evaluate(rows, store, _CrossFitted(labels.drop("rank"), "future"), options).reports[0]
    for name in ("random init", COUNTS_NAME, "future markers"):
        auroc = at[name].results[0].auroc
        assert at[name].n_test_examples == labels.height
        assert abs(auroc.point - 0.5) < CHANCE_BAND, (name, auroc)
    # Exactly: a row's input never holds its own marker nor a later one (earlier rows' markers are past).
    task = _CrossFitted(labels.drop("rank"), "future")
    seen = rows["future markers"](store, task.examples(store)) > 0
    rank = labels.sort("subject_id", "prediction_time")["rank"].to_numpy()
    assert not any(seen[i, rank[i] :].any() for i in range(len(rank)))
    assert seen.any()  # the earlier markers are read: the features are not zero by construction
    # Positive control: two hours after each median prediction time, its own marker is in the input of
    # exactly the positive rows, and the same protocol finds it.
    later = labels.filter(pl.col("rank") == 2).drop("rank")
    later = later.with_columns(pl.col("prediction_time") + timedelta(hours=2))
    control = evaluate(rows, store, _CrossFitted(later, "control"), options).reports[0]
    assert control["future markers"].results[0].auroc.point > 0.95


def test_event_reads_share_the_memory_map(mimic_store: Path) -> None:
    """Under the installed polars (1.x with the [meds] extra, 2.x without), a patient's events are views
    of the mapped events.arrow: every column, the string_view codes included, points into its buffers."""
    index = TimelineStore.open(mimic_store).event_index
    pid = int(index.subject_ids[len(index.subject_ids) // 2])
    start, _, _ = index.row_range(pid)
    frame = index.patient_events(pid)
    mapped = index._batches[0]  # the demo's events fit one record batch
    for column, width in (("subject_id", 8), ("time", 8), ("numeric_value", 4), ("code", 16)):
        exported = frame[column].to_arrow(compat_level=pl.CompatLevel.newest())
        if isinstance(exported, pa.ChunkedArray):
            assert exported.num_chunks == 1
            exported = exported.chunk(0)
        source = mapped.column(column)
        assert exported.type == source.type, column  # string_view stays string_view
        # The values (for strings: the 16-byte views) start at this patient's row of the mapped buffer …
        ours = exported.buffers()[1].address + exported.offset * width
        assert ours == source.buffers()[1].address + start * width, column
        # … and the string bytes the views point to are the mapped file's own data buffers.
        data = {b.address for b in exported.buffers()[2:] if b is not None}
        assert data <= {b.address for b in source.buffers()[2:] if b is not None}, column


def test_embeddings_follow_label_order_and_restore_the_mode(planted: dict) -> None:
    store, labels = planted["store"], planted["labels"].drop("rank")
    vocab, normalizer = _vocab(store)
    torch.manual_seed(0)
    encoder = EventTransformer(len(vocab), dim=16, depth=1, n_heads=2).train()
    events = PredictionTimeEvents(store.event_index, labels.head(6), vocab, normalizer, max_len=32)
    z = embed_at_prediction_times(encoder, events, batch_size=4)
    reversed_events = PredictionTimeEvents(
        store.event_index, labels.head(6).reverse(), vocab, normalizer, max_len=32
    )
    z_rev = embed_at_prediction_times(encoder, reversed_events, batch_size=3)
    assert z.shape == (6, 16) and encoder.training
    np.testing.assert_allclose(z, z_rev[::-1], atol=1e-5)
