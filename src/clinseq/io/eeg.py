"""EEG files (EDF/BDF, and FIF/BrainVision/EEGLAB/GDF through mne) in their published layouts.

Layouts (``layout=``; ``"auto"`` picks the one every file's path follows and records it):

``eegmat``
    PhysioNet *EEG During Mental Arithmetic Tasks*: ``SubjectNN_1.edf`` (rest) and ``SubjectNN_2.edf``
    (task) beside ``subject-info.csv``. Patient = NN, recording id = 10·NN + k.
``eegmmidb``
    PhysioNet *EEG Motor Movement/Imagery*: ``S001/S001R01.edf`` (subject 1, run 1). Patient = subject,
    recording id = 100·subject + run; the EDF+ annotations (T0 rest, T1, T2) are kept per recording.
``tuh``
    Temple University Hospital EEG corpora. The file name carries the ids,
    ``{subject}_s{session:03d}_t{token:03d}.edf`` (subject = 8 letters since TUEG v2, 8 digits before);
    the folders around it carry what else is known: ``sNNN_YYYY_MM_DD`` (session date), ``NN_tcp_*``
    (montage: ``01_tcp_ar`` average reference, ``02_tcp_le`` linked ears, ``03_tcp_ar_a``...),
    ``train``/``dev``/``eval`` (TUSZ, TUAB splits) and ``normal``/``abnormal`` (TUAB labels), e.g.
    ``edf/000/aaaaaaaa/s001_2015_12_30/01_tcp_ar/aaaaaaaa_s001_t000.edf`` (TUEG v2) or
    ``edf/train/normal/01_tcp_ar/aaaaamye_s001_t000.edf`` (TUAB v3). Patient = the subject id (8 letters
    read as a base-26 number, ``aaaaaaaa`` = 0; 8 digits read as a decimal number), recording id =
    10⁶·patient + 10³·session + token.
``flat``
    One file per recording anywhere below ``root``; patient = the first group of ``patient_regex``
    searched in the path relative to ``root`` (default: the file stem, i.e. one patient per file).
    Digit-only keys are used as the number; other keys become a stable 63-bit hash (``patient_key``
    keeps the text). Recording id = position in the sorted file list.

**Samples.** EDF stores 16-bit and BDF 24-bit integers: they are kept as they are (int16 / int32),
with ``gain = (digital_max - digital_min) / (physical_max - physical_min)`` and
``baseline = digital_min - physical_min · gain`` from the header, so ``(adc - baseline) / gain`` is the
physical value — exactly mne's calibration, losslessly. The integers are read straight from the data
records (after checking the header against the file size, which mne only warns about), mne opens every
file too (annotations, and a cross-check of duration and rate). With ``resample_hz`` the physical
values are resampled with mne (``Raw.resample``, FFT method) and stored as float32 (gain 1, baseline 0).
Other formats are read through ``mne.io.read_raw`` and stored as float32.

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

**Mixed sampling rates.** A store recording has one rate. The rate shared by the EEG channels is
kept; other channels at another rate (SpO2 at 1 Hz, a 200 Hz EMG beside 500 Hz EEG) are dropped and
listed in ``dropped_channels`` (``mixed_rates="drop"``, default) or make the file an error
(``mixed_rates="raise"``). Resampling them would make the ADC copy lossy and splitting them into
another recording would break "one recording = one acquisition"; EEG channels at two different rates
are always an error.

**Start time** comes from the EDF header (EDF+'s ``Startdate dd-MMM-yyyy`` when present, else
``dd.mm.yy`` with years 85–99 → 19xx, 00–84 → 20xx, plus ``hh.mm.ss``), naive local time; None when the
EDF+ header marks it anonymised (``Startdate X``) or it is unreadable.

**Errors** (:class:`~clinseq.utils.SourceError`, naming the file): a broken EDF header (a field that is
not a number, a header size that disagrees with the signal count, an uncalibrated signal...), a data
section shorter than the header says (truncated) or longer by whole records, EDF+D (discontinuous)
files, a SHA-256 that disagrees with the dataset's ``SHA256SUMS.txt``, a file mne cannot read, EEG
channels at different rates, and files whose path does not follow the chosen layout (these are errors
of that file, so ``on_error="skip"`` lists them and converts the rest).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import mmap
import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from clinseq.io.base import SourceItem
from clinseq.timeline.records import Recording
from clinseq.utils import ConfigError, SourceError

logger = logging.getLogger(__name__)

Layout = Literal["auto", "eegmat", "eegmmidb", "tuh", "flat"]
LAYOUTS = ("eegmat", "eegmmidb", "tuh", "flat")
#: Store ``dataset`` name of each layout (what ``clinseq info`` prints).
DATASET_OF_LAYOUT = {"eegmat": "eegmat", "eegmmidb": "eegmmidb", "tuh": "tuh_eeg", "flat": "eeg"}
#: File suffixes read as recordings: EDF/BDF by clinseq's own integer reader, the rest through mne.
EDF_SUFFIXES = (".edf", ".bdf")
MNE_SUFFIXES = (".fif", ".fif.gz", ".vhdr", ".set", ".gdf")

# -- channel names ------------------------------------------------------------------------------------

#: Old (Jasper 1958) → new (ACNS 2006) names of the four temporal/parietal electrodes that were renamed.
OLD_TO_MODERN_10_20 = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

# 10-20 / 10-10 / 10-5 position prefixes, longest first so the regex prefers e.g. AFF over AF over A.
_POSITION_PREFIXES = (
    "AFP", "AFF", "FFT", "FFC", "FTT", "FCC", "TTP", "CCP", "TPP", "CPP", "PPO", "POO",
    "FP", "AF", "FT", "FC", "TP", "CP", "PO", "OI", "NZ",
    "F", "T", "C", "P", "O", "I", "A", "M",
)  # fmt: skip
_ELECTRODE = re.compile(
    r"^(?P<prefix>" + "|".join(_POSITION_PREFIXES) + r")(?P<pos>Z|10|[1-9])?(?P<half>H)?$", re.IGNORECASE
)
# The prefix spellings of the standard (mixed case: Fp, AFp, Nz); every other prefix is upper case.
_PREFIX_SPELLING = {"FP": "Fp", "AFP": "AFp", "NZ": "Nz"}
# EDF label prefixes that state a channel type (EDF+ convention "EEG Fp1", mne's CH_TYPE_MAPPING).
_TYPE_PREFIXES = {
    "EEG": "eeg", "SEEG": "seeg", "ECOG": "ecog", "ECG": "ecg", "EKG": "ecg", "EOG": "eog",
    "EMG": "emg", "RESP": "resp", "SAO2": "bio", "SPO2": "bio", "BIO": "bio", "TEMP": "temp",
    "MISC": "misc", "STIM": "stim",
}  # fmt: skip
# Non-EEG signals recognised by the start of their name (TUH files label ECG as "EEG EKG1-REF").
_NAME_TYPES = (
    ("EKG", "ecg"), ("ECG", "ecg"), ("HEOG", "eog"), ("VEOG", "eog"), ("EOG", "eog"), ("LOC", "eog"),
    ("ROC", "eog"), ("EMG", "emg"), ("CHIN", "emg"), ("PHOTIC", "stim"), ("STATUS", "stim"),
    ("TRIGGER", "stim"), ("RESP", "resp"), ("SPO2", "bio"), ("SAO2", "bio"), ("PULSE", "bio"),
    ("IBI", "misc"), ("BURSTS", "misc"), ("SUPPR", "misc"),
)  # fmt: skip
# Suffixes naming a common reference (TUH: -REF, -LE; others -AR, -AVG, -CAR): dropped from the name.
_REFERENCE_SUFFIXES = {"REF", "LE", "AR", "AVG", "CAR", "AV"}


def canonical_electrode(name: str) -> str | None:
    """The standard spelling of a 10-20/10-10/10-5 electrode name (``FP1`` → ``Fp1``, ``fcz`` →
    ``FCz``, ``AFF1H`` → ``AFF1h``), or None when ``name`` is not one."""
    match = _ELECTRODE.match(name.strip())
    if match is None or (match["pos"] is None and match["prefix"].upper() != "NZ"):
        return None
    if match["prefix"].upper() == "NZ" and (match["pos"] or match["half"]):
        return None
    prefix = match["prefix"].upper()
    pos = (match["pos"] or "").upper().replace("Z", "z")
    return _PREFIX_SPELLING.get(prefix, prefix) + pos + ("h" if match["half"] else "")


def normalize_channel(
    label: str, *, ten_twenty: Literal["as_recorded", "modern"] = "as_recorded"
) -> tuple[str, str]:
    """``(name, type)`` of an EDF/mne channel label; see the module docstring for the rules.

    >>> normalize_channel("EEG FP1-REF"), normalize_channel("Fc5."), normalize_channel("ECG ECG")
    (('Fp1', 'eeg'), ('FC5', 'eeg'), ('ECG', 'ecg'))
    """
    text = " ".join(label.split()).rstrip(".")  # EEGMMIDB pads names with dots: "Fc5.", "T9.."
    prefix_type = None
    head, _, rest = text.partition(" ")
    if rest and head.upper() in _TYPE_PREFIXES:
        prefix_type, prefix, text = _TYPE_PREFIXES[head.upper()], head.upper(), rest.strip()
    if "-" in text:
        left, _, right = text.rpartition("-")
        if right.strip().upper() in _REFERENCE_SUFFIXES and left.strip():
            text = left.strip()
    upper = text.upper()
    kind = next((t for start, t in _NAME_TYPES if upper.startswith(start)), None) or prefix_type or "eeg"

    def electrode(part: str) -> str | None:
        name = canonical_electrode(part)
        if name is not None and ten_twenty == "modern":
            name = OLD_TO_MODERN_10_20.get(name, name)
        return name

    parts = [electrode(p) for p in text.split("-")] if "-" in text else [electrode(text)]
    if all(p is not None for p in parts) and text:
        return "-".join(parts), kind  # type: ignore[arg-type]
    if prefix_type not in (None, "eeg") and not upper.startswith(prefix):
        # "EOG horizontal", "EMG submental": the prefix is the only clue to what the signal is.
        return f"{prefix} {text}", kind
    return text, kind


# -- EDF/BDF header --------------------------------------------------------------------------------------

_MICROVOLTS_PER = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "mv": 1e3, "v": 1e6, "nv": 1e-3}


def _unit_scale(dimension: str) -> tuple[str, float]:
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
    def bytes_per_sample(self) -> int:
        return 3 if self.bdf else 2

    @property
    def record_bytes(self) -> int:
        return sum(s.samples_per_record for s in self.signals) * self.bytes_per_sample

    def sampling_rate_hz(self, signal: EDFSignal) -> float:
        return signal.samples_per_record / self.record_duration_s


def _edf_start_time(recording: str, date_field: str, time_field: str, edf_plus: bool) -> datetime | None:
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
    if not math.isfinite(duration) or duration <= 0:
        raise broken(f"data record duration is {duration} s, so the sampling rates are unknown (must be > 0)")
    if reserved.startswith(("EDF+D", "BDF+D")):
        raise SourceError(path, f"{reserved[:5]} (discontinuous) files are not supported: convert to EDF+C")

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
            if signal.physical_min == signal.physical_max or not (
                math.isfinite(signal.physical_min) and math.isfinite(signal.physical_max)
            ):
                raise broken(f"{where} physical minimum equals maximum ({signal.physical_min}): uncalibrated")
        signals.append(signal)
    header = EDFHeader(
        bdf=bdf,
        patient=text[8:88].strip(),
        recording=text[88:168].strip(),
        start_time=_edf_start_time(
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


# -- layouts -------------------------------------------------------------------------------------------

_EEGMAT_NAME = re.compile(r"^Subject(?P<subject>\d+)_(?P<k>[12])\.edf$")
_EEGMMIDB_NAME = re.compile(r"^S(?P<subject>\d{3})R(?P<run>\d{2})\.edf$")
_TUH_NAME = re.compile(r"^(?P<subject>[a-z]{8}|\d{8})_s(?P<session>\d{3})(?:_t(?P<token>\d{3}))?\.edf$")
_TUH_SESSION_DIR = re.compile(r"^s(?P<session>\d{3})_(?P<y>\d{4})_(?P<m>\d{2})_(?P<d>\d{2})$")
_TUH_MONTAGE_DIR = re.compile(r"^\d{2}_tcp_[a-z_]+$")
_TUH_SPLITS = {"train": "train", "dev": "val", "eval": "test"}
_NAME_PATTERNS = {"eegmat": _EEGMAT_NAME, "eegmmidb": _EEGMMIDB_NAME, "tuh": _TUH_NAME}
_EXPECTED = {
    "eegmat": "SubjectNN_1.edf or SubjectNN_2.edf",
    "eegmmidb": "SNNNRNN.edf (e.g. S001/S001R01.edf)",
    "tuh": "{8-letter or 8-digit subject}_sNNN_tNNN.edf (e.g. aaaaaaaa_s001_t000.edf)",
}
EEGMMIDB_TASKS = {
    1: "baseline_eyes_open",
    2: "baseline_eyes_closed",
    **{r: "execute_left_right_fist" for r in (3, 7, 11)},
    **{r: "imagine_left_right_fist" for r in (4, 8, 12)},
    **{r: "execute_both_fists_feet" for r in (5, 9, 13)},
    **{r: "imagine_both_fists_feet" for r in (6, 10, 14)},
}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".fif.gz" if name.endswith(".fif.gz") else path.suffix.lower()


def list_eeg_files(root: Path) -> list[Path]:
    """Every readable EEG file below ``root``, sorted by relative path (FIF split continuations, which
    mne reads with their first file, are left out)."""
    suffixes = EDF_SUFFIXES + MNE_SUFFIXES
    files = [p for p in root.rglob("*") if p.is_file() and _suffix(p) in suffixes]
    files = [p for p in files if not re.search(r"-\d+\.fif(\.gz)?$", p.name, re.IGNORECASE)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def tuh_subject_number(subject: str) -> int:
    """TUH subject id → int64: 8 digits as a decimal number, 8 letters as base 26 (``aaaaaaaa`` = 0)."""
    if subject.isdigit():
        return int(subject)
    value = 0
    for char in subject:
        value = value * 26 + (ord(char) - ord("a"))
    return value


def stable_patient_number(key: str) -> int:
    """A patient key as int64: the number itself when it is all digits, else a stable 63-bit hash."""
    if key.isdigit() and len(key) <= 18:
        return int(key)
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


def detect_layout(root: Path, files: list[Path]) -> str:
    """The layout every file's name follows (eegmat, eegmmidb, tuh), else ``flat``.

    Raises :class:`SourceError` when some but not all files follow one layout: converting them as
    ``flat`` would silently lose the subject/session structure of the others.
    """
    names = [p.name for p in files]
    for layout, pattern in _NAME_PATTERNS.items():
        matching = [n for n in names if pattern.match(n)]
        if matching and len(matching) == len(names):
            return layout
        if len(matching) > len(names) // 2:
            odd = next(p for p in files if not pattern.match(p.name))
            raise SourceError(
                odd,
                f"{len(matching)} of {len(names)} files under {root} follow the {layout} layout "
                f"({_EXPECTED[layout]}) but this one does not: pass layout={layout!r} (--layout {layout}) "
                "to convert the others and list the odd ones as errors, or layout='flat'",
            )
    return "flat"


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
        mixed_rates: channels at another rate than the EEG channels: ``"drop"`` (listed in
            ``dropped_channels``) or ``"raise"`` (the file is an error).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        layout: Layout | str = "auto",
        resample_hz: float | None = None,
        *,
        patient_regex: str | None = None,
        ten_twenty: Literal["as_recorded", "modern"] = "as_recorded",
        mixed_rates: Literal["drop", "raise"] = "drop",
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
        if mixed_rates not in ("drop", "raise"):
            raise ConfigError(f"mixed_rates must be 'drop' or 'raise', got {mixed_rates!r}")
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
        self.n_files_with_sha256 = 0  # set by index(): files listed in SHA256SUMS.txt

    @property
    def attribute_schema(self) -> dict[str, pl.DataType]:
        """Types of this source's own ``recordings`` columns (see the module docstring)."""
        return {**_COMMON_SCHEMA, **_LAYOUT_SCHEMA[self.layout]}

    def __repr__(self) -> str:
        return f"EEGSource({str(self.root)!r}, layout={self.layout!r}, resample_hz={self.resample_hz})"

    # -- index --------------------------------------------------------------------------------------
    def index(self) -> list[SourceItem]:
        files = list_eeg_files(self.root)
        if not files:
            raise SourceError(self.root, "no EEG files in this folder or below")
        sums = _read_sha256sums(self.root)
        parse = {
            "eegmat": self._parse_eegmat,
            "eegmmidb": self._parse_eegmmidb,
            "tuh": self._parse_tuh,
            "flat": self._parse_flat,
        }[self.layout]
        subjects = self._eegmat_subjects() if self.layout == "eegmat" else {}
        items = []
        self.n_files_with_sha256 = 0
        for position, path in enumerate(files):
            rel = path.relative_to(self.root).as_posix()
            try:
                info = parse(path, position, subjects)
            except SourceError as exc:  # an error of this file: raised at load, so "skip" can list it
                info = {"error": exc.problem, "sort": (1, rel)}
            info["expected_sha256"] = sums.get(rel)
            self.n_files_with_sha256 += rel in sums
            items.append(SourceItem(key=rel, path=path, info=info))
        if self.layout == "tuh":
            _tuh_check_schemes(items)
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

    def _layout_error(self, path: Path) -> SourceError:
        return SourceError(
            path, f"file name does not follow the {self.layout} layout: expected {_EXPECTED[self.layout]}"
        )

    def _eegmat_subjects(self) -> dict[int, dict[str, Any]]:
        path = self.root / "subject-info.csv"
        if not path.exists():
            return {}
        subjects = {}
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            need = {"Subject", "Age", "Gender", "Recording year", "Number of subtractions", "Count quality"}
            missing = need - set(reader.fieldnames or [])
            if missing:
                raise SourceError(path, f"missing columns {sorted(missing)}")
            for line, row in enumerate(reader, start=2):
                match = re.fullmatch(r"Subject(\d+)", row["Subject"].strip())
                try:
                    if match is None:
                        raise ValueError(f"Subject {row['Subject']!r} is not SubjectNN")
                    subjects[int(match[1])] = {
                        "age": int(row["Age"]),
                        "sex": row["Gender"].strip() or None,
                        "recording_year": int(row["Recording year"]),
                        "n_subtractions": float(row["Number of subtractions"]),
                        "count_quality": int(row["Count quality"]),
                    }
                except ValueError as exc:
                    raise SourceError(path, f"line {line}: unparsable value ({exc})") from exc
        return subjects

    def _parse_eegmat(self, path: Path, position: int, subjects: dict) -> dict[str, Any]:
        match = _EEGMAT_NAME.match(path.name)
        if match is None:
            raise self._layout_error(path)
        subject, k = int(match["subject"]), int(match["k"])
        info = subjects.get(subject, {})
        return {
            "recording_id": 10 * subject + k,
            "patient_id": subject,
            "sort": (0, subject, k),
            "attributes": {
                "subject": subject,
                "condition": "rest" if k == 1 else "task",
                "count_quality": info.get("count_quality"),
                "n_subtractions": info.get("n_subtractions"),
            },
        }

    def _parse_eegmmidb(self, path: Path, position: int, subjects: dict) -> dict[str, Any]:
        match = _EEGMMIDB_NAME.match(path.name)
        if match is None:
            raise self._layout_error(path)
        subject, run = int(match["subject"]), int(match["run"])
        return {
            "recording_id": 100 * subject + run,
            "patient_id": subject,
            "sort": (0, subject, run),
            "attributes": {"subject": subject, "run": run, "task": EEGMMIDB_TASKS.get(run)},
        }

    def _parse_tuh(self, path: Path, position: int, subjects: dict) -> dict[str, Any]:
        match = _TUH_NAME.match(path.name)
        if match is None:
            raise self._layout_error(path)
        subject, session, token = match["subject"], int(match["session"]), int(match["token"] or 0)
        folders = path.relative_to(self.root).parts[:-1]
        session_date, montage, split, label = None, None, None, None
        for folder in folders:
            if (m := _TUH_SESSION_DIR.match(folder)) is not None:
                if int(m["session"]) != session:
                    raise SourceError(
                        path, f"session folder {folder} disagrees with the file name's s{session:03d}"
                    )
                try:
                    session_date = date(int(m["y"]), int(m["m"]), int(m["d"]))
                except ValueError as exc:
                    raise SourceError(path, f"session folder {folder}: {exc}") from exc
            elif _TUH_MONTAGE_DIR.match(folder):
                montage = folder
            elif folder in _TUH_SPLITS:
                split = folder
            elif folder in ("normal", "abnormal"):
                label = folder
        patient = tuh_subject_number(subject)
        if session >= 1000 or token >= 1000:
            raise SourceError(path, "session and token must be below 1000 (three digits)")
        return {
            "recording_id": patient * 10**6 + session * 1000 + token,
            "patient_id": patient,
            "sort": (0, patient, session, token, path.relative_to(self.root).as_posix()),
            "attributes": {
                "subject": subject,
                "session": session,
                "token": token,
                "session_date": session_date,
                "montage": montage,
                "tuh_split": split,
                "tuh_label": label,
            },
        }

    def _parse_flat(self, path: Path, position: int, subjects: dict) -> dict[str, Any]:
        rel = path.relative_to(self.root).as_posix()
        if self.patient_regex is None:
            key = path.name[: -len(_suffix(path))]
        else:
            match = re.search(self.patient_regex, rel)
            if match is None:
                raise SourceError(path, f"patient_regex {self.patient_regex!r} does not match {rel!r}")
            key = match["patient"] if "patient" in match.re.groupindex else match[1]
        return {
            "recording_id": position,
            "patient_id": stable_patient_number(key),
            "sort": (0, rel),
            "attributes": {"patient_key": key},
        }

    # -- loading ------------------------------------------------------------------------------------
    def load(self, item: SourceItem) -> Recording:
        if item.info.get("error"):
            raise SourceError(item.path, item.info["error"])
        if not item.path.exists():
            raise SourceError(item.path, "listed in the index but missing on disk")
        if _suffix(item.path) in EDF_SUFFIXES:
            loaded = self._load_edf(item)
        else:
            loaded = self._load_mne(item)
        samples, names, types, units, gain, baseline, extra = loaded
        start_time, rate = extra.pop("_start_time"), extra.pop("_sampling_rate_hz")
        attributes = {
            **item.info["attributes"],
            "source_channel_names": extra.pop("source_channel_names"),
            "channel_types": types,
            **extra,
        }
        return Recording(
            recording_id=item.info["recording_id"],
            patient_id=item.info["patient_id"],
            start_time=start_time,
            modality="eeg",
            sampling_rate_hz=rate,
            samples=samples,
            channel_names=names,
            units=units,
            gain=gain,
            baseline=baseline,
            source=item.key,
            attributes=attributes,
        )

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

    def _load_edf(self, item: SourceItem):
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
            keep, dropped = self._choose_rate(path, names, types, rates)
            rate = rates[keep[0]]
            kept = [signals[j] for j in keep]
            adc = read_edf_samples(data, header, kept)  # a copy: no view of the map outlives it
        finally:
            if isinstance(data, mmap.mmap):
                try:
                    data.close()
                except BufferError:  # a view is still alive in an exception's traceback: GC closes it
                    pass
        units, gain, baseline = [], [], []
        for i in kept:
            signal = header.signals[i]
            unit, factor = _unit_scale(signal.dimension)
            units.append(unit)
            gain.append(signal.gain / factor)
            baseline.append(signal.baseline)
        annotations = self._mne_check_and_annotations(path, header, rate, len(signals))
        extra = {
            "source_channel_names": [labels[j] for j in keep],
            "dropped_channels": [f"{labels[j]} ({rates[j]:g} Hz)" for j in dropped],
            "annotations": annotations,
            "file_format": "bdf" if header.bdf else "edf",
            "_start_time": header.start_time,
        }
        if self.layout == "tuh":
            extra.update(_tuh_demographics(header.patient))
        names = [names[j] for j in keep]
        types = [types[j] for j in keep]
        if self.resample_hz is None:
            extra["_sampling_rate_hz"] = rate
            return adc, names, types, units, gain, baseline, extra
        physical = (adc - np.asarray(baseline)[:, None]) / np.asarray(gain)[:, None]
        resampled = _mne_resample(physical, rate, self.resample_hz)
        extra["_sampling_rate_hz"] = self.resample_hz
        ones = [1.0] * len(names)
        return resampled, names, types, units, ones, [0.0] * len(names), extra

    def _choose_rate(self, path: Path, names: list[str], types: list[str], rates: list[float]):
        """Indices of the channels to keep (those at the EEG channels' rate) and of those dropped."""
        eeg = [r for r, t in zip(rates, types, strict=True) if t == "eeg"] or rates
        if len(set(eeg)) > 1:
            by_rate = sorted(set(eeg))
            raise SourceError(
                path,
                f"EEG channels at different sampling rates ({', '.join(f'{r:g}' for r in by_rate)} Hz): one "
                "recording needs one rate; resample the file or split it by rate before converting",
            )
        rate = eeg[0]
        keep = [j for j, r in enumerate(rates) if r == rate]
        dropped = [j for j, r in enumerate(rates) if r != rate]
        if dropped and self.mixed_rates == "raise":
            listed = ", ".join(f"{names[j]} {rates[j]:g} Hz" for j in dropped)
            raise SourceError(
                path,
                f"channels at another rate than the EEG's {rate:g} Hz: {listed} (mixed_rates='drop' leaves "
                "them out and lists them in dropped_channels)",
            )
        return keep, dropped

    def _mne_check_and_annotations(self, path: Path, header: EDFHeader, rate: float, n_signals: int):
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

    def _load_mne(self, item: SourceItem):
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
            "source_channel_names": labels,
            "dropped_channels": [],
            "annotations": [
                # onsets count from orig_time when there is one, else from the first sample already
                {"onset_s": float(o - shift), "duration_s": float(d), "description": str(t)}
                for o, d, t in zip(
                    raw.annotations.onset, raw.annotations.duration, raw.annotations.description, strict=True
                )
            ],  # fmt: skip
            "file_format": _suffix(path).lstrip("."),
            "_start_time": None if meas_date is None else meas_date.replace(tzinfo=None),
            "_sampling_rate_hz": rate,
        }
        n = len(names)
        return (
            np.ascontiguousarray(values, dtype=np.float32),
            names,
            types,
            units,
            [1.0] * n,
            [0.0] * n,
            extra,
        )

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
        if self.layout == "tuh":
            splits = recordings.group_by("patient_id").agg(pl.col("tuh_split").drop_nulls().unique())
            mixed = splits.filter(pl.col("tuh_split").list.len() > 1)["patient_id"].to_list()
            if mixed:
                raise SourceError(self.root, f"patients in several of train/dev/eval: {mixed[:10]}")
            demo = (
                recordings.sort("session", "token")
                .group_by("patient_id", maintain_order=True)
                .agg(
                    pl.col("subject").first(),
                    pl.col("tuh_split")
                    .drop_nulls()
                    .first()
                    .replace_strict(_TUH_SPLITS, default=None)
                    .alias("split"),
                    pl.col("edf_sex").drop_nulls().first().alias("sex"),
                    pl.col("edf_age").drop_nulls().first().alias("age_at_first_recording"),
                )
            )
            return (
                base.join(demo, on="patient_id")
                .select("patient_id", "split", "subject", "sex", "age_at_first_recording", "n_recordings")
                .sort("patient_id")
            )
        base = base.with_columns(pl.lit(None, dtype=pl.String).alias("split"))
        if self.layout == "eegmat":
            subjects = self._eegmat_subjects()
            static = pl.DataFrame(
                [{"patient_id": pid, **info} for pid, info in subjects.items()],
                schema={
                    "patient_id": pl.Int64, "age": pl.Int64, "sex": pl.String, "recording_year": pl.Int64,
                    "n_subtractions": pl.Float64, "count_quality": pl.Int64,
                },
            )  # fmt: skip
            base = base.join(static, on="patient_id", how="left")
        elif self.layout == "flat":
            keys = recordings.group_by("patient_id").agg(pl.col("patient_key").first())
            base = base.join(keys, on="patient_id", how="left")
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
}
_LAYOUT_SCHEMA: dict[str, dict[str, pl.DataType]] = {
    "eegmat": {
        "subject": pl.Int64(),
        "condition": pl.String(),
        "count_quality": pl.Int64(),
        "n_subtractions": pl.Float64(),
    },
    "eegmmidb": {"subject": pl.Int64(), "run": pl.Int64(), "task": pl.String()},
    "tuh": {
        "subject": pl.String(),
        "session": pl.Int64(),
        "token": pl.Int64(),
        "session_date": pl.Date(),
        "montage": pl.String(),
        "tuh_split": pl.String(),
        "tuh_label": pl.String(),
        "edf_sex": pl.String(),
        "edf_age": pl.Float64(),
    },
    "flat": {"patient_key": pl.String()},
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


def _tuh_demographics(patient_field: str) -> dict[str, Any]:
    """TUH writes ``{subject} {M|F|X} {birthdate} {subject} Age:{years}`` into the EDF patient field."""
    tokens = patient_field.split()
    sex = tokens[1] if len(tokens) > 1 and tokens[1] in ("M", "F") else None
    age = re.search(r"Age:(\d+(?:\.\d+)?)", patient_field)
    return {"edf_sex": sex, "edf_age": float(age[1]) if age else None}


def _tuh_check_schemes(items: list[SourceItem]) -> None:
    """Letter (TUEG ≥ v2) and digit (v1) subject ids in one source are two numbering schemes: mixing
    them would count patients twice."""
    schemes = {item.info["attributes"]["subject"].isdigit() for item in items if "attributes" in item.info}
    if len(schemes) > 1:
        example = next(
            i for i in items if "attributes" in i.info and i.info["attributes"]["subject"].isdigit()
        )
        raise SourceError(
            example.path,
            "this folder mixes TUH v1 (8-digit) and v2 (8-letter) subject ids: convert one release at a time",
        )
