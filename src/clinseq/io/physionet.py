"""The PhysioNet datasets ``clinseq download`` fetches: one spec each (the one place they are written).

A spec says where the dataset lives on PhysioNet (``files/<slug>/<version>/``), whether it needs
credentials (and the access its data card asks for), which ``clinseq convert`` source reads it
(a key of :data:`clinseq.io.sources.SOURCES`), its subsets (top-level folders), and how ``--records N``
picks a consistent part: the first N units of its index table (ECGs for PTB-XL and MIMIC-IV-ECG,
subjects for the EEG sets), the files those units need, and every index table filtered to the same
units (:class:`Pick`). Files at the top level of a dataset (tables, licence, README) are always fetched.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clinseq.errors import ClinseqError

__all__ = ["DATASETS", "PhysioNetDataset", "Pick", "parse_sha256sums"]

PHYSIONET_URL = "https://physionet.org"


def parse_sha256sums(text: str, where: str = "SHA256SUMS.txt") -> dict[str, str]:
    """``relative path → sha256 hex`` from a ``sha256sum`` listing (``<hex> <path>`` or ``<hex> *<path>``)."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            raise ClinseqError(f"{where} line {number}: not '<sha256> <path>': {line[:80]!r}")
        path = parts[1].lstrip("*").removeprefix("./")
        if path.startswith("/") or ".." in Path(path).parts:
            raise ClinseqError(f"{where} line {number}: path outside the dataset: {path!r}")
        sums[path] = parts[0].lower()
    return sums


@dataclass
class Pick:
    """A consistent part of a dataset: the files its units need and its index tables filtered to them.

    ``files``: relative paths to fetch (besides the top-level files); ``tables``: relative path of an
    index table → its filtered text (the original is kept under ``.clinseq-download/originals/``);
    ``units``: how many units (ECGs, subjects) were picked; ``universe``: every file of the units' kind
    (the files not picked among them are left out; None: every file inside a folder).
    """

    files: set[str] = field(default_factory=set)
    universe: set[str] | None = None
    tables: dict[str, str] = field(default_factory=dict)
    units: int = 0


#: ``(dest, n, subsets) → Pick``; reads the index tables already fetched into ``dest``.
Picker = Callable[[Path, int, tuple[str, ...]], Pick]


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _rows_text(columns: list[str], rows: Iterable[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _filter_table(dest: Path, name: str, column: str, keep: set[str], pick: Pick) -> None:
    """Filter the top-level table ``name`` (when fetched) to the rows whose ``column`` is in ``keep``."""
    path = dest / name
    if not path.exists():
        return
    columns, rows = _read_rows(path)
    if column in columns:
        pick.tables[name] = _rows_text(columns, (r for r in rows if r[column] in keep))


def _filter_records(dest: Path, pick: Pick) -> None:
    """PhysioNet's ``RECORDS`` listing (when fetched), filtered to the picked records: a line stays when
    it names a picked file, a picked WFDB record (``<line>.hea``) or a folder holding picked files."""
    path = dest / "RECORDS"
    if not path.exists():
        return
    folders = {str(parent) for f in pick.files for parent in Path(f).parents}
    kept = [
        line
        for line in (raw.strip() for raw in path.read_text().splitlines())
        if line and (line in pick.files or f"{line}.hea" in pick.files or line.rstrip("/") in folders)
    ]
    pick.tables["RECORDS"] = "".join(f"{line}\n" for line in kept)


def _need(dest: Path, name: str) -> Path:
    path = dest / name
    if not path.exists():
        raise ClinseqError(f"{path}: the index table --records reads was not fetched")
    return path


def _pick_ptbxl(dest: Path, n: int, subsets: tuple[str, ...]) -> Pick:
    columns, rows = _read_rows(_need(dest, "ptbxl_database.csv"))
    rows = sorted(rows, key=lambda r: int(r["ecg_id"]))[:n]
    pick = Pick(units=len(rows))
    rate_column = {"records100": "filename_lr", "records500": "filename_hr"}
    for row in rows:
        for subset in subsets:
            record = row[rate_column[subset]]
            pick.files.update({f"{record}.hea", f"{record}.dat"})
    pick.tables["ptbxl_database.csv"] = _rows_text(columns, rows)
    _filter_records(dest, pick)
    return pick


def _pick_mimic_ecg(dest: Path, n: int, subsets: tuple[str, ...]) -> Pick:
    columns, rows = _read_rows(_need(dest, "record_list.csv"))
    rows = rows[:n]
    pick = Pick(units=len(rows))
    for row in rows:
        pick.files.update({f"{row['path']}.hea", f"{row['path']}.dat"})
    pick.tables["record_list.csv"] = _rows_text(columns, rows)
    studies = {row["study_id"] for row in rows}
    for name in ("machine_measurements.csv", "waveform_note_links.csv"):
        _filter_table(dest, name, "study_id", studies, pick)
    _filter_records(dest, pick)
    return pick


def _pick_eegmat(dest: Path, n: int, subsets: tuple[str, ...], sums: dict[str, str]) -> Pick:
    subjects = sorted({m[1] for f in sums if (m := re.fullmatch(r"(Subject\d+)_\d\.edf", f))})[:n]
    pick = Pick(units=len(subjects))
    pick.universe = {f for f in sums if re.fullmatch(r"Subject\d+_\d\.edf", f)}
    pick.files = {f for f in pick.universe if f.split("_")[0] in subjects}
    _filter_table(dest, "subject-info.csv", "Subject", set(subjects), pick)
    _filter_records(dest, pick)
    return pick


def _pick_eegmmidb(dest: Path, n: int, subsets: tuple[str, ...], sums: dict[str, str]) -> Pick:
    subjects = sorted({f.split("/")[0] for f in sums if re.fullmatch(r"S\d{3}/.+", f)})[:n]
    pick = Pick(units=len(subjects))
    pick.files = {f for f in sums if f.split("/")[0] in subjects}
    _filter_records(dest, pick)
    return pick


@dataclass(frozen=True)
class PhysioNetDataset:
    """One dataset ``clinseq download`` knows.

    Attributes:
        name: the CLI's name (``clinseq download NAME``).
        slug, version: PhysioNet's ``files/<slug>/<version>/``.
        title: the dataset's name on PhysioNet.
        credentialed: whether PhysioNet asks for a login (user + password) to fetch it.
        access: what access it needs, in its data card's words (said when the server refuses).
        source: the ``clinseq convert`` source that reads the downloaded folder (a key of
            :data:`~clinseq.io.sources.SOURCES`) and its options.
        subsets: the top-level folders one may restrict the download to (``--subset``).
        records_unit: what ``--records N`` counts (None: the dataset has no record choice).
        index_tables: the top-level tables ``--records`` reads before picking.
    """

    name: str
    slug: str
    version: str
    title: str
    credentialed: bool
    access: str
    source: str
    convert_options: tuple[str, ...] = ()
    subsets: tuple[str, ...] = ()
    records_unit: str | None = None
    index_tables: tuple[str, ...] = ()
    picker: Callable[..., Pick] | None = None
    picker_needs_sums: bool = False

    def pick(self, dest: Path, n: int, subsets: tuple[str, ...], sums: dict[str, str]) -> Pick:
        """The first ``n`` units of the dataset (see :class:`Pick`)."""
        if self.picker is None:
            raise ClinseqError(f"--records does not apply to {self.name}: it has no per-record choice")
        if self.picker_needs_sums:
            return self.picker(dest, n, subsets, sums)
        return self.picker(dest, n, subsets)

    def convert_command(self, dest: str, out: str = "stores/<name>") -> str:
        """The ``clinseq convert`` line that reads the downloaded folder."""
        return " ".join(["clinseq convert", self.source, dest, out, *self.convert_options])


_OPEN_ODC_BY = "open access (Open Data Commons Attribution License v1.0): no login is needed"
_CREDENTIALED = (
    "PhysioNet credentialed access: a credentialed PhysioNet account (CITI 'Data or Specimens Only "
    "Research' training) and the signed PhysioNet Credentialed Health Data Use Agreement 1.5.0 for "
    "this project"
)

_ECG_TABLES = ("record_list.csv", "machine_measurements.csv", "waveform_note_links.csv", "RECORDS")

#: Every dataset ``clinseq download`` fetches, by its CLI name.
DATASETS: dict[str, PhysioNetDataset] = {
    d.name: d
    for d in (
        PhysioNetDataset(
            "ptbxl", "ptb-xl", "1.0.3", "PTB-XL, a large publicly available electrocardiography dataset",
            credentialed=False, access="open access (Creative Commons Attribution 4.0)", source="ptbxl",
            subsets=("records100", "records500"), records_unit="ECGs (ptbxl_database.csv rows by ecg_id)",
            index_tables=("ptbxl_database.csv", "RECORDS"), picker=_pick_ptbxl,
        ),
        PhysioNetDataset(
            "mimic-iv-ecg", "mimic-iv-ecg", "1.0",
            "MIMIC-IV-ECG: Diagnostic Electrocardiogram Matched Subset",
            credentialed=False,
            access="open access on PhysioNet (its licence is stated on the project page); linking it to "
            "MIMIC-IV needs MIMIC-IV's credentialed access",
            source="mimic-iv-ecg", records_unit="ECGs (record_list.csv rows)",
            index_tables=_ECG_TABLES,
            picker=_pick_mimic_ecg,
        ),
        PhysioNetDataset(
            "mimic-iv-ecg-demo", "mimic-iv-ecg-demo", "0.1", "MIMIC-IV-ECG Demo",
            credentialed=False, access="open access (Open Database License v1.0)", source="mimic-iv-ecg",
            records_unit="ECGs (record_list.csv rows)",
            index_tables=_ECG_TABLES,
            picker=_pick_mimic_ecg,
        ),
        PhysioNetDataset(
            "eegmat", "eegmat", "1.0.0", "EEG During Mental Arithmetic Tasks",
            credentialed=False, access=_OPEN_ODC_BY, source="eeg", convert_options=("--layout", "eegmat"),
            records_unit="subjects (both recordings each)", index_tables=("subject-info.csv", "RECORDS"),
            picker=_pick_eegmat, picker_needs_sums=True,
        ),
        PhysioNetDataset(
            "eegmmidb", "eegmmidb", "1.0.0", "EEG Motor Movement/Imagery Dataset",
            credentialed=False, access=_OPEN_ODC_BY, source="eeg", convert_options=("--layout", "eegmmidb"),
            records_unit="subjects (S001/, S002/...: all 14 runs each)", index_tables=("RECORDS",),
            picker=_pick_eegmmidb, picker_needs_sums=True,
        ),
        PhysioNetDataset(
            "mimic-iv-demo", "mimic-iv-demo", "2.2", "MIMIC-IV Clinical Database Demo",
            credentialed=False, access="open access (Open Database License v1.0)", source="mimic-iv",
            subsets=("hosp", "icu"),
        ),
        PhysioNetDataset(
            "mimic-iv", "mimiciv", "3.1", "MIMIC-IV", credentialed=True, access=_CREDENTIALED,
            source="mimic-iv", subsets=("hosp", "icu"),
        ),
    )
}  # fmt: skip
