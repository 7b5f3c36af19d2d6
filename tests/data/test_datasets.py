"""WindowDataset on the real PTB-XL store: values against wfdb and the store, batching, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import wfdb
from torch.utils.data import DataLoader

from clinseq.data import (
    RANDOM_START,
    Compose,
    GaussianNoise,
    PatientBatchSampler,
    TimeMask,
    WindowDataset,
    WindowKey,
    adc_to_physical,
    collate_windows,
)
from clinseq.utils import ConfigError, StoreError

WINDOW_S = 2.5  # 250 samples at 100 Hz


@pytest.fixture(scope="module")
def dataset(ptbxl_store) -> WindowDataset:
    return WindowDataset(ptbxl_store, WINDOW_S)


def some_keys(store, n: int = 6, seed: int = 0) -> list[WindowKey]:
    rng = np.random.default_rng(seed)
    rec = store.recordings
    rows = rng.choice(rec.height, n, replace=False)
    room = rec["n_samples"].to_numpy()[rows] - 250
    return [
        WindowKey(int(rec["recording_id"][int(r)]), int(rng.integers(0, m + 1)))
        for r, m in zip(rows, room, strict=True)
    ]


def test_windows_equal_wfdb_and_the_store(dataset, ptbxl_store, ptbxl_root):
    keys = some_keys(ptbxl_store)
    batch = dataset.fetch(keys)
    assert batch["x"].shape == (6, 12, 250) and batch["x"].dtype == torch.float32
    rec = ptbxl_store.recordings
    for i, (rid, start) in enumerate(keys):
        row = rec.filter(rec["recording_id"] == rid)
        # Bit-identical to the store's own read, and equal to wfdb's physical values.
        assert np.array_equal(batch["x"][i].numpy(), ptbxl_store.read_window(rid, start, 250))
        record = wfdb.rdrecord(str(ptbxl_root / row["source"][0]), sampfrom=start, sampto=start + 250)
        np.testing.assert_allclose(batch["x"][i].numpy(), record.p_signal.T, atol=1e-6)
        assert batch["patient_id"][i] == row["patient_id"][0]
    for key in ("patient_id", "recording_id", "start"):
        assert batch[key].dtype == torch.int64
    assert batch["recording_id"].tolist() == [k.recording_id for k in keys]
    assert batch["start"].tolist() == [k.start for k in keys]


def test_channels_by_name_and_adc_units(ptbxl_store):
    keys = some_keys(ptbxl_store, seed=1)
    names = ["V1", "II", "aVR"]
    physical = WindowDataset(ptbxl_store, WINDOW_S, channels=names).fetch(keys)
    full = WindowDataset(ptbxl_store, WINDOW_S).fetch(keys)
    index = [list(ptbxl_store.recordings["channel_names"][0]).index(n) for n in ("V1", "II", "AVR")]
    assert torch.equal(physical["x"], full["x"][:, index])
    adc = WindowDataset(ptbxl_store, WINDOW_S, channels=names, units="adc").fetch(keys)
    assert adc["x"].dtype == torch.int16 and adc["gain"].shape == (6, 3)
    assert torch.equal(adc_to_physical(adc), physical["x"])  # the same formula, bit for bit
    with pytest.raises(ConfigError, match="units='adc'"):
        adc_to_physical(physical)
    with pytest.raises(ConfigError, match="has no channel"):
        WindowDataset(ptbxl_store, WINDOW_S, channels=["V7"])


def test_items_random_starts_and_collate(dataset, ptbxl_store):
    keys = some_keys(ptbxl_store, seed=2)
    items = [dataset[k] for k in keys]
    assert isinstance(items[0]["patient_id"], int) and items[0]["x"].shape == (12, 250)
    stacked = collate_windows(items)
    batch = dataset.fetch(keys)
    assert set(stacked) == set(batch)
    for key in batch:
        assert torch.equal(stacked[key], batch[key])
    # RANDOM_START: a seeded start in range, the same for the same batch in any process.
    rid = keys[0].recording_id
    random_keys = [WindowKey(rid, RANDOM_START)] * 8
    a, b = dataset.fetch(random_keys), dataset.fetch(random_keys)
    assert torch.equal(a["start"], b["start"]) and len(set(a["start"].tolist())) > 1
    assert ((a["start"] >= 0) & (a["start"] <= ptbxl_store.read_recording(rid).shape[1] - 250)).all()
    for i, start in enumerate(a["start"].tolist()):
        assert np.array_equal(a["x"][i].numpy(), ptbxl_store.read_window(rid, start, 250))
    # Integer indices: that recording with a random start (for torch's own samplers).
    assert dataset[0]["recording_id"] == int(dataset.recording_ids[0]) and len(dataset) == 400


def test_bad_keys_and_arguments_raise(dataset, ptbxl_store):
    rid = int(ptbxl_store.recordings["recording_id"][0])
    with pytest.raises(StoreError, match="not in this dataset"):
        dataset.fetch([WindowKey(-5, 0)])
    with pytest.raises(StoreError, match="outside recording"):
        dataset.fetch([WindowKey(rid, 900)])
    with pytest.raises(StoreError, match="shorter than the window"):
        WindowDataset(ptbxl_store, 20.0).fetch([WindowKey(rid, 0)])
    with pytest.raises(ConfigError, match="units"):
        WindowDataset(ptbxl_store, WINDOW_S, units="mV")
    with pytest.raises(ConfigError, match="transform needs units='physical'"):
        WindowDataset(ptbxl_store, WINDOW_S, units="adc", transform=GaussianNoise())
    with pytest.raises(ConfigError, match="window_s"):
        WindowDataset(ptbxl_store, 0.0)
    with pytest.raises(ConfigError, match="no recordings"):
        WindowDataset(ptbxl_store, WINDOW_S, recording_ids=[-1])


def test_dataloader_with_two_workers_matches_one_process(ptbxl_store):
    """Batched reads through DataLoader(num_workers=2): same batches (transform included) as in-process."""
    transform = Compose([GaussianNoise((20.0, 30.0)), TimeMask(0.1, 5)])
    dataset = WindowDataset(ptbxl_store, WINDOW_S, transform=transform, seed=11)
    sampler = PatientBatchSampler(dataset.recordings, 16, 2, short_patients="fill", window_s=WINDOW_S, seed=4)
    sampler.set_epoch(1)

    def batches(workers: int) -> list[dict[str, torch.Tensor]]:
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_windows, num_workers=workers)
        return [b for _, b in zip(range(4), loader, strict=False)]

    parallel, serial = batches(2), batches(0)
    keys = [sampler.batch_at(i) for i in range(4)]
    for got, ref, k in zip(parallel, serial, keys, strict=True):
        direct = dataset.fetch(k)
        for key in ("x", "patient_id", "recording_id", "start"):
            assert torch.equal(got[key], ref[key]) and torch.equal(got[key], direct[key])
        assert got["x"].shape == (32, 12, 250)
        # Patient-major P × V layout: rows 2p and 2p+1 are one patient, the P patients distinct.
        pids = got["patient_id"].view(*sampler.batch_shape)
        assert (pids == pids[:, :1]).all() and len(set(pids[:, 0].tolist())) == 16
        assert (got["x"] == 0).sum() > 0  # the transform ran in the workers
