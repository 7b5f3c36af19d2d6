"""Read one WFDB record as ADC integers, after checking its header against its signal files.

``wfdb.rdrecord`` pads or silently misreads a truncated ``.dat`` and a header whose lead count or
length disagrees with the data; every such case is caught here and reported with the file and the
problem. Sample values are the stored integers (``physical = (adc - baseline) / gain``, WFDB's
convention), so keeping them is lossless.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import wfdb

from clinseq.errors import SourceError
from clinseq.timeline.records import Recording

# Bytes per sample of each WFDB storage format (format 212 packs two 12-bit samples in 3 bytes...).
BYTES_PER_SAMPLE = {8: 1, 16: 2, 61: 2, 80: 1, 160: 2, 212: 1.5, 310: 4 / 3, 311: 4 / 3, 24: 3, 32: 4}
_INT16_FORMATS = {8, 16, 61, 80, 160, 212, 310, 311, 508, 516}
# The stored value WFDB reserves for "no sample" in each format (it reads back as NaN).
INVALID_ADC = {
    16: -32768,
    61: -32768,
    80: -128,
    160: -32768,
    212: -2048,
    310: -512,
    311: -512,
    24: -(2**23),
    32: -(2**31),
    508: -128,
    516: -32768,
    524: -(2**23),
}

# WFDB unit spellings → clinseq's (ECG in mV).
_UNIT_ALIASES = {"mv": "mV", "uv": "uV", "µv": "uV", "v": "V", "nu": "NU", "": "NU"}


def normalize_unit(unit: str | None) -> str:
    """``mV``/``uV``/``V`` spelled one way; other units (``mmHg``, ``NU``) kept as written."""
    if unit is None:
        return "NU"
    return _UNIT_ALIASES.get(unit.strip().lower(), unit.strip())


#: FLAC-compressed formats (wfdb decodes them with soundfile): no fixed bytes per sample.
FLAC_FORMATS = {508, 516, 524}


def _validate_header(hea: Path, header) -> None:
    """The checks every header must pass (on wfdb's parse or on :func:`quick_header`'s). A missing
    signal length is allowed: it is inferred from the signal files' size, as wfdb does."""
    check_calibration_text(hea)  # first: wfdb's parse of a bad value is a default or None
    if not header.n_sig:
        raise SourceError(hea, "header lists no signals")
    if header.sig_len is not None and header.sig_len <= 0:
        raise SourceError(hea, f"header gives signal length {header.sig_len} (samples per signal)")
    if header.fs is None or not math.isfinite(header.fs) or header.fs <= 0:
        raise SourceError(hea, f"unknown sampling rate {header.fs!r}")
    if len(header.sig_name) != header.n_sig or len(header.file_name) != header.n_sig:
        raise SourceError(hea, f"header says {header.n_sig} signals but describes {len(header.sig_name)}")
    if any((spf or 1) < 1 for spf in (header.samps_per_frame or [])):
        raise SourceError(hea, "a signal has fewer than 1 sample per frame")


_GAIN_FIELD = re.compile(r"^(?P<gain>[^(/]*)(?:\((?P<baseline>[^)]*)\))?(?:/(?P<units>.*))?$")


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def check_calibration_text(hea: Path) -> None:
    """The header's sampling rate, ADC gains and baselines as written: each must be a finite number
    (wfdb replaces a gain it cannot parse, ``abc``, by its default 200, and accepts ``nan`` / ``inf``;
    the values would come out wrong with no error). Raises :class:`SourceError` naming the header, the
    signal and the field."""
    try:
        lines = [line.strip() for line in hea.read_text(errors="replace").splitlines()]
    except OSError:
        return  # the header's own reader reports it
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        return
    record = lines[0].split()
    if len(record) >= 3 and "/" not in record[0]:  # single-segment: name n_sig fs[/counter[(base)]]
        fs_text = record[2].split("/")[0]
        if not (_finite(fs_text) and float(fs_text) > 0):
            raise SourceError(hea, f"record line: sampling rate {fs_text!r} is not a finite number > 0")
    elif len(record) >= 3:  # multi-segment: the segment lines follow, no signal lines
        return
    n_sig = int(record[1]) if len(record) >= 2 and record[1].isdigit() else 0
    for i, line in enumerate(lines[1 : 1 + n_sig]):
        tokens = line.split()
        if len(tokens) < 3:
            continue  # no gain given: WFDB's default applies
        field = _GAIN_FIELD.match(tokens[2])
        name = " ".join(tokens[8:]) if len(tokens) > 8 else f"#{i}"
        where = f"signal {i} ({name})"
        if field is None:
            raise SourceError(hea, f"{where}: ADC gain field {tokens[2]!r} is not gain[(baseline)][/units]")
        if not _finite(field["gain"]):
            raise SourceError(hea, f"{where}: ADC gain {field['gain']!r} is not a finite number")
        baseline = field["baseline"]
        if baseline is not None and not _finite(baseline):
            raise SourceError(hea, f"{where}: baseline {baseline!r} is not a finite number")


def read_header(record_path: Path) -> wfdb.Record:
    """Parse ``<record_path>.hea`` with wfdb; raise :class:`SourceError` naming the header when it is bad."""
    hea = record_path.with_suffix(".hea")
    if not hea.exists():
        raise SourceError(hea, "header file is missing")
    try:
        header = wfdb.rdheader(str(record_path))
    except Exception as exc:
        raise SourceError(hea, f"unreadable WFDB header: {exc}") from exc
    if isinstance(header, wfdb.MultiRecord):
        raise SourceError(hea, "multi-segment record: read it with wfdb_recordings")
    _validate_header(hea, header)
    return header


# The fields of a header that the size checks need (WFDB header(5) syntax). Anything these do not match
# goes to wfdb's own parser, which then gives the error message.
_RECORD_LINE = re.compile(
    r"^(?P<name>[^\s/]+)(?P<segments>/\d+)?\s+(?P<n_sig>\d+)"
    r"(?:\s+(?P<fs>[0-9.eE+-]+)(?:/[0-9.eE+-]+(?:\([0-9.eE+-]+\))?)?(?:\s+(?P<sig_len>\d+))?)?(?:\s|$)"
)
_SIGNAL_LINE = re.compile(
    r"^(?P<file>\S+)\s+(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::\d+)?(?:\+(?P<offset>\d+))?(?:\s+(?P<rest>.*))?$"
)


@dataclass
class QuickHeader:
    """The few header fields the file-size checks need, parsed without wfdb (see :func:`quick_header`)."""

    n_sig: int
    fs: float | None
    sig_len: int | None
    file_name: list[str]
    fmt: list[str]
    byte_offset: list[int]
    samps_per_frame: list[int]
    sig_name: list[str]


def quick_header(hea: Path) -> QuickHeader | None:
    """Parse a single-segment header's record and signal lines, or None when it is anything else.

    wfdb's header parser costs ~30 ms (a pandas lookup per field), and reading a record with
    ``wfdb.rdrecord`` parses the header again: checking the files first with this parse halves the
    time a conversion spends per record. wfdb's parse stays the authority (compared after reading).
    """
    try:
        lines = [line.strip() for line in hea.read_text(errors="replace").splitlines()]
    except OSError:
        return None
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        return None
    record = _RECORD_LINE.match(lines[0])
    if record is None or record["segments"]:
        return None
    n_sig = int(record["n_sig"])
    signals = [_SIGNAL_LINE.match(line) for line in lines[1 : 1 + n_sig]]
    if len(signals) != n_sig or any(m is None for m in signals):
        return None
    try:
        fs = float(record["fs"]) if record["fs"] else None
    except ValueError:
        return None
    return QuickHeader(
        n_sig=n_sig,
        fs=fs,
        sig_len=int(record["sig_len"]) if record["sig_len"] else None,
        file_name=[m["file"] for m in signals],
        fmt=[m["fmt"] for m in signals],
        byte_offset=[int(m["offset"] or 0) for m in signals],
        samps_per_frame=[int(m["spf"] or 1) for m in signals],
        sig_name=[m["file"] for m in signals],  # only counted here; names come from wfdb
    )


def check_signal_files(record_path: Path, header) -> int | None:
    """Each signal file's size must be what the header implies (frame samples × length × format).

    Returns the signal length: the header's, or — when the header gives none — inferred from the file
    size as wfdb does (``(size - byte offset) / (bytes per sample × samples per frame)``); None when only
    FLAC files (formats 508/516/524, no fixed size per sample) could tell it (wfdb then reads it).
    """
    files: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name):
        files.setdefault(name, []).append(i)
    spf = [int(x or 1) for x in (header.samps_per_frame or [1] * header.n_sig)]
    sig_len = header.sig_len
    for name, signals in files.items():
        path = record_path.parent / name
        fmt = int(header.fmt[signals[0]])
        if fmt not in BYTES_PER_SAMPLE and fmt not in FLAC_FORMATS:
            raise SourceError(path, f"WFDB format {fmt} is not supported")
        if not path.exists():
            raise SourceError(path, f"signal file named in {record_path.name}.hea is missing")
        if fmt in FLAC_FORMATS:
            continue  # compressed: wfdb's decoder checks the stream; the shape is compared after reading
        offset = int((header.byte_offset or [0] * header.n_sig)[signals[0]] or 0)
        frame = sum(spf[i] for i in signals)
        actual = path.stat().st_size
        if sig_len is None:
            sig_len = int((actual - offset) / (BYTES_PER_SAMPLE[fmt] * frame))
            if sig_len <= 0:
                raise SourceError(path, "header gives no signal length and the signal file holds no frame")
        expected = offset + math.ceil(frame * sig_len * BYTES_PER_SAMPLE[fmt])
        what = f"{len(signals)} signals × {sig_len} samples in format {fmt}"
        if frame != len(signals):
            what = f"{len(signals)} signals, {frame} samples per frame × {sig_len} frames in format {fmt}"
        if actual < expected:
            raise SourceError(
                path, f"truncated: the header ({what}) implies {expected} bytes, the file has {actual}"
            )
        # Allow a few bytes of trailing padding (format 212/310 round up to whole words), no more.
        if actual > expected + 4:
            raise SourceError(
                path,
                f"holds {actual} bytes but the header ({what}) implies {expected}: the header's lead count "
                "or length disagrees with the data",
            )
    return sig_len


@dataclass
class RateGroup:
    """The signals of a record that share one number of samples per frame (one sampling rate)."""

    samples_per_frame: int
    #: indices of the signals in the header
    channels: list[int]
    #: ``(len(channels), n_frames × samples_per_frame)`` stored integers (int16, or int32 when wide)
    samples: np.ndarray


def _wide(fmts) -> bool:
    return any(int(f) not in _INT16_FORMATS for f in fmts)


def read_groups(record_path: Path) -> tuple[wfdb.Record, list[RateGroup]]:
    """Header and stored integers of a single-segment record, one :class:`RateGroup` per number of
    samples per frame (in order of each group's first signal).

    Skew is applied as wfdb applies it (the last ``skew`` samples of a skewed signal are WFDB's invalid
    value); the header checksums are compared with the samples as *stored* (before the skew).
    """
    hea = record_path.with_suffix(".hea")
    if not hea.exists():
        raise SourceError(hea, "header file is missing")
    header = quick_header(hea)
    if header is None:
        header = read_header(record_path)  # wfdb's parse: raises with its own message, or accepts
    else:
        _validate_header(hea, header)
    sig_len = check_signal_files(record_path, header)
    spf = [int(x or 1) for x in (header.samps_per_frame or [1] * header.n_sig)]
    wide = _wide(header.fmt)
    smooth = all(x == 1 for x in spf)
    res = 32 if wide else 16
    try:
        record = wfdb.rdrecord(str(record_path), physical=False, return_res=res, smooth_frames=smooth)
    except Exception as exc:
        raise SourceError(record_path.with_suffix(".dat"), f"unreadable signal data: {exc}") from exc
    _validate_header(hea, record)
    seen = (record.n_sig, list(record.file_name), [str(f) for f in record.fmt])
    if seen != (header.n_sig, list(header.file_name), [str(f) for f in header.fmt]) or (
        sig_len is not None and record.sig_len != sig_len
    ):
        raise SourceError(hea, f"wfdb reads this header differently from clinseq's check: {seen}")
    sig_len = int(record.sig_len)
    channels = _channel_arrays(record, smooth)
    for c, x in enumerate(channels):
        if x.shape != (sig_len * spf[c],):
            raise SourceError(
                hea, f"signal {c} has {x.shape[0]} samples, the header implies {sig_len} × {spf[c]}"
            )
    if record.checksum is not None:
        stored = channels
        if any(k for k in (record.skew or []) if k):
            try:
                unskewed = wfdb.rdrecord(
                    str(record_path), physical=False, return_res=res, smooth_frames=smooth, ignore_skew=True
                )
            except Exception as exc:
                raise SourceError(record_path.with_suffix(".dat"), f"unreadable signal data: {exc}") from exc
            stored = _channel_arrays(unskewed, smooth)
        # 16-bit checksum of each signal as stored (catches corrupted bytes of the right size).
        for name, want, x in zip(record.sig_name, record.checksum, stored, strict=False):
            got = int(x.astype(np.int64).sum()) & 0xFFFF
            if want is not None and int(want) & 0xFFFF != got:
                raise SourceError(
                    record_path.with_suffix(".dat"),
                    f"checksum mismatch in signal {name!r}: header {want}, data {got} (corrupted data)",
                )
    dtype = np.int32 if wide else np.int16
    groups: dict[int, list[int]] = {}
    for c, k in enumerate(spf):
        groups.setdefault(k, []).append(c)
    out = []
    for k, members in groups.items():
        samples = np.empty((len(members), sig_len * k), dtype=dtype)
        for row, c in enumerate(members):
            samples[row] = channels[c]
        out.append(RateGroup(k, members, samples))
    return record, out


def _channel_arrays(record: wfdb.Record, smooth: bool) -> list[np.ndarray]:
    if smooth:
        d = record.d_signal
        if d is None:
            return []
        return [d[:, c] for c in range(d.shape[1])]
    return list(record.e_d_signal or [])


def read_adc(record_path: Path) -> tuple[wfdb.Record, np.ndarray]:
    """Header and samples ``(n_channels, n_samples)`` of a single-rate record, int16 (or int32 for
    wider formats); a record whose signals are at several rates is an error here (see
    :func:`wfdb_recordings`)."""
    record, groups = read_groups(record_path)
    if len(groups) != 1 or groups[0].samples_per_frame != 1:
        raise SourceError(
            record_path.with_suffix(".hea"),
            "multi-frequency record (signals at several samples per frame): read it with wfdb_recordings",
        )
    return record, groups[0].samples


def record_start_time(record: wfdb.Record) -> datetime | None:
    if record.base_date is not None and record.base_time is not None:
        return datetime.combine(record.base_date, record.base_time)
    return None


def channel_names(names: list[str | None]) -> list[str]:
    """The header's signal descriptions as unique names: a signal without a description is named
    ``signal_<i>`` (its 0-based position in the header); a repeated name gets ``#2``, ``#3``..."""
    out: list[str] = []
    counts: dict[str, int] = {}
    for i, name in enumerate(names):
        text = f"signal_{i}" if name is None or not str(name).strip() else str(name).strip()
        counts[text] = counts.get(text, 0) + 1
        out.append(text if counts[text] == 1 else f"{text}#{counts[text]}")
    return out


def is_multisegment(hea: Path) -> bool:
    """True when the header's record line names segments (``NAME/N``)."""
    try:
        with hea.open("r", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    match = _RECORD_LINE.match(line)
                    return bool(match and match["segments"])
    except OSError:
        return False
    return False


def segment_names(hea: Path) -> list[str]:
    """The segment names a multi-segment header lists (gaps ``~`` left out)."""
    lines = [line.strip() for line in hea.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    match = _RECORD_LINE.match(lines[0]) if lines else None
    if match is None or not match["segments"]:
        return []
    n = int(match["segments"][1:])
    return [line.split()[0] for line in lines[1 : 1 + n] if line.split()[0] != "~"]


def wfdb_recording(
    record_path: Path,
    *,
    recording_id: int,
    patient_id: int,
    source: str,
    modality: str = "ecg",
    start_time: datetime | None = None,
    attributes: dict | None = None,
) -> Recording:
    """Read a single-rate, single-segment WFDB record into a :class:`Recording` (ADC samples, gain and
    baseline per channel)."""
    record, samples = read_adc(record_path)
    gain = [float(g) for g in record.adc_gain]
    if any(g == 0 for g in gain):
        raise SourceError(record_path.with_suffix(".hea"), "a signal has ADC gain 0 (uncalibrated)")
    return Recording(
        recording_id=recording_id,
        patient_id=patient_id,
        start_time=start_time if start_time is not None else record_start_time(record),
        modality=modality,
        sampling_rate_hz=float(record.fs),
        samples=samples,
        channel_names=channel_names(list(record.sig_name)),
        units=[normalize_unit(u) for u in record.units],
        gain=gain,
        baseline=[float(b) for b in record.baseline],
        source=source,
        attributes=attributes or {},
        adc_invalid=[
            sentinel if sentinel is not None and bool((samples[c] == sentinel).any()) else None
            for c, sentinel in enumerate(INVALID_ADC.get(int(f)) for f in record.fmt)
        ],
    )
