"""EEG files (EDF/BDF, and FIF/BrainVision/EEGLAB/GDF through mne) in their published layouts.

Layouts (``layout=``; ``"auto"`` picks the one every file's path follows and records it): ``eegmat``,
``eegmmidb``, ``tuh`` and ``flat``, one strategy each in :mod:`clinseq.io.eeg_layouts` (ids, sort order,
attributes, patients table). EEGMMIDB's EDF+ annotations (T0 rest, T1, T2) are kept per recording like
every file's. EDF/BDF bytes are decoded by :mod:`clinseq.io.edf`; channel labels are normalised by
:mod:`clinseq.io.eeg_channels`.

**Samples.** EDF stores 16-bit and BDF 24-bit integers: they are kept as they are (int16 / int32),
with ``gain = (digital_max - digital_min) / (physical_max - physical_min)`` and
``baseline = digital_min - physical_min · gain`` from the header, so ``(adc - baseline) / gain`` is the
physical value — exactly mne's calibration, losslessly. The integers are read straight from the data
records (after checking the header against the file size, which mne only warns about), mne opens every
file too (annotations, and a cross-check of duration and rate). With ``resample_hz`` the physical
values are resampled with mne (``Raw.resample``, FFT method) and stored as float32 (gain 1, baseline 0).
Other formats are read through ``mne.io.read_raw`` and stored as float32.

**Annotations** (EDF+ time-stamped annotation lists, and mne's for other formats) are kept in the
``annotations`` column and become the recording's events: code ``EDF//<description>`` (e.g.
``EDF//Sleep stage W``, ``EDF//T1``), onset and duration in s from the first sample; the store puts
them on the patient's timeline when the file has a start time (a file with several rates: on its
first recording).

**Units.** Every voltage channel (V, mV, µV, nV in the header) is returned in µV (``units = "uV"``:
the gain absorbs the scale, so an ECG recorded in mV reads back in µV too); other channels keep their
own unit. **Channel names** are normalised to 10-20/10-10 spelling (``EEG FP1-REF``, ``EEG FP1-LE``,
``Fc5.``, ``FP1`` → ``Fp1``; ``Fcz.`` → ``FCz``) with the type prefix and common-reference suffix
(``-REF``, ``-LE``, ``-AR``, ``-AVG``) removed; bipolar derivations keep both ends (``EEG A2-A1`` →
``A2-A1``). Old and new temporal names are **kept as recorded** (``T3`` stays ``T3``; ``T7`` stays
``T7``): they are the same electrodes under the 1958 and the 2006 (ACNS) nomenclature (T3=T7, T4=T8,
T5=P7, T6=P8), and renaming silently would hide what the source recorded — pass
``ten_twenty="modern"`` to map T3/T4/T5/T6 to T7/T8/P7/P8 when pooling datasets. Non-EEG channels keep a
clear name (``ECG ECG`` → ``ECG``, ``EEG EKG1-REF`` → ``EKG1``, ``EOG horizontal``) and every channel
has a type (``channel_types``: eeg, ecg, eog, emg, resp, bio, stim, misc); the labels as written are in
``source_channel_names``.

**Mixed sampling rates** (polysomnography: EEG at 100 Hz beside respiration or SpO2 at 1 Hz). A store
recording has one rate, so a file with several becomes one recording per rate (``mixed_rates="split"``,
default), each with its channels' stored integers, losslessly: the first holds the rate of the first
EEG channel and keeps the layout's recording id; the others follow in order of appearance with ids
``recording_id + g · 2**58`` (:func:`~clinseq.timeline.records.rate_group_id`). All of them carry
``session_id`` (the layout's id) and ``rate_group`` (g), and share the start time and the annotations.
``mixed_rates="drop"`` keeps only the first and lists the others in ``dropped_channels``;
``"raise"`` makes such a file an error. With ``resample_hz`` every channel is resampled (mne) to that
rate and the file is one float32 recording.

**EDF+D** (discontinuous): every data record is placed at its onset (its time-keeping annotation), so
the recording spans the file's real time; the gaps between records are missing samples: stored as
−2³¹ in int32 (``adc_invalid``), read back as NaN (``edf_discontinuous`` is true). mne reads such a
file as if its records were contiguous; its annotations keep their real onsets.

**Annotation-only EDF+** files (record duration 0, only an annotations signal, e.g. Sleep-EDF
hypnograms) hold no samples: they are an error of that file, saying so.

**Start time** comes from the EDF header (EDF+'s ``Startdate dd-MMM-yyyy`` when present, else
``dd.mm.yy`` with years 85–99 → 19xx, 00–84 → 20xx, plus ``hh.mm.ss``), naive local time; None when the
EDF+ header marks it anonymised (``Startdate X``) or it is unreadable.

**Errors** (:class:`~clinseq.errors.SourceError`, naming the file): a broken EDF header (a field that is
not a number, a header size that disagrees with the signal count, an uncalibrated signal...), a data
section shorter than the header says (truncated) or longer by whole records, EDF+D files without an
annotations signal (no record onsets) or with overlapping records, annotation-only EDF+ files, a
SHA-256 that disagrees with the dataset's ``SHA256SUMS.txt``, a file mne cannot read, and files whose
path does not follow the chosen layout (these are errors of that file, so ``on_error="skip"`` lists
them and converts the rest).
"""

from __future__ import annotations

import hashlib
import logging
import math
import mmap
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from clinseq.errors import ConfigError, SourceError
from clinseq.io.base import SourceItem
from clinseq.io.edf import (
    EDFHeader,
    parse_edf_header,
    place_records,
    read_edf_samples,
    record_onsets_s,
    unit_scale,
)
from clinseq.io.eeg_channels import normalize_channel
from clinseq.io.eeg_layouts import DATASET_OF_LAYOUT, LAYOUTS, EEGLayout, detect_layout, file_suffix
from clinseq.timeline.records import Recording, rate_group_id

logger = logging.getLogger(__name__)

Layout = Literal["auto", "eegmat", "eegmmidb", "tuh", "flat"]
#: File suffixes read as recordings: EDF/BDF by clinseq's own integer reader, the rest through mne.
EDF_SUFFIXES = (".edf", ".bdf")
MNE_SUFFIXES = (".fif", ".fif.gz", ".vhdr", ".set", ".gdf")
__all__ = ["DATASET_OF_LAYOUT", "EDF_SUFFIXES", "LAYOUTS", "MNE_SUFFIXES", "EEGSource", "list_eeg_files"]


def list_eeg_files(root: Path) -> list[Path]:
    """Every readable EEG file below ``root``, sorted by relative path (FIF split continuations, which
    mne reads with their first file, are left out)."""
    suffixes = EDF_SUFFIXES + MNE_SUFFIXES
    files = [p for p in root.rglob("*") if p.is_file() and file_suffix(p) in suffixes]
    files = [p for p in files if not re.search(r"-\d+\.fif(\.gz)?$", p.name, re.IGNORECASE)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_sha256sums(root: Path) -> dict[str, str]:
    sums = root / "SHA256SUMS.txt"
    if not sums.exists():
        return {}
    out = {}
    for line in sums.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            out[parts[1].strip().lstrip("*").removeprefix("./")] = parts[0].lower()
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _annotation_events(annotations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """EDF+/mne annotations as the recording's events: code ``EDF//<description>`` (e.g.
    ``EDF//Sleep stage W``, ``EDF//T0``), onset and duration in s from the first sample."""
    return [
        {
            "onset_s": a["onset_s"],
            "duration_s": a["duration_s"],
            "code": f"EDF//{a['description']}",
            "text_value": None,
        }
        for a in annotations
    ]


@dataclass
class _Group:
    """The channels of one file at one sampling rate, as a recording needs them."""

    samples: np.ndarray
    rate_hz: float
    labels: list[str]
    names: list[str]
    types: list[str]
    units: list[str]
    gain: list[float]
    baseline: list[float]
    adc_invalid: list[int | None]


class EEGSource:
    """EEG recordings read through mne (and clinseq's own EDF/BDF integer reader).

    Args:
        root: the dataset folder as published.
        layout: ``"auto"`` (detect; recorded in the manifest and as the store's ``dataset``),
            ``"eegmat"``, ``"eegmmidb"``, ``"tuh"`` or ``"flat"`` (see the module docstring).
        resample_hz: resample every recording to this rate (Hz) with mne and store float32 µV;
            None keeps the stored integers at their own rate (lossless).
        patient_regex: ``flat`` layout only: regex searched in each file's path relative to ``root``;
            its group ``patient`` (or first group) is the patient key. Default: the file stem.
        ten_twenty: ``"as_recorded"`` keeps T3/T4/T5/T6 as written; ``"modern"`` renames them
            T7/T8/P7/P8.
        mixed_rates: channels at another rate than the EEG channels: ``"split"`` (default: one
            recording per rate, linked by ``session_id``), ``"drop"`` (listed in ``dropped_channels``)
            or ``"raise"`` (the file is an error).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        layout: Layout | str = "auto",
        resample_hz: float | None = None,
        *,
        patient_regex: str | None = None,
        ten_twenty: Literal["as_recorded", "modern"] = "as_recorded",
        mixed_rates: Literal["split", "drop", "raise"] = "split",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(self.root, "not a folder (expected the EEG dataset folder as published)")
        if layout not in ("auto", *LAYOUTS):
            raise ConfigError(
                f"unknown EEG layout {layout!r}: expected one of {('auto', *LAYOUTS)}; use 'flat' for one "
                "file per recording in any folder structure"
            )
        if resample_hz is not None and not (math.isfinite(float(resample_hz)) and float(resample_hz) > 0):
            raise ConfigError(f"resample_hz must be a positive number of Hz or None, got {resample_hz!r}")
        if ten_twenty not in ("as_recorded", "modern"):
            raise ConfigError(f"ten_twenty must be 'as_recorded' or 'modern', got {ten_twenty!r}")
        if mixed_rates not in ("split", "drop", "raise"):
            raise ConfigError(f"mixed_rates must be 'split', 'drop' or 'raise', got {mixed_rates!r}")
        if patient_regex is not None:
            try:
                compiled = re.compile(patient_regex)
            except re.error as exc:
                raise ConfigError(f"patient_regex {patient_regex!r} is not a valid regex: {exc}") from exc
            if compiled.groups == 0:
                raise ConfigError(
                    f"patient_regex {patient_regex!r} has no group: put the patient key in a group, "
                    r"e.g. r'(?P<patient>sub-\w+)'"
                )
        self.resample_hz = None if resample_hz is None else float(resample_hz)
        self.patient_regex = patient_regex
        self.ten_twenty = ten_twenty
        self.mixed_rates = mixed_rates
        self.layout_requested = layout
        files = list_eeg_files(self.root)
        if not files:
            raise SourceError(
                self.root, f"no EEG files ({', '.join(EDF_SUFFIXES + MNE_SUFFIXES)}) in this folder or below"
            )
        self.layout = detect_layout(self.root, files) if layout == "auto" else layout
        if layout == "auto":
            logger.info("%s: detected the %s layout", self.root, self.layout)
        if patient_regex is not None and self.layout != "flat":
            raise ConfigError(f"patient_regex applies to the flat layout only; the layout is {self.layout}")
        self.dataset = DATASET_OF_LAYOUT[self.layout]
        self.strategy: EEGLayout = LAYOUTS[self.layout](self.root, patient_regex)
        self.n_files_with_sha256 = 0  # set by index(): files listed in SHA256SUMS.txt

    @property
    def attribute_schema(self) -> dict[str, pl.DataType]:
        """Types of this source's own ``recordings`` columns (see the module docstring)."""
        return {**_COMMON_SCHEMA, **self.strategy.schema}

    def __repr__(self) -> str:
        return f"EEGSource({str(self.root)!r}, layout={self.layout!r}, resample_hz={self.resample_hz})"

    # -- index --------------------------------------------------------------------------------------
    def index(self) -> list[SourceItem]:
        files = list_eeg_files(self.root)
        if not files:
            raise SourceError(self.root, "no EEG files in this folder or below")
        sums = _read_sha256sums(self.root)
        items = []
        self.n_files_with_sha256 = 0
        for position, path in enumerate(files):
            rel = path.relative_to(self.root).as_posix()
            try:
                info = self.strategy.parse(path, position)
            except SourceError as exc:  # an error of this file: raised at load, so "skip" can list it
                info = {"error": exc.problem, "sort": (1, rel)}
            info["expected_sha256"] = sums.get(rel)
            self.n_files_with_sha256 += rel in sums
            items.append(SourceItem(key=rel, path=path, info=info))
        self.strategy.check(items)
        items.sort(key=lambda item: item.info["sort"])
        seen: dict[int, str] = {}
        for item in items:
            rid = item.info.get("recording_id")
            if rid is None:
                continue
            if rid in seen:
                item.info["error"] = (
                    f"same recording id {rid} as {seen[rid]} (same subject, session and run/token, e.g. "
                    "another montage folder): keep one of the two"
                )
            else:
                seen[rid] = item.key
        return items

    # -- loading ------------------------------------------------------------------------------------
    def load(self, item: SourceItem) -> Recording | list[Recording]:
        """One recording, or one per sampling rate for a mixed-rate EDF/BDF (``mixed_rates="split"``):
        the first holds the EEG channels' rate and keeps the layout's recording id, the others get
        :func:`~clinseq.timeline.records.rate_group_id`; all share ``session_id``."""
        if item.info.get("error"):
            raise SourceError(item.path, item.info["error"])
        if not item.path.exists():
            raise SourceError(item.path, "listed in the index but missing on disk")
        if file_suffix(item.path) in EDF_SUFFIXES:
            groups, extra = self._load_edf(item)
        else:
            groups, extra = self._load_mne(item)
        start_time = extra.pop("_start_time")
        base_id = item.info["recording_id"]
        out = []
        for g, group in enumerate(groups):
            attributes = {
                **item.info["attributes"],
                "source_channel_names": group.labels,
                "channel_types": group.types,
                **extra,
                "session_id": base_id,
                "rate_group": g,
            }
            out.append(
                Recording(
                    recording_id=rate_group_id(base_id, g, item.path),
                    patient_id=item.info["patient_id"],
                    start_time=start_time,
                    modality="eeg",
                    sampling_rate_hz=group.rate_hz,
                    samples=group.samples,
                    channel_names=group.names,
                    units=group.units,
                    gain=group.gain,
                    baseline=group.baseline,
                    source=item.key,
                    attributes=attributes,
                    adc_invalid=group.adc_invalid,
                    # the file's annotations, once per session (on its first recording)
                    events=_annotation_events(extra["annotations"]) if g == 0 else [],
                )
            )
        return out[0] if len(out) == 1 else out

    def _names(self, labels: list[str]) -> tuple[list[str], list[str]]:
        names, types = [], []
        counts: Counter[str] = Counter()
        for label in labels:
            name, kind = normalize_channel(label, ten_twenty=self.ten_twenty)
            counts[name] += 1
            # Two labels normalising to one name (e.g. "FP1-REF" and "FP1-LE"): number the later ones.
            names.append(name if counts[name] == 1 else f"{name}#{counts[name]}")
            types.append(kind)
        return names, types

    def _load_edf(self, item: SourceItem) -> tuple[list[_Group], dict[str, Any]]:
        path = item.path
        # Memory-mapped: a day-long EDF costs its output array, not a second copy of the file.
        try:
            with path.open("rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else b""
        except OSError as exc:
            raise SourceError(path, f"cannot be read: {exc}") from exc
        try:
            header = parse_edf_header(data, path)
            expected = item.info.get("expected_sha256")
            if expected is not None:
                actual = hashlib.sha256(data).hexdigest()
                if actual != expected:
                    raise SourceError(
                        path,
                        f"SHA-256 {actual} differs from SHA256SUMS.txt ({expected}): corrupted or altered "
                        "copy",
                    )
            signals = [i for i, s in enumerate(header.signals) if not s.is_annotation]
            if not signals:
                raise SourceError(path, "the file holds only annotations, no signals")
            labels = [header.signals[i].label for i in signals]
            names, types = self._names(labels)
            rates = [header.sampling_rate_hz(header.signals[i]) for i in signals]
            rate_groups, dropped = self._rate_groups(path, names, types, rates)
            onsets = record_onsets_s(data, header, path) if header.discontinuous else None
            groups = []
            for members in rate_groups:
                kept = [signals[j] for j in members]
                adc = read_edf_samples(data, header, kept)  # a copy: no view of the map outlives it
                invalid: list[int | None] = [None] * len(kept)
                spr = header.signals[kept[0]].samples_per_record
                if onsets is not None:
                    fill = int(np.iinfo(np.int32).min)
                    try:
                        placed = place_records(adc.astype(np.int32), onsets, spr, rates[members[0]], fill)
                    except ValueError as exc:
                        raise SourceError(path, f"EDF+D data records: {exc}") from exc
                    if placed.shape[1] > adc.shape[1]:  # gaps: int32 with a sentinel (lossless)
                        adc, invalid = placed, [fill] * len(kept)
                units, gain, baseline = [], [], []
                for i in kept:
                    signal = header.signals[i]
                    unit, factor = unit_scale(signal.dimension)
                    units.append(unit)
                    gain.append(signal.gain / factor)
                    baseline.append(signal.baseline)
                groups.append(
                    _Group(
                        samples=adc,
                        rate_hz=rates[members[0]],
                        labels=[labels[j] for j in members],
                        names=[names[j] for j in members],
                        types=[types[j] for j in members],
                        units=units,
                        gain=gain,
                        baseline=baseline,
                        adc_invalid=invalid,
                    )
                )
        finally:
            if isinstance(data, mmap.mmap):
                try:
                    data.close()
                except BufferError:  # a view is still alive in an exception's traceback: GC closes it
                    pass
        annotations = self._mne_check_and_annotations(path, header, len(signals))
        extra = {
            "dropped_channels": [f"{labels[j]} ({rates[j]:g} Hz)" for j in dropped],
            "annotations": annotations,
            "file_format": "bdf" if header.bdf else "edf",
            "edf_discontinuous": header.discontinuous,
            "_start_time": header.start_time,
        }
        extra.update(self.strategy.header_attributes(header.patient))
        if self.resample_hz is None:
            return groups, extra
        return [self._resampled(groups)], extra

    def _resampled(self, groups: list[_Group]) -> _Group:
        """Every group's physical values resampled to ``resample_hz`` (mne), stacked: one float32
        recording (gain 1, baseline 0)."""
        parts = []
        for group in groups:
            physical = group.samples.astype(np.float64)
            physical = (physical - np.asarray(group.baseline)[:, None]) / np.asarray(group.gain)[:, None]
            for row, sentinel in enumerate(group.adc_invalid):
                if sentinel is not None:
                    physical[row, group.samples[row] == sentinel] = np.nan
            parts.append(_mne_resample(physical, group.rate_hz, self.resample_hz))
        n = min(p.shape[1] for p in parts)
        names = [name for group in groups for name in group.names]
        return _Group(
            samples=np.ascontiguousarray(np.concatenate([p[:, :n] for p in parts]), dtype=np.float32),
            rate_hz=float(self.resample_hz),
            labels=[label for group in groups for label in group.labels],
            names=names,
            types=[t for group in groups for t in group.types],
            units=[u for group in groups for u in group.units],
            gain=[1.0] * len(names),
            baseline=[0.0] * len(names),
            adc_invalid=[None] * len(names),
        )

    def _rate_groups(
        self, path: Path, names: list[str], types: list[str], rates: list[float]
    ) -> tuple[list[list[int]], list[int]]:
        """Channel indices per sampling rate — the EEG channels' rate (of the first EEG channel) first,
        the others in order of first appearance — and the indices dropped (``mixed_rates="drop"``)."""
        first_eeg = next((j for j, t in enumerate(types) if t == "eeg"), 0)
        order = [rates[first_eeg]] + [r for r in dict.fromkeys(rates) if r != rates[first_eeg]]
        groups = [[j for j, r in enumerate(rates) if r == rate] for rate in order]
        if len(groups) == 1 or self.mixed_rates == "split" or self.resample_hz is not None:
            return groups, []
        if self.mixed_rates == "raise":
            listed = ", ".join(f"{names[j]} {rates[j]:g} Hz" for g in groups[1:] for j in g)
            raise SourceError(
                path,
                f"channels at another rate than the EEG's {order[0]:g} Hz: {listed} (mixed_rates='split' "
                "keeps them as recordings of their own rate, 'drop' leaves them out and lists them)",
            )
        return groups[:1], sorted(j for g in groups[1:] for j in g)

    def _mne_check_and_annotations(self, path: Path, header: EDFHeader, n_signals: int):
        """Open the file with mne (the reference reader): its view must agree with ours, and it parses
        EDF+ annotations (time-stamped annotation lists)."""
        import mne

        reader = mne.io.read_raw_bdf if header.bdf else mne.io.read_raw_edf
        try:
            raw = reader(path, preload=False, verbose="error")
        except Exception as exc:
            raise SourceError(path, f"mne cannot read it: {type(exc).__name__}: {exc}") from exc
        duration_s = header.n_records * header.record_duration_s
        mne_duration_s = raw.n_times / raw.info["sfreq"]
        if len(raw.ch_names) != n_signals or not math.isclose(mne_duration_s, duration_s, rel_tol=1e-9):
            raise SourceError(
                path,
                f"mne reads {len(raw.ch_names)} signals × {mne_duration_s:g} s, the header says "
                f"{n_signals} × {duration_s:g} s",
            )
        ann = raw.annotations
        return [
            {"onset_s": float(o), "duration_s": float(d), "description": str(t)}
            for o, d, t in zip(ann.onset, ann.duration, ann.description, strict=True)
        ]

    def _load_mne(self, item: SourceItem) -> tuple[list[_Group], dict[str, Any]]:
        import mne

        path = item.path
        try:
            raw = mne.io.read_raw(path, preload=False, verbose="error")
            data = raw.get_data()
        except Exception as exc:
            raise SourceError(path, f"mne cannot read it: {type(exc).__name__}: {exc}") from exc
        labels = list(raw.ch_names)
        names, types = self._names(labels)
        mne_types = raw.get_channel_types()
        types = [t if m == "eeg" else m for t, m in zip(types, mne_types, strict=True)]
        units, factors = [], []
        for ch in raw.info["chs"]:
            unit, factor = _FIFF_UNITS.get(int(ch["unit"]), (f"fiff_unit_{int(ch['unit'])}", 1.0))
            units.append(unit)
            factors.append(factor)
        rate = float(raw.info["sfreq"])
        values = data * np.asarray(factors)[:, None]
        if self.resample_hz is not None:
            values = _mne_resample(values, rate, self.resample_hz)
            rate = self.resample_hz
        meas_date = raw.info["meas_date"]
        shift = raw.first_time if raw.annotations.orig_time is not None else 0.0
        extra = {
            "dropped_channels": [],
            "annotations": [
                # onsets count from orig_time when there is one, else from the first sample already
                {"onset_s": float(o - shift), "duration_s": float(d), "description": str(t)}
                for o, d, t in zip(
                    raw.annotations.onset, raw.annotations.duration, raw.annotations.description, strict=True
                )
            ],  # fmt: skip
            "file_format": file_suffix(path).lstrip("."),
            "edf_discontinuous": False,
            "_start_time": None if meas_date is None else meas_date.replace(tzinfo=None),
        }
        n = len(names)
        group = _Group(
            samples=np.ascontiguousarray(values, dtype=np.float32),
            rate_hz=rate,
            labels=labels,
            names=names,
            types=types,
            units=units,
            gain=[1.0] * n,
            baseline=[0.0] * n,
            adc_invalid=[None] * n,
        )
        return [group], extra

    # -- tables -------------------------------------------------------------------------------------
    def patients(self, recordings: pl.DataFrame) -> pl.DataFrame:
        """One row per patient: ``split`` (TUH's own train/dev/eval folders → train/val/test when
        present, else null: split by patient in ``clinseq.data``), recording count and what the
        source knows (EEGMAT: ``subject-info.csv``; TUH: sex and age at the first recording, from the
        EDF header)."""
        if recordings.height == 0:
            return pl.DataFrame(schema={"patient_id": pl.Int64, "split": pl.String})
        base = (
            recordings.sort("start_time", "recording_id", nulls_last=True)
            .group_by("patient_id", maintain_order=True)
            .agg(pl.len().alias("n_recordings"))
        )
        base = self.strategy.patients(recordings, base)
        first = ["patient_id", "split"]
        return base.select(first + [c for c in base.columns if c not in first]).sort("patient_id")

    def manifest_extra(self) -> dict[str, Any]:
        checksums = {}
        for name in ("subject-info.csv", "SHA256SUMS.txt", "RECORDS"):
            if (self.root / name).exists():
                checksums[name] = _sha256(self.root / name)
        return {
            "options": {
                "layout": self.layout,
                "layout_requested": self.layout_requested,
                "resample_hz": self.resample_hz,
                "ten_twenty": self.ten_twenty,
                "mixed_rates": self.mixed_rates,
                "rate_groups": "one recording per sampling rate, linked by session_id; "
                "recording_id + rate_group * 2**58",
                "patient_regex": self.patient_regex,
                "sample_storage": "float32 uV"
                if self.resample_hz
                else "stored integers (EDF int16, BDF int32)",
            },
            "source_checksums": checksums,
            # files whose SHA-256 was checked against SHA256SUMS.txt (those listed there)
            "sha256sums_checked_files": self.n_files_with_sha256,
        }


_COMMON_SCHEMA: dict[str, pl.DataType] = {
    "source_channel_names": pl.List(pl.String()),
    "channel_types": pl.List(pl.String()),
    "dropped_channels": pl.List(pl.String()),
    "annotations": pl.List(
        pl.Struct({"onset_s": pl.Float64(), "duration_s": pl.Float64(), "description": pl.String()})
    ),
    "file_format": pl.String(),
    "edf_discontinuous": pl.Boolean(),
    "session_id": pl.Int64(),
    "rate_group": pl.Int64(),
}
# FIFF unit codes (mne.io.constants.FIFF.FIFF_UNIT_*) → (unit, factor from SI).
_FIFF_UNITS = {107: ("uV", 1e6), -1: ("NU", 1.0), 0: ("NU", 1.0), 112: ("T", 1.0), 201: ("T/m", 1.0)}


def _mne_resample(values: np.ndarray, rate_hz: float, target_hz: float) -> np.ndarray:
    """``values`` (channels × samples, physical) resampled by mne's ``Raw.resample`` defaults."""
    import mne

    info = mne.create_info(values.shape[0], rate_hz, ch_types="misc", verbose="error")
    raw = mne.io.RawArray(np.asarray(values, dtype=np.float64), info, verbose="error")
    raw.resample(target_hz, verbose="error")
    return np.ascontiguousarray(raw.get_data(), dtype=np.float32)
