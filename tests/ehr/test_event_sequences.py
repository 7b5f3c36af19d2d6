"""Vocabulary, train-only value statistics, fixed-length windows and their batch contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from clinseq.data.event_sequences import (
    NO_TIME,
    PAD,
    UNK,
    CodeVocabulary,
    EventSequenceDataset,
    ValueNormalizer,
    collate_events,
    encode_events,
    window_item,
)
from clinseq.timeline.events_read import EventIndex

Setup = tuple[EventIndex, list[int], list[int]]


@pytest.fixture(scope="module")
def setup(mimic_store: Path) -> Setup:
    index = EventIndex.open(mimic_store)
    assert index is not None
    patients = pl.read_parquet(mimic_store / "patients.parquet")
    train = patients.filter(pl.col("split") == "train")["patient_id"].to_list()
    other = patients.filter(pl.col("split") != "train")["patient_id"].to_list()
    return index, train[:20], other[:5]


def test_vocabulary_min_count_and_unknown(setup: Setup) -> None:
    index, train, _ = setup
    vocab = CodeVocabulary.fit(index, train, min_count=3)
    counts = pl.concat([index.patient_events(p) for p in train])["code"].value_counts()
    assert len(vocab) == counts.filter(pl.col("count") >= 3).height + 2
    rare = counts.filter(pl.col("count") < 3)["code"][0]
    common = vocab.codes[0]
    assert vocab.encode([common, rare, "NOT A CODE"]).tolist() == [2, UNK, UNK]
    assert vocab.decode([PAD, UNK, 2]) == ["<pad>", "<unk>", common]
    with pytest.raises(ValueError, match="min_count"):
        CodeVocabulary.fit(index, train, min_count=0)


def test_vocabulary_from_the_stores_code_counts(mimic_store: Path) -> None:
    counts = pl.read_parquet(mimic_store / "events" / "metadata" / "codes.parquet")
    vocab = CodeVocabulary.from_counts(counts, min_count=50)
    frequent = counts.filter(pl.col("count") >= 50)
    assert len(vocab) == frequent.height + 2 and set(vocab.codes) == set(frequent["code"])
    assert vocab.counts == sorted(vocab.counts, reverse=True)  # index 2 is the most frequent code
    assert vocab.encode([vocab.codes[0], counts.sort("count")["code"][0]]).tolist() == [2, UNK]


def test_value_statistics_come_from_training_patients_only(setup: Setup) -> None:
    index, train, other = setup
    norm = ValueNormalizer.fit(index, train)
    train_events = pl.concat([index.patient_events(p) for p in train])
    lab = train_events.filter(pl.col("numeric_value").is_not_null())["code"].mode()[0]
    values = train_events.filter(pl.col("code") == lab)["numeric_value"].cast(pl.Float64).to_numpy()
    row = norm.stats.filter(pl.col("code") == lab).row(0, named=True)
    assert row["mean"] == pytest.approx(values.mean()) and row["std"] == pytest.approx(values.std())
    both = ValueNormalizer.fit(index, train + other).stats.filter(pl.col("code") == lab).row(0, named=True)
    assert both["mean"] != pytest.approx(row["mean"])  # the held-out patients would change it
    z, mask = norm.transform(pl.Series([lab, lab, "NEVER"]), pl.Series([row["mean"], None, 1.0]))
    assert z.tolist() == [0.0, 0.0, 0.0] and mask.tolist() == [True, False, False]


def test_windows_cover_every_event_once_and_match_the_contract(setup: Setup) -> None:
    index, train, _ = setup
    vocab, norm = CodeVocabulary.fit(index, train), ValueNormalizer.fit(index, train)
    pids = train[:4]
    ds = EventSequenceDataset(index, pids, vocab, norm, max_len=64)
    batch = collate_events([ds[i] for i in range(len(ds))])
    n_events = sum(index.patient_events(p).height for p in pids)
    assert int(batch["padding_mask"].sum()) == n_events
    assert batch["codes"].dtype == torch.int64 and batch["codes"].shape == (len(ds), 64)
    assert batch["time_delta_s"].dtype == torch.float32 and batch["values"].dtype == torch.float32
    assert batch["value_mask"].dtype == torch.bool and batch["patient_id"].dtype == torch.int64
    assert (batch["codes"][~batch["padding_mask"]] == PAD).all()
    assert (batch["codes"][batch["padding_mask"]] >= 2).all()  # all codes known: vocab fitted on them
    assert not batch["value_mask"][~batch["padding_mask"]].any()
    assert (batch["time_delta_s"][:, 0] == 0).all() and (batch["time_delta_s"] >= 0).all()
    # The first window of the first patient, recomputed by hand.
    events = index.patient_events(pids[0]).head(64)
    t = events["time"].cast(pl.Int64).to_numpy()
    expected = np.diff(t.astype(np.float64)) / 1e6
    expected[np.isnan(expected)] = 0.0
    np.testing.assert_allclose(batch["time_delta_s"][0, 1:].numpy(), expected, rtol=1e-6)
    assert batch["window_start_us"][0] == events["time"].drop_nulls().cast(pl.Int64)[0]
    assert batch["window_end_us"][0] == events["time"].drop_nulls().cast(pl.Int64)[-1]
    assert vocab.decode(batch["codes"][0, :3].tolist()) == events["code"].head(3).to_list()
    assert NO_TIME < batch["window_start_us"].min()


def test_window_values_are_the_training_z_scores(setup: Setup) -> None:
    index, train, other = setup
    vocab, norm = CodeVocabulary.fit(index, train, min_count=2), ValueNormalizer.fit(index, train)
    pid = other[0]  # a held-out patient: codes and values seen through the training statistics
    ds = EventSequenceDataset(index, [pid], vocab, norm, max_len=100_000)
    item = ds[0]
    events = index.patient_events(pid)
    n = events.height
    stats = {r["code"]: (r["mean"], r["std"]) for r in norm.stats.iter_rows(named=True)}
    expected, known = np.zeros(n, np.float32), np.zeros(n, bool)
    for i, (code, value) in enumerate(events.select("code", "numeric_value").iter_rows()):
        if value is not None and code in stats and np.isfinite(value):
            mean, std = stats[code]
            expected[i], known[i] = np.clip((value - mean) / std, -10, 10), True
    np.testing.assert_allclose(item["values"][:n], expected, rtol=1e-6)
    assert item["value_mask"][:n].tolist() == known.tolist() and known.any() and not known.all()
    assert item["codes"][:n].tolist() == vocab.encode(events["code"]).tolist()
    assert UNK in item["codes"][:n].tolist()  # some codes of this patient are rare in training


def test_random_crops_are_deterministic_under_a_seed(setup: Setup) -> None:
    index, train, _ = setup
    vocab, norm = CodeVocabulary.fit(index, train), ValueNormalizer.fit(index, train)

    def make(seed: int) -> EventSequenceDataset:
        return EventSequenceDataset(index, train[:6], vocab, norm, max_len=32, random_crop=True, seed=seed)

    a, b, c = make(1), make(1), make(2)
    first = collate_events([a[i] for i in range(len(a))])["codes"]
    assert torch.equal(first, collate_events([b[i] for i in reversed(range(len(b)))])["codes"].flip(0))
    assert not torch.equal(first, collate_events([c[i] for i in range(len(c))])["codes"])
    a.set_epoch(1)
    assert not torch.equal(first, collate_events([a[i] for i in range(len(a))])["codes"])
    with pytest.raises(ValueError, match="max_len"):
        EventSequenceDataset(index, train, vocab, norm, max_len=0)
    with pytest.raises(ValueError, match="empty list"):
        collate_events([])


def test_encode_events_gives_the_datasets_items_bit_for_bit(setup: Setup) -> None:
    """The one encoding path: a table of events → the item EventSequenceDataset gives for those events."""
    index, train, other = setup
    vocab, norm = CodeVocabulary.fit(index, train, min_count=2), ValueNormalizer.fit(index, train)
    pid = other[0]  # held out: unknown codes and values outside the training statistics occur
    events = index.patient_events(pid)
    ds = EventSequenceDataset(index, [pid], vocab, norm, max_len=40)
    assert events.height > 2 * 40
    for item, window in ((ds[0], events.head(40)), (ds[1], events.slice(40, 40)), (ds[len(ds) - 1], None)):
        if window is None:  # the last, short window: its events followed by padding
            window = events.slice(40 * (len(ds) - 1))
        ours = encode_events(window, vocab, norm, 40, patient_id=pid)
        assert ours.keys() == item.keys()
        for key, value in item.items():
            np.testing.assert_array_equal(ours[key], value, err_msg=key)
            assert np.asarray(ours[key]).dtype == np.asarray(value).dtype, key
    # Longer than max_len: the most recent events are kept (the EHR context before an ECG).
    tail = encode_events(events, vocab, norm, 40)
    np.testing.assert_array_equal(tail["codes"], vocab.encode(events["code"].tail(40)))
    empty = encode_events(events.head(0), vocab, norm, 8)
    assert not empty["padding_mask"].any() and empty["window_start_us"] == NO_TIME
    with pytest.raises(ValueError, match="at most max_len=2"):
        window_item(np.ones(3, np.int64), np.zeros(3, np.int64), np.zeros(3, np.float32), np.ones(3, bool), 2)
