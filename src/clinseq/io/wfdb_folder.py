"""Any folder of WFDB records (a PhysioNet database as published), and MIMIC-IV-ECG.

Records are listed from the ``RECORDS`` file when there is one (PhysioNet's own listing), else by a
recursive ``*.hea`` scan. The patient key comes from a function of the record name, from a CSV
column, or — by default — each record is its own patient.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from clinseq.errors import SourceError
from clinseq.io.base import SourceItem
from clinseq.io.wfdb_annotations import read_annotations
from clinseq.io.wfdb_multisegment import read_multisegment
from clinseq.io.wfdb_record import (
    INVALID_ADC,
    channel_names,
    is_multisegment,
    normalize_unit,
    read_groups,
    record_start_time,
    segment_names,
)
from clinseq.timeline.records import Recording, rate_group_id

#: Types of the ``recordings`` columns every WFDB record gives (see :func:`wfdb_recordings`).
WFDB_ATTRIBUTES: dict[str, pl.DataType] = {
    "annotators": pl.List(pl.String()),
    "unread_annotation_files": pl.List(pl.String()),
    "session_id": pl.Int64(),
    "rate_group": pl.Int64(),
}


def wfdb_recordings(
    record_path: Path,
    *,
    recording_id: int,
    patient_id: int,
    source: str,
    modality: str = "ecg",
    start_time: datetime | None = None,
    attributes: dict | None = None,
    annotators: Sequence[str] | None = None,
) -> list[Recording]:
    """Read a WFDB record (single- or multi-segment) into one :class:`Recording` per sampling rate.

    A record whose signals all have one sample per frame gives one recording with id
    ``recording_id``. A multi-frequency record gives one recording per number of samples per frame
    (rate ``fs × samples per frame``), the first (the group of the header's first signal) with id
    ``recording_id`` and group ``g`` with :func:`~clinseq.timeline.records.rate_group_id`; every one carries
    ``session_id = recording_id`` and ``rate_group = g`` in its attributes.

    Annotation files (``annotators``: extensions; None finds them, see
    :mod:`clinseq.io.wfdb_annotations`) become the events of the first recording; every recording
    lists the annotators read (``annotators``) and the files that could not be read
    (``unread_annotation_files``).
    """
    hea = record_path.with_suffix(".hea")
    if is_multisegment(hea):
        record, groups = read_multisegment(record_path)
    else:
        record, groups = read_groups(record_path)
    gain_all = [float(g) for g in record.adc_gain]
    if any(g == 0 for g in gain_all):
        raise SourceError(hea, "a signal has ADC gain 0 (uncalibrated)")
    signal_files = list(getattr(record, "file_name", None) or [])
    events, read, unread = read_annotations(record_path, float(record.fs), signal_files, annotators)
    attributes = {**(attributes or {}), "annotators": read, "unread_annotation_files": unread}
    names_all = channel_names(list(record.sig_name))
    units_all = [normalize_unit(u) for u in record.units]
    out = []
    for g, group in enumerate(groups):
        samples = group.samples
        chans = group.channels
        invalid = getattr(group, "adc_invalid", None)
        if invalid is None:
            sentinels = [INVALID_ADC.get(int(record.fmt[c])) for c in chans]
            invalid = [
                s if s is not None and bool((samples[row] == s).any()) else None
                for row, s in enumerate(sentinels)
            ]
        gains = getattr(group, "gain", None) or [gain_all[c] for c in chans]
        baselines = getattr(group, "baseline", None) or [float(record.baseline[c]) for c in chans]
        out.append(
            Recording(
                recording_id=rate_group_id(recording_id, g, hea),
                patient_id=patient_id,
                start_time=start_time if start_time is not None else record_start_time(record),
                modality=modality,
                sampling_rate_hz=float(record.fs) * group.samples_per_frame,
                samples=samples,
                channel_names=[names_all[c] for c in chans],
                units=[units_all[c] for c in chans],
                gain=gains,
                baseline=baselines,
                source=source,
                attributes={**attributes, "session_id": int(recording_id), "rate_group": g},
                adc_invalid=invalid,
                events=events if g == 0 else [],
            )
        )
    return out


def _default_patients(recordings: pl.DataFrame) -> pl.DataFrame:
    return (
        recordings.group_by("patient_id")
        .agg(pl.len().alias("n_recordings"))
        .with_columns(pl.lit(None, dtype=pl.String).alias("split"))
        .select("patient_id", "split", "n_recordings")
        .sort("patient_id")
    )


def list_wfdb_records(root: Path) -> list[str]:
    """Record names relative to ``root`` (``RECORDS`` file, else every ``*.hea`` except the segments and
    layout headers of multi-segment records), sorted."""
    records_file = root / "RECORDS"
    if records_file.exists():
        try:
            text = records_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            line = records_file.read_bytes()[: exc.start].count(b"\n") + 1
            raise SourceError(
                records_file,
                f"line {line}: byte {exc.object[exc.start]:#x} is not UTF-8 text; RECORDS lists "
                "record names, one per line",
            ) from None
        names = [line.strip() for line in text.splitlines() if line.strip()]
        # RECORDS may list sub-folders (databases split by patient); expand those.
        out: list[str] = []
        for name in names:
            sub = root / name
            if sub.is_dir():
                out.extend(str(Path(name) / r) for r in list_wfdb_records(sub))
            else:
                out.append(name)
        return sorted(out)
    headers = sorted(root.rglob("*.hea"))
    # The segments (and layout header) of a multi-segment record are part of it, not records.
    parts: set[Path] = set()
    for hea in headers:
        if is_multisegment(hea):
            parts.update(hea.parent / f"{name}.hea" for name in segment_names(hea))
    return sorted(str(p.relative_to(root).with_suffix("")) for p in headers if p not in parts)


class WFDBSource:
    """A folder of WFDB records.

    Args:
        root: the folder.
        patient_id_fn: ``record name → patient id``; default: each record is its own patient, numbered
            by sorted position (document your own rule when records share patients).
        modality: ``"ecg"`` by default (what the records hold; used by samplers and recipes).
        annotators: annotation file extensions to read as events (``["atr"]``); None (default) reads
            every annotation file beside each record, ``[]`` none (see :mod:`clinseq.io.wfdb_annotations`).
    """

    dataset = "wfdb"
    attribute_schema = {**WFDB_ATTRIBUTES, "record_name": pl.String()}

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        patient_id_fn: Callable[[str], int] | None = None,
        modality: str = "ecg",
        annotators: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(self.root, "not a folder")
        self.patient_id_fn = patient_id_fn
        self.modality = modality
        self.annotators = None if annotators is None else list(annotators)

    def index(self) -> list[SourceItem]:
        names = list_wfdb_records(self.root)
        if not names:
            raise SourceError(self.root, "no WFDB records (no RECORDS file and no *.hea files)")
        items = []
        for position, name in enumerate(names):
            patient = self.patient_id_fn(name) if self.patient_id_fn else position
            items.append(
                SourceItem(
                    key=name,
                    path=self.root / (name + ".hea"),
                    info={"recording_id": position, "patient_id": int(patient)},
                )
            )
        return items

    def load(self, item: SourceItem) -> list[Recording]:
        return wfdb_recordings(
            self.root / item.key,
            recording_id=item.info["recording_id"],
            patient_id=item.info["patient_id"],
            source=item.key,
            modality=self.modality,
            attributes={"record_name": Path(item.key).name},
            annotators=self.annotators,
        )

    def patients(self, recordings: pl.DataFrame) -> pl.DataFrame:
        return _default_patients(recordings)

    def manifest_extra(self) -> dict[str, Any]:
        return {"options": {"modality": self.modality, "annotators": self.annotators or "all found"}}


# files/p1000/p10000032/s40689238/40689238
_MIMIC_ECG_PATH = re.compile(r"files/p\d{4}/p(?P<subject>\d+)/s(?P<study>\d+)/(?P<record>\d+)$")


class MIMICIVECGSource:
    """MIMIC-IV-ECG v1.0 (``record_list.csv`` + ``files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN``).

    ``subject_id`` is the patient key (shared with MIMIC-IV), ``study_id`` the recording id and
    ``ecg_time`` the start time. Without ``record_list.csv`` the ids are parsed from the paths (no
    times). ``machine_measurements.csv``, when present, adds the machine's report text.
    """

    dataset = "mimic-iv-ecg"
    attribute_schema = {**WFDB_ATTRIBUTES, "study_id": pl.Int64(), "report": pl.String()}

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(self.root, "not a folder")
        self.record_list = self.root / "record_list.csv"

    def _reports(self) -> dict[int, str]:
        path = self.root / "machine_measurements.csv"
        if not path.exists():
            return {}
        reports = {}
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                parts = [row[k].strip() for k in sorted(row) if k.startswith("report_") and row[k]]
                reports[int(row["study_id"])] = "; ".join(parts)
        return reports

    def index(self) -> list[SourceItem]:
        reports = self._reports()
        items = []
        if self.record_list.exists():
            with self.record_list.open(newline="") as f:
                reader = csv.DictReader(f)
                missing = {"subject_id", "study_id", "path"} - set(reader.fieldnames or [])
                if missing:
                    raise SourceError(self.record_list, f"missing columns {sorted(missing)}")
                for line, row in enumerate(reader, start=2):
                    try:
                        subject, study = int(row["subject_id"]), int(row["study_id"])
                        time = datetime.fromisoformat(row["ecg_time"]) if row.get("ecg_time") else None
                    except ValueError as exc:
                        raise SourceError(self.record_list, f"line {line}: unparsable value ({exc})") from exc
                    items.append(self._item(row["path"], subject, study, time, reports))
        else:
            for hea in sorted(self.root.glob("files/p*/p*/s*/*.hea")):
                rel = str(hea.relative_to(self.root).with_suffix(""))
                match = _MIMIC_ECG_PATH.search(rel)
                if match is None:
                    raise SourceError(hea, "path is not files/pNNNN/p<subject_id>/s<study_id>/<study_id>")
                subject, study = int(match["subject"]), int(match["study"])
                items.append(self._item(rel, subject, study, None, reports))
        if not items:
            raise SourceError(self.root, "no MIMIC-IV-ECG records (record_list.csv or files/p*/p*/s*/*.hea)")
        return sorted(items, key=lambda item: item.info["recording_id"])

    def _item(
        self, rel: str, subject: int, study: int, time: datetime | None, reports: dict[int, str]
    ) -> SourceItem:
        return SourceItem(
            key=rel,
            path=self.root / (rel + ".hea"),
            info={
                "recording_id": study,
                "patient_id": subject,
                "start_time": time,
                "attributes": {"study_id": study, "report": reports.get(study)},
            },
        )

    def load(self, item: SourceItem) -> list[Recording]:
        record_path = self.root / item.key
        if not record_path.with_suffix(".hea").exists():
            raise SourceError(
                record_path.with_suffix(".hea"),
                f"listed in {self.record_list.name} (study_id={item.info['recording_id']}) "
                "but missing on disk",
            )
        return wfdb_recordings(
            record_path,
            recording_id=item.info["recording_id"],
            patient_id=item.info["patient_id"],
            source=item.key,
            start_time=item.info["start_time"],
            attributes=item.info["attributes"],
        )

    def patients(self, recordings: pl.DataFrame) -> pl.DataFrame:
        return _default_patients(recordings)

    def manifest_extra(self) -> dict[str, Any]:
        return {}
