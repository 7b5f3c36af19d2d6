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
from clinseq.errors import ConfigError, StoreError

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


# -- batches out of DataLoader workers: reused shared buffers ---------------------------------------------


def test_worker_batches_reuse_buffers_and_never_overwrite_held_ones(ptbxl_store):
    """Through DataLoader(num_workers=2): every batch equals the in-process read even when the loop keeps
    more batches than the workers have buffers (the surplus goes torch's way), and batches the loop drops
    hand their buffers back (a few distinct memory blocks serve many batches)."""
    from clinseq.data.datasets import _MAX_SHARED_BUFFERS

    transform = Compose([GaussianNoise((20.0, 30.0)), TimeMask(0.1, 5)])
    dataset = WindowDataset(ptbxl_store, WINDOW_S, transform=transform, seed=3)
    sampler = PatientBatchSampler(dataset.recordings, 8, 2, short_patients="fill", window_s=WINDOW_S, seed=1)
    n = 2 * _MAX_SHARED_BUFFERS + 6
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_windows, num_workers=2)
    held = [b for _, b in zip(range(n), loader, strict=False)]
    assert all(type(b) is dict for b in held)  # plain dicts of plain tensors in the main process
    for i, batch in enumerate(held):
        direct = dataset.fetch(sampler.batch_at(i))
        assert set(batch) == set(direct)
        for key in direct:
            assert torch.equal(batch[key], direct[key]), (i, key)
    del held, batch

    pointers = set()
    for i, batch in zip(range(n), loader, strict=False):
        pointers.add(batch["x"].data_ptr())
        assert torch.equal(batch["x"], dataset.fetch(sampler.batch_at(i))["x"])
    assert len(pointers) <= 2 * 4, f"{len(pointers)} distinct buffers for {n} batches: not reused"


@pytest.fixture
def as_worker(monkeypatch):
    """This process acting as a DataLoader worker (fresh buffer pool) and as the main process."""
    from clinseq.data import datasets

    monkeypatch.setattr(datasets, "get_worker_info", lambda: object())
    monkeypatch.setattr(datasets, "_POOL", None)
    monkeypatch.setattr(datasets, "_RECEIVED", {})
    return datasets


def test_shared_buffer_is_free_only_when_every_tensor_of_the_batch_is_gone(as_worker, ptbxl_store):
    from multiprocessing.reduction import ForkingPickler

    datasets = as_worker
    dataset = WindowDataset(ptbxl_store, WINDOW_S, transform=TimeMask(0.2, 2), seed=5)
    keys = some_keys(ptbxl_store, n=8, seed=3)
    expected = WindowDataset(ptbxl_store, WINDOW_S, transform=TimeMask(0.2, 2), seed=5)._fetch(keys, False)

    batch = dataset.__getitems__(keys)
    assert isinstance(batch, datasets._WorkerBatch)
    buffer = datasets._POOL.buffers[0]
    assert buffer.state[0] == datasets._IN_USE
    received = ForkingPickler.loads(ForkingPickler.dumps(batch))  # what the main process gets
    del batch  # the worker drops its side after sending: the buffer stays taken
    assert buffer.state[0] == datasets._IN_USE
    assert type(received) is dict and set(received) == set(expected)
    for key in expected:
        assert torch.equal(received[key], expected[key]) and received[key].dtype == expected[key].dtype
    view = received["x"][:, 0]  # a view keeps the memory, as the loop's own tensors would
    del received
    assert buffer.state[0] == datasets._IN_USE
    del view
    assert buffer.state[0] == datasets._FREE

    # A batch that is sent a second time reuses the buffer, and its storage is not sent again.
    again = dataset.__getitems__(keys)
    assert datasets._POOL.buffers == [buffer] and buffer.state[0] == datasets._IN_USE
    payload = ForkingPickler.dumps(again)
    assert len(payload) < 4096  # the buffer's index, not its storage nor the samples
    received_again = ForkingPickler.loads(payload)
    assert torch.equal(received_again["x"], expected["x"])
    # The main process still holds that batch: the next one takes a second buffer; a batch dropped in
    # the worker without being sent frees its buffer there.
    dropped = dataset.__getitems__(keys)
    assert len(datasets._POOL.buffers) == 2
    del dropped
    assert datasets._POOL.buffers[1].state[0] == datasets._FREE
    del received_again
    assert buffer.state[0] == datasets._FREE


def test_shared_buffers_for_new_shapes_adc_units_and_a_full_pool(as_worker, ptbxl_store):
    """A transform that makes a new tensor (MultiView) is copied into a buffer; ADC batches carry their
    int16 x and float32 gain/baseline; with every buffer taken a batch goes torch's own way."""
    from multiprocessing.reduction import ForkingPickler

    from clinseq.data import MultiView

    datasets = as_worker
    keys = some_keys(ptbxl_store, n=4, seed=4)
    roundtrip = ForkingPickler.loads

    multi = WindowDataset(ptbxl_store, WINDOW_S, transform=MultiView(GaussianNoise(20.0), 2), seed=2)
    batch = roundtrip(ForkingPickler.dumps(multi.__getitems__(keys)))
    assert batch["x"].shape == (4, 2, 12, 250)
    assert torch.equal(batch["x"], multi._fetch(keys, False)["x"])

    adc = WindowDataset(ptbxl_store, WINDOW_S, units="adc")
    batch = roundtrip(ForkingPickler.dumps(adc.__getitems__(keys)))
    assert batch["x"].dtype == torch.int16 and batch["gain"].dtype == torch.float64
    assert torch.equal(adc_to_physical(batch), WindowDataset(ptbxl_store, WINDOW_S).fetch(keys)["x"])

    plain = WindowDataset(ptbxl_store, WINDOW_S)
    held = [plain.__getitems__(keys) for _ in range(datasets._MAX_SHARED_BUFFERS + 2)]
    assert len(datasets._POOL.buffers) == datasets._MAX_SHARED_BUFFERS
    assert type(held[-1]) is dict and held[-1]["x"].is_shared()  # the fallback: a fresh shared segment
    assert all(torch.equal(b["x"], plain.fetch(keys)["x"]) for b in held)
