"""Patient-level splits: seeded random splits, PTB-XL's ``strat_fold``, nested label fractions, leakage.

Every split here is a set of **patient ids**, never of recordings: two ECGs of one patient in train and
test would let a model recognise the patient instead of the disease (design §4). Use
:func:`recordings_of` to turn a split into the recordings a sampler or dataset should see.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from clinseq.errors import ConfigError, LeakageError

if TYPE_CHECKING:
    from clinseq.timeline import TimelineStore

#: PTB-XL's recommended folds (Wagner et al. 2020, Sci. Data): 1–8 train, 9 validation, 10 test.
PTBXL_FOLDS: dict[str, tuple[int, ...]] = {"train": tuple(range(1, 9)), "val": (9,), "test": (10,)}


def _patient_ids(source: TimelineStore | pl.DataFrame | Sequence[int] | np.ndarray) -> np.ndarray:
    """Sorted unique int64 patient ids of a store, a DataFrame with ``patient_id``, or a sequence."""
    if isinstance(source, pl.DataFrame):
        if "patient_id" not in source.columns:
            raise ConfigError(
                f"expected a DataFrame with a 'patient_id' column, got columns {source.columns}; "
                "pass store.patients or store.recordings"
            )
        ids = source["patient_id"].to_numpy()
    elif hasattr(source, "patients") and isinstance(source.patients, pl.DataFrame):
        ids = source.patients["patient_id"].to_numpy()
    else:
        ids = np.asarray(source)
    if ids.size == 0:  # an empty split (np.asarray([]) is float64)
        return np.zeros(0, np.int64)
    if ids.dtype.kind not in "iu":
        raise ConfigError(f"patient ids must be integers, got dtype {ids.dtype}; cast them to int64")
    return np.unique(ids.astype(np.int64))


def patient_split(
    source: TimelineStore | pl.DataFrame | Sequence[int] | np.ndarray,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Split patients at random into named, disjoint groups.

    Args:
        source: a store (its ``patients``), a DataFrame with ``patient_id``, or the patient ids.
        fractions: split name → fraction of patients, summing to 1 (default train 0.8, val 0.1, test 0.1).
            Counts are ``floor(fraction · n)`` plus one for the largest remainders, so they add up to n.
        seed: one seeded permutation of the sorted patient ids decides everything.

    Returns:
        split name → sorted int64 array of patient ids (disjoint, together all patients).
    """
    fractions = dict(fractions or {"train": 0.8, "val": 0.1, "test": 0.1})
    if not fractions or any(not (0.0 <= f <= 1.0) for f in fractions.values()):
        raise ConfigError(
            f"fractions must map split names to values in [0, 1], got {fractions}; "
            'e.g. {"train": 0.8, "val": 0.1, "test": 0.1}'
        )
    total = sum(fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"fractions must sum to 1, got {total:.6g} from {fractions}; rescale them")
    ids = _patient_ids(source)
    n = len(ids)
    exact = np.array([f * n for f in fractions.values()])
    counts = np.floor(exact).astype(np.int64)
    # Largest-remainder rounding, ties broken by split order, so the counts sum to n.
    for j in np.argsort(-(exact - counts), kind="stable")[: n - int(counts.sum())]:
        counts[j] += 1
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return {name: np.sort(ids[order[bounds[j] : bounds[j + 1]]]) for j, name in enumerate(fractions)}


def ptbxl_split(store: TimelineStore | pl.DataFrame) -> dict[str, np.ndarray]:
    """PTB-XL's recommended split from ``strat_fold``: folds 1–8 train, 9 val, 10 test.

    The folds of PTB-XL (Wagner et al. 2020) are already by patient and stratified by label; this reads
    ``strat_fold`` from ``store.recordings`` (or any DataFrame with ``patient_id`` and ``strat_fold``)
    and raises if a patient's recordings lie in more than one fold.

    Returns:
        ``{"train", "val", "test"}`` → sorted int64 arrays of patient ids.
    """
    frame = store if isinstance(store, pl.DataFrame) else store.recordings
    if "strat_fold" not in frame.columns or "patient_id" not in frame.columns:
        raise ConfigError(
            f"expected PTB-XL recordings with 'patient_id' and 'strat_fold', got columns {frame.columns}; "
            "convert the source with clinseq.io.ptbxl.PTBXLSource or use patient_split()"
        )
    folds = frame.group_by("patient_id").agg(
        pl.col("strat_fold").min().alias("fold"), pl.col("strat_fold").n_unique().alias("n_folds")
    )
    mixed = folds.filter(pl.col("n_folds") > 1)["patient_id"].to_list()
    if mixed:
        raise LeakageError(f"patients with recordings in several strat_folds: {mixed[:20]}")
    out = {}
    for name, fold_ids in PTBXL_FOLDS.items():
        ids = folds.filter(pl.col("fold").is_in(list(fold_ids)))["patient_id"].to_numpy()
        out[name] = np.sort(ids.astype(np.int64))
    return out


def split_of_store(store: TimelineStore | pl.DataFrame) -> dict[str, np.ndarray]:
    """The store's own split: split name → sorted patient ids, from ``patients.parquet`` ``split``.

    EHR stores carry the split of their source (a MEDS dataset's ``subject_splits``: train / tuning /
    held_out become train / val / test); converters assign a seeded 80/10/10 one when the source has none.
    """
    patients = store if isinstance(store, pl.DataFrame) else store.patients
    if "split" not in patients.columns or patients["split"].null_count() == patients.height:
        where = getattr(store, "path", "patients")
        raise ConfigError(f"{where}: patients.parquet has no split column; convert the source again")
    out: dict[str, np.ndarray] = {}
    for name in sorted(patients.drop_nulls("split")["split"].unique().to_list()):
        ids = patients.filter(pl.col("split") == name)["patient_id"].to_numpy()
        out[str(name)] = np.sort(ids.astype(np.int64))
    return out


def label_fraction_subset(
    patient_ids: Sequence[int] | np.ndarray, fraction: float, seed: int = 0
) -> np.ndarray:
    """The patients whose labels a "fraction of labels" experiment may use (1 %, 10 %, 100 %).

    Nested by construction: one permutation of the sorted ids, seeded by ``seed`` only, and a prefix
    of ``ceil(fraction · n)`` patients, so for one seed the 1 % set ⊂ the 10 % set ⊂ all patients.
    Drawn by patient, so every recording of a chosen patient comes with it.

    Args:
        patient_ids: the split to draw from (e.g. ``ptbxl_split(store)["train"]``), or a DataFrame
            with ``patient_id``.
        fraction: in (0, 1]; at least one patient is kept.
        seed: the same seed gives nested subsets across fractions; change it for another draw.

    Returns:
        sorted int64 array of patient ids.
    """
    if not (0.0 < fraction <= 1.0):
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}; e.g. 0.01 for 1 % of the patients")
    ids = _patient_ids(patient_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_keep = min(len(ids), math.ceil(fraction * len(ids) - 1e-9))
    return np.sort(ids[order[:n_keep]])


def recordings_of(recordings: pl.DataFrame, patient_ids: Sequence[int] | np.ndarray) -> pl.DataFrame:
    """The rows of ``recordings`` (e.g. ``store.recordings``) that belong to ``patient_ids``."""
    return recordings.filter(pl.col("patient_id").is_in(np.asarray(patient_ids, dtype=np.int64).tolist()))


def assert_no_leakage(*splits: Any, names: Sequence[str] | None = None) -> None:
    """Raise :class:`LeakageError` naming the offending patient ids if any two splits share a patient.

    Args:
        splits: patient-id arrays/sequences, DataFrames with ``patient_id`` (e.g. recordings of each
            split), or one dict of split name → ids (as :func:`patient_split` returns).
        names: names of the splits for the message (default: the dict keys, else ``split0``...).
    """
    if len(splits) == 1 and isinstance(splits[0], Mapping):
        names = list(splits[0].keys()) if names is None else names
        splits = tuple(splits[0].values())
    if len(splits) < 2:
        raise ConfigError(
            f"assert_no_leakage needs at least 2 splits, got {len(splits)}; pass train, val, test"
        )
    names = list(names) if names is not None else [f"split{i}" for i in range(len(splits))]
    if len(names) != len(splits):
        raise ConfigError(f"got {len(names)} names for {len(splits)} splits; pass one name per split")
    sets = [_patient_ids(s) for s in splits]
    problems = []
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            shared = np.intersect1d(sets[i], sets[j])
            if len(shared):
                problems.append(
                    f"{names[i]} ∩ {names[j]}: {len(shared)} patient(s), ids {shared[:20].tolist()}"
                    + (" ..." if len(shared) > 20 else "")
                )
    if problems:
        raise LeakageError("patient leakage between splits: " + "; ".join(problems))
