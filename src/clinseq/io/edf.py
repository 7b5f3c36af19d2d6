"""The EDF/BDF codec: parse and check the fixed header, read the stored integers of the data records.

EDF (Kemp et al. 1992; EDF+ 2003) stores 16-bit and BioSemi's BDF 24-bit little-endian integers, one
block of ``samples_per_record`` values per signal in each data record. ``gain = (digital_max -
digital_min) / (physical_max - physical_min)`` and ``baseline = digital_min - physical_min · gain`` make
``(adc - baseline) / gain`` the physical value (mne's calibration). Every problem is a
:class:`~clinseq.errors.SourceError` naming the file.
"""

from __future__ import annotations

import math
import mmap
import re
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

import numpy as np

from clinseq.errors import SourceError

_MICROVOLTS_PER = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "mv": 1e3, "v": 1e6, "nv": 1e-3}


def unit_scale(dimension: str) -> tuple[str, float]:
    """``(unit, factor)``: physical values × factor are in ``unit`` (µV for every voltage)."""
    key = dimension.strip().lower().replace("\x83\xca", "μ")  # mne also accepts a Shift-JIS mu
    if key in _MICROVOLTS_PER:
        return "uV", _MICROVOLTS_PER[key]
    return (dimension.strip() or "NU"), 1.0


@dataclass(frozen=True)
class EDFSignal:
    """One signal of an EDF/BDF header (physical values in ``dimension``)."""

    label: str
    dimension: str
    physical_min: float
    physical_max: float
    digital_min: int
    digital_max: int
    prefiltering: str
    samples_per_record: int

    @property
    def is_annotation(self) -> bool:
        return self.label.strip() in ("EDF Annotations", "BDF Annotations")

    @property
    def gain(self) -> float:
        """ADC units per physical unit (WFDB's convention)."""
        return (self.digital_max - self.digital_min) / (self.physical_max - self.physical_min)

    @property
    def baseline(self) -> float:
        """The ADC value of physical 0."""
        return self.digital_min - self.physical_min * self.gain


@dataclass(frozen=True)
class EDFHeader:
    """The fixed part of an EDF/BDF file (EDF spec, Kemp et al. 1992; EDF+ 2003; BioSemi's BDF)."""

    bdf: bool
    patient: str
    recording: str
    start_time: datetime | None
    header_bytes: int
    reserved: str
    n_records: int
    record_duration_s: float
    signals: tuple[EDFSignal, ...]

    @property
    def discontinuous(self) -> bool:
        """EDF+D / BDF+D: each data record's onset is its first (time-keeping) annotation."""
        return self.reserved.startswith(("EDF+D", "BDF+D"))

    @property
    def bytes_per_sample(self) -> int:
        return 3 if self.bdf else 2

    @property
    def record_bytes(self) -> int:
        return sum(s.samples_per_record for s in self.signals) * self.bytes_per_sample

    def sampling_rate_hz(self, signal: EDFSignal) -> float:
        return signal.samples_per_record / self.record_duration_s


def edf_start_time(recording: str, date_field: str, time_field: str, edf_plus: bool) -> datetime | None:
    tokens = recording.split()
    if edf_plus and len(tokens) >= 2 and tokens[0] == "Startdate":
        if tokens[1] == "X":
            return None  # EDF+ says: start date anonymised
        try:
            day = datetime.strptime(tokens[1].title(), "%d-%b-%Y").date()
        except ValueError:
            day = None
    else:
        day = None
    try:
        if day is None:
            d, m, y = (int(x) for x in date_field.split("."))
            day = date(y + (1900 if y >= 85 else 2000), m, d)
        hh, mm, ss = (int(x) for x in time_field.split("."))
        return datetime(day.year, day.month, day.day, hh, mm, ss)
    except ValueError:
        return None


def parse_edf_header(data: bytes | mmap.mmap, path: Path) -> EDFHeader:
    """Parse and check the header at the start of ``data`` (the file's bytes); raise
    :class:`SourceError` naming ``path`` when it is broken or disagrees with the file's size."""

    def broken(problem: str) -> SourceError:
        return SourceError(path, f"broken EDF header: {problem}")

    size = len(data)
    if size < 256:
        raise broken(f"the file has {size} bytes, fewer than the 256-byte fixed header")
    head = bytes(data[:256])
    version = head[:8]
    bdf = version == b"\xffBIOSEMI"
    if not bdf and version.decode("latin-1").strip() != "0":
        raise broken(f"version field is {version!r}, expected '0' (EDF) or '\\xffBIOSEMI' (BDF)")
    text = head.decode("latin-1")

    def number(value: str, field: str, kind=int):
        try:
            return kind(value.strip())
        except ValueError:
            raise broken(f"{field} is {value.strip()!r}, not a number") from None

    header_bytes = number(text[184:192], "header size (bytes 184-191)")
    reserved = text[192:236].strip()
    n_records = number(text[236:244], "number of data records (bytes 236-243)")
    duration = number(text[244:252], "data record duration (bytes 244-251)", float)
    n_signals = number(text[252:256], "number of signals (bytes 252-255)")
    if n_signals <= 0:
        raise broken(f"number of signals is {n_signals}")
    if header_bytes != 256 * (n_signals + 1):
        raise broken(
            f"header size is {header_bytes} bytes but {n_signals} signals need {256 * (n_signals + 1)}"
        )
    if size < header_bytes:
        raise broken(f"the file has {size} bytes, fewer than its {header_bytes}-byte header")
    body = bytes(data[256:header_bytes]).decode("latin-1")
    widths = (16, 80, 8, 8, 8, 8, 8, 80, 8, 32)
    fields: list[list[str]] = []
    offset = 0
    for width in widths:
        fields.append([body[offset + i * width : offset + (i + 1) * width] for i in range(n_signals)])
        offset += width * n_signals
    labels, _transducer, dims, pmins, pmaxs, dmins, dmaxs, prefilters, spr, _ = fields
    lo, hi = (-(2**23), 2**23 - 1) if bdf else (-(2**15), 2**15 - 1)
    signals = []
    for i in range(n_signals):
        label = labels[i].strip()
        where = f"signal {i + 1} ({label!r})"
        signal = EDFSignal(
            label=label,
            dimension=dims[i].strip(),
            physical_min=number(pmins[i], f"{where} physical minimum", float),
            physical_max=number(pmaxs[i], f"{where} physical maximum", float),
            digital_min=number(dmins[i], f"{where} digital minimum"),
            digital_max=number(dmaxs[i], f"{where} digital maximum"),
            prefiltering=prefilters[i].strip(),
            samples_per_record=number(spr[i], f"{where} samples per data record"),
        )
        if signal.samples_per_record <= 0:
            raise broken(
                f"{where} has {signal.samples_per_record} samples per data record: unknown sampling rate"
            )
        if not signal.is_annotation:
            if not lo <= signal.digital_min < signal.digital_max <= hi:
                raise broken(
                    f"{where} digital range [{signal.digital_min}, {signal.digital_max}] is not an "
                    f"increasing range within [{lo}, {hi}]"
                )
            for name, value in (("minimum", signal.physical_min), ("maximum", signal.physical_max)):
                if not math.isfinite(value):
                    raise broken(f"{where} physical {name} is {value}, not a finite number")
            if signal.physical_min == signal.physical_max:
                raise broken(f"{where} physical minimum equals maximum ({signal.physical_min}): uncalibrated")
        signals.append(signal)
    edf_plus = reserved.startswith(("EDF+", "BDF+"))
    if duration == 0 and edf_plus and all(signal.is_annotation for signal in signals):
        raise SourceError(
            path,
            "annotation-only EDF+ file (data record duration 0 and only an annotations signal): it holds "
            "annotations for another file (e.g. a Sleep-EDF hypnogram), no samples to convert",
        )
    if not math.isfinite(duration) or duration <= 0:
        raise broken(f"data record duration is {duration} s, so the sampling rates are unknown (must be > 0)")
    if reserved.startswith(("EDF+D", "BDF+D")) and not any(signal.is_annotation for signal in signals):
        raise SourceError(
            path,
            f"{reserved[:5]} (discontinuous) file without an annotations signal: the data records' onsets "
            "(time-keeping annotations) are unknown",
        )
    header = EDFHeader(
        bdf=bdf,
        patient=text[8:88].strip(),
        recording=text[88:168].strip(),
        start_time=edf_start_time(
            text[88:168], text[168:176], text[176:184], reserved.startswith(("EDF+", "BDF+"))
        ),
        header_bytes=header_bytes,
        reserved=reserved,
        n_records=n_records,
        record_duration_s=duration,
        signals=tuple(signals),
    )
    data_bytes = size - header_bytes
    in_file = data_bytes // header.record_bytes
    if n_records == -1:
        # EDF allows -1 while recording; accept it only when the data are whole records.
        if data_bytes % header.record_bytes:
            raise SourceError(
                path, f"header gives no record count (-1) and the data ({data_bytes} bytes) are not whole "
                f"{header.record_bytes}-byte records",
            )  # fmt: skip
        header = replace(header, n_records=in_file)
    elif n_records < 0:
        raise broken(f"number of data records is {n_records}")
    elif in_file < n_records:
        raise SourceError(
            path,
            f"truncated: the header says {n_records} data records of {header.record_bytes} bytes "
            f"({header_bytes + n_records * header.record_bytes} bytes with the header), the file has {size}",
        )
    elif in_file > n_records:
        raise SourceError(
            path,
            f"holds {in_file} whole data records but the header says {n_records}: the header's record count "
            "disagrees with the data",
        )
    if header.n_records == 0:
        raise SourceError(path, "the file holds no data records")
    return header


def read_edf_samples(data: bytes | mmap.mmap, header: EDFHeader, signals: list[int]) -> np.ndarray:
    """The stored integers of ``signals`` (indices into ``header.signals``, one rate), channel-major:
    int16 for EDF, int32 for BDF (24-bit, sign-extended)."""
    spr = [s.samples_per_record for s in header.signals]
    per_record = sum(spr)
    starts = np.concatenate([[0], np.cumsum(spr)])
    n = spr[signals[0]]
    if any(spr[i] != n for i in signals):
        raise ValueError("read_edf_samples needs signals with the same samples per record")
    end = header.header_bytes + header.n_records * header.record_bytes
    raw = np.frombuffer(data, dtype=np.uint8, count=end - header.header_bytes, offset=header.header_bytes)
    if header.bdf:
        records = raw.reshape(header.n_records, per_record, 3)
        out = np.empty((len(signals), header.n_records * n), dtype=np.int32)
        for row, i in enumerate(signals):
            b = records[:, starts[i] : starts[i] + n].astype(np.int32)
            value = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
            value -= (value & 0x800000) << 1  # sign-extend 24 → 32 bits
            out[row].reshape(header.n_records, n)[:] = value
        return out
    records = raw.view("<i2").reshape(header.n_records, per_record)
    out = np.empty((len(signals), header.n_records * n), dtype=np.int16)
    for row, i in enumerate(signals):
        out[row].reshape(header.n_records, n)[:] = records[:, starts[i] : starts[i] + n]
    return out


_TIME_KEEPING = re.compile(rb"^([+-]\d+(?:\.\d*)?)\x14\x14")


def record_onsets_s(data: bytes | mmap.mmap, header: EDFHeader, path: Path) -> np.ndarray:
    """Onset (s, from the file's start time) of every data record: its time-keeping annotation (the
    first TAL of the first annotations signal, EDF+ §2.2.4), or ``r × record duration`` without one."""
    annotation = next((i for i, s in enumerate(header.signals) if s.is_annotation), None)
    if annotation is None:
        return np.arange(header.n_records) * header.record_duration_s
    width = header.bytes_per_sample
    start = sum(s.samples_per_record for s in header.signals[:annotation]) * width
    n_bytes = header.signals[annotation].samples_per_record * width
    onsets = np.empty(header.n_records, dtype=np.float64)
    for r in range(header.n_records):
        at = header.header_bytes + r * header.record_bytes + start
        match = _TIME_KEEPING.match(bytes(data[at : at + n_bytes]))
        if match is None:
            raise SourceError(
                path, f"data record {r} has no time-keeping annotation (EDF+ needs one per record)"
            )
        onsets[r] = float(match[1])
    return onsets


def place_records(
    adc: np.ndarray, onsets_s: np.ndarray, samples_per_record: int, rate_hz: float, fill: int
) -> np.ndarray:
    """The records of ``adc`` (channels × n_records·samples_per_record) placed at their onsets on one
    time axis from the first onset, with ``fill`` between them (gaps of an EDF+D file). Onsets are
    rounded to the nearest sample; records that would overlap are an error of the caller's file."""
    n_records = len(onsets_s)
    first = np.rint((onsets_s - onsets_s[0]) * rate_hz).astype(np.int64)
    if np.any(np.diff(first) < samples_per_record):
        raise ValueError("data records overlap or are not in time order")
    total = int(first[-1]) + samples_per_record
    out = np.full((adc.shape[0], total), fill, dtype=adc.dtype)
    blocks = adc.reshape(adc.shape[0], n_records, samples_per_record)
    for r in range(n_records):
        out[:, first[r] : first[r] + samples_per_record] = blocks[:, r]
    return out
