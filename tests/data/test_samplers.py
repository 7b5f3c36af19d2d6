"""Batch samplers: properties over random recording tables (hypothesis), sharding, determinism, resume."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from clinseq.data import (
    RANDOM_START,
    HierarchicalSampler,
    PatientBatchSampler,
    PolyWindowSampler,
    RandomWindowSampler,
    WindowKey,
)
from clinseq.errors import ConfigError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WINDOW = 100  # samples


@st.composite
def recording_tables(draw, max_patients: int = 30, max_per_patient: int = 5) -> pl.DataFrame:
    """A recordings table: random patients with 1..k recordings, some shorter than WINDOW."""
    n_patients = draw(st.integers(1, max_patients))
    counts = draw(st.lists(st.integers(1, max_per_patient), min_size=n_patients, max_size=n_patients))
    pids = draw(st.lists(st.integers(0, 10**6), min_size=n_patients, max_size=n_patients, unique=True))
    n = sum(counts)
    lengths = draw(st.lists(st.integers(WINDOW // 2, 6 * WINDOW), min_size=n, max_size=n))
    rids = draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n, unique=True))
    return pl.DataFrame(
        {
            "recording_id": rids,
            "patient_id": np.repeat(pids, counts),
            "n_samples": lengths,
            "sampling_rate_hz": [100.0] * n,
        }
    )


def lookup(table: pl.DataFrame) -> tuple[dict[int, int], dict[int, int]]:
    rid = table["recording_id"].to_list()
    return dict(zip(rid, table["patient_id"].to_list(), strict=True)), dict(
        zip(rid, table["n_samples"].to_list(), strict=True)
    )


def eligible(table: pl.DataFrame, min_recordings: int = 1, min_length: int = WINDOW) -> dict[int, list[int]]:
    """patient → recordings at least ``min_length`` long, for patients with ≥ ``min_recordings`` of them."""
    ok = table.filter(pl.col("n_samples") >= min_length)
    by_patient = ok.group_by("patient_id").agg(pl.col("recording_id")).rows()
    return {int(p): list(r) for p, r in by_patient if len(r) >= min_recordings}


def epoch(sampler, e: int = 0) -> list[list[WindowKey]]:
    sampler.set_epoch(e)
    return list(sampler)


# ---------------------------------------------------------------------------------------------------------
# PatientBatchSampler
# ---------------------------------------------------------------------------------------------------------
@SETTINGS
@given(
    table=recording_tables(),
    p=st.integers(1, 4),
    v=st.integers(1, 4),
    policy=st.sampled_from(["drop", "fill"]),
    seed=st.integers(0, 2**32),
)
def test_patient_batches_layout_and_views(table, p, v, policy, seed):
    pid_of, n_of = lookup(table)
    patients = eligible(table, v if policy == "drop" else 1)
    if len(patients) < p:
        with pytest.raises(ConfigError, match="eligible patients"):
            PatientBatchSampler(table, p, v, short_patients=policy, window_n_samples=WINDOW, seed=seed)
        return
    sampler = PatientBatchSampler(table, p, v, short_patients=policy, window_n_samples=WINDOW, seed=seed)
    assert sampler.batch_shape == (p, v) and sampler.n_patients == len(patients)
    batches = epoch(sampler)
    assert len(batches) == len(sampler) == len(patients) // p
    seen = []
    for batch in batches:
        assert len(batch) == p * v
        groups = [batch[i * v : (i + 1) * v] for i in range(p)]
        owners = [{pid_of[k.recording_id] for k in g} for g in groups]
        assert all(len(o) == 1 for o in owners), "a group mixes patients"
        owners = [o.pop() for o in owners]
        assert len(set(owners)) == p, "a patient twice in one batch"
        seen += owners
        for owner, group in zip(owners, groups, strict=True):
            recs = [k.recording_id for k in group]
            n_recs = len(patients[owner])
            # V distinct recordings when the patient has them, else every recording used ("fill").
            assert len(set(recs)) == min(v, n_recs)
            assert set(recs) <= set(patients[owner])
            for k in group:
                assert 0 <= k.start <= n_of[k.recording_id] - WINDOW
            # Windows of a reused recording are distinct when it has room for them.
            for r in set(recs):
                uses = [k.start for k in group if k.recording_id == r]
                if n_of[r] - WINDOW + 1 >= len(uses):
                    assert len(set(uses)) == len(uses)
    assert len(seen) == len(set(seen)), "a patient twice in one epoch"
    assert len(set(patients) - set(seen)) == len(patients) % p  # the drop rule


@SETTINGS
@given(
    table=recording_tables(max_patients=40),
    p=st.integers(1, 3),
    v=st.integers(1, 3),
    world=st.integers(1, 4),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_patient_batches_shard_by_patient(table, p, v, world, drop_last, seed):
    patients = eligible(table)
    if len(patients) < p * world:
        return
    pid_of, _ = lookup(table)

    def make(rank, world_size, per_batch):
        return PatientBatchSampler(
            table, per_batch, v, short_patients="fill", window_n_samples=WINDOW, seed=seed,
            rank=rank, world_size=world_size, drop_last=drop_last,
        )  # fmt: skip

    ranks = [epoch(make(r, world, p), 3) for r in range(world)]
    n_steps = {len(b) for b in ranks}
    assert len(n_steps) == 1, "ranks must yield the same number of batches"
    union = set()
    for step in range(n_steps.pop()):
        sets = [{pid_of[k.recording_id] for k in rank[step]} for rank in ranks]
        assert sum(len(s) for s in sets) == len(set().union(*sets)), "a patient on two ranks in one step"
        union |= set().union(*sets)
    if drop_last:
        assert len(set(patients) - union) == len(patients) % (p * world)
    else:
        assert union == set(patients)
    # The ranks' batches of a step, concatenated, are the one-process batch with W·P patients.
    single = epoch(make(0, 1, p * world), 3)
    assert [sum((rank[s] for rank in ranks), []) for s in range(len(single))] == single


@SETTINGS
@given(table=recording_tables(), seed=st.integers(0, 2**32), k=st.integers(0, 10))
def test_patient_batches_deterministic_and_resumable(table, seed, k):
    if len(eligible(table)) < 2:
        return

    def make(s=seed):
        return PatientBatchSampler(table, 2, 2, short_patients="fill", window_n_samples=WINDOW, seed=s)

    a, b = make(), make()
    assert epoch(a, 1) == epoch(b, 1)  # same seed, same epoch
    full = epoch(a, 2)
    k = min(k, len(full))
    # Stop at step k, save, restore into a fresh sampler (possibly another seed): the rest is identical.
    interrupted = make()
    interrupted.set_epoch(2)
    iterator = iter(interrupted)
    head = [next(iterator) for _ in range(k)]
    state = interrupted.state_dict()
    assert state["batches_yielded"] == k and state["epoch"] == 2 and state["seed"] == seed
    resumed = make(s=seed + 1)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the training loop sets the epoch again: the position is kept
    assert head + list(resumed) == full
    assert list(resumed) == full  # the next iteration is a whole epoch again
    resumed.set_epoch(3)
    assert list(resumed) == epoch(make(), 3)


def test_patient_batches_differ_between_epochs_and_seeds():
    table = pl.DataFrame(
        {"recording_id": range(200), "patient_id": np.arange(200) // 2, "n_samples": [1000] * 200}
    )
    a = PatientBatchSampler(table, 8, 2, window_n_samples=WINDOW, seed=0)
    b = PatientBatchSampler(table, 8, 2, window_n_samples=WINDOW, seed=1)
    assert epoch(a, 0) != epoch(a, 1)
    assert epoch(a, 0) != epoch(b, 0)


def test_short_patients_policies_on_one_ecg_patients():
    # Patients 0..2 have one recording, patient 3 has three.
    table = pl.DataFrame(
        {"recording_id": [10, 11, 12, 13, 14, 15], "patient_id": [0, 1, 2, 3, 3, 3], "n_samples": [1000] * 6}
    )
    drop = PatientBatchSampler(table, 1, 2, short_patients="drop", window_n_samples=WINDOW)
    assert drop.n_patients == 1 and drop.n_short_patients == 3
    assert all(len({k.recording_id for k in b}) == 2 for b in epoch(drop))
    fill = PatientBatchSampler(table, 4, 2, short_patients="fill", window_n_samples=WINDOW)
    (batch,) = epoch(fill)
    for group in (batch[i : i + 2] for i in range(0, 8, 2)):
        rids = {k.recording_id for k in group}
        if rids <= {10, 11, 12}:  # one ECG: two different windows of it, spread over the recording
            assert len(rids) == 1 and group[0].start < group[1].start
        else:
            assert len(rids) == 2
    with pytest.raises(ConfigError, match="short_patients='fill'"):
        PatientBatchSampler(table, 2, 2, short_patients="drop")
    with pytest.raises(ConfigError, match="'drop' or 'fill'"):
        PatientBatchSampler(table, 1, 2, short_patients="pad")


def test_without_window_length_keys_ask_the_dataset_for_starts():
    table = pl.DataFrame({"recording_id": [1, 2, 3, 4], "patient_id": [0, 0, 1, 1]})
    sampler = PatientBatchSampler(table, 2, 2)
    (batch,) = epoch(sampler)
    assert all(k.start == RANDOM_START for k in batch)


def test_too_short_recordings_are_left_out():
    table = pl.DataFrame({"recording_id": [1, 2, 3], "patient_id": [0, 0, 1], "n_samples": [50, 500, 500]})
    sampler = PatientBatchSampler(table, 2, 1, window_n_samples=100)
    assert sampler.n_excluded_recordings == 1
    assert {k.recording_id for k in epoch(sampler)[0]} == {2, 3}


def test_window_s_uses_each_recordings_rate():
    table = pl.DataFrame(
        {
            "recording_id": [1, 2],
            "patient_id": [0, 1],
            "n_samples": [1000, 1000],
            "sampling_rate_hz": [100.0, 500.0],
        }
    )
    sampler = RandomWindowSampler(table, 1, window_s=1.0)  # 100 and 500 samples
    starts = {k.recording_id: k.start for e in range(20) for k in epoch(sampler, e)[0]}
    assert max(s for r, s in starts.items() if r == 2) <= 500
    with pytest.raises(ConfigError, match="not both"):
        RandomWindowSampler(table, 1, window_s=1.0, window_n_samples=100)


# ---------------------------------------------------------------------------------------------------------
# HierarchicalSampler
# ---------------------------------------------------------------------------------------------------------
@SETTINGS
@given(
    table=recording_tables(),
    r=st.integers(1, 3),
    m=st.integers(1, 3),
    policy=st.sampled_from(["drop", "fill"]),
    seed=st.integers(0, 2**32),
)
def test_hierarchical_layout(table, r, m, policy, seed):
    patients = eligible(table, r if policy == "drop" else 1)
    if len(patients) < 2:
        return
    pid_of, n_of = lookup(table)
    sampler = HierarchicalSampler(table, 2, r, m, short_patients=policy, window_n_samples=WINDOW, seed=seed)
    assert sampler.batch_shape == (2, r, m)
    for batch in epoch(sampler):
        keys = np.array(batch, dtype=np.int64).reshape(2, r, m, 2)
        owners = [{pid_of[int(x)] for x in keys[i, :, :, 0].ravel()} for i in range(2)]
        assert all(len(o) == 1 for o in owners) and owners[0] != owners[1]
        for i in range(2):
            assert (keys[i, :, :, 0] == keys[i, :, :1, 0]).all(), "the windows of a slot are one recording"
            slots = keys[i, :, 0, 0].tolist()
            assert len(set(slots)) == min(r, len(patients[owners[i].pop()]))
            for rid in set(slots):
                starts = keys[i][keys[i, :, :, 0] == rid][:, 1]
                assert (starts >= 0).all() and (starts <= n_of[rid] - WINDOW).all()
                if n_of[rid] - WINDOW + 1 >= len(starts):
                    assert len(set(starts.tolist())) == len(starts)


# ---------------------------------------------------------------------------------------------------------
# Recording-level samplers: RandomWindowSampler, PolyWindowSampler
# ---------------------------------------------------------------------------------------------------------
@SETTINGS
@given(
    table=recording_tables(max_patients=30),
    batch=st.integers(1, 5),
    world=st.integers(1, 3),
    repeats=st.integers(1, 2),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_random_windows_shard_by_patient_and_cover_the_epoch(table, batch, world, repeats, drop_last, seed):
    ok = eligible(table)
    n_units = sum(len(r) for r in ok.values()) * repeats
    if len(ok) < world or n_units < batch * world:
        with pytest.raises(ConfigError):
            RandomWindowSampler(table, batch, window_n_samples=WINDOW, world_size=world)
        return
    pid_of, n_of = lookup(table)
    ranks = []
    for rank in range(world):
        sampler = RandomWindowSampler(
            table, batch, windows_per_recording=repeats, window_n_samples=WINDOW, seed=seed,
            rank=rank, world_size=world, drop_last=drop_last,
        )  # fmt: skip
        ranks.append(epoch(sampler, 1))
        assert len(ranks[-1]) == len(sampler)
    assert len({len(r) for r in ranks}) == 1
    expected = n_units // (batch * world) if drop_last else -(-n_units // (batch * world))
    assert len(ranks[0]) == expected
    patient_sets = [{pid_of[k.recording_id] for b in r for k in b} for r in ranks]
    assert sum(map(len, patient_sets)) == len(set().union(*patient_sets)), "a patient on two ranks"
    counts: dict[int, int] = {}
    for r in ranks:
        for b in r:
            assert len(b) == batch
            for k in b:
                assert 0 <= k.start <= n_of[k.recording_id] - WINDOW
                counts[k.recording_id] = counts.get(k.recording_id, 0) + 1
    if world == 1:  # one rank: every recording `repeats` times, up to the dropped or padded tail
        assert sum(counts.values()) == expected * batch
        if drop_last:
            assert max(counts.values()) <= repeats
            assert sum(counts.values()) > n_units - batch
        else:
            assert all(counts.get(r, 0) >= repeats for rs in ok.values() for r in rs)


@SETTINGS
@given(
    table=recording_tables(max_patients=20),
    m=st.integers(1, 5),
    lo=st.floats(-0.5, 0.9),
    width=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**32),
)
def test_poly_windows_honour_overlap_bounds(table, m, lo, width, seed):
    hi = min(1.0, lo + width)
    step_lo = int(np.ceil(WINDOW * (1 - hi) - 1e-9))
    if step_lo > int(np.floor(WINDOW * (1 - lo) + 1e-9)):  # no integer stride in range
        with pytest.raises(ConfigError, match="no integer stride"):
            PolyWindowSampler(table, 1, m, lo, hi, window_n_samples=WINDOW)
        return
    ok = eligible(table, min_length=WINDOW + (m - 1) * max(step_lo, 0))
    if sum(len(r) for r in ok.values()) < 2:
        return
    _, n_of = lookup(table)
    sampler = PolyWindowSampler(table, 2, m, lo, hi, window_n_samples=WINDOW, seed=seed)
    assert sampler.batch_shape == (2, m)
    for batch in epoch(sampler):
        for i in range(2):
            group = batch[i * m : (i + 1) * m]
            assert len({k.recording_id for k in group}) == 1
            rid = group[0].recording_id
            starts = np.array([k.start for k in group])
            assert starts[0] >= 0 and starts[-1] + WINDOW <= n_of[rid]
            overlap = (WINDOW - np.diff(starts)) / WINDOW
            assert (overlap >= lo - 1e-9).all() and (overlap <= hi + 1e-9).all()


def test_poly_window_validation_and_exclusion():
    table = pl.DataFrame({"recording_id": [1, 2, 3], "patient_id": [0, 1, 2], "n_samples": [250, 400, 1000]})
    with pytest.raises(ConfigError, match="window length"):
        PolyWindowSampler(table, 1, 4)
    with pytest.raises(ConfigError, match="min_overlap <= max_overlap"):
        PolyWindowSampler(table, 1, 4, 0.6, 0.5, window_n_samples=100)
    # 4 windows of 100 with overlap ≤ 0.5 need ≥ 100 + 3·50 = 250 samples: all three fit.
    assert PolyWindowSampler(table, 1, 4, 0.0, 0.5, window_n_samples=100).n_excluded_recordings == 0
    # No overlap allowed: ≥ 400 samples, so recording 1 is left out.
    assert PolyWindowSampler(table, 1, 4, 0.0, 0.0, window_n_samples=100).n_excluded_recordings == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda t, **kw: RandomWindowSampler(t, 3, window_n_samples=WINDOW, **kw),
        lambda t, **kw: PolyWindowSampler(t, 2, 3, window_n_samples=WINDOW, **kw),
        lambda t, **kw: HierarchicalSampler(t, 2, 2, 2, short_patients="fill", window_n_samples=WINDOW, **kw),
    ],
    ids=["random", "poly", "hierarchical"],
)
def test_every_sampler_resumes_exactly(make):
    rng = np.random.default_rng(0)
    table = pl.DataFrame(
        {
            "recording_id": range(60),
            "patient_id": rng.integers(0, 25, 60),
            "n_samples": rng.integers(300, 900, 60),
        }
    )
    for world in (1, 2):
        for rank in range(world):
            sampler = make(table, seed=5, rank=rank, world_size=world)
            full = epoch(sampler, 4)
            assert epoch(make(table, seed=5, rank=rank, world_size=world), 4) == full
            for k in (0, 1, len(full) - 1, len(full)):
                other = make(table, seed=5, rank=rank, world_size=world)
                other.set_epoch(4)
                iterator = iter(other)
                for _ in range(k):
                    next(iterator)
                restored = make(table, seed=0, rank=rank, world_size=world)
                restored.load_state_dict(other.state_dict())
                assert list(restored) == full[k:]
            assert sampler.batch_at(2, epoch=4) == full[2]


def test_state_mismatches_are_refused():
    table = pl.DataFrame({"recording_id": range(8), "patient_id": [0, 0, 1, 1, 2, 2, 3, 3]})
    sampler = PatientBatchSampler(table, 2, 2, world_size=2)
    state = sampler.state_dict()
    with pytest.raises(ConfigError, match="world_size"):
        PatientBatchSampler(table, 1, 2, world_size=1).load_state_dict(state)
    with pytest.raises(ConfigError, match="configuration differs"):
        PatientBatchSampler(table, 1, 2, world_size=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="PatientBatchSampler"):
        RandomWindowSampler(table, 2, world_size=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="exceeds"):
        sampler.state_dict(batches_consumed=5)
    # Any rank's state loads on any rank (training loops often save rank 0's only).
    PatientBatchSampler(table, 2, 2, world_size=2, rank=1).load_state_dict(state)


def test_bad_arguments_raise_config_errors():
    table = pl.DataFrame({"recording_id": [1, 2], "patient_id": [0, 1]})
    for kwargs, match in [
        ({"rank": 2, "world_size": 2}, "rank must be"),
        ({"seed": -1}, "seed"),
        ({"window_s": 1.0}, "n_samples"),
    ]:
        with pytest.raises(ConfigError, match=match):
            PatientBatchSampler(table, 1, 1, **kwargs)
    with pytest.raises(ConfigError, match="patient_id"):
        PatientBatchSampler(pl.DataFrame({"recording_id": [1]}), 1, 1)
    with pytest.raises(ConfigError, match="duplicate"):
        PatientBatchSampler(pl.DataFrame({"recording_id": [1, 1], "patient_id": [0, 1]}), 1, 1)
    with pytest.raises(ConfigError, match="patients_per_batch"):
        PatientBatchSampler(table, 0, 1)


def test_resume_through_a_dataloader_with_prefetching_workers():
    """The loader runs ahead of the loop: state_dict(batches_consumed=...) still resumes exactly."""

    class Keys:  # a dataset that returns its keys, so the loader's batches are the sampler's
        def __getitems__(self, keys):
            return list(keys)

    table = pl.DataFrame(
        {"recording_id": range(40), "patient_id": np.arange(40) // 2, "n_samples": [500] * 40}
    )
    sampler = RandomWindowSampler(table, 4, window_n_samples=WINDOW, seed=3)
    full = epoch(sampler, 0)
    loader = DataLoader(Keys(), batch_sampler=sampler, collate_fn=lambda b: b, num_workers=0)
    iterator = iter(loader)
    got = [next(iterator) for _ in range(3)]
    state = sampler.state_dict(batches_consumed=3)
    restored = RandomWindowSampler(table, 4, window_n_samples=WINDOW, seed=3)
    restored.load_state_dict(state)
    assert got + list(DataLoader(Keys(), batch_sampler=restored, collate_fn=lambda b: b)) == full
