"""The epoch loader: one ``DataLoader`` over a dataset and a batch sampler for a run, resumable mid-epoch.

:class:`EpochLoader` keeps one ``DataLoader`` with persistent workers for the whole run and reads across
epoch boundaries, so short epochs (one batch per epoch for PCLR on the PTB-XL subset) neither restart the
workers nor leave the device waiting for a whole-batch read at each epoch start. ``iterate(epoch, skip)``
yields the batches of ``epoch`` after the first ``skip`` (exact resume: samplers are deterministic given
(seed, epoch), and skipping only draws keys, no data).
"""

from __future__ import annotations

import copy
import inspect
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from clinseq.errors import ConfigError, TrainingError

__all__ = ["EpochLoader"]


class _Tagged(NamedTuple):
    """A batch sampler's batch of keys with its place in the run: ``(epoch, step in the epoch, keys)``."""

    epoch: int
    step: int
    keys: Any


def _position(sampler: Any, epoch: int, skip: int) -> Iterator[Any]:
    """An iterator over ``epoch``'s batches of ``sampler`` without the first ``skip``."""
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if _resumable(sampler):
        # clinseq samplers position themselves without drawing the skipped batches; always loading the
        # position also clears one a restored state left for the next iteration.
        sampler.load_state_dict(sampler.state_dict(batches_consumed=skip))
        return iter(sampler)
    batches = iter(sampler)
    return itertools.islice(batches, skip, None) if skip else batches


class _EpochStream:
    """The batch sampler the ``DataLoader`` draws from: epoch after epoch from ``start``, each batch tagged.

    One iteration runs through epochs ``start[0], start[0] + 1, ...`` (``set_epoch`` before each), so
    the loader's workers read the next epoch's batches while the loop still trains on this one. It ends
    only when an epoch yields no batch at all. Runs in the main process (DataLoader batch samplers do).
    """

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.start = (0, 0)

    def __iter__(self) -> Iterator[_Tagged]:
        epoch, skip = self.start
        while True:
            step = skip
            for keys in _position(self.sampler, epoch, skip):
                yield _Tagged(epoch, step, keys)
                step += 1
            if step == 0:
                return
            epoch, skip = epoch + 1, 0

    def __len__(self) -> int:
        return len(self.sampler)


class _EpochDataset(Dataset):
    """Wraps the dataset for the ``DataLoader``: a tagged batch → ``(epoch, step, collated batch)``.

    Before reading, the dataset (in whichever process reads) is set to the batch's epoch, so datasets
    whose randomness depends on the epoch (``EventSequenceDataset`` crops) are right in persistent
    workers too, which never see the main process's ``set_epoch``.
    """

    def __init__(self, dataset: Any, collate_fn: Callable[[Any], Any]) -> None:
        self.dataset, self.collate_fn = dataset, collate_fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, tagged: _Tagged) -> tuple[int, int, Any]:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(tagged.epoch)
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(tagged.keys) if getitems is not None else [self.dataset[k] for k in tagged.keys]
        return tagged.epoch, tagged.step, self.collate_fn(items)


def _identity(batch: Any) -> Any:
    return batch


class EpochLoader:
    """Epochs of one ``DataLoader`` over a dataset and a batch sampler, resumable mid-epoch.

    ``iterate(epoch, skip)`` yields the batches of ``epoch`` after the first ``skip``. The sampler must be
    deterministic given its seed and epoch, as clinseq's are.

    One ``DataLoader`` serves every epoch. Its ``num_workers`` workers are persistent, and it reads
    *across* epochs: it draws from a copy of the batch sampler that moves on to the next epoch by itself,
    so while the loop trains on the last batches of an epoch the workers already read the next epoch's
    (``prefetch_factor`` batches per worker ahead). This matters when an epoch is short: PCLR on the
    PTB-XL subset has one batch per epoch, and restarting the loader each epoch would leave the GPU
    idle during every worker start-up and every whole-batch read. ``iterate`` reuses the stream where
    the previous call stopped; asking for any other position (a resume, a second pass over an epoch)
    restarts it from there (the workers stay; batches read ahead are dropped). The sampler given here is
    the one whose ``state_dict`` is saved: it is set to the epoch being consumed, never read ahead.

    Randomness: the ``DataLoader`` has its own generator seeded by ``seed``, so creating its iterator never
    draws from torch's global RNG (which the model's dropout uses), and where a run (re)starts the stream
    cannot change the training numbers. Datasets with ``set_epoch`` are set to each batch's epoch in the
    process that reads it.

    Args:
        dataset: a map-style dataset; a batch of keys is read with ``__getitems__`` when it has one.
        batch_sampler: yields lists of keys; ``set_epoch``/``state_dict(batches_consumed=)``/
            ``load_state_dict`` are used when present (clinseq's samplers).
        collate_fn: batch items → batch (default ``torch.utils.data.default_collate``).
        num_workers: worker processes (0 reads in the main process, when the loop asks for a batch).
        pin_memory: page-lock batches for faster, asynchronous host → GPU copies (CUDA runs).
        seed: seeds the loader's own generator (the workers' base seed).
        prefetch_factor: batches each worker reads ahead (with ``num_workers`` > 0).
    """

    def __init__(
        self,
        dataset: Any,
        batch_sampler: Any,
        collate_fn: Callable[[Any], Any] | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        *,
        prefetch_factor: int = 2,
    ) -> None:
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0 (0 reads in the main process), got {num_workers}")
        if prefetch_factor < 1:
            raise ConfigError(f"prefetch_factor must be >= 1 batch per worker, got {prefetch_factor}; e.g. 2")
        self.dataset, self.batch_sampler = dataset, batch_sampler
        self.collate_fn, self.num_workers, self.pin_memory = collate_fn, num_workers, pin_memory
        self.seed, self.prefetch_factor = int(seed), int(prefetch_factor)
        #: How many times the batch stream was (re)started: once per run unless a position is revisited.
        self.restarts = 0
        self._loader: DataLoader | None = None
        self._stream: _EpochStream | None = None
        self._batches: Iterator[tuple[int, int, Any]] | None = None
        self._next: tuple[int, int] | None = None  # the (epoch, step) the live stream yields next
        self._pushed_back: tuple[int, int, Any] | None = None

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def iterate(self, epoch: int, skip: int = 0) -> Iterator[Any]:
        """The batches of ``epoch`` after its first ``skip`` (a generator; see the class docstring)."""
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)  # the epoch its state_dict reports
        return self._epoch(epoch, skip)

    def _epoch(self, epoch: int, skip: int) -> Iterator[Any]:
        n, step = len(self.batch_sampler), skip
        while step < n:
            if self._next != (epoch, step):
                self._restart(epoch, step)
            item = self._pull(epoch, step)
            if item is None:
                return
            step += 1
            self._next = (epoch, step) if step < n else (epoch + 1, 0)
            yield item

    def _pull(self, epoch: int, step: int) -> Any:
        """The batch at (epoch, step) from the stream, or None when the stream's epoch ends before it."""
        while True:
            if self._pushed_back is not None:
                got, self._pushed_back = self._pushed_back, None
            else:
                try:
                    got = next(self._batches)  # type: ignore[arg-type]
                except StopIteration:
                    self._next = None
                    return None
            position = (got[0], got[1])
            if position == (epoch, step):
                return got[2]
            if position < (epoch, step):
                continue  # batches past the sampler's len() in an earlier epoch: not part of any epoch
            if got[0] > epoch:
                # The sampler ended this epoch before its len(): keep the batch for the next epoch's call.
                self._pushed_back, self._next = got, position
                return None
            raise TrainingError(f"the loader yielded batch {position} where {(epoch, step)} was due")

    def _restart(self, epoch: int, skip: int) -> None:
        """(Re)start the stream at (epoch, skip) from a copy of the sampler; workers are kept."""
        if self._loader is None or self._stream is None:
            self._stream = stream = _EpochStream(self.batch_sampler)
            workers = self.num_workers > 0
            self._loader = DataLoader(
                _EpochDataset(self.dataset, self.collate_fn or default_collate),  # type: ignore[arg-type]
                batch_sampler=stream,
                collate_fn=_identity,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                generator=torch.Generator().manual_seed(self.seed * 1_000_003),
                persistent_workers=workers,
                prefetch_factor=self.prefetch_factor if workers else None,
            )
        # A copy reads ahead, so that the sampler the loop saves stays on the epoch being consumed.
        self._stream.sampler = copy.deepcopy(self.batch_sampler)
        self._stream.start = (epoch, skip)
        self._batches, self._pushed_back = iter(self._loader), None
        self._next = (epoch, skip)
        self.restarts += 1

    def close(self) -> None:
        """Stop the worker processes (a later ``iterate`` starts them again)."""
        iterator = getattr(self._loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._loader = self._stream = self._batches = None
        self._next, self._pushed_back = None, None

    def state_dict(self, batches_consumed: int) -> dict[str, Any] | None:
        """The sampler's state after ``batches_consumed`` batches of its epoch (None: not resumable)."""
        if not _resumable(self.batch_sampler):
            return None
        return self.batch_sampler.state_dict(batches_consumed=batches_consumed)

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore (and so validate: same configuration, recordings, world size) a saved sampler state."""
        if state is not None and _resumable(self.batch_sampler):
            self.batch_sampler.load_state_dict(state)
            self._next = None  # batches read ahead came from the state before: start again


def _resumable(sampler: Any) -> bool:
    if not (hasattr(sampler, "state_dict") and hasattr(sampler, "load_state_dict")):
        return False
    return "batches_consumed" in inspect.signature(sampler.state_dict).parameters
