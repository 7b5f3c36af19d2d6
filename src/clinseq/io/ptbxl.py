"""PTB-XL (Wagner et al. 2020, PhysioNet v1.0.3) in its published layout.

``ptbxl_database.csv`` (one row per ECG: ``ecg_id``, ``patient_id``, ``recording_date``,
``strat_fold``, ``scp_codes``, ``filename_lr``/``filename_hr``...), ``scp_statements.csv`` (the 71 SCP
statements and their diagnostic class/subclass, form and rhythm flags), ``records100/`` and
``records500/`` (12-lead WFDB records at 100 and 500 Hz, 10 s, 16-bit, 1000 ADC units per mV).

Labels follow the PTB-XL benchmark (Strodthoff et al. 2021): ``all`` = every SCP statement of the ECG;
``diagnostic`` = statements flagged diagnostic; ``subdiagnostic``/``superdiagnostic`` = their
``diagnostic_subclass``/``diagnostic_class``; ``form`` and ``rhythm`` = statements so flagged. Like the
benchmark, statements count whatever their likelihood (including 0). Splits: ``strat_fold`` 1–8 train,
9 val, 10 test; all ECGs of one patient share a fold.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from clinseq.errors import SourceError
from clinseq.io.base import SourceItem
from clinseq.io.wfdb_record import wfdb_recording
from clinseq.timeline.records import Recording

#: PTB-XL ships 100 Hz (``filename_lr``) and 500 Hz (``filename_hr``) versions of every ECG.
PTBXL_RATES_HZ = {100: "filename_lr", 500: "filename_hr"}
LABEL_SETS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")


def split_of_fold(strat_fold: int) -> str:
    """The recommended split name of one ``strat_fold``: 1–8 "train", 9 "val", 10 "test".

    (The store's ``patients.split`` column; :func:`clinseq.data.splits.ptbxl_split` gives the patient ids
    of each split of a store.)
    """
    if not 1 <= strat_fold <= 10:
        raise ValueError(f"strat_fold must be in 1..10, got {strat_fold}")
    return "test" if strat_fold == 10 else "val" if strat_fold == 9 else "train"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PTBXLSource:
    """PTB-XL records at one sampling rate.

    Args:
        root: folder holding ``ptbxl_database.csv``, ``scp_statements.csv`` and ``records100/``/
            ``records500/``.
        sampling_rate_hz: 100 or 500.
    """

    dataset = "ptbxl"

    def __init__(self, root: str | os.PathLike[str], sampling_rate_hz: int = 100) -> None:
        self.root = Path(root)
        if sampling_rate_hz not in PTBXL_RATES_HZ:
            raise SourceError(
                self.root,
                f"unknown sampling rate {sampling_rate_hz} Hz: PTB-XL is published at "
                f"{sorted(PTBXL_RATES_HZ)} Hz only",
            )
        self.sampling_rate_hz = int(sampling_rate_hz)
        self.database_csv = self.root / "ptbxl_database.csv"
        self.statements_csv = self.root / "scp_statements.csv"
        for path in (self.database_csv, self.statements_csv):
            if not path.exists():
                raise SourceError(path, "missing: is this the PTB-XL folder (as published on PhysioNet)?")
        self._statements = self._read_statements()

    # -- metadata -----------------------------------------------------------------------------------
    def _read_statements(self) -> dict[str, dict[str, Any]]:
        with self.statements_csv.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "" not in rows[0]:
            raise SourceError(self.statements_csv, "expected the statement code in the first, unnamed column")
        statements = {}
        for row in rows:
            statements[row[""]] = {
                "diagnostic": row.get("diagnostic") == "1.0",
                "form": row.get("form") == "1.0",
                "rhythm": row.get("rhythm") == "1.0",
                "diagnostic_class": row.get("diagnostic_class") or None,
                "diagnostic_subclass": row.get("diagnostic_subclass") or None,
            }
        return statements

    def labels(self, scp_codes: dict[str, float]) -> dict[str, list[str]]:
        """The six label sets of one ECG (sorted, unique)."""
        sets: dict[str, set[str]] = {name: set() for name in LABEL_SETS}
        for code in scp_codes:
            info = self._statements.get(code)
            sets["all"].add(code)
            if info is None:
                continue
            if info["diagnostic"]:
                sets["diagnostic"].add(code)
                if info["diagnostic_subclass"]:
                    sets["subdiagnostic"].add(info["diagnostic_subclass"])
                if info["diagnostic_class"]:
                    sets["superdiagnostic"].add(info["diagnostic_class"])
            if info["form"]:
                sets["form"].add(code)
            if info["rhythm"]:
                sets["rhythm"].add(code)
        return {name: sorted(values) for name, values in sets.items()}

    def index(self) -> list[SourceItem]:
        column = PTBXL_RATES_HZ[self.sampling_rate_hz]
        required = ("ecg_id", "patient_id", "recording_date", "strat_fold", "scp_codes", column)
        items = []
        with self.database_csv.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise SourceError(self.database_csv, f"missing columns {missing}")
            first_line: dict[int, int] = {}
            for line, row in enumerate(reader, start=2):
                item = self._item(row, line, column)
                ecg_id = item.info["ecg_id"]
                if ecg_id in first_line:
                    raise SourceError(
                        self.database_csv,
                        f"line {line}: ecg_id {ecg_id} again (first on line {first_line[ecg_id]}); "
                        "ecg_id must be unique (it is the recording_id)",
                    )
                first_line[ecg_id] = line
                items.append(item)
        return sorted(items, key=lambda item: item.info["ecg_id"])

    def _item(self, row: dict[str, str], line: int, column: str) -> SourceItem:
        where = f"{self.database_csv.name} line {line}"
        try:
            ecg_id = int(row["ecg_id"])
            patient_id = int(float(row["patient_id"]))
            strat_fold = int(row["strat_fold"])
            scp_codes = ast.literal_eval(row["scp_codes"])
            recording_date = datetime.fromisoformat(row["recording_date"])
        except (ValueError, SyntaxError) as exc:
            raise SourceError(self.database_csv, f"{where}: unparsable value ({exc})") from exc
        if not isinstance(scp_codes, dict):
            raise SourceError(self.database_csv, f"{where}: scp_codes is not a dict: {row['scp_codes']!r}")

        def number(name: str) -> float | None:
            value = row.get(name) or ""
            return float(value) if value.strip() else None

        info = {
            "ecg_id": ecg_id,
            "patient_id": patient_id,
            "start_time": recording_date,
            "attributes": {
                "ecg_id": ecg_id,
                "strat_fold": strat_fold,
                "scp_codes": json.dumps(scp_codes, sort_keys=True),
                **{f"labels_{name}": values for name, values in self.labels(scp_codes).items()},
                "age": number("age"),
                "sex": int(row["sex"]) if (row.get("sex") or "").strip() else None,
                "device": (row.get("device") or "").strip() or None,
                "report": row.get("report") or None,
            },
        }
        return SourceItem(key=row[column], path=self.root / (row[column] + ".hea"), info=info)

    # -- loading ------------------------------------------------------------------------------------
    def load(self, item: SourceItem) -> Recording:
        record_path = self.root / item.key
        if not record_path.with_suffix(".hea").exists():
            raise SourceError(
                record_path.with_suffix(".hea"),
                f"listed in {self.database_csv.name} (ecg_id={item.info['ecg_id']}) but missing on disk",
            )
        recording = wfdb_recording(
            record_path,
            recording_id=item.info["ecg_id"],
            patient_id=item.info["patient_id"],
            source=item.key,
            start_time=item.info["start_time"],
            attributes=item.info["attributes"],
        )
        if not math.isclose(recording.sampling_rate_hz, self.sampling_rate_hz):
            raise SourceError(
                record_path.with_suffix(".hea"),
                f"sampling rate {recording.sampling_rate_hz} Hz, expected {self.sampling_rate_hz} Hz "
                f"for {PTBXL_RATES_HZ[self.sampling_rate_hz]}",
            )
        return recording

    def patients(self, recordings: pl.DataFrame) -> pl.DataFrame:
        """One row per patient: ``split`` from ``strat_fold``, ``sex``, age at first ECG, ECG count."""
        if recordings.height == 0:
            return pl.DataFrame(schema={"patient_id": pl.Int64, "split": pl.String})
        folds = recordings.group_by("patient_id").agg(pl.col("strat_fold").n_unique().alias("n_folds"))
        mixed = folds.filter(pl.col("n_folds") > 1)["patient_id"].to_list()
        if mixed:
            raise SourceError(self.database_csv, f"patients with ECGs in several strat_folds: {mixed[:10]}")
        return (
            recordings.sort("start_time")
            .group_by("patient_id", maintain_order=True)
            .agg(
                pl.col("strat_fold").first(),
                pl.col("sex").first(),
                pl.col("age").first().alias("age_at_first_ecg"),
                pl.len().alias("n_recordings"),
            )
            .with_columns(
                pl.col("strat_fold").map_elements(split_of_fold, return_dtype=pl.String).alias("split")
            )
            .select("patient_id", "split", "strat_fold", "sex", "age_at_first_ecg", "n_recordings")
            .sort("patient_id")
        )

    def manifest_extra(self) -> dict[str, Any]:
        return {
            "options": {"sampling_rate_hz": self.sampling_rate_hz},
            "source_checksums": {p.name: _sha256(p) for p in (self.database_csv, self.statements_csv)},
        }
