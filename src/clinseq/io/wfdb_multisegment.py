"""Multi-segment WFDB records (MIMIC-II/III/IV waveform databases) as one recording per sampling rate.

A multi-segment header (``NAME/N`` on its record line) lists segments laid end to end: each segment is
a single-segment record, or ``~`` (a gap of ``seg_len`` frames with no signal). In the *fixed* layout
every segment has the same signals in the same order (the first segment's); in the *variable* layout
the first segment is a layout header (``NAME_layout``, length 0) that lists every signal of the record,
and each segment holds a subset of them, matched by name.

The record becomes one recording (per number of samples per frame, as for single-segment records):

- samples are the segments end to end (``sig_len`` frames in all); gap segments, and the frames of a
  segment that lacks a signal, are missing samples: they read back as NaN in physical units;
- stored integers are kept when every segment holding a signal agrees on its gain and baseline (the
  usual case); missing samples then hold the storage type's minimum (−32768 for int16, −2³¹ for int32),
  recorded as the channel's ``adc_invalid`` — WFDB's own "invalid" value of a segment's format is mapped
  to it too, so it stays missing. When segments disagree on a signal's calibration, that rate group is
  stored as float32 physical values (gain 1, baseline 0) with NaN where samples are missing, as
  ``wfdb.rdrecord(..., physical=True)`` computes them;
- the output arrays are file-backed (:func:`~clinseq.timeline.records.spool_samples`): each segment is
  read, checked (sizes, checksums) and copied into place, then dropped, so memory holds one segment at
  a time whatever the record's length.

Refused, with the reason: a segment whose header disagrees with the master header (length, rate,
samples per frame of a signal), a variable-layout segment with a signal the layout does not list, and
everything a single-segment record is refused for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from pathlib import Path

import numpy as np
import wfdb

from clinseq.errors import SourceError
from clinseq.io.wfdb_record import INVALID_ADC, RateGroup, _wide, read_groups
from clinseq.timeline.records import spool_samples


@dataclass
class SegmentedHeader:
    """What :func:`~clinseq.io.wfdb_folder.wfdb_recordings` needs of a multi-segment record."""

    sig_name: list[str | None]
    units: list[str | None]
    adc_gain: list[float]
    baseline: list[float]
    fmt: list[str]
    fs: float
    base_date: date | None
    base_time: time | None


@dataclass
class SegmentedGroup(RateGroup):
    gain: list[float] | None = None
    baseline: list[float] | None = None
    adc_invalid: list[int | None] | None = None


def read_multisegment(record_path: Path) -> tuple[SegmentedHeader, list[SegmentedGroup]]:
    """Header and rate groups (file-backed samples) of the multi-segment record at ``record_path``."""
    hea = record_path.with_suffix(".hea")
    folder = record_path.parent
    try:
        master = wfdb.rdheader(str(record_path))
    except Exception as exc:
        raise SourceError(hea, f"unreadable WFDB header: {exc}") from exc
    if not isinstance(master, wfdb.MultiRecord):
        raise SourceError(hea, "not a multi-segment header")
    if master.fs is None or not master.fs > 0:
        raise SourceError(hea, f"unknown sampling rate {master.fs!r}")
    names = list(master.seg_name)
    lengths = [int(n) for n in master.seg_len]
    variable = master.layout == "variable"
    # The signal list: the layout header's (variable layout) or the first real segment's (fixed).
    first = 1 if variable else next((i for i, n in enumerate(names) if n != "~"), None)
    if first is None or (variable and names[0] == "~"):
        raise SourceError(hea, "no segment describes the signals (every segment is a gap)")
    spec_name = names[0] if variable else names[first]
    try:
        spec = wfdb.rdheader(str(folder / spec_name))
    except Exception as exc:
        raise SourceError(folder / f"{spec_name}.hea", f"unreadable WFDB header: {exc}") from exc
    n_sig = int(spec.n_sig)
    sig_name = list(spec.sig_name)
    spf = [int(x or 1) for x in (spec.samps_per_frame or [1] * n_sig)]
    segment_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(master.sig_len) if master.sig_len is not None else int(segment_starts[-1])
    if total != segment_starts[-1]:
        raise SourceError(
            hea, f"signal length {total} differs from the sum of segment lengths {segment_starts[-1]}"
        )
    segment_paths = [
        (k, folder / name)
        for k, name in enumerate(names)
        if name != "~" and lengths[k] > 0 and not (variable and k == 0)
    ]
    # First pass over the segment headers only: formats and calibration of every signal.
    fmts: list[set[str]] = [set() for _ in range(n_sig)]
    calib: list[set[tuple[float, float]]] = [set() for _ in range(n_sig)]
    maps: dict[int, list[int]] = {}
    units: list[str | None] = list(spec.units or [None] * n_sig)
    for k, path in segment_paths:
        try:
            seg = wfdb.rdheader(str(path))
        except Exception as exc:
            raise SourceError(path.with_suffix(".hea"), f"unreadable WFDB header: {exc}") from exc
        where = path.with_suffix(".hea")
        if isinstance(seg, wfdb.MultiRecord):
            raise SourceError(where, "a segment is itself multi-segment")
        if seg.sig_len != lengths[k]:
            raise SourceError(where, f"segment has {seg.sig_len} frames, the master header says {lengths[k]}")
        if seg.fs is not None and not np.isclose(float(seg.fs), float(master.fs)):
            raise SourceError(where, f"segment rate {seg.fs} Hz differs from the record's {master.fs} Hz")
        seg_spf = [int(x or 1) for x in (seg.samps_per_frame or [1] * seg.n_sig)]
        if variable:
            mapping = []
            for name in seg.sig_name:
                if name not in sig_name:
                    raise SourceError(where, f"signal {name!r} is not in the layout header {spec_name}.hea")
                mapping.append(sig_name.index(name))
        else:
            if list(seg.sig_name) != sig_name:
                raise SourceError(where, f"fixed layout: signals {seg.sig_name} differ from {sig_name}")
            mapping = list(range(n_sig))
        for j, c in enumerate(mapping):
            if seg_spf[j] != spf[c]:
                raise SourceError(
                    where,
                    f"signal {sig_name[c]!r} has {seg_spf[j]} samples per frame here, {spf[c]} in "
                    f"{spec_name}",
                )
            fmts[c].add(str(seg.fmt[j]))
            calib[c].add((float(seg.adc_gain[j]), float(seg.baseline[j])))
            if units[c] is None:
                units[c] = seg.units[j]
        maps[k] = mapping
    groups: dict[int, list[int]] = {}
    for c, k in enumerate(spf):
        groups.setdefault(k, []).append(c)
    out: list[SegmentedGroup] = []
    for k, members in groups.items():
        wide = any(_wide(fmts[c]) for c in members)
        dtype = np.dtype(np.int32 if wide else np.int16)
        physical = any(len(calib[c]) > 1 for c in members)
        if physical:
            sentinel = None
            samples = spool_samples((len(members), total * k), np.float32, np.nan)
            gain, baseline = [1.0] * len(members), [0.0] * len(members)
        else:
            sentinel = int(np.iinfo(dtype).min)
            samples = spool_samples((len(members), total * k), dtype, sentinel)
            gain = [next(iter(calib[c]))[0] if calib[c] else 1.0 for c in members]
            baseline = [next(iter(calib[c]))[1] if calib[c] else 0.0 for c in members]
        out.append(SegmentedGroup(k, members, samples, gain=gain, baseline=baseline))
    row_of = {c: (g, row) for g, group in enumerate(out) for row, c in enumerate(group.channels)}
    # Frames each signal has data for, and whether a segment marked some of its samples invalid.
    covered = [0] * n_sig
    has_invalid = [False] * n_sig
    # Second pass: read each segment (checked like any record), copy its samples into place, drop it.
    for k, path in segment_paths:
        seg_record, seg_groups = read_groups(path)
        mapping = maps[k]
        for seg_group in seg_groups:
            for srow, j in enumerate(seg_group.channels):
                c = mapping[j]
                g, row = row_of[c]
                group = out[g]
                start, end = segment_starts[k] * spf[c], segment_starts[k + 1] * spf[c]
                values = seg_group.samples[srow]
                seg_invalid = INVALID_ADC.get(int(seg_record.fmt[j]))
                missing = values == seg_invalid if seg_invalid is not None else None
                covered[c] += int(lengths[k])
                has_invalid[c] |= bool(missing is not None and missing.any())
                if group.samples.dtype == np.float32:
                    phys = (values.astype(np.float64) - float(seg_record.baseline[j])) / float(
                        seg_record.adc_gain[j]
                    )
                    if missing is not None:
                        phys[missing] = np.nan
                    group.samples[row, start:end] = phys.astype(np.float32)
                else:
                    stored = values.astype(group.samples.dtype)
                    if missing is not None:
                        stored[missing] = np.iinfo(group.samples.dtype).min
                    group.samples[row, start:end] = stored
        del seg_groups
    for group in out:
        if group.samples.dtype == np.float32:
            group.adc_invalid = [None] * len(group.channels)
            group.samples.flush()
            continue
        sentinel = int(np.iinfo(group.samples.dtype).min)
        group.adc_invalid = [
            sentinel if covered[c] < total or has_invalid[c] else None for c in group.channels
        ]
        group.samples.flush()
    fmt_out = [sorted(f)[0] if f else "16" for f in fmts]
    header = SegmentedHeader(
        sig_name=sig_name,
        units=units,
        adc_gain=[1.0] * n_sig,  # per group (SegmentedGroup.gain); these are never read
        baseline=[0.0] * n_sig,
        fmt=fmt_out,
        fs=float(master.fs),
        base_date=master.base_date,
        base_time=master.base_time,
    )
    return header, out
