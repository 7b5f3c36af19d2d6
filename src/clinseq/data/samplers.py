"""Patient-aware batch samplers: deterministic for ``(seed, epoch)``, resumable mid-epoch, sharded by patient.

Every sampler here is a ``torch.utils.data.Sampler`` whose items are whole batches: lists of
:class:`~clinseq.data.datasets.WindowKey` ``(recording_id, start)``. Pass one as ``batch_sampler`` with a
:class:`~clinseq.data.datasets.WindowDataset`::

    sampler = PatientBatchSampler(store.recordings, 32, 2, window_s=5.0, short_patients="fill")
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_windows, num_workers=2)
    for epoch in range(n_epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            ...

Common contract
---------------
- **Layout.** Each sampler yields batches of fixed size with a documented order: ``batch_shape`` and
  ``batch_dims`` give it, e.g. ``(P, V)`` / ``("patient", "view")`` means ``keys[p * V + v]``, so
  ``x.view(*sampler.batch_shape, C, T)`` recovers the groups.
- **Determinism.** The batches of an epoch depend only on ``(seed, epoch, rank, world_size)`` and the
  recordings table, never on global RNG state or on the ``DataLoader``'s workers.
- **Starts.** Given a window length (``window_s`` or ``window_n_samples``), the sampler draws every
  window's start itself (seeded), so keys are concrete and recordings too short for a window are left out
  (``n_excluded_recordings``). Without one, keys carry :data:`~clinseq.data.datasets.RANDOM_START` and
  the dataset draws starts (seeded by its seed and the batch's keys).
- **Sharding by patient.** With ``world_size > 1`` every rank builds the same epoch plan and takes its own
  part: no patient is on two ranks in the same step, and every rank yields the same number of batches
  (DDP needs equal step counts). What is dropped or repeated to get equal counts is each sampler's
  documented *drop/pad rule* (``drop_last``).
- **Resume.** ``state_dict()`` records ``(seed, epoch, batches_yielded)``; a sampler given it through
  ``load_state_dict`` yields exactly the batches an uninterrupted run would have yielded next. With a
  multi-worker ``DataLoader`` the sampler runs ahead of the training loop (the loader prefetches
  ``prefetch_factor × num_workers`` batches): pass the number of batches the loop actually consumed,
  ``state_dict(batches_consumed=step_in_epoch)``.
- **Epochs.** ``set_epoch(e)`` selects epoch ``e`` (call it before iterating, as with torch's
  ``DistributedSampler``); setting the epoch the sampler is already on keeps a resume position.
  ``len(sampler)`` is the number of batches of a full epoch on this rank and is the same every epoch.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import polars as pl
from torch.utils.data import Sampler

from clinseq.data.datasets import RANDOM_START, WindowKey
from clinseq.errors import ConfigError

ShortPatients = Literal["drop", "fill"]

# Stream tags keep the random streams of different purposes (and samplers) independent.
_TAG_PLAN, _TAG_BATCH = 0x5EED_0001, 0x5EED_0002


def _rng(*words: int) -> np.random.Generator:
    """A generator seeded by a tuple of non-negative ints (numpy's SeedSequence entropy list)."""
    return np.random.default_rng([int(w) & (2**63 - 1) for w in words])


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class _Recordings:
    """The columns a sampler needs, as numpy arrays, validated."""

    def __init__(
        self,
        recordings: Any,
        window_s: float | None,
        window_n_samples: int | None,
        *,
        need_window: bool,
    ) -> None:
        if not isinstance(recordings, pl.DataFrame):
            try:
                recordings = pl.DataFrame(recordings)
            except Exception as exc:  # noqa: BLE001 - any unconvertible input gets the same message
                raise ConfigError(
                    "recordings must be a DataFrame with 'recording_id' and 'patient_id' columns "
                    f"(e.g. store.recordings), got {type(recordings).__name__}: {exc}"
                ) from exc
        missing = [c for c in ("recording_id", "patient_id") if c not in recordings.columns]
        if missing:
            raise ConfigError(
                f"recordings lacks column(s) {missing}; it has {recordings.columns}: pass store.recordings "
                "or a DataFrame with recording_id and patient_id"
            )
        if recordings.height == 0:
            raise ConfigError("recordings is empty: a sampler needs at least one recording")
        self.recording_id = recordings["recording_id"].to_numpy().astype(np.int64)
        self.patient_id = recordings["patient_id"].to_numpy().astype(np.int64)
        if len(np.unique(self.recording_id)) != len(self.recording_id):
            raise ConfigError("recordings has duplicate recording_id values; pass one row per recording")
        if window_s is not None and window_n_samples is not None:
            raise ConfigError(
                f"give window_s ({window_s}) or window_n_samples ({window_n_samples}), not both"
            )
        if need_window and window_s is None and window_n_samples is None:
            raise ConfigError(
                "this sampler chooses window starts itself and needs the window length: pass window_s "
                "(seconds) or window_n_samples"
            )
        self.window: np.ndarray | None = None  # window length in samples, per recording
        if window_s is not None or window_n_samples is not None:
            if "n_samples" not in recordings.columns:
                raise ConfigError(
                    "a window length was given but recordings has no 'n_samples' column; pass "
                    "store.recordings"
                )
            self.n_samples: np.ndarray = recordings["n_samples"].to_numpy().astype(np.int64)
            if window_n_samples is not None:
                self.window = np.full(
                    len(self.recording_id), _check_int("window_n_samples", window_n_samples, 1)
                )
            else:
                if not (isinstance(window_s, (int, float)) and window_s > 0):
                    raise ConfigError(f"window_s must be > 0 seconds, got {window_s!r}")
                if "sampling_rate_hz" not in recordings.columns:
                    raise ConfigError(
                        "window_s needs a 'sampling_rate_hz' column in recordings; pass store.recordings "
                        "or give window_n_samples instead"
                    )
                rate = recordings["sampling_rate_hz"].to_numpy().astype(np.float64)
                self.window = np.maximum(1, np.round(window_s * rate)).astype(np.int64)

    def fingerprint(self) -> str:
        """A short digest of the table as the sampler sees it (checked when loading a state)."""
        h = hashlib.blake2b(digest_size=8)
        for array in (self.recording_id, self.patient_id, self.window, getattr(self, "n_samples", None)):
            h.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
        return h.hexdigest()


class _ShardedBatchSampler(Sampler[list[WindowKey]]):
    """Shared machinery: epochs, ``__len__``, state and resume. Subclasses plan epochs and build batches."""

    batch_dims: tuple[str, ...] = ()
    batch_shape: tuple[int, ...] = ()

    def __init__(self, seed: int, rank: int, world_size: int, drop_last: bool) -> None:
        super().__init__()
        self.seed = _check_int("seed", seed, 0)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ConfigError(
                f"rank must be in 0..{self.world_size - 1} for world_size={world_size}, got {rank}"
            )
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._resume_at = 0  # batches to skip when the next iteration starts (set by load_state_dict)
        self._yielded = 0  # position in the current epoch
        self._plan_cache: tuple[int, Any] | None = None

    # -- to implement ---------------------------------------------------------------------------------
    def _n_batches(self) -> int:
        raise NotImplementedError

    def _make_plan(self, epoch: int) -> Any:
        raise NotImplementedError

    def _batch(self, plan: Any, epoch: int, step: int) -> list[WindowKey]:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- public ---------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Keys per batch on this rank (the product of ``batch_shape``)."""
        return int(np.prod(self.batch_shape))

    def __len__(self) -> int:
        """Batches in one full epoch on this rank (equal on every rank, the same every epoch)."""
        return self._n_batches()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration yields (each epoch has its own shuffle).

        Setting the epoch the sampler is already on keeps a position restored by :meth:`load_state_dict`,
        so ``load_state_dict(state); set_epoch(state["epoch"])`` still resumes mid-epoch.
        """
        epoch = _check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self.epoch, self._resume_at, self._yielded = epoch, 0, 0

    def _plan(self) -> Any:
        if self._plan_cache is None or self._plan_cache[0] != self.epoch:
            self._plan_cache = (self.epoch, self._make_plan(self.epoch))
        return self._plan_cache[1]

    def __iter__(self) -> Iterator[list[WindowKey]]:
        plan, epoch = self._plan(), self.epoch
        start, self._resume_at = self._resume_at, 0  # a restored position applies to one iteration
        self._yielded = start
        for step in range(start, self._n_batches()):
            batch = self._batch(plan, epoch, step)
            self._yielded = step + 1
            yield batch

    def batch_at(self, step: int, epoch: int | None = None) -> list[WindowKey]:
        """The ``step``-th batch of ``epoch`` (default: the current one) on this rank, without iterating."""
        n = self._n_batches()
        if not 0 <= step < n:
            raise ConfigError(f"step must be in 0..{n - 1} (batches per epoch), got {step}")
        epoch = self.epoch if epoch is None else _check_int("epoch", epoch, 0)
        plan = self._plan() if epoch == self.epoch else self._make_plan(epoch)
        return self._batch(plan, epoch, step)

    def state_dict(self, batches_consumed: int | None = None) -> dict[str, Any]:
        """``{"seed", "epoch", "batches_yielded", ...}``: enough to resume this epoch exactly.

        Args:
            batches_consumed: batches of the current epoch the training loop has actually used. Default:
                the number this sampler has yielded, which is right when the sampler is iterated directly
                or by a ``DataLoader`` with ``num_workers=0``; with workers the loader prefetches ahead,
                so pass the loop's own count.
        """
        position = self._yielded if batches_consumed is None else batches_consumed
        position = _check_int("batches_consumed", position, 0)
        if position > self._n_batches():
            raise ConfigError(
                f"batches_consumed={position} exceeds the {self._n_batches()} batches of an epoch; pass the "
                "number of batches of the current epoch the loop has used"
            )
        return {
            "sampler": type(self).__name__,
            "seed": self.seed,
            "epoch": self.epoch,
            "batches_yielded": position,
            "rank": self.rank,
            "world_size": self.world_size,
            "config": self._config(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``seed``, ``epoch`` and the position in the epoch; the next iteration yields the rest.

        The state of any rank may be loaded on every rank (the position is the same on all of them); the
        sampler's configuration and ``world_size`` must match the saved ones, else :class:`ConfigError`.
        """
        for key in ("sampler", "seed", "epoch", "batches_yielded", "world_size", "config"):
            if key not in state:
                raise ConfigError(f"sampler state lacks {key!r}; pass what state_dict() returned")
        if state["sampler"] != type(self).__name__:
            raise ConfigError(f"state is from a {state['sampler']}, this sampler is a {type(self).__name__}")
        if int(state["world_size"]) != self.world_size:
            raise ConfigError(
                f"state was saved with world_size={state['world_size']}, this sampler has "
                f"world_size={self.world_size}: resume with the same number of processes"
            )
        mine, theirs = self._config(), dict(state["config"])
        if json.dumps(mine, sort_keys=True) != json.dumps(theirs, sort_keys=True):
            diff = {
                k: (theirs.get(k), mine.get(k))
                for k in set(mine) | set(theirs)
                if mine.get(k) != theirs.get(k)
            }
            raise ConfigError(f"sampler configuration differs from the saved one (saved, now): {diff}")
        position = _check_int("batches_yielded", state["batches_yielded"], 0)
        self.seed = _check_int("seed", state["seed"], 0)
        self.epoch = _check_int("epoch", state["epoch"], 0)
        self._plan_cache = None
        if position > self._n_batches():
            raise ConfigError(
                f"batches_yielded={position} exceeds the {self._n_batches()} batches of an epoch"
            )
        self._resume_at = self._yielded = position


# ---------------------------------------------------------------------------------------------------------
# Patient-major samplers: P patients per rank per step, each with a fixed number of windows.
# ---------------------------------------------------------------------------------------------------------
class _PatientGroupSampler(_ShardedBatchSampler):
    """Patients → ``n_slots`` recording slots → ``windows_per_slot`` windows, ``P`` patients per rank.

    Epoch plan: one permutation of the eligible patients (the same on every rank). Global step ``s`` takes
    the patients ``perm[s·W·P : (s+1)·W·P]`` and rank ``r`` the ``r``-th block of ``P`` of them, so the
    ranks' patients are disjoint in every step and over the epoch. The windows of a step are drawn for
    the whole global step from ``(seed, epoch, s)`` and then split, so the concatenation of the ranks'
    batches equals the batch of one process with ``W·P`` patients per batch.
    """

    def __init__(
        self,
        recordings: Any,
        patients_per_batch: int,
        n_slots: int,
        windows_per_slot: int,
        short_patients: ShortPatients,
        window_s: float | None,
        window_n_samples: int | None,
        seed: int,
        rank: int,
        world_size: int,
        drop_last: bool,
    ) -> None:
        super().__init__(seed, rank, world_size, drop_last)
        self.patients_per_batch = _check_int("patients_per_batch", patients_per_batch, 1)
        self._n_slots = _check_int("recordings per patient", n_slots, 1)
        self._windows_per_slot = _check_int("windows per recording", windows_per_slot, 1)
        if short_patients not in ("drop", "fill"):
            raise ConfigError(f"short_patients must be 'drop' or 'fill', got {short_patients!r}")
        self.short_patients = short_patients
        table = _Recordings(recordings, window_s, window_n_samples, need_window=False)
        self._table = table
        keep = np.ones(len(table.recording_id), bool)
        if table.window is not None:
            keep = table.n_samples >= table.window
        self.n_excluded_recordings = int((~keep).sum())
        order = np.lexsort((table.recording_id, table.patient_id))
        order = order[keep[order]]
        self._rec_row = order  # eligible rows of the table, grouped by patient
        pids, first, counts = np.unique(table.patient_id[order], return_index=True, return_counts=True)
        enough = counts >= self._n_slots
        self.n_short_patients = int((~enough).sum())
        if short_patients == "drop":
            pids, first, counts = pids[enough], first[enough], counts[enough]
        self.patient_ids = pids  #: the patients this sampler draws from, sorted
        self._first, self._count = first, counts
        per_step = self.patients_per_batch * self.world_size
        if len(pids) < per_step:
            raise ConfigError(
                f"{len(pids)} eligible patients (of {len(np.unique(table.patient_id))}; "
                f"{self.n_short_patients} have fewer than {self._n_slots} recordings"
                f"{' and were dropped' if short_patients == 'drop' else ''}, "
                f"{self.n_excluded_recordings} recordings are shorter than the window) cannot fill one step "
                f"of patients_per_batch={self.patients_per_batch} × world_size={self.world_size}: lower "
                "patients_per_batch"
                + (
                    ", or pass short_patients='fill'"
                    if short_patients == "drop" and self.n_short_patients
                    else ""
                )
            )

    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)

    def _n_batches(self) -> int:
        per_step = self.patients_per_batch * self.world_size
        n = self.n_patients
        return n // per_step if self.drop_last else -(-n // per_step)

    def _config(self) -> dict[str, Any]:
        return {
            "patients_per_batch": self.patients_per_batch,
            "slots": self._n_slots,
            "windows": self._windows_per_slot,
            "short_patients": self.short_patients,
            "drop_last": self.drop_last,
            "recordings": self._table.fingerprint(),
        }

    def _make_plan(self, epoch: int) -> np.ndarray:
        perm = _rng(self.seed, _TAG_PLAN, epoch).permutation(self.n_patients)
        total = self._n_batches() * self.patients_per_batch * self.world_size
        if total > len(perm):  # pad rule: wrap around to the epoch's first patients
            perm = np.concatenate([perm, perm[: total - len(perm)]])
        return perm

    def _batch(self, plan: np.ndarray, epoch: int, step: int) -> list[WindowKey]:
        per_step = self.patients_per_batch * self.world_size
        patients = plan[step * per_step : (step + 1) * per_step]
        rng = _rng(self.seed, _TAG_BATCH, epoch, step)
        rows, starts = self._draw(patients, rng)
        lo = self.rank * self.patients_per_batch
        rows = rows[lo : lo + self.patients_per_batch].reshape(-1)
        starts = starts[lo : lo + self.patients_per_batch].reshape(-1)
        rids = self._table.recording_id[rows]
        return [WindowKey(r, s) for r, s in zip(rids.tolist(), starts.tolist(), strict=True)]

    def _draw(self, patients: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Rows (G, S, W) of the table and starts (G, S, W) for the patients of one global step.

        Slot ``v`` of a patient takes the ``(v mod c)``-th of its ``c`` recordings in a random order: with
        ``c ≥ S`` that is ``S`` distinct recordings; with fewer (``"fill"``) every recording is used and
        then reused. The ``U`` windows that one recording contributes to a patient are stratified: its
        range of starts is cut into ``U`` equal parts and one start drawn in each, so they differ (when
        the recording has ``U`` or more possible starts) and come in time order.
        """
        g = len(patients)
        n_slots, n_win = self._n_slots, self._windows_per_slot
        first, count = self._first[patients], self._count[patients]
        # A random order of each patient's recordings: sort random keys within each patient's block.
        owner = np.repeat(np.arange(g), count)
        flat = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + np.repeat(first, count)
        order = np.lexsort((rng.random(len(flat)), owner))
        block_start = np.cumsum(count) - count
        slot = np.arange(n_slots)
        pick = block_start[:, None] + slot[None, :] % count[:, None]  # (G, S) index into the shuffled flat
        rows = self._rec_row[flat[order[pick]]]  # (G, S) table rows
        rows = np.repeat(rows[:, :, None], n_win, axis=2)  # (G, S, W)
        if self._table.window is None:
            return rows, np.full(rows.shape, RANDOM_START, np.int64)
        # Which use of its recording each window is, and how many uses that recording has.
        rep = slot[None, :] // count[:, None]  # (G, S): repetition of the recording in this slot
        j = slot[None, :] % count[:, None]
        n_rep = (n_slots - j + count[:, None] - 1) // count[:, None]  # slots holding the same recording
        use = rep[:, :, None] * n_win + np.arange(n_win)[None, None, :]  # (G, S, W)
        n_use = (n_rep * n_win)[:, :, None]
        room = self._table.n_samples[rows] - self._table.window[rows] + 1  # possible starts
        # Integer strata [lo, hi) so that different strata never share a start (when room ≥ n_use).
        lo = use * room // n_use
        hi = np.maximum((use + 1) * room // n_use, lo + 1)
        starts = lo + np.floor(rng.random(rows.shape) * (hi - lo)).astype(np.int64)
        return rows, np.minimum(starts, room - 1)


class PatientBatchSampler(_PatientGroupSampler):
    """``P`` patients × ``V`` views per batch, each view a different recording of the patient (PCLR).

    PCLR (Diamant et al. 2022) contrasts *different ECGs of the same patient*: a batch holds
    ``patients_per_batch`` distinct patients (no patient twice, so "another patient" is always a true
    negative) and ``views_per_patient`` windows of each, in patient-major order: ``keys[p·V + v]``
    (``batch_shape = (P, V)``, ``batch_dims = ("patient", "view")``). Use ``patient_id`` as the ids.

    Patients with ≥ V recordings give V distinct recordings, chosen at random each epoch. Patients with
    fewer (``short_patients``):

    - ``"drop"`` (default, PCLR as published): they are left out; every positive pair is two different
      recordings. On the real PTB-XL subset only 25 of its 366 patients have ≥ 2 ECGs.
    - ``"fill"``: they are kept; each of their recordings is used once, then the remaining views are
      *other windows of the same recordings* (distinct starts, spread over the recording). Those views
      are then positives of each other, as in SimCLR-style temporal crops, rather than across-ECG
      positives: the objective sees a mix of "same patient, other ECG" and "same ECG, other window".
      This is what lets PCLR-style training use every patient of a dataset where most have one ECG.

    Epoch = one pass over the eligible patients in a seeded random order. Drop/pad rule (``drop_last``):
    with ``True`` the last ``n_patients mod (P·world_size)`` patients of each epoch's permutation (a
    different set each epoch) are left out; with ``False`` the last step is completed with patients from
    the start of the permutation (they appear twice in that epoch, never twice in one step).

    Args:
        recordings: ``store.recordings`` or any DataFrame with ``recording_id`` and ``patient_id`` (and
            ``n_samples``, plus ``sampling_rate_hz`` for ``window_s``, when a window length is given).
        patients_per_batch: P, patients per batch on each rank.
        views_per_patient: V, windows per patient.
        short_patients: ``"drop"`` or ``"fill"`` (above).
        window_s, window_n_samples: window length; when given, the sampler draws the starts and leaves
            out recordings shorter than a window. Otherwise keys carry ``RANDOM_START``.
        seed: seed of every shuffle and start (the same on every rank).
        rank, world_size: this process's rank and the number of processes; patients are sharded.
        drop_last: the drop/pad rule above.
    """

    batch_dims = ("patient", "view")

    def __init__(
        self,
        recordings: Any,
        patients_per_batch: int,
        views_per_patient: int,
        *,
        short_patients: ShortPatients = "drop",
        window_s: float | None = None,
        window_n_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        super().__init__(
            recordings, patients_per_batch, views_per_patient, 1, short_patients,
            window_s, window_n_samples, seed, rank, world_size, drop_last,
        )  # fmt: skip
        self.views_per_patient = self._n_slots
        self.batch_shape = (self.patients_per_batch, self.views_per_patient)


class HierarchicalSampler(_PatientGroupSampler):
    """``P`` patients × ``R`` recordings × ``M`` windows per batch, so every COMET level has positives.

    COMET (Wang et al. NeurIPS 2023) contrasts at four levels: observation, sample, trial (recording) and
    patient. Within a batch, windows of one recording are trial-level positives and windows of one
    patient's recordings patient-level positives; other patients are true negatives (no patient twice).
    Order: patient-major, then recording, then window: ``keys[(p·R + r)·M + m]``
    (``batch_shape = (P, R, M)``, ``batch_dims = ("patient", "recording", "window")``). The M windows of a
    recording are distinct when it is long enough and come in time order.

    ``short_patients`` treats patients with fewer than R recordings as :class:`PatientBatchSampler` does:
    ``"drop"`` leaves them out; ``"fill"`` reuses their recordings, so two "recordings" of such a patient
    may be the same recording (same ``recording_id``: the trial level then counts them as one trial, which
    is correct, and the patient level loses no positives). Epochs, sharding and the drop/pad rule are
    those of :class:`PatientBatchSampler`.

    Args:
        recordings: ``store.recordings`` or a DataFrame with ``recording_id``, ``patient_id``
            (``n_samples``, ``sampling_rate_hz`` for a window length).
        patients_per_batch: P.
        recordings_per_patient: R.
        windows_per_recording: M (≥ 2 for trial-level positives).
        short_patients, window_s, window_n_samples, seed, rank, world_size, drop_last: as in
            :class:`PatientBatchSampler`.
    """

    batch_dims = ("patient", "recording", "window")

    def __init__(
        self,
        recordings: Any,
        patients_per_batch: int,
        recordings_per_patient: int = 2,
        windows_per_recording: int = 2,
        *,
        short_patients: ShortPatients = "drop",
        window_s: float | None = None,
        window_n_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        super().__init__(
            recordings, patients_per_batch, recordings_per_patient, windows_per_recording, short_patients,
            window_s, window_n_samples, seed, rank, world_size, drop_last,
        )  # fmt: skip
        self.recordings_per_patient = self._n_slots
        self.windows_per_recording = self._windows_per_slot
        self.batch_shape = (self.patients_per_batch, self.recordings_per_patient, self.windows_per_recording)


# ---------------------------------------------------------------------------------------------------------
# Recording-level samplers: every eligible recording once per epoch, ranks own disjoint patient sets.
# ---------------------------------------------------------------------------------------------------------
def _balanced_owners(counts: np.ndarray, world_size: int) -> np.ndarray:
    """Rank of each patient (in the given order): each goes to the rank with the fewest recordings so far.

    Greedy balancing: every rank gets a patient when there are ≥ world_size of them, and the ranks'
    recording counts differ by at most the largest patient's count.
    """
    if world_size == 1:
        return np.zeros(len(counts), np.int64)
    heap = [(0, r) for r in range(world_size)]
    owners = np.empty(len(counts), np.int64)
    for i, c in enumerate(counts.tolist()):
        load, rank = heapq.heappop(heap)
        owners[i] = rank
        heapq.heappush(heap, (load + c, rank))
    return owners


class _RecordingSampler(_ShardedBatchSampler):
    """Epoch = every eligible recording ``repeats`` times, ``n_groups`` recordings per batch per rank.

    Sharding: each epoch the patients, in a seeded random order, are dealt to the ranks greedily (each to
    the rank with the fewest recordings so far), so the ranks' counts differ by at most the largest
    patient's count; rank ``r`` shuffles the recordings of its patients. Ranks' patients are disjoint for
    the whole epoch. Drop/pad rule: every rank yields ``N // (W·n_groups)`` batches (``drop_last=True``)
    or ``ceil(N / (W·n_groups))`` (``False``); a rank with more recordings than that drops its last ones
    (different ones each epoch), a rank with fewer repeats its own from the start of its shuffled list.
    With one rank, ``drop_last=False`` visits every recording; with several, a rank may still drop up to
    the largest patient's count (the imbalance of whole patients), so the epoch is complete up to that.
    """

    def __init__(
        self,
        recordings: Any,
        n_groups: int,
        repeats: int,
        min_length: Any,
        window_s: float | None,
        window_n_samples: int | None,
        need_window: bool,
        seed: int,
        rank: int,
        world_size: int,
        drop_last: bool,
    ) -> None:
        super().__init__(seed, rank, world_size, drop_last)
        self._n_groups = _check_int("recordings per batch", n_groups, 1)
        self._repeats = _check_int("windows_per_recording", repeats, 1)
        table = _Recordings(recordings, window_s, window_n_samples, need_window=need_window)
        self._table = table
        keep = (
            np.ones(len(table.recording_id), bool)
            if table.window is None
            else table.n_samples >= min_length(table)
        )
        self.n_excluded_recordings = int((~keep).sum())
        rows = np.flatnonzero(keep)
        rows = rows[np.lexsort((table.recording_id[rows], table.patient_id[rows]))]
        self._rows = rows  # eligible rows grouped by patient
        self.patient_ids, self._first, self._count = np.unique(
            table.patient_id[rows], return_index=True, return_counts=True
        )
        self._patient_of_row = np.repeat(np.arange(len(self.patient_ids)), self._count)
        self.n_units = len(rows) * self._repeats
        if len(self.patient_ids) < self.world_size or self.n_units < self._n_groups * self.world_size:
            raise ConfigError(
                f"{len(rows)} eligible recordings of {len(self.patient_ids)} patients "
                f"({self.n_excluded_recordings} too short for the windows) cannot give world_size="
                f"{self.world_size} ranks a batch of {self._n_groups} recordings each: lower the batch size "
                "or the window length"
            )

    def _n_batches(self) -> int:
        per_step = self._n_groups * self.world_size
        return self.n_units // per_step if self.drop_last else -(-self.n_units // per_step)

    def _make_plan(self, epoch: int) -> np.ndarray:
        rng = _rng(self.seed, _TAG_PLAN, epoch)
        order = rng.permutation(len(self.patient_ids))
        owner = np.empty(len(order), np.int64)
        owner[order] = _balanced_owners(self._count[order], self.world_size)
        rows = self._rows[owner[self._patient_of_row] == self.rank]
        rows = np.tile(rows, self._repeats)
        rows = rows[_rng(self.seed, _TAG_PLAN, epoch, self.rank + 1).permutation(len(rows))]
        need = self._n_batches() * self._n_groups
        return np.resize(rows, need)  # truncate, or repeat from the start (the pad rule)

    def _rows_of(self, plan: np.ndarray, step: int) -> np.ndarray:
        return plan[step * self._n_groups : (step + 1) * self._n_groups]


class RandomWindowSampler(_RecordingSampler):
    """Batches of random windows, one per recording (SimCLR, CPC, CLOCS, MoCo, supervised).

    An epoch visits every eligible recording ``windows_per_recording`` times (more than once for long
    recordings, e.g. hour-long EEG) in a seeded random order, each time at a random start. Layout:
    ``batch_shape = (batch_size,)``, ``batch_dims = ("window",)``. A batch may hold two windows of one
    patient (ids = sample index then treat them as negatives; use :class:`PatientBatchSampler` where that
    matters). Sharding and the drop/pad rule: ranks own disjoint sets of patients each epoch, balanced
    by recording count, and every rank yields ``len(sampler)`` batches (details in ``_RecordingSampler``:
    ``N // (W·B)`` batches with ``drop_last``, ``ceil(N / (W·B))`` without; a short rank repeats its own
    recordings, a long one drops its last ones).

    Args:
        recordings: ``store.recordings`` or a DataFrame with ``recording_id`` and ``patient_id``.
        batch_size: windows per batch on each rank.
        windows_per_recording: visits of each recording per epoch.
        window_s, window_n_samples: window length; when given the sampler draws starts and leaves out
            recordings shorter than a window; otherwise keys carry ``RANDOM_START``.
        seed, rank, world_size, drop_last: as in :class:`PatientBatchSampler`.
    """

    batch_dims = ("window",)

    def __init__(
        self,
        recordings: Any,
        batch_size: int,
        *,
        windows_per_recording: int = 1,
        window_s: float | None = None,
        window_n_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        super().__init__(
            recordings, batch_size, windows_per_recording, lambda t: t.window,
            window_s, window_n_samples, False, seed, rank, world_size, drop_last,
        )  # fmt: skip
        self.batch_shape = (self._n_groups,)

    def _config(self) -> dict[str, Any]:
        return {
            "batch_size": self._n_groups,
            "windows_per_recording": self._repeats,
            "drop_last": self.drop_last,
            "recordings": self._table.fingerprint(),
        }

    def _batch(self, plan: np.ndarray, epoch: int, step: int) -> list[WindowKey]:
        rows = self._rows_of(plan, step)
        rids = self._table.recording_id[rows]
        if self._table.window is None:
            return [WindowKey(r, RANDOM_START) for r in rids.tolist()]
        rng = _rng(self.seed, _TAG_BATCH, epoch, step, self.rank)
        room = self._table.n_samples[rows] - self._table.window[rows] + 1
        starts = np.floor(rng.random(len(rows)) * room).astype(np.int64)
        return [WindowKey(r, s) for r, s in zip(rids.tolist(), starts.tolist(), strict=True)]


class PolyWindowSampler(_RecordingSampler):
    """``R`` recordings × ``M`` windows per batch with bounded overlap (poly-window contrast).

    Poly-window pretraining (Yuan et al. 2025) treats M windows of one recording as mutual positives.
    For each recording the sampler draws M starts in increasing order whose consecutive windows overlap
    by a fraction of the window length in ``[min_overlap, max_overlap]``: the stride between consecutive
    starts is an integer in ``[ceil(L·(1 − max_overlap)), floor(L·(1 − min_overlap))]``, uniform, capped so
    that the M windows fit in the recording, and the whole group is placed uniformly in the recording.
    Negative overlaps are gaps (``min_overlap=-0.5``: up to half a window between windows). Recordings
    too short for M windows at the largest allowed overlap are left out (``n_excluded_recordings``).

    Layout: recording-major, ``keys[r·M + m]`` (``batch_shape = (R, M)``, ``batch_dims = ("recording",
    "window")``); use ``recording_id`` as the ids. Epochs, sharding and the drop/pad rule are those of
    :class:`RandomWindowSampler` (every eligible recording once per epoch). A batch may hold two
    recordings of one patient; they are then negatives of each other.

    Args:
        recordings: ``store.recordings`` or a DataFrame with ``recording_id``, ``patient_id``,
            ``n_samples`` (and ``sampling_rate_hz`` for ``window_s``).
        recordings_per_batch: R, per rank.
        windows_per_recording: M (design default 4).
        min_overlap, max_overlap: bounds of the overlap of consecutive windows, fractions of the window
            length, ``min_overlap ≤ max_overlap ≤ 1``.
        window_s, window_n_samples: the window length (required; design default 2.5 s).
        seed, rank, world_size, drop_last: as in :class:`RandomWindowSampler`.
    """

    batch_dims = ("recording", "window")

    def __init__(
        self,
        recordings: Any,
        recordings_per_batch: int,
        windows_per_recording: int = 4,
        min_overlap: float = 0.0,
        max_overlap: float = 0.5,
        *,
        window_s: float | None = None,
        window_n_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if not (min_overlap <= max_overlap <= 1.0):
            raise ConfigError(
                f"overlaps must satisfy min_overlap <= max_overlap <= 1, got min_overlap={min_overlap}, "
                f"max_overlap={max_overlap} (fractions of the window; negative = a gap)"
            )
        self.windows_per_recording = _check_int("windows_per_recording", windows_per_recording, 1)
        self.min_overlap, self.max_overlap = float(min_overlap), float(max_overlap)

        def min_length(table: _Recordings) -> np.ndarray:
            lo, hi = self._stride_bounds(table.window)
            if np.any(lo > hi):
                raise ConfigError(
                    f"no integer stride gives an overlap in [{min_overlap}, {max_overlap}] for windows of "
                    f"{int(table.window.max())} samples: widen the overlap range"
                )
            return table.window + (self.windows_per_recording - 1) * lo

        super().__init__(
            recordings, recordings_per_batch, 1, min_length,
            window_s, window_n_samples, True, seed, rank, world_size, drop_last,
        )  # fmt: skip
        self.recordings_per_batch = self._n_groups
        self.batch_shape = (self.recordings_per_batch, self.windows_per_recording)

    def _stride_bounds(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Rounded inwards so that every drawn stride honours both bounds exactly; 1e-9 absorbs float error.
        lo = np.ceil(window * (1.0 - self.max_overlap) - 1e-9).astype(np.int64)
        hi = np.floor(window * (1.0 - self.min_overlap) + 1e-9).astype(np.int64)
        return np.maximum(lo, 0), hi

    def _config(self) -> dict[str, Any]:
        return {
            "recordings_per_batch": self._n_groups,
            "windows_per_recording": self.windows_per_recording,
            "overlap": [self.min_overlap, self.max_overlap],
            "drop_last": self.drop_last,
            "recordings": self._table.fingerprint(),
        }

    def _batch(self, plan: np.ndarray, epoch: int, step: int) -> list[WindowKey]:
        rows = self._rows_of(plan, step)
        table, m = self._table, self.windows_per_recording
        rng = _rng(self.seed, _TAG_BATCH, epoch, step, self.rank)
        window, n_samples = table.window[rows], table.n_samples[rows]
        lo, hi = self._stride_bounds(window)
        if m > 1:
            hi = np.minimum(hi, (n_samples - window) // (m - 1))  # the M windows must fit
            strides = lo[:, None] + np.floor(rng.random((len(rows), m - 1)) * (hi - lo + 1)[:, None]).astype(
                np.int64
            )
            offsets = np.concatenate([np.zeros((len(rows), 1), np.int64), np.cumsum(strides, axis=1)], axis=1)
        else:
            offsets = np.zeros((len(rows), 1), np.int64)
        room = n_samples - window - offsets[:, -1] + 1
        first = np.floor(rng.random(len(rows)) * room).astype(np.int64)
        starts = first[:, None] + offsets
        rids = np.repeat(table.recording_id[rows], m)
        return [WindowKey(r, s) for r, s in zip(rids.tolist(), starts.reshape(-1).tolist(), strict=True)]
