"""People's own files listed in a CSV → a store (``clinseq convert manifest CSV OUT``).

The CSV has one row per recording:

- ``path`` (required): a WFDB record (``x.hea`` or ``x``), an EDF/BDF file, or a ``.npy`` array of shape
  ``(channels, samples)``, relative to the CSV's folder (or absolute);
- ``patient_id`` (required): an integer or any text (text keys are numbered 1.. in sorted order; the
  text is kept as ``patient_key``);
- ``start_time`` (optional): ISO 8601 (default: the file header's, none for ``.npy``);
- ``sampling_rate_hz`` (needed for ``.npy``; for WFDB/EDF it must match the header when given);
- ``recording_id`` (optional, integer): default the row's 1-based position;
- ``channel_names`` and ``units`` (``.npy`` only, optional): ``;``-separated (default ``ch0;ch1...``,
  ``mV``); ``split`` (optional): ``train``/``val``/``test`` per patient;
- every other column is a **label**, kept as a ``recordings`` column with its CSV type (what
  ``clinseq eval --labels`` reads, see the README's "Your own data").

``.npy`` floats are physical values in ``units`` (float32 in the store); int16/int32 arrays are stored
as they are with gain 1. WFDB and EDF/BDF files go through the same readers as ``clinseq convert wfdb``
and ``clinseq convert eeg`` (lossless ADC values with their calibration).
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from clinseq.errors import SourceError
from clinseq.io.base import SourceItem
from clinseq.timeline.records import Recording
from clinseq.timeline.write_store import ArrayRecording

__all__ = ["RESERVED_COLUMNS", "ManifestSource"]

#: Columns with a meaning of their own; every other column is a label.
RESERVED_COLUMNS = (
    "path",
    "patient_id",
    "start_time",
    "sampling_rate_hz",
    "recording_id",
    "channel_names",
    "units",
    "split",
)
_EDF = (".edf", ".bdf")


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "npy"
    if suffix in _EDF:
        return "edf"
    if suffix in (".hea", "") or path.with_suffix(".hea").exists():
        return "wfdb"
    raise SourceError(path, f"unknown file kind {suffix!r}: expected a WFDB record, .edf/.bdf or .npy")


class ManifestSource:
    """The recordings a CSV lists (module docstring).

    Args:
        csv_path: the CSV.
        modality: the recordings' modality; default the reader's (``ecg`` for WFDB and ``.npy``,
            ``eeg`` for EDF/BDF).
    """

    dataset = "manifest"

    def __init__(self, csv_path: str | os.PathLike[str], modality: str | None = None) -> None:
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise SourceError(self.csv_path, "not a file (expected the manifest CSV)")
        self.root = self.csv_path.parent
        self.modality = modality
        try:
            table = pl.read_csv(self.csv_path, infer_schema_length=None, try_parse_dates=False)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise SourceError(self.csv_path, f"cannot be read as CSV: {exc}") from exc
        missing = [c for c in ("path", "patient_id") if c not in table.columns]
        if missing:
            raise SourceError(self.csv_path, f"missing columns {missing} (needed: path, patient_id)")
        self.label_columns = [c for c in table.columns if c not in RESERVED_COLUMNS]
        self.table = table
        self.attribute_schema: dict[str, pl.DataType] = {
            **{c: table.schema[c] for c in self.label_columns},
            "patient_key": pl.String(),
            "session_id": pl.Int64(),
            "rate_group": pl.Int64(),
        }
        keys = [str(v) for v in table["patient_id"].to_list()]
        if any(v in ("", "None") for v in keys):
            raise SourceError(self.csv_path, "patient_id is empty on some rows")
        if all(k.lstrip("-").isdigit() for k in keys):
            self._patient = {k: int(k) for k in keys}
        else:
            self._patient = {k: i for i, k in enumerate(sorted(set(keys)), start=1)}
        self._eeg: dict[Path, Any] = {}

    def _eeg_reader(self, folder: Path):
        """One EEG reader (the ``flat`` layout) per folder holding EDF/BDF rows."""
        if folder not in self._eeg:
            from clinseq.io.eeg import EEGSource

            self._eeg[folder] = EEGSource(folder, layout="flat")
        return self._eeg[folder]

    def index(self) -> list[SourceItem]:
        items = []
        for line, row in enumerate(self.table.iter_rows(named=True), start=2):
            where = f"{self.csv_path.name} line {line}"
            rel = str(row["path"] or "").strip()
            if not rel:
                raise SourceError(self.csv_path, f"{where}: empty path")
            path = Path(rel) if Path(rel).is_absolute() else self.root / rel
            rid = row.get("recording_id")
            try:
                rid = line - 1 if rid is None else int(rid)
                start = row.get("start_time")
                start = datetime.fromisoformat(str(start)) if start not in (None, "") else None
                rate = row.get("sampling_rate_hz")
                rate = float(rate) if rate not in (None, "") else None
            except ValueError as exc:
                raise SourceError(self.csv_path, f"{where}: unparsable value ({exc})") from exc
            key = str(row["patient_id"])
            info = {
                "recording_id": rid,
                "patient_id": self._patient[key],
                "patient_key": key,
                "start_time": start,
                "sampling_rate_hz": rate,
                "channel_names": row.get("channel_names"),
                "units": row.get("units"),
                "labels": {c: row[c] for c in self.label_columns},
                "line": line,
            }
            items.append(SourceItem(key=f"{line - 1}:{rel}", path=path, info=info))
        ids = [item.info["recording_id"] for item in items]
        if len(set(ids)) != len(ids):
            raise SourceError(self.csv_path, "recording_id is not unique")
        return items

    def load(self, item: SourceItem) -> Recording | list[Recording]:
        info = item.info
        path = item.path
        kind = _kind(path)
        if kind == "npy":
            recordings = [self._load_npy(item)]
        elif kind == "edf":
            if not path.exists():
                raise SourceError(path, f"listed in {self.csv_path.name} line {info['line']} but missing")
            got = self._eeg_reader(path.parent).load(
                SourceItem(
                    key=item.key,
                    path=path,
                    info={
                        "recording_id": info["recording_id"],
                        "patient_id": info["patient_id"],
                        "attributes": {},
                    },
                )
            )
            recordings = got if isinstance(got, list) else [got]
        else:
            from clinseq.io.wfdb_folder import wfdb_recordings

            record = path.with_suffix("") if path.suffix == ".hea" else path
            if not record.with_suffix(".hea").exists():
                raise SourceError(
                    record.with_suffix(".hea"),
                    f"listed in {self.csv_path.name} line {info['line']} but missing",
                )
            recordings = wfdb_recordings(
                record,
                recording_id=info["recording_id"],
                patient_id=info["patient_id"],
                source=item.key,
                annotators=None,
            )
        out = []
        for recording in recordings:
            rate = info["sampling_rate_hz"]
            if kind != "npy" and rate is not None and len(recordings) == 1:
                if not np.isclose(rate, recording.sampling_rate_hz):
                    raise SourceError(
                        path,
                        f"sampling_rate_hz {rate:g} in {self.csv_path.name} line {info['line']}, the file "
                        f"says {recording.sampling_rate_hz:g} Hz",
                    )
            attributes = {
                **info["labels"],
                "patient_key": info["patient_key"],
                "session_id": recording.attributes.get("session_id", recording.recording_id),
                "rate_group": recording.attributes.get("rate_group", 0),
            }
            out.append(
                replace(
                    recording,
                    source=item.key.split(":", 1)[1],
                    start_time=info["start_time"] or recording.start_time,
                    modality=self.modality or recording.modality,
                    attributes=attributes,
                )
            )
        return out[0] if len(out) == 1 else out

    def _load_npy(self, item: SourceItem) -> Recording:
        info = item.info
        where = f"{self.csv_path.name} line {info['line']}"
        if info["sampling_rate_hz"] is None:
            raise SourceError(item.path, f"a .npy needs sampling_rate_hz in {where}")
        try:
            samples = np.load(item.path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SourceError(item.path, f"cannot be read as a .npy array: {exc}") from exc
        samples = samples[None, :] if samples.ndim == 1 else samples
        if samples.ndim != 2:
            raise SourceError(item.path, f"expected (channels, samples), got shape {samples.shape}")
        n = samples.shape[0]
        names = (
            str(info["channel_names"]).split(";") if info["channel_names"] else [f"ch{i}" for i in range(n)]
        )
        units = str(info["units"]).split(";") if info["units"] else ["mV"]
        units = units * n if len(units) == 1 else units
        if len(names) != n or len(units) != n:
            raise SourceError(
                item.path,
                f"{n} channels (shape {samples.shape}: channels first) but {len(names)} channel_names and "
                f"{len(units)} units in {where}",
            )
        try:
            return ArrayRecording(
                samples,
                info["sampling_rate_hz"],
                names,
                units,
                patient_id=info["patient_id"],
                recording_id=info["recording_id"],
                modality="ecg",
                source=item.key,
            ).to_recording(info["recording_id"])
        except ValueError as exc:
            raise SourceError(item.path, str(exc)) from exc

    def patients(self, recordings: pl.DataFrame) -> pl.DataFrame:
        """One row per patient: ``patient_key`` and the CSV's ``split`` (null without one)."""
        frame = recordings.group_by("patient_id").agg(
            pl.col("patient_key").first(), pl.len().alias("n_recordings")
        )
        if "split" in self.table.columns:
            splits = pl.DataFrame(
                {
                    "patient_id": [self._patient[str(k)] for k in self.table["patient_id"].to_list()],
                    "split": self.table["split"].cast(pl.String).to_list(),
                }
            ).unique()
            several = splits.group_by("patient_id").len().filter(pl.col("len") > 1)
            if several.height:
                raise SourceError(
                    self.csv_path,
                    f"patients with rows in several splits: {several['patient_id'].to_list()[:10]}",
                )
            frame = frame.join(splits, on="patient_id", how="left")
        else:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("split"))
        return frame.select("patient_id", "split", "patient_key", "n_recordings").sort("patient_id")

    def manifest_extra(self) -> dict[str, Any]:
        return {"options": {"manifest": str(self.csv_path), "labels": self.label_columns}}
