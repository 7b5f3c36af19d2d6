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

from clinseq.timeline.records import Recording
from clinseq.utils import SourceError

# Bytes per sample of each WFDB storage format (format 212 packs two 12-bit samples in 3 bytes...).
BYTES_PER_SAMPLE = {8: 1, 16: 2, 61: 2, 80: 1, 160: 2, 212: 1.5, 310: 4 / 3, 311: 4 / 3, 24: 3, 32: 4}
_INT16_FORMATS = {8, 16, 61, 80, 160, 212, 310, 311}
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
}

# WFDB unit spellings → clinseq's (ECG in mV).
_UNIT_ALIASES = {"mv": "mV", "uv": "uV", "µv": "uV", "v": "V", "nu": "NU", "": "NU"}


def normalize_unit(unit: str | None) -> str:
    """``mV``/``uV``/``V`` spelled one way; other units (``mmHg``, ``NU``) kept as written."""
    if unit is None:
        return "NU"
    return _UNIT_ALIASES.get(unit.strip().lower(), unit.strip())


def _validate_header(hea: Path, header) -> None:
    """The checks every header must pass (on wfdb's parse or on :func:`quick_header`'s)."""
    if not header.n_sig:
        raise SourceError(hea, "header lists no signals")
    if header.sig_len is None or header.sig_len <= 0:
        raise SourceError(hea, "header gives no signal length (samples per signal)")
    if header.fs is None or not math.isfinite(header.fs) or header.fs <= 0:
        raise SourceError(hea, f"unknown sampling rate {header.fs!r}")
    if len(header.sig_name) != header.n_sig or len(header.file_name) != header.n_sig:
        raise SourceError(hea, f"header says {header.n_sig} signals but describes {len(header.sig_name)}")
    if any((spf or 1) != 1 for spf in (header.samps_per_frame or [])):
        raise SourceError(hea, "multi-frequency record (samples per frame != 1) is not supported")


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
        raise SourceError(hea, "multi-segment WFDB records are not supported; convert each segment")
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


def check_signal_files(record_path: Path, header: wfdb.Record) -> None:
    """Each signal file's size must be what the header implies (lead count × length × format)."""
    files: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name):
        files.setdefault(name, []).append(i)
    for name, signals in files.items():
        path = record_path.parent / name
        fmt = int(header.fmt[signals[0]])
        if fmt not in BYTES_PER_SAMPLE:
            raise SourceError(path, f"WFDB format {fmt} is not supported")
        if not path.exists():
            raise SourceError(path, f"signal file named in {record_path.name}.hea is missing")
        offset = int((header.byte_offset or [0] * header.n_sig)[signals[0]] or 0)
        expected = offset + math.ceil(len(signals) * header.sig_len * BYTES_PER_SAMPLE[fmt])
        actual = path.stat().st_size
        what = f"{len(signals)} signals × {header.sig_len} samples in format {fmt}"
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


def read_adc(record_path: Path) -> tuple[wfdb.Record, np.ndarray]:
    """Header and samples ``(n_channels, n_samples)`` as int16 (or int32 for wider formats)."""
    hea = record_path.with_suffix(".hea")
    if not hea.exists():
        raise SourceError(hea, "header file is missing")
    header = quick_header(hea)
    if header is None:
        header = read_header(record_path)  # wfdb's parse: raises with its own message, or accepts
    else:
        _validate_header(hea, header)
    check_signal_files(record_path, header)
    wide = any(int(f) not in _INT16_FORMATS for f in header.fmt)
    try:
        record = wfdb.rdrecord(str(record_path), physical=False, return_res=32 if wide else 16)
    except Exception as exc:
        raise SourceError(record_path.with_suffix(".dat"), f"unreadable signal data: {exc}") from exc
    _validate_header(hea, record)
    seen = (record.n_sig, record.sig_len, list(record.file_name), [str(f) for f in record.fmt])
    if seen != (header.n_sig, header.sig_len, list(header.file_name), [str(f) for f in header.fmt]):
        raise SourceError(hea, f"wfdb reads this header differently from clinseq's check: {seen}")
    d_signal = record.d_signal
    if d_signal is None or d_signal.shape != (header.sig_len, header.n_sig):
        shape = None if d_signal is None else d_signal.shape
        raise SourceError(
            record_path.with_suffix(".hea"),
            f"data shape {shape} disagrees with the header "
            f"({header.sig_len} samples × {header.n_sig} signals)",
        )
    if record.checksum is not None:
        # 16-bit checksum of each signal, as in the header (catches corrupted bytes of the right size).
        actual = (d_signal.astype(np.int64).sum(axis=0) & 0xFFFF).tolist()
        for name, want, got in zip(record.sig_name, record.checksum, actual, strict=False):
            if want is not None and int(want) & 0xFFFF != got:
                raise SourceError(
                    record_path.with_suffix(".dat"),
                    f"checksum mismatch in signal {name!r}: header {want}, data {got} (corrupted data)",
                )
    samples = np.ascontiguousarray(d_signal.T).astype(np.int32 if wide else np.int16, copy=False)
    return record, samples


def record_start_time(record: wfdb.Record) -> datetime | None:
    if record.base_date is not None and record.base_time is not None:
        return datetime.combine(record.base_date, record.base_time)
    return None


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
    """Read a WFDB record into a :class:`Recording` (ADC samples, gain and baseline per channel)."""
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
        channel_names=[str(n) for n in record.sig_name],
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
