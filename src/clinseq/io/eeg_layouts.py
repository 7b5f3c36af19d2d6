"""The published folder layouts of EEG datasets: one small strategy per layout, and auto-detection.

A layout turns a file's path into ids (``recording_id``, ``patient_id``), a sort key and its own
``recordings`` attributes, and builds the layout's part of ``patients.parquet``:

``eegmat``
    PhysioNet *EEG During Mental Arithmetic Tasks*: ``SubjectNN_1.edf`` (rest) and ``SubjectNN_2.edf``
    (task) beside ``subject-info.csv``. Patient = NN, recording id = 10·NN + k.
``eegmmidb``
    PhysioNet *EEG Motor Movement/Imagery*: ``S001/S001R01.edf`` (subject 1, run 1). Patient = subject,
    recording id = 100·subject + run.
``tuh``
    Temple University Hospital EEG corpora: ``{subject}_s{session:03d}_t{token:03d}.edf`` (subject = 8
    letters since TUEG v2, 8 digits before) inside folders that carry the session date
    (``sNNN_YYYY_MM_DD``), montage (``NN_tcp_*``), split (``train``/``dev``/``eval``) and TUAB label
    (``normal``/``abnormal``). Patient = the subject id (8 letters as a base-26 number, ``aaaaaaaa`` = 0;
    8 digits as a decimal number), recording id = 10⁶·patient + 10³·session + token.
``flat``
    One file per recording anywhere below ``root``; patient = the first group of ``patient_regex``
    searched in the path relative to ``root`` (default: the file stem). Digit-only keys are used as the
    number; other keys become a stable 63-bit hash (``patient_key`` keeps the text). Recording id =
    position in the sorted file list.
"""

from __future__ import annotations

import csv
import hashlib
import re
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from clinseq.errors import SourceError
from clinseq.io.base import SourceItem


def file_suffix(path: Path) -> str:
    """The lower-case suffix of ``path`` (``.fif.gz`` counts as one)."""
    name = path.name.lower()
    return ".fif.gz" if name.endswith(".fif.gz") else path.suffix.lower()


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


class EEGLayout:
    """A dataset layout (subclasses set the class attributes and implement :meth:`parse`)."""

    name: ClassVar[str]
    #: The store's ``dataset`` name.
    dataset: ClassVar[str]
    #: The file-name pattern auto-detection tests (None: anything goes).
    pattern: ClassVar[re.Pattern[str] | None] = None
    #: What a file name must look like (for error messages).
    expected: ClassVar[str] = ""
    #: Types of this layout's own ``recordings`` columns.
    schema: ClassVar[dict[str, pl.DataType]] = {}

    def __init__(self, root: Path, patient_regex: str | None = None) -> None:
        self.root = root
        self.patient_regex = patient_regex

    def parse(self, path: Path, position: int) -> dict[str, Any]:
        """``recording_id``, ``patient_id``, ``sort`` and ``attributes`` of the file at ``path``
        (``position`` in the sorted file list); raise :class:`SourceError` when it does not follow."""
        raise NotImplementedError

    def header_attributes(self, patient_field: str) -> dict[str, Any]:
        """Attributes read from the EDF header's patient field (none by default)."""
        return {}

    def check(self, items: list[SourceItem]) -> None:
        """Whole-index checks (none by default)."""

    def patients(self, recordings: pl.DataFrame, base: pl.DataFrame) -> pl.DataFrame:
        """``patients.parquet`` from ``base`` (``patient_id``, ``n_recordings``): split null here
        (split by patient in ``clinseq.data``) plus what the layout knows."""
        return base.with_columns(pl.lit(None, dtype=pl.String).alias("split"))

    def _layout_error(self, path: Path) -> SourceError:
        return SourceError(
            path, f"file name does not follow the {self.name} layout: expected {self.expected}"
        )

    def _match(self, path: Path) -> re.Match[str]:
        assert self.pattern is not None
        match = self.pattern.match(path.name)
        if match is None:
            raise self._layout_error(path)
        return match


class EEGMATLayout(EEGLayout):
    name = "eegmat"
    dataset = "eegmat"
    pattern = re.compile(r"^Subject(?P<subject>\d+)_(?P<k>[12])\.edf$")
    expected = "SubjectNN_1.edf or SubjectNN_2.edf"
    schema = {
        "subject": pl.Int64(),
        "condition": pl.String(),
        "count_quality": pl.Int64(),
        "n_subtractions": pl.Float64(),
    }

    def __init__(self, root: Path, patient_regex: str | None = None) -> None:
        super().__init__(root, patient_regex)
        self._subjects: dict[int, dict[str, Any]] | None = None

    def subjects(self) -> dict[int, dict[str, Any]]:
        """``subject-info.csv`` by subject number (empty when the file is absent)."""
        if self._subjects is None:
            self._subjects = self._read_subjects()
        return self._subjects

    def _read_subjects(self) -> dict[int, dict[str, Any]]:
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

    def parse(self, path: Path, position: int) -> dict[str, Any]:
        match = self._match(path)
        subject, k = int(match["subject"]), int(match["k"])
        info = self.subjects().get(subject, {})
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

    def patients(self, recordings: pl.DataFrame, base: pl.DataFrame) -> pl.DataFrame:
        static = pl.DataFrame(
            [{"patient_id": pid, **info} for pid, info in self.subjects().items()],
            schema={
                "patient_id": pl.Int64, "age": pl.Int64, "sex": pl.String, "recording_year": pl.Int64,
                "n_subtractions": pl.Float64, "count_quality": pl.Int64,
            },
        )  # fmt: skip
        return super().patients(recordings, base).join(static, on="patient_id", how="left")


#: EEGMMIDB run number → task.
EEGMMIDB_TASKS = {
    1: "baseline_eyes_open",
    2: "baseline_eyes_closed",
    **{r: "execute_left_right_fist" for r in (3, 7, 11)},
    **{r: "imagine_left_right_fist" for r in (4, 8, 12)},
    **{r: "execute_both_fists_feet" for r in (5, 9, 13)},
    **{r: "imagine_both_fists_feet" for r in (6, 10, 14)},
}


class EEGMMIDBLayout(EEGLayout):
    name = "eegmmidb"
    dataset = "eegmmidb"
    pattern = re.compile(r"^S(?P<subject>\d{3})R(?P<run>\d{2})\.edf$")
    expected = "SNNNRNN.edf (e.g. S001/S001R01.edf)"
    schema = {"subject": pl.Int64(), "run": pl.Int64(), "task": pl.String()}

    def parse(self, path: Path, position: int) -> dict[str, Any]:
        match = self._match(path)
        subject, run = int(match["subject"]), int(match["run"])
        return {
            "recording_id": 100 * subject + run,
            "patient_id": subject,
            "sort": (0, subject, run),
            "attributes": {"subject": subject, "run": run, "task": EEGMMIDB_TASKS.get(run)},
        }


_TUH_SESSION_DIR = re.compile(r"^s(?P<session>\d{3})_(?P<y>\d{4})_(?P<m>\d{2})_(?P<d>\d{2})$")
_TUH_MONTAGE_DIR = re.compile(r"^\d{2}_tcp_[a-z_]+$")
#: TUH's split folders → the store's split names.
TUH_SPLITS = {"train": "train", "dev": "val", "eval": "test"}


class TUHLayout(EEGLayout):
    name = "tuh"
    dataset = "tuh_eeg"
    pattern = re.compile(r"^(?P<subject>[a-z]{8}|\d{8})_s(?P<session>\d{3})(?:_t(?P<token>\d{3}))?\.edf$")
    expected = "{8-letter or 8-digit subject}_sNNN_tNNN.edf (e.g. aaaaaaaa_s001_t000.edf)"
    schema = {
        "subject": pl.String(),
        "session": pl.Int64(),
        "token": pl.Int64(),
        "session_date": pl.Date(),
        "montage": pl.String(),
        "tuh_split": pl.String(),
        "tuh_label": pl.String(),
        "edf_sex": pl.String(),
        "edf_age": pl.Float64(),
    }

    def parse(self, path: Path, position: int) -> dict[str, Any]:
        match = self._match(path)
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
            elif folder in TUH_SPLITS:
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

    def header_attributes(self, patient_field: str) -> dict[str, Any]:
        """TUH writes ``{subject} {M|F|X} {birthdate} {subject} Age:{years}`` into the patient field."""
        tokens = patient_field.split()
        sex = tokens[1] if len(tokens) > 1 and tokens[1] in ("M", "F") else None
        age = re.search(r"Age:(\d+(?:\.\d+)?)", patient_field)
        return {"edf_sex": sex, "edf_age": float(age[1]) if age else None}

    def check(self, items: list[SourceItem]) -> None:
        """Letter (TUEG ≥ v2) and digit (v1) subject ids in one source are two numbering schemes:
        mixing them would count patients twice."""
        with_ids = [item for item in items if "attributes" in item.info]
        schemes = {item.info["attributes"]["subject"].isdigit() for item in with_ids}
        if len(schemes) > 1:
            example = next(i for i in with_ids if i.info["attributes"]["subject"].isdigit())
            raise SourceError(
                example.path,
                "this folder mixes TUH v1 (8-digit) and v2 (8-letter) subject ids: convert one release at a "
                "time",
            )

    def patients(self, recordings: pl.DataFrame, base: pl.DataFrame) -> pl.DataFrame:
        """TUH's own train/dev/eval folders → split train/val/test; sex and age at the first recording
        from the EDF header."""
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
                .replace_strict(TUH_SPLITS, default=None)
                .alias("split"),
                pl.col("edf_sex").drop_nulls().first().alias("sex"),
                pl.col("edf_age").drop_nulls().first().alias("age_at_first_recording"),
            )
        )
        return base.join(demo, on="patient_id").select(
            "patient_id", "split", "subject", "sex", "age_at_first_recording", "n_recordings"
        )


class FlatLayout(EEGLayout):
    name = "flat"
    dataset = "eeg"
    schema = {"patient_key": pl.String()}

    def parse(self, path: Path, position: int) -> dict[str, Any]:
        rel = path.relative_to(self.root).as_posix()
        if self.patient_regex is None:
            key = path.name[: -len(file_suffix(path))]
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

    def patients(self, recordings: pl.DataFrame, base: pl.DataFrame) -> pl.DataFrame:
        keys = recordings.group_by("patient_id").agg(pl.col("patient_key").first())
        return super().patients(recordings, base).join(keys, on="patient_id", how="left")


#: Layout name → strategy class (``"auto"`` is :func:`detect_layout`).
LAYOUTS: dict[str, type[EEGLayout]] = {
    cls.name: cls for cls in (EEGMATLayout, EEGMMIDBLayout, TUHLayout, FlatLayout)
}
#: Store ``dataset`` name of each layout (what ``clinseq info`` prints).
DATASET_OF_LAYOUT = {name: cls.dataset for name, cls in LAYOUTS.items()}


def detect_layout(root: Path, files: list[Path]) -> str:
    """The layout every file's name follows (eegmat, eegmmidb, tuh), else ``flat``.

    Raises :class:`SourceError` when some but not all files follow one layout: converting them as
    ``flat`` would silently lose the subject/session structure of the others.
    """
    names = [p.name for p in files]
    for layout, cls in LAYOUTS.items():
        if cls.pattern is None:
            continue
        matching = [n for n in names if cls.pattern.match(n)]
        if matching and len(matching) == len(names):
            return layout
        if len(matching) > len(names) // 2:
            odd = next(p for p in files if not cls.pattern.match(p.name))
            raise SourceError(
                odd,
                f"{len(matching)} of {len(names)} files under {root} follow the {layout} layout "
                f"({cls.expected}) but this one does not: pass layout={layout!r} (--layout {layout}) "
                "to convert the others and list the odd ones as errors, or layout='flat'",
            )
    return "flat"
