"""Patient-level splits: PTB-XL folds against the published CSV, random splits, nested label fractions."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinseq.data import (
    assert_no_leakage,
    label_fraction_subset,
    patient_split,
    ptbxl_split,
    recordings_of,
)
from clinseq.errors import ConfigError, LeakageError

patient_sets = st.lists(st.integers(0, 10**7), min_size=1, max_size=300, unique=True)


def test_ptbxl_split_follows_strat_fold_of_the_published_csv(ptbxl_store, ptbxl_root):
    split = ptbxl_split(ptbxl_store)
    csv = pl.read_csv(ptbxl_root / "ptbxl_database.csv", columns=["patient_id", "strat_fold"])
    csv = csv.with_columns(pl.col("patient_id").cast(pl.Int64))
    for name, folds in {"train": range(1, 9), "val": [9], "test": [10]}.items():
        expected = np.unique(csv.filter(pl.col("strat_fold").is_in(list(folds)))["patient_id"].to_numpy())
        assert np.array_equal(split[name], expected), name
    assert sum(map(len, split.values())) == csv["patient_id"].n_unique()
    assert_no_leakage(split)  # PTB-XL's folds are by patient
    assert_no_leakage(*(recordings_of(ptbxl_store.recordings, ids) for ids in split.values()))


def test_leakage_is_reported_with_the_patient_ids(ptbxl_store):
    split = ptbxl_split(ptbxl_store)
    intruders = split["test"][:3]
    with pytest.raises(LeakageError) as info:
        assert_no_leakage(
            {"train": np.concatenate([split["train"], intruders]), "val": split["val"], "test": split["test"]}
        )
    message = str(info.value)
    assert "train ∩ test: 3 patient(s)" in message
    assert all(str(p) in message for p in intruders.tolist())
    assert "val" not in message
    with pytest.raises(LeakageError, match="a ∩ b"):
        assert_no_leakage(recordings_of(ptbxl_store.recordings, intruders), intruders, names=["a", "b"])
    with pytest.raises(ConfigError, match="at least 2 splits"):
        assert_no_leakage(split["train"])


def test_ptbxl_split_refuses_patients_in_several_folds():
    frame = pl.DataFrame({"patient_id": [1, 1, 2], "strat_fold": [3, 10, 9]})
    with pytest.raises(LeakageError, match=r"\[1\]"):
        ptbxl_split(frame)
    with pytest.raises(ConfigError, match="strat_fold"):
        ptbxl_split(pl.DataFrame({"patient_id": [1]}))


@settings(max_examples=60, deadline=None)
@given(
    ids=patient_sets,
    weights=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_patient_split_is_a_seeded_partition(ids, weights, seed):
    if sum(weights) == 0:
        return
    fractions = {f"s{i}": w / sum(weights) for i, w in enumerate(weights)}
    split = patient_split(ids, fractions, seed)
    reordered = patient_split(np.array(ids[::-1]), fractions, seed)  # the set decides, not its order
    assert all(np.array_equal(split[k], reordered[k]) for k in split)
    parts = list(split.values())
    assert np.array_equal(np.sort(np.concatenate(parts)), np.sort(ids))  # complete, disjoint
    if len(split) > 1:
        assert_no_leakage(split)
    for name, part in split.items():  # largest remainder: within one patient of the exact share
        assert abs(len(part) - fractions[name] * len(ids)) < 1 + 1e-9


@settings(max_examples=60, deadline=None)
@given(ids=patient_sets, seed=st.integers(0, 2**32))
def test_label_fractions_are_nested_seeded_and_sized(ids, seed):
    subsets = [label_fraction_subset(ids, f, seed) for f in (0.01, 0.1, 0.5, 1.0)]
    for small, large in zip(subsets, subsets[1:], strict=False):
        assert np.isin(small, large).all(), "1 % ⊂ 10 % ⊂ 50 % ⊂ 100 %"
    for f, subset in zip((0.01, 0.1, 0.5, 1.0), subsets, strict=True):
        assert len(subset) == math.ceil(f * len(ids) - 1e-9)
        assert len(np.unique(subset)) == len(subset) and np.isin(subset, ids).all()
    assert np.array_equal(subsets[1], label_fraction_subset(list(reversed(ids)), 0.1, seed))


def test_label_fractions_draw_whole_patients(ptbxl_store):
    train = ptbxl_split(ptbxl_store)["train"]
    ten = label_fraction_subset(train, 0.1, seed=3)
    assert not np.array_equal(ten, label_fraction_subset(train, 0.1, seed=4))
    chosen = recordings_of(ptbxl_store.recordings, ten)
    # Every recording of every chosen patient, and nothing else.
    per_patient = ptbxl_store.recordings.group_by("patient_id").len()
    expected = per_patient.filter(pl.col("patient_id").is_in(ten.tolist()))["len"].sum()
    assert chosen.height == expected and set(chosen["patient_id"].to_list()) == set(ten.tolist())
    with pytest.raises(ConfigError, match="fraction"):
        label_fraction_subset(train, 0.0)
    with pytest.raises(ConfigError, match="sum to 1"):
        patient_split(train, {"train": 0.8, "test": 0.1})
