"""Window datasets over a timeline store: items keyed by ``(recording_id, start)``, batched reads.

A batch sampler (:mod:`clinseq.data.samplers`) yields lists of :class:`WindowKey`; a ``DataLoader`` hands
each whole list to :meth:`WindowDataset.__getitems__`, which reads every window into one preallocated
``(B, C, T)`` array, converts ADC → physical units in one vectorised step and applies the batch
transform (views are vectorised over the batch). :func:`collate_windows` then only passes the batch on
(or stacks single items when the dataset is indexed one key at a time)::

    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_windows, num_workers=2)

Randomness (crops of ``start == RANDOM_START`` keys, transforms) is seeded from ``(dataset seed, the
batch's keys)``, so it is the same whatever ``num_workers`` is and differs between batches.

Transfer from ``DataLoader`` workers: torch sends a tensor to the main process by moving it into a fresh
shared-memory segment, which costs a page fault per 4 KiB in the worker (and a new mapping in the main
process) for every batch. A worker here reads each batch into one of a few shared buffers it keeps and
reuses (:class:`_BufferPool`); the batch pickles as ``(buffer, shape)`` — the buffer's file descriptor
only the first time — and the main process rebuilds a plain ``dict`` of tensors over its own long-lived
mapping of that buffer. A buffer is reused only after every tensor (and view) of the batch built on it
in the main process is gone, so a batch the training loop keeps is never overwritten; when all buffers
are taken (the loop holds many batches), a batch is sent the usual way.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset, get_worker_info

from clinseq.data.views import View
from clinseq.errors import ConfigError, StoreError
from clinseq.timeline.calibration import exact_in_float32

if TYPE_CHECKING:
    from clinseq.timeline import TimelineStore

#: ``WindowKey.start`` value asking the dataset to pick the window's start itself (uniformly, seeded).
RANDOM_START = -1

#: A batch transform: ``(x (B, C, T) float tensor, generator) -> tensor`` (see :mod:`clinseq.data.views`).
Transform = Callable[..., torch.Tensor]


class WindowKey(NamedTuple):
    """One dataset item: a window of ``recording_id`` starting at sample ``start``.

    ``start`` is in samples at the recording's ``sampling_rate_hz``; :data:`RANDOM_START` (-1) lets the
    dataset choose a uniformly random start (seeded). Hashable and cheap to pickle to workers.
    """

    recording_id: int
    start: int = RANDOM_START


def _seed_of(seed: int, keys: np.ndarray) -> int:
    """A 63-bit seed from the dataset seed and the (B, 2) keys: same batch → same randomness, any worker."""
    digest = hashlib.blake2b(
        np.ascontiguousarray(keys, dtype=np.int64).tobytes(), digest_size=8, key=b"clinseq"
    )
    return (int.from_bytes(digest.digest(), "little") ^ (seed * 0x9E3779B97F4A7C15)) & (2**63 - 1)


class WindowDataset(Dataset):
    """Fixed-length signal windows of a :class:`~clinseq.timeline.TimelineStore`.

    Args:
        store: the store; its recordings must share one ``sampling_rate_hz`` (windows are stacked).
        window_s: window length in seconds; ``window_n_samples = round(window_s · sampling_rate_hz)``.
        channels: channel names (looked up in each recording's ``channel_names``, exactly or else
            ignoring case, so ``"aVR"`` finds PTB-XL's ``"AVR"``) or indices to keep, in that order;
            all channels when None (then every recording must have the same count).
        units: ``"physical"`` → ``x`` float32 in the recording's units (ECG mV, EEG µV);
            ``"adc"`` → ``x`` in the stored integer dtype plus ``gain`` and ``baseline`` (B, C) so that
            :func:`adc_to_physical` converts on the GPU (half the bytes of float32 over PCIe).
        transform: applied to the batch ``x`` (B, C, T) as ``transform(x, generator=g)`` (physical
            units only); single items are transformed as a batch of one.
        seed: seeds random starts and transforms together with each batch's keys.
        recording_ids: restrict the dataset to these recordings (e.g. one split's); default all.

    Items: ``{"x": (C, T), "patient_id": int, "recording_id": int, "start": int}``; batches hold the
    same keys with ``x`` (B, C, T) and int64 (B,) tensors, in the order of the sampler's keys (so the
    sampler's ``batch_shape`` applies). A transform may change ``x``'s shape, e.g.
    :class:`~clinseq.data.views.MultiView` makes it (B, n_views, C, T).

    Indexing: by :class:`WindowKey` (what the samplers yield; ``DataLoader`` passes a whole batch to
    :meth:`__getitems__`, read in one go), by ``(recording_id, start)`` tuples, or by an int position
    (that recording with a random start, for torch's plain samplers; ``len(dataset)`` = recordings).
    """

    def __init__(
        self,
        store: TimelineStore,
        window_s: float,
        channels: Sequence[str] | Sequence[int] | None = None,
        units: Literal["physical", "adc"] = "physical",
        transform: Transform | None = None,
        *,
        seed: int = 0,
        recording_ids: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        if units not in ("physical", "adc"):
            raise ConfigError(f"units must be 'physical' or 'adc', got {units!r}")
        if transform is not None and units != "physical":
            raise ConfigError(
                "transform needs units='physical' (views work on physical signals), got units='adc'; "
                "apply the views after adc_to_physical() instead"
            )
        if not (window_s > 0):
            raise ConfigError(f"window_s must be > 0 seconds, got {window_s}")
        rec = store.recordings
        if recording_ids is not None:
            rec = rec.filter(pl.col("recording_id").is_in(np.asarray(recording_ids, np.int64).tolist()))
        if rec.height == 0:
            raise ConfigError(
                f"{store.path}: no recordings to read windows from (store has {store.recordings.height}, "
                "after the recording_ids filter 0); convert a waveform source or pass other recording_ids"
            )
        rates = rec["sampling_rate_hz"].unique().to_list()
        if len(rates) != 1:
            raise ConfigError(
                f"recordings must share one sampling_rate_hz to stack windows, got {sorted(rates)}; "
                "pass recording_ids of one rate (filter store.recordings) or resample at conversion"
            )
        self.store = store
        self.sampling_rate_hz = float(rates[0])
        self.window_s = float(window_s)
        self.window_n_samples = int(round(window_s * self.sampling_rate_hz))
        if self.window_n_samples < 1:
            raise ConfigError(f"window_s={window_s} is under one sample at {self.sampling_rate_hz} Hz")
        self.units = units
        self.transform = transform
        self.seed = int(seed)

        self._recording_ids = rec["recording_id"].to_numpy().astype(np.int64)
        self._patient_ids = rec["patient_id"].to_numpy().astype(np.int64)
        self._n_samples = rec["n_samples"].to_numpy().astype(np.int64)
        self._channel_index, n_channels = self._resolve_channels(rec, channels)
        self.n_channels = n_channels
        # Calibration kept in float64: the store's one precision rule ((adc - baseline) / gain in float64,
        # rounded once to float32; TimelineStore.read_window) is applied to batches too.
        gains = [
            np.asarray(g, np.float64)[ix]
            for g, ix in zip(rec["gain"].to_list(), self._channel_index, strict=True)
        ]
        bases = [
            np.asarray(b, np.float64)[ix]
            for b, ix in zip(rec["baseline"].to_list(), self._channel_index, strict=True)
        ]
        self._gain = np.stack(gains)  # (n_recordings, C)
        self._baseline = np.stack(bases)
        order = np.argsort(self._recording_ids, kind="stable")
        self._sorted_ids, self._sorted_rows = self._recording_ids[order], order
        self._recordings = rec
        # Recordings with an ADC "missing sample" sentinel go through the store's own (masking) read.
        self._has_invalid = np.zeros(rec.height, bool)
        if "adc_invalid" in rec.columns:
            self._has_invalid = np.array(
                [bool(v) and any(s is not None for s in v) for v in rec["adc_invalid"].to_list()], bool
            )
        dtypes = rec["sample_dtype"].unique().to_list() if "sample_dtype" in rec.columns else ["float32"]
        self._adc_dtype = np.dtype(dtypes[0]) if len(dtypes) == 1 else np.dtype(np.float32)
        adc_dtype = torch.from_numpy(np.empty(0, self._adc_dtype)).dtype
        self._out_dtype = torch.float32 if units == "physical" else adc_dtype
        # Channel-index arguments for read_window: None (all, a pure view) when nothing is selected.
        self._all_channels = channels is None
        self._base_t, self._gain_t = torch.from_numpy(self._baseline), torch.from_numpy(self._gain)
        # Recordings whose batches may be calibrated in float32 with the float64 rule's bits
        # (clinseq.timeline.calibration); a batch takes that path when all its recordings may.
        row_dtypes = (
            rec["sample_dtype"].to_list() if "sample_dtype" in rec.columns else ["float64"] * rec.height
        )
        self._exact32 = np.array(
            [
                exact_in_float32(g, b, str(d))
                for g, b, d in zip(self._gain, self._baseline, row_dtypes, strict=True)
            ],
            dtype=bool,
        )
        self._base32_t, self._gain32_t = self._base_t.to(torch.float32), self._gain_t.to(torch.float32)
        # Per process (memory maps are per process): each recording's ADC samples as a (C, n_samples) view
        # of the store's map, made on first use, so that a window is one slice (no read_window call).
        self._views_pid = -1
        self._adc_views: list[np.ndarray | None] = []

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_views_pid=-1, _adc_views=[])  # views of this process's maps: never pickled
        return state

    def _recording_views(self) -> list[np.ndarray | None]:
        if self._views_pid != os.getpid():  # first use, or a forked worker: the store maps anew
            self._views_pid, self._adc_views = os.getpid(), [None] * len(self._recording_ids)
        return self._adc_views

    @staticmethod
    def _resolve_channels(
        rec: pl.DataFrame, channels: Sequence[str] | Sequence[int] | None
    ) -> tuple[list[np.ndarray], int]:
        n_ch = rec["n_channels"].to_numpy()
        if channels is None:
            counts = np.unique(n_ch)
            if len(counts) != 1:
                raise ConfigError(
                    f"recordings have different channel counts {counts.tolist()}, so windows cannot be "
                    "stacked; pass channels=[names] present in all of them"
                )
            return [np.arange(int(c)) for c in n_ch], int(counts[0])
        channels = list(channels)
        if not channels:
            raise ConfigError("channels is empty; pass None for all channels or a list of names/indices")
        out = []
        if all(isinstance(c, str) for c in channels):
            for rid, names in zip(rec["recording_id"].to_list(), rec["channel_names"].to_list(), strict=True):
                # Exact names first, then case-insensitive ("aVR" finds PTB-XL's "AVR").
                lookup = {n.casefold(): i for i, n in enumerate(names)}
                lookup.update({n: i for i, n in enumerate(names)})
                lookup.update(
                    {c: lookup[c.casefold()] for c in channels if c not in lookup and c.casefold() in lookup}
                )
                missing = [c for c in channels if c not in lookup]
                if missing:
                    raise ConfigError(
                        f"recording {rid} has no channel(s) {missing}; it has {names}: choose channels "
                        "present in every recording or filter the recordings first"
                    )
                out.append(np.array([lookup[c] for c in channels]))
        elif all(isinstance(c, (int, np.integer)) for c in channels):
            for rid, c_max in zip(rec["recording_id"].to_list(), n_ch, strict=True):
                if min(channels) < 0 or max(channels) >= c_max:
                    raise ConfigError(
                        f"channel indices {channels} out of range for recording {rid} with {c_max} "
                        f"channels: use indices in 0..{c_max - 1}"
                    )
                out.append(np.array(channels))
        else:
            raise ConfigError(f"channels must be all names or all indices, got {channels}")
        return out, len(channels)

    # -- map-style access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of recordings (one item per recording when indexed by position, start random)."""
        return len(self._recording_ids)

    @property
    def recording_ids(self) -> np.ndarray:
        """int64 ids of the dataset's recordings (after the ``recording_ids`` filter)."""
        return self._recording_ids

    @property
    def recordings(self) -> pl.DataFrame:
        """The dataset's rows of ``store.recordings``: build samplers from this so that they only pick
        recordings the dataset holds (e.g. ``PatientBatchSampler(dataset.recordings, ...)``)."""
        return self._recordings

    def key(self, index: int) -> WindowKey:
        """The key of the ``index``-th recording with a random start (for plain ``Sampler``\\ s)."""
        return WindowKey(int(self._recording_ids[index]), RANDOM_START)

    def _as_key(self, item: WindowKey | tuple[int, int] | int) -> WindowKey:
        if isinstance(item, (int, np.integer)):
            return self.key(int(item))
        return WindowKey(int(item[0]), int(item[1]))

    def __getitem__(self, item: WindowKey | tuple[int, int] | int) -> dict[str, Any]:
        # One item is stacked into a batch by the collate function anyway: no shared buffer for it.
        batch = self._fetch([self._as_key(item)], share=False)
        return {
            "x": batch["x"][0],
            **{k: int(v[0]) for k, v in batch.items() if k in ("patient_id", "recording_id", "start")},
            **{k: v[0] for k, v in batch.items() if k in ("gain", "baseline")},
        }

    def __getitems__(self, keys: Sequence[WindowKey | tuple[int, int] | int]) -> dict[str, torch.Tensor]:
        """The whole batch at once (called by ``DataLoader`` with a batch sampler)."""
        return self._fetch(keys, share=True)

    # -- batched read -------------------------------------------------------------------------------
    def _key_array(self, keys: Sequence[WindowKey | tuple[int, int] | int]) -> np.ndarray:
        """Keys as an int64 (B, 2) array of (recording_id, start); bare ints are recording positions."""
        if len(keys) == 0:
            raise ConfigError("cannot read an empty batch of keys; check the sampler's batch size")
        if isinstance(keys[0], (int, np.integer)):
            return np.asarray([self.key(int(k)) for k in keys], dtype=np.int64)
        array = np.asarray(keys, dtype=np.int64)
        if array.ndim != 2 or array.shape[1] < 2:
            raise ConfigError(
                f"keys must be WindowKey(recording_id, start) pairs, got an array of shape {array.shape}"
            )
        return array[:, :2]

    def fetch(self, keys: Sequence[WindowKey | tuple[int, int] | int]) -> dict[str, torch.Tensor]:
        """Read, convert and transform the windows of ``keys`` into one batch.

        Returns ``x`` (B, C, T) and int64 (B,) ``patient_id``, ``recording_id``, ``start`` (the start
        actually read, random ones resolved); with ``units="adc"`` also float64 ``gain``/``baseline``.
        In a ``DataLoader`` worker ``x`` lives in a reusable shared buffer (see the module docstring).
        """
        return self._fetch(keys, share=True)

    def _fetch(
        self, keys: Sequence[WindowKey | tuple[int, int] | int], share: bool
    ) -> dict[str, torch.Tensor]:
        key_array = self._key_array(keys)
        n, length = len(key_array), self.window_n_samples
        rids, starts = key_array[:, 0], key_array[:, 1].copy()
        pos = np.searchsorted(self._sorted_ids, rids).clip(max=len(self._sorted_ids) - 1)
        unknown = self._sorted_ids[pos] != rids
        if unknown.any():
            raise StoreError(
                f"recording_id(s) {rids[unknown][:10].tolist()} not in this dataset ({len(self)} "
                "recordings): build the sampler from dataset.recordings"
            )
        rows = self._sorted_rows[pos]
        room = self._n_samples[rows] - length
        if (room < 0).any():
            i = int(np.flatnonzero(room < 0)[0])
            raise StoreError(
                f"recording {rids[i]} has {self._n_samples[rows[i]]} samples, shorter than the window of "
                f"{length} ({self.window_s} s): use a shorter window_s or give the sampler the window length "
                "so that it leaves such recordings out"
            )
        random = starts == RANDOM_START
        if random.any():
            rng = np.random.default_rng(_seed_of(self.seed, key_array))
            starts[random] = np.floor(rng.random(int(random.sum())) * (room[random] + 1)).astype(np.int64)
        bad = (starts < 0) | (starts > room)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise StoreError(
                f"window start {starts[i]} outside recording {rids[i]}: expected 0 <= start <= {room[i]} "
                f"for a {length}-sample window of its {self._n_samples[rows[i]]} samples"
            )

        physical = self.units == "physical"
        shape = (n, self.n_channels, length)
        lease, out_tensor, out = _allocate(shape, self._out_dtype, share)
        # Physical values are computed in a float64 scratch (exact for every ADC width) and rounded once,
        # or straight into the float32 output where that gives the same bits.
        exact32 = physical and bool(self._exact32[rows].all())
        adc = np.empty(shape, np.float64) if physical and not exact32 else out
        views = self._recording_views()
        masked = []
        for i, (row, start) in enumerate(zip(rows.tolist(), starts.tolist(), strict=True)):
            if physical and self._has_invalid[row]:
                masked.append(i)
                continue
            view = views[row]
            if view is None:
                view = views[row] = self.store.read_recording(int(self._recording_ids[row]), units="adc")
            if self._all_channels:
                adc[i] = view[:, start : start + length]
            else:
                adc[i] = view[self._channel_index[row], start : start + length]
        if physical:
            # (adc - baseline) / gain in float64, the store's own rule, bit for bit, in two torch passes over
            # the batch (numpy's broadcasting in place is several times slower), then one rounding.
            if exact32:
                out_tensor.sub_(self._base32_t[rows].unsqueeze(2)).div_(self._gain32_t[rows].unsqueeze(2))
            else:
                adc_t = torch.from_numpy(adc)
                adc_t.sub_(self._base_t[rows].unsqueeze(2)).div_(self._gain_t[rows].unsqueeze(2))
                out_tensor.copy_(adc_t)
            for i in masked:
                row = rows[i]
                ch = None if self._all_channels else self._channel_index[row]
                out[i] = self.store.read_window(int(self._recording_ids[row]), int(starts[i]), length, ch)
        batch: dict[str, torch.Tensor] = {
            "x": out_tensor,
            "patient_id": torch.from_numpy(self._patient_ids[rows]),
            "recording_id": torch.from_numpy(self._recording_ids[rows]),
            "start": torch.from_numpy(starts),
        }
        if not physical:
            batch["gain"] = torch.from_numpy(self._gain[rows])
            batch["baseline"] = torch.from_numpy(self._baseline[rows])
        if self.transform is not None:
            generator = torch.Generator().manual_seed(_seed_of(self.seed + 1, key_array))
            if isinstance(self.transform, View):  # the batch is ours: let the views work in place
                batch["x"] = self.transform.apply_(batch["x"], generator)
            else:
                batch["x"] = self.transform(batch["x"], generator=generator)
        if lease.buffer is None:
            return batch
        x = batch["x"]
        if not lease.holds(x):
            # The transform made a new tensor (MultiView, RandomCrop): one copy into a shared buffer is
            # still far cheaper than the fresh segment torch would fill for it.
            del out, out_tensor  # frees the first buffer
            lease, batch["x"], _ = _allocate(tuple(x.shape), x.dtype, share)
            batch["x"].copy_(x)
            if lease.buffer is None:
                return batch
        return _WorkerBatch(batch, lease)


# -- moving batches out of DataLoader workers ---------------------------------------------------------------
#: Buffers one worker keeps: ``prefetch_factor`` (2) batches queued, the one the loop holds and the one it
#: is about to drop, plus room; beyond that a batch goes the usual way (a fresh shared segment).
_MAX_SHARED_BUFFERS = 6
#: Each buffer starts with a 64-byte header (its int32 state word), so the batch stays 64-byte aligned.
_HEADER_BYTES = 64
_FREE, _IN_USE = 0, 1
#: Other tensors of a batch up to this size (ids, starts, gains) travel inside the pickle.
_INLINE_BYTES = 1 << 20


class _SharedBuffer:
    """One reusable shared-memory buffer of a worker: header (state word) + ``capacity`` bytes."""

    __slots__ = ("announced", "capacity", "index", "state", "storage", "whole")

    def __init__(self, index: int, capacity: int) -> None:
        self.index, self.capacity = index, capacity
        self.storage = torch.UntypedStorage._new_shared(_HEADER_BYTES + capacity)
        self.whole = torch.empty(0, dtype=torch.uint8).set_(self.storage).numpy()
        self.state = self.whole[:4].view(np.int32)  # _FREE or _IN_USE; the main process frees it
        self.state[0] = _FREE
        self.announced = False  # whether the main process has been sent the storage (its fd)


class _BufferPool:
    """The shared buffers of one worker process, created on demand (at most ``_MAX_SHARED_BUFFERS``)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.token = (self.pid, secrets.randbits(62))  # pid: to forget exited workers; random: pid reuse
        self.buffers: list[_SharedBuffer] = []

    def acquire(self, nbytes: int) -> _SharedBuffer | None:
        """The smallest free buffer of at least ``nbytes`` (marked in use), a new one, or None."""
        free = [b for b in self.buffers if b.capacity >= nbytes and b.state[0] == _FREE]
        if free:
            buffer = min(free, key=lambda b: b.capacity)
        elif len(self.buffers) < _MAX_SHARED_BUFFERS:
            buffer = _SharedBuffer(len(self.buffers), nbytes)
            self.buffers.append(buffer)
        else:
            return None
        buffer.state[0] = _IN_USE
        return buffer


_POOL: _BufferPool | None = None


def _worker_pool() -> _BufferPool:
    global _POOL
    if _POOL is None or _POOL.pid != os.getpid():  # a forked child starts its own pool
        _POOL = _BufferPool()
    return _POOL


class _Lease:
    """A batch tensor's memory: a shared ``buffer`` (or None: private memory) and what was put in it.

    It holds no reference to the tensor, so that the tensor's lifetime decides when the buffer is free.
    """

    __slots__ = ("buffer", "data_ptr", "dtype", "shape", "shipped")

    def __init__(self, tensor: torch.Tensor, buffer: _SharedBuffer | None) -> None:
        self.buffer, self.shipped = buffer, False
        self.data_ptr, self.shape, self.dtype = tensor.data_ptr(), tuple(tensor.shape), tensor.dtype

    def holds(self, x: Any) -> bool:
        """Whether ``x`` is exactly the tensor this lease handed out (same memory, shape, dtype)."""
        return (
            isinstance(x, torch.Tensor)
            and x.device.type == "cpu"
            and x.data_ptr() == self.data_ptr
            and tuple(x.shape) == self.shape
            and x.dtype == self.dtype
            and x.is_contiguous()
        )


def _allocate(
    shape: tuple[int, ...], dtype: torch.dtype, share: bool
) -> tuple[_Lease, torch.Tensor, np.ndarray | None]:
    """An empty batch tensor, its lease and its numpy view (None where numpy lacks the dtype).

    In a shared buffer when ``share`` and in a ``DataLoader`` worker; else private memory (in a worker
    whose buffers are all taken, a fresh shared segment, which torch then sends without another copy).
    """
    nbytes = math.prod(shape) * dtype.itemsize
    in_worker = get_worker_info() is not None
    buffer = _worker_pool().acquire(nbytes) if share and in_worker and nbytes > 0 else None
    if buffer is not None:
        data = buffer.whole[_HEADER_BYTES : _HEADER_BYTES + nbytes]
        # from_numpy keeps ``data`` alive exactly as long as the tensor's storage (all views included).
        tensor = torch.from_numpy(data).view(dtype).view(shape)
        lease = _Lease(tensor, buffer)
        weakref.finalize(data, _release_unless_shipped, buffer.state, lease).atexit = False
    else:
        if in_worker and nbytes > 0:
            storage = torch.UntypedStorage._new_shared(nbytes)
            tensor = torch.empty(0, dtype=dtype).set_(storage, 0, shape)
        else:
            tensor = torch.empty(shape, dtype=dtype)
        lease = _Lease(tensor, None)
    try:
        array = tensor.numpy()
    except TypeError:  # bfloat16 and other dtypes numpy lacks
        array = None
    return lease, tensor, array


def _release_unless_shipped(state: np.ndarray, lease: _Lease) -> None:
    """In the worker: a batch dropped without being sent frees its buffer (the main process frees sent
    ones)."""
    if not lease.shipped:
        state[0] = _FREE


def _set_free(state: np.ndarray) -> None:
    state[0] = _FREE


class _WorkerBatch(dict):
    """A batch read in a ``DataLoader`` worker into a shared buffer: a plain ``dict`` to the worker's code;
    pickled (to the main process) as the buffer's index, it is rebuilt there as a plain ``dict``."""

    def __init__(self, batch: Mapping[str, Any], lease: _Lease) -> None:
        super().__init__(batch)
        self._lease = lease

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        lease, x = self._lease, self.get("x")
        buffer = lease.buffer
        if buffer is None or lease.shipped or not lease.holds(x):
            return dict, (dict(self),)  # x replaced or sent before: torch's own transfer
        values: dict[str, Any] = {}
        tensor_keys = []
        for key, value in self.items():
            if key == "x":
                continue
            small = isinstance(value, torch.Tensor) and value.device.type == "cpu"
            if small and value.nbytes <= _INLINE_BYTES:
                try:
                    value = value.numpy()
                    tensor_keys.append(key)
                except (TypeError, RuntimeError):  # bfloat16, requires_grad: torch pickles it
                    pass
            values[key] = value
        storage = None if buffer.announced else buffer.storage
        buffer.announced, lease.shipped = True, True
        args = (_worker_pool().token, buffer.index, storage, lease.dtype, lease.shape, values, tensor_keys)
        return _rebuild_worker_batch, (*args, list(self))


#: In the main process: the buffers of each worker (pool token → index → uint8 array over the mapping).
_RECEIVED: dict[tuple[int, int], dict[int, np.ndarray]] = {}


def _forget_exited_workers() -> None:
    """Drop the mappings of workers that have exited (batches still held keep their own memory)."""
    for token in list(_RECEIVED):
        try:
            os.kill(token[0], 0)
        except ProcessLookupError:
            del _RECEIVED[token]
        except PermissionError:  # a process of another user now has that pid: ours is gone
            del _RECEIVED[token]


def _rebuild_worker_batch(
    token: tuple[int, int],
    index: int,
    storage: torch.UntypedStorage | None,
    dtype: torch.dtype,
    shape: tuple[int, ...],
    values: dict[str, Any],
    tensor_keys: list[str],
    keys: list[str],
) -> dict[str, Any]:
    """In the main process: the batch as a plain ``dict`` of tensors, ``x`` over the worker's buffer.

    When the last tensor (or view) of that memory is gone, the buffer is marked free for the worker.
    """
    buffers = _RECEIVED.get(token)
    if buffers is None:
        _forget_exited_workers()
        buffers = _RECEIVED.setdefault(token, {})
    if storage is not None:
        buffers[index] = torch.empty(0, dtype=torch.uint8).set_(storage).numpy()
    whole = buffers.get(index)
    if whole is None:
        raise StoreError(
            f"a batch from DataLoader worker {token[0]} refers to shared buffer {index}, which this process "
            "was never sent: batches of WindowDataset workers must be unpickled by the process that "
            "iterates the DataLoader"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    data = whole[_HEADER_BYTES : _HEADER_BYTES + nbytes]
    weakref.finalize(data, _set_free, whole[:4].view(np.int32)).atexit = False
    x = torch.from_numpy(data).view(dtype).view(shape)
    tensors = set(tensor_keys)
    return {
        key: x if key == "x" else torch.from_numpy(values[key]) if key in tensors else values[key]
        for key in keys
    }


def collate_windows(
    items: Sequence[Mapping[str, Any]] | Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Collate for :class:`WindowDataset`: stack single items, or pass on a batch already stacked.

    ``x`` is stacked to (B, C, T); ``patient_id``, ``recording_id`` and ``start`` become int64 (B,)
    tensors; ``gain``/``baseline`` (ADC units) are stacked to (B, C).
    """
    if isinstance(items, Mapping):  # __getitems__ already built the batch (kept as is: see _WorkerBatch)
        return items if isinstance(items, dict) else dict(items)
    if len(items) == 0:
        raise ConfigError("cannot collate an empty batch; check the sampler's batch size")
    batch = {"x": torch.stack([torch.as_tensor(item["x"]) for item in items])}
    for key in ("patient_id", "recording_id", "start"):
        batch[key] = torch.tensor([int(item[key]) for item in items], dtype=torch.int64)
    for key in ("gain", "baseline"):
        if key in items[0]:
            batch[key] = torch.stack([torch.as_tensor(item[key]) for item in items])
    return batch


def adc_to_physical(batch: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(x - baseline) / gain`` for a batch read with ``units="adc"``, on the batch's device.

    Returns ``x`` in physical units (ECG mV, EEG µV), shape (B, C, T), in ``dtype``. The arithmetic is the
    store's one precision rule (float64, rounded once), so in float32 it is bit for bit what
    ``units="physical"`` reads; the float64 pass is elementwise and memory-bound, a small cost beside an
    encoder. Use it after moving the int16 batch to the
    GPU (half the bytes of float32). WFDB "missing sample" values are not masked here (they are with
    ``units="physical"``).
    """
    if "gain" not in batch or "baseline" not in batch:
        raise ConfigError(
            f"batch has keys {sorted(batch)}, no gain/baseline: read it with WindowDataset(units='adc')"
        )
    x = batch["x"].to(torch.float64)
    baseline, gain = batch["baseline"].to(torch.float64), batch["gain"].to(torch.float64)
    return ((x - baseline[..., None]) / gain[..., None]).to(dtype)
