"""One DataLoader for the whole run: persistent workers that read across epochs, on the real PTB-XL subset.

The case of the PCLR recipe on the subset: the patient sampler yields one batch per epoch, so a loader per
epoch restarts every worker at every step and a single worker reads the whole batch while the model
waits. Here the workers stay, the next epochs' batches are requested before the loop asks for them, and
the batches are the ones an in-process read gives (same keys, same windows) epoch after epoch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import torch

from clinseq.data import PatientBatchSampler, WindowDataset, collate_windows
from clinseq.data.epoch_loader import EpochLoader
from clinseq.data.splits import ptbxl_split


class PidWindows(WindowDataset):
    """The real window dataset, with the id of the process that read each batch."""

    def __getitems__(self, keys: Any) -> dict[str, torch.Tensor]:
        batch = super().__getitems__(keys)
        batch["reader_pid"] = torch.tensor(os.getpid())
        return batch


class LoggedSampler(PatientBatchSampler):
    """Records the epoch of every batch the loader draws (class-level: the loader reads from a copy)."""

    drawn: ClassVar[list[int]] = []

    def __iter__(self):
        for batch in super().__iter__():
            LoggedSampler.drawn.append(self.epoch)
            yield batch


def _val_windows(store) -> tuple[PidWindows, pl.DataFrame]:
    val = ptbxl_split(store)["val"]
    rec = store.recordings.filter(pl.col("patient_id").is_in(val.tolist()))
    return PidWindows(store, 2.5, recording_ids=rec["recording_id"]), rec


def test_workers_persist_and_read_the_next_epochs_ahead(ptbxl_store) -> None:
    dataset, _ = _val_windows(ptbxl_store)
    # 40 of the 49 validation patients per batch: one batch per epoch, as PCLR's 256 of the train split.
    sampler = LoggedSampler(dataset.recordings, 40, 2, short_patients="fill", window_s=2.5, seed=1)
    assert len(sampler) == 1
    LoggedSampler.drawn.clear()
    loader = EpochLoader(dataset, sampler, collate_windows, num_workers=2, seed=0, prefetch_factor=2)
    try:
        first = next(iter(loader.iterate(0)))
        # 2 workers × 2 batches were requested at once (and one more to refill): the next epochs are being
        # read while epoch 0 trains.
        assert LoggedSampler.drawn[:4] == [0, 1, 2, 3]
        batches = [first] + [b for epoch in range(1, 5) for b in loader.iterate(epoch)]
        assert len(batches) == 5 and loader.restarts == 1
        readers = {int(b["reader_pid"]) for b in batches}
        assert len(readers) <= 2 and os.getpid() not in readers  # the same two workers every epoch
        # Each batch is its epoch's: the keys the sampler gives for that epoch, read as in-process.
        for epoch, batch in enumerate(batches):
            expected = dataset.fetch(sampler.batch_at(0, epoch))
            for key in ("x", "patient_id", "recording_id", "start"):
                assert torch.equal(batch[key], expected[key]), (epoch, key)
        # The sampler whose state is checkpointed is on the epoch consumed, not on the ones read ahead.
        assert loader.state_dict(1)["epoch"] == 4 and max(LoggedSampler.drawn) > 4
        # Going back to an epoch restarts the stream there (same workers) and gives the same batch.
        again = next(iter(loader.iterate(1)))
        assert loader.restarts == 2 and torch.equal(again["x"], batches[1]["x"])
        assert int(again["reader_pid"]) in readers
    finally:
        loader.close()
    if Path("/proc").is_dir():
        assert not any(Path(f"/proc/{pid}").exists() for pid in readers)  # close() ended the workers


def test_epoch_loader_skips_consumed_batches_of_any_batch_sampler() -> None:
    class Batches:  # a plain batch sampler without clinseq's state_dict: skipping falls back to islice
        def __init__(self) -> None:
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            return iter([[10 * self.epoch + i, 10 * self.epoch + i + 1] for i in range(0, 6, 2)])

        def __len__(self) -> int:
            return 3

    loader = EpochLoader(list(range(40)), Batches(), collate_fn=lambda items: items)
    assert list(loader.iterate(1, skip=1)) == [[12, 13], [14, 15]]
    assert list(loader.iterate(2)) == [[20, 21], [22, 23], [24, 25]]
    assert loader.state_dict(1) is None
