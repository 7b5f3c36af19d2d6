"""The in-memory form of one recording on its way from a source into a store."""

from __future__ import annotations

import os
import tempfile
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from clinseq.errors import SourceError

#: Sample dtypes a store part may hold: ADC integers (lossless for WFDB/EDF/BDF) or float32 physical.
SAMPLE_DTYPES = (np.dtype("int16"), np.dtype("int32"), np.dtype("float32"))


#: The recordings one file gives at several sampling rates ("rate groups") after the first get
#: ``recording_id + g · GROUP_ID_STRIDE`` (g = 1, 2...): the first keeps the source's id, and every one
#: carries ``session_id`` (the source's id) and ``rate_group`` (g). ``id % GROUP_ID_STRIDE`` is the
#: session, ``id // GROUP_ID_STRIDE`` the group.
GROUP_ID_STRIDE = 2**58
MAX_RATE_GROUPS = 32


def rate_group_id(recording_id: int, group: int, path: os.PathLike[str] | str) -> int:
    """The store id of rate group ``group`` of the file the source numbers ``recording_id``."""
    if group == 0:
        return int(recording_id)
    if not 0 <= recording_id < GROUP_ID_STRIDE or group >= MAX_RATE_GROUPS:
        raise SourceError(
            path,
            f"cannot number rate group {group} of recording {recording_id}: ids of files with several "
            f"sampling rates must be in [0, 2**58) and a file may have at most {MAX_RATE_GROUPS} rates",
        )
    return int(recording_id) + group * GROUP_ID_STRIDE


class SpooledSamples(np.memmap):
    """Samples spooled to a temporary file: a loader fills a long recording piece by piece (e.g. the
    segments of a multi-segment WFDB record) without holding it in memory, and the store writer copies
    it into a signal part from the page cache. The file is deleted when the last process holding the
    array drops it; pickling (to hand it from a worker process to the writer) passes the file's path,
    never the samples, and hands the deletion over to the receiving process."""

    def __reduce__(self):
        if getattr(self, "_spool_finalizer", None) is None or self.shape != getattr(
            self, "_spool_shape", None
        ):
            return super().__reduce__()
        self._spool_finalizer.detach()  # the receiver deletes the file
        return (_open_spool, (self.filename, self.dtype.str, self.shape))


def _attach(array: SpooledSamples, path: str) -> SpooledSamples:
    array._spool_finalizer = weakref.finalize(array, _unlink, path)
    array._spool_shape = array.shape
    return array


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _open_spool(path: str, dtype: str, shape: tuple[int, ...]) -> SpooledSamples:
    return _attach(SpooledSamples(path, dtype=np.dtype(dtype), mode="r+", shape=shape), path)


def spool_samples(shape: tuple[int, int], dtype: np.dtype | type, fill: float | int) -> SpooledSamples:
    """A ``(channels, n_samples)`` array of ``dtype`` filled with ``fill``, backed by a temporary file
    (in ``$TMPDIR``) instead of memory; see :class:`SpooledSamples`."""
    fd, path = tempfile.mkstemp(prefix="clinseq-spool-", suffix=".bin")
    os.close(fd)
    n_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with open(path, "r+b") as f:
        f.truncate(max(n_bytes, 1))
    array = _attach(SpooledSamples(path, dtype=np.dtype(dtype), mode="r+", shape=shape), path)
    if fill != 0:
        step = max(1, (64 << 20) // max(1, np.dtype(dtype).itemsize * shape[1]))
        for row in range(0, shape[0], step):
            array[row : row + step] = fill
    return array


@dataclass
class Recording:
    """One multichannel recording, as a loader hands it to the store writer.

    ``samples`` is channel-major, shape ``(n_channels, n_samples)``: ADC integers (int16/int32) with
    ``physical = (adc - baseline) / gain`` per channel (WFDB's convention: ``gain`` is ADC units per
    physical unit), or float32 already in physical units with ``gain = 1`` and ``baseline = 0``.
    ``units`` are the physical units per channel (``"mV"`` for ECG, ``"uV"`` for EEG).
    ``samples`` may be a :class:`SpooledSamples` (file-backed) for recordings too long to hold in memory.
    ``attributes`` are dataset-specific columns of ``recordings.parquet`` (labels, folds, paths);
    every recording of one conversion carries the same keys.
    """

    recording_id: int
    patient_id: int
    start_time: datetime | None
    modality: str
    sampling_rate_hz: float
    samples: np.ndarray
    channel_names: list[str]
    units: list[str]
    gain: list[float]
    baseline: list[float]
    source: str
    attributes: dict[str, Any] = field(default_factory=dict)
    #: Annotations of the recording (WFDB annotation files, EDF+ annotations), in time from its first
    #: sample: dicts with ``onset_s``, ``duration_s`` (0 for an instant), ``code`` (e.g.
    #: ``WFDB//atr//N``, ``EDF//Sleep stage W``) and ``text_value`` (a WFDB aux note; None). The writer
    #: puts them into ``recording_events.parquet`` and, for a recording with a start time, onto the
    #: patient's timeline (see :mod:`clinseq.timeline.writer`).
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Per channel, the ADC value that marks a missing sample (WFDB's "invalid" sentinel) when it
    #: occurs in the data, else None; ``read_window(units="physical")`` returns NaN there.
    adc_invalid: list[int | None] | None = None

    def __post_init__(self) -> None:
        if self.samples.ndim != 2:
            raise ValueError(f"samples must be (channels, n_samples), got shape {self.samples.shape}")
        if self.samples.dtype not in SAMPLE_DTYPES:
            raise ValueError(f"samples dtype must be one of {SAMPLE_DTYPES}, got {self.samples.dtype}")
        n_ch = self.samples.shape[0]
        if self.adc_invalid is None:
            self.adc_invalid = [None] * self.samples.shape[0]
        for name in ("channel_names", "units", "gain", "baseline", "adc_invalid"):
            if len(getattr(self, name)) != n_ch:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} entries, samples has {n_ch} channels"
                )

    @property
    def n_channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])
