"""MIMIC-IV (hosp/ and icu/ CSV or CSV.GZ, as published on PhysioNet) → an events timeline store.

Johnson et al., "MIMIC-IV, a freely accessible electronic health record dataset", Sci Data 10, 1 (2023).
Codes follow the MEDS MIMIC-IV ETL conventions (``LAB//{itemid}//{valueuom}``,
``DIAGNOSIS//ICD//{icd_version}//{icd_code}``...), with a null code part written ``UNK``; the output was
checked against the official MEDS version of the demo (``tests/ehr/test_mimic_iv.py``). The full
table → code map is :data:`TABLES` (and ``data_cards/mimic_iv.md``).

Pipeline, with polars streaming scans so that memory is bounded by a batch and a few shards rather than
the dataset (labevents ≈ 120 M rows, chartevents ≈ 330 M):

1. plan shards (subject-id ranges) from ``patients``, and read the two lookups other tables need from
   ``admissions``: each admission's ``dischtime`` and each subject's first ``deathtime``;
2. per table, **one streaming pass** over the CSV (gzip decompressed as it streams, only the needed
   columns parsed): each batch of typed rows gives every event kind of the table, staged sorted by
   shard (:class:`~clinseq.io.meds.EventStager`), and the row counts, events per kind and unparsable
   rows are counted from the same batches. Tables run in parallel (``workers`` threads, largest first;
   polars releases the GIL). Only when a table has a bad row is it read again, to name the first one
   (or, for timestamps in an unexpected format, to parse it tolerantly);
3. each shard is sorted once and written as ``events/data/NNNNN.parquet`` (MEDS) and appended to
   ``events.arrow`` (:func:`clinseq.io.meds.write_events`), shards in parallel under a memory bound.

Where the time goes (``benchmarks/bench_ehr.py``): reading the gzipped CSVs is about a third of it
(gzip decompression alone is about as costly as polars' whole CSV read), building and staging the
events a fifth, sorting and writing the shards (MEDS Parquet + the uncompressed ``events.arrow``) the
rest.

Diagnoses, ICD procedures and DRG codes are timed at the admission's ``dischtime``: hospital coders
assign them after discharge, so timing them earlier would leak the future into any model that uses
the events before discharge. Death is timed at the admission's ``deathtime`` when the subject died in
hospital, else at ``dod`` (a date), as the MEDS ETL does.

**Atomic and resumable.** Everything is written under ``<out>.tmp-<pid>/`` and renamed to ``out`` at the
end. A table is *committed* when its staged events are complete (``_staging/tables/{table}.json``
records the size and mtime of its file, and of admissions for the tables using its times, and the row
counts); a shard when its ``data/NNNNN.parquet`` is renamed into place. A conversion that stops
(killed, interrupted, or a bad file with ``on_error="raise"``) leaves the temporary folder; running the
same conversion again adopts it, keeps every committed table whose inputs are unchanged and whose staged
rows check out (and, when no table was staged anew, the finished shards), redoes the rest, and gives
the same store as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from clinseq.io.meds import (
    DEFAULT_SUBJECTS_PER_SHARD,
    STAGE_BATCH_ROWS,
    EventStager,
    StagedEvents,
    assign_splits,
    shard_breaks,
    store_patients,
    write_events,
    write_subject_splits,
)
from clinseq.timeline.writer import StoreWriter
from clinseq.utils import ConfigError, SourceError

OnError = Literal["raise", "skip"]
UNK = "UNK"
_ROW = "_row"
_BAD = "_bad"
_TEXT = "_text_"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_FORMAT = "%Y-%m-%d"
#: Staging layout version: a resumed run discards staging written by another layout.
_STAGING_VERSION = 3


def _code(*parts: str) -> pl.Expr:
    """``A//B//C`` from literal parts and ``"@column"`` parts; a null column value becomes ``UNK``."""
    exprs = [pl.col(p[1:]).fill_null(UNK) if p.startswith("@") else pl.lit(p) for p in parts]
    return exprs[0].alias("code") if len(exprs) == 1 else pl.concat_str(exprs, separator="//").alias("code")


def _number(column: str) -> pl.Expr:
    """A numeric text column as float32, correctly rounded (polars' direct text → float32 cast is not:
    it gives 20.253061 for "20.25306224822998", whose nearest float32 is 20.253063)."""
    return pl.col(column).cast(pl.Float64, strict=False).cast(pl.Float32)


def _text_unless_number(column: str) -> pl.Expr:
    """The text of a value column, kept only when it is not a number (a number is ``numeric_value``):
    the MEDS MIMIC-IV ETL's rule, so "NEG", "___" or ">100" stay while "98" is not stored twice."""
    return pl.when(pl.col(column).cast(pl.Float64, strict=False).is_null()).then(pl.col(column))


@dataclass(frozen=True)
class EventKind:
    """One kind of event a table row gives: its time, code parts (``"@col"`` = a column) and values.

    ``time`` None makes a static event (MEDS ``time`` null). A row gives this event when its time is
    not null; the others are dropped and counted (``dropped_no_usable_time`` in the manifest).
    """

    time: str | pl.Expr | None
    code: tuple[str, ...]
    numeric: pl.Expr | None = None
    text: pl.Expr | None = None

    def time_expr(self) -> pl.Expr:
        if self.time is None:
            return pl.lit(None, pl.Datetime("us"))
        return (pl.col(self.time) if isinstance(self.time, str) else self.time).cast(pl.Datetime("us"))

    def build(self, typed: pl.LazyFrame) -> pl.LazyFrame:
        """The events of this kind (the five MEDS columns), rows without a usable time removed."""
        out = typed.select(
            pl.col("subject_id"),
            self.time_expr().alias("time"),
            _code(*self.code),
            (pl.lit(None, pl.Float32) if self.numeric is None else self.numeric.cast(pl.Float32)).alias(
                "numeric_value"
            ),
            (pl.lit(None, pl.String) if self.text is None else self.text.cast(pl.String)).alias("text_value"),
        )
        return out if self.time is None else out.filter(pl.col("time").is_not_null())


def _kind(
    time: str | pl.Expr | None,
    *code: str,
    numeric: pl.Expr | None = None,
    text: pl.Expr | None = None,
) -> EventKind:
    return EventKind(time, code, numeric, text)


#: Lookup columns a table gets from ``admissions``: its admission's discharge time, the subject's death.
Lookup = Literal["dischtime", "deathtime"]


@dataclass(frozen=True)
class TableSpec:
    """How one MIMIC-IV table becomes events.

    ``times`` are parsed as ``%Y-%m-%d %H:%M:%S`` and ``dates`` as ``%Y-%m-%d`` (MIMIC-IV's DATE
    columns); a table whose timestamps come in another shape (fractional seconds, a date in a
    timestamp column) is read again with a tolerant parser. ``integers`` must parse as integers.
    ``lookups`` are joined from ``admissions``: ``dischtime`` on ``hadm_id``, ``deathtime`` (the
    subject's first in-hospital death) on ``subject_id``.
    """

    folder: str
    required: tuple[str, ...]
    events: dict[str, EventKind]
    times: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    integers: tuple[str, ...] = ()
    lookups: tuple[Lookup, ...] = field(default_factory=tuple)


def _year_of_birth() -> pl.Expr:
    return pl.datetime(pl.col("anchor_year") - pl.col("anchor_age"), 1, 1)


#: A measured item of labevents or chartevents (same columns): ``LAB//{itemid}//{valueuom}``.
_LAB = _kind(
    "charttime", "LAB", "@itemid", "@valueuom", numeric=_number("valuenum"), text=_text_unless_number("value")
)


#: table → how it becomes events. Each table is optional: a missing one is reported and skipped.
TABLES: dict[str, TableSpec] = {
    "patients": TableSpec(
        "hosp",
        ("subject_id", "gender", "anchor_age", "anchor_year", "dod"),
        {
            "gender": _kind(None, "GENDER", "@gender"),
            "birth": _kind(_year_of_birth(), "MEDS_BIRTH"),
            "death": _kind(pl.coalesce("deathtime", "dod"), "MEDS_DEATH"),
        },
        dates=("dod",),
        integers=("anchor_age", "anchor_year"),
        lookups=("deathtime",),
    ),
    "admissions": TableSpec(
        "hosp",
        (
            "subject_id",
            "hadm_id",
            "admittime",
            "dischtime",
            "deathtime",
            "admission_type",
            "admission_location",
            "discharge_location",
            "edregtime",
            "edouttime",
        ),
        {
            "admission": _kind("admittime", "HOSPITAL_ADMISSION", "@admission_type", "@admission_location"),
            "discharge": _kind("dischtime", "HOSPITAL_DISCHARGE", "@discharge_location"),
            "ed_registration": _kind("edregtime", "ED_REGISTRATION"),
            "ed_out": _kind("edouttime", "ED_OUT"),
        },
        times=("admittime", "dischtime", "deathtime", "edregtime", "edouttime"),
        integers=("hadm_id",),
    ),
    "transfers": TableSpec(
        "hosp",
        ("subject_id", "eventtype", "careunit", "intime"),
        {"transfer": _kind("intime", "TRANSFER_TO", "@eventtype", "@careunit")},
        times=("intime",),
    ),
    "diagnoses_icd": TableSpec(
        "hosp",
        ("subject_id", "hadm_id", "icd_code", "icd_version"),
        {"diagnosis": _kind("dischtime", "DIAGNOSIS", "ICD", "@icd_version", "@icd_code")},
        integers=("hadm_id",),
        lookups=("dischtime",),
    ),
    "procedures_icd": TableSpec(
        "hosp",
        ("subject_id", "hadm_id", "icd_code", "icd_version"),
        {"procedure": _kind("dischtime", "PROCEDURE", "ICD", "@icd_version", "@icd_code")},
        integers=("hadm_id",),
        lookups=("dischtime",),
    ),
    "drgcodes": TableSpec(
        "hosp",
        ("subject_id", "hadm_id", "drg_type", "drg_code", "description"),
        {"drg": _kind("dischtime", "DRG", "@drg_type", "@drg_code", "@description")},
        integers=("hadm_id",),
        lookups=("dischtime",),
    ),
    "hcpcsevents": TableSpec(
        "hosp",
        ("subject_id", "chartdate", "short_description"),
        {"hcpcs": _kind("chartdate", "HCPCS", "@short_description")},
        dates=("chartdate",),
    ),
    "labevents": TableSpec(
        "hosp",
        ("subject_id", "itemid", "charttime", "value", "valuenum", "valueuom"),
        {"lab": _LAB},
        times=("charttime",),
    ),
    "prescriptions": TableSpec(
        "hosp",
        ("subject_id", "starttime", "drug", "dose_val_rx"),
        {
            "prescription": _kind(
                "starttime",
                "MEDICATION",
                "PRESCRIPTION",
                "@drug",
                numeric=_number("dose_val_rx"),
                text=_text_unless_number("dose_val_rx"),
            )
        },
        times=("starttime",),
    ),
    "pharmacy": TableSpec(
        "hosp",
        ("subject_id", "starttime", "stoptime", "medication"),
        {
            "start": _kind("starttime", "MEDICATION", "START", "@medication"),
            "stop": _kind("stoptime", "MEDICATION", "STOP", "@medication"),
        },
        times=("starttime", "stoptime"),
    ),
    "emar": TableSpec(
        "hosp",
        ("subject_id", "charttime", "medication", "event_txt"),
        {"administration": _kind("charttime", "MEDICATION", "@medication", "@event_txt")},
        times=("charttime",),
    ),
    "omr": TableSpec(
        "hosp",
        ("subject_id", "chartdate", "result_name", "result_value"),
        {
            "omr": _kind(
                "chartdate",
                "@result_name",
                numeric=_number("result_value"),
                text=_text_unless_number("result_value"),
            )
        },
        dates=("chartdate",),
    ),
    "microbiologyevents": TableSpec(
        "hosp",
        (
            "subject_id",
            "chartdate",
            "charttime",
            "test_name",
            "org_name",
            "ab_name",
            "interpretation",
            "dilution_value",
        ),
        {
            "micro": _kind(
                pl.coalesce("charttime", "chartdate"),
                "MICROBIOLOGY",
                "@test_name",
                "@org_name",
                "@ab_name",
                numeric=_number("dilution_value"),
                text=pl.col("interpretation"),
            )
        },
        times=("chartdate", "charttime"),
    ),
    "icustays": TableSpec(
        "icu",
        ("subject_id", "first_careunit", "last_careunit", "intime", "outtime"),
        {
            "icu_admission": _kind("intime", "ICU_ADMISSION", "@first_careunit"),
            "icu_discharge": _kind("outtime", "ICU_DISCHARGE", "@last_careunit"),
        },
        times=("intime", "outtime"),
    ),
    "chartevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "charttime", "value", "valuenum", "valueuom"),
        {
            # The MEDS ETL codes charted items like labs: LAB//{itemid}//{uom} (item ids do not overlap).
            "chart": _LAB
        },
        times=("charttime",),
    ),
    "inputevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "starttime", "endtime", "amount", "rate", "patientweight"),
        {
            "infusion_start": _kind("starttime", "INFUSION_START", "@itemid", numeric=_number("rate")),
            "infusion_end": _kind("endtime", "INFUSION_END", "@itemid", numeric=_number("amount")),
            "weight": _kind(
                pl.when(pl.col("patientweight").is_not_null()).then(pl.col("starttime")),
                "SUBJECT_WEIGHT_AT_INFUSION",
                "KG",
                numeric=_number("patientweight"),
            ),
        },
        times=("starttime", "endtime"),
    ),
    "outputevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "charttime", "value", "valueuom"),
        {
            "output": _kind(
                "charttime", "SUBJECT_FLUID_OUTPUT", "@itemid", "@valueuom", numeric=_number("value")
            )
        },
        times=("charttime",),
    ),
    "procedureevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "starttime", "endtime", "value", "valueuom"),
        {
            "start": _kind("starttime", "PROCEDURE", "START", "@itemid", numeric=_number("value")),
            "end": _kind("endtime", "PROCEDURE", "END", "@itemid"),
        },
        times=("starttime", "endtime"),
    ),
}
#: Dictionaries whose descriptions go into ``events/metadata/codes.parquet``.
DICTIONARIES = {
    "d_labitems": "hosp",
    "d_items": "icu",
    "d_icd_diagnoses": "hosp",
    "d_icd_procedures": "hosp",
}


def find_table(src: Path, table: str, folder: str | None = None) -> Path | None:
    """``src/{folder}/{table}.csv.gz`` or ``.csv`` (the layout as published), else None."""
    base = src / (folder or TABLES[table].folder)
    for name in (f"{table}.csv.gz", f"{table}.csv"):
        if (base / name).exists():
            return base / name
    return None


# -- typed scans --------------------------------------------------------------------------------------
def _parse_time(column: str, fmt: str, tolerant: bool) -> pl.Expr:
    raw = pl.col(column)
    if not tolerant:
        # One exact format: the fast path, and what MIMIC-IV publishes.
        if fmt == DATE_FORMAT:
            return raw.str.to_date(fmt, strict=False).cast(pl.Datetime("us"))
        return raw.str.to_datetime(fmt, time_unit="us", strict=False)
    return pl.coalesce(
        raw.str.to_datetime(DATETIME_FORMAT, time_unit="us", strict=False),
        raw.str.to_datetime(DATETIME_FORMAT + "%.f", time_unit="us", strict=False),
        raw.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us", strict=False),
        raw.str.to_date(DATE_FORMAT, strict=False).cast(pl.Datetime("us")),
    )


def _parsers(spec: TableSpec, tolerant: bool) -> dict[str, pl.Expr]:
    parsed = {"subject_id": pl.col("subject_id").str.strip_chars().cast(pl.Int64, strict=False)}
    for c in spec.integers:
        parsed[c] = pl.col(c).str.strip_chars().cast(pl.Int64, strict=False)
    for c in spec.times:
        parsed[c] = _parse_time(c, DATETIME_FORMAT, tolerant)
    for c in spec.dates:
        parsed[c] = _parse_time(c, DATE_FORMAT, tolerant)
    return parsed


def _bad_row(parsed: dict[str, pl.Expr]) -> pl.Expr:
    """True where a parsed column is null although its text is present (subject_id must be present)."""
    bad = pl.col("subject_id").is_null() | parsed["subject_id"].is_null()
    for c, expr in parsed.items():
        if c != "subject_id":
            bad = bad | (pl.col(c).is_not_null() & expr.is_null())
    return bad


def _scan(path: Path, spec: TableSpec, row_index: bool = False) -> pl.LazyFrame:
    """The CSV with every column as text (the needed ones only), after checking its header."""
    try:
        lf = pl.scan_csv(
            path, infer_schema=False, raise_if_empty=True, row_index_name=_ROW if row_index else None
        )
        header = lf.collect_schema().names()
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"not a readable CSV file ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in spec.required if c not in header]
    if missing:
        raise SourceError(
            path,
            f"missing required column(s) {missing}; found {[c for c in header if c != _ROW]}: is this "
            f"the MIMIC-IV table {path.name.split('.')[0]} as published?",
        )
    return lf.select(([_ROW] if row_index else []) + list(spec.required))


def _typed(
    lf: pl.LazyFrame, spec: TableSpec, tolerant: bool, lookups: dict[str, pl.DataFrame]
) -> pl.LazyFrame:
    """Parsed columns, each beside its text (``_text_{column}``, for :func:`_unparsable`), and the
    lookups joined."""
    parsed = _parsers(spec, tolerant)
    typed = lf.with_columns(pl.col(c).alias(_TEXT + c) for c in parsed).with_columns(**parsed)
    if "dischtime" in spec.lookups:
        typed = typed.join(lookups["dischtime"].lazy(), on="hadm_id", how="left")
    if "deathtime" in spec.lookups:
        typed = typed.join(lookups["deathtime"].lazy(), on="subject_id", how="left")
    return typed


def _unparsable(batch: pl.DataFrame, spec: TableSpec) -> int:
    """Values of a batch of :func:`_typed` present as text that did not parse (a missing subject_id
    counts too). A parsed value is null wherever its text is, so null counts (known without a pass over
    the data) tell them apart."""
    n = batch["subject_id"].null_count()
    for c in (*spec.integers, *spec.times, *spec.dates):
        n += batch[c].null_count() - batch[_TEXT + c].null_count()
    return n


def _first_bad_row(path: Path, spec: TableSpec, tolerant: bool) -> SourceError | None:
    """The first row with an unparsable column, as the SourceError to raise (None if every row parses).

    A second read of the file, done only once a bad row is known to exist.
    """
    lf = _scan(path, spec, row_index=True)
    parsed = _parsers(spec, tolerant)
    column = pl.lit(None, pl.String)
    for c in reversed(list(parsed)):
        failed = pl.col(c).is_not_null() & parsed[c].is_null()
        if c == "subject_id":
            failed = failed | pl.col(c).is_null()
        column = pl.when(failed).then(pl.lit(c)).otherwise(column)
    bad = lf.filter(_bad_row(parsed)).with_columns(column.alias("_column")).sort(_ROW).head(1).collect()
    if bad.height == 0:
        return None
    row, name = bad[_ROW][0], bad["_column"][0]
    value = bad[name][0]
    what = "an integer" if name in ("subject_id", *spec.integers) else "a timestamp"
    shape = f" ({DATE_FORMAT} or {DATETIME_FORMAT})" if what == "a timestamp" else ""
    return SourceError(
        path,
        f"column {name!r}, data row {row + 1} (line {row + 2}): {value!r} is not {what}{shape}"
        + ("" if value is not None else " (it is empty)")
        + "; fix or remove the row and run the conversion again (it resumes), or convert with "
        "on_error='skip' to skip this table",
    )


# -- staging one table --------------------------------------------------------------------------------
@dataclass
class _Staged:
    table: str
    report: dict[str, Any]
    seconds: float
    resumed: bool = False


def _events_of(typed: pl.LazyFrame, spec: TableSpec) -> pl.LazyFrame:
    kinds = [kind.build(typed) for kind in spec.events.values()]
    return kinds[0] if len(kinds) == 1 else pl.concat(kinds, how="vertical")


def _stage_table(
    table: str,
    path: Path,
    staging: Path,
    breaks: list[int],
    lookups: dict[str, pl.DataFrame],
    src: Path,
) -> _Staged:
    """One streaming pass over the CSV: its events staged for the shard sort (``staging/{table}.arrow``)
    and, from the same batches, the rows, events per kind and unparsable rows counted.

    Raises SourceError (nothing of the table committed) for a bad file or row.
    """
    t0 = time.perf_counter()
    spec = TABLES[table]
    target = staging / f"{table}.arrow"
    counters = [kind.time_expr().is_not_null().sum().alias(name) for name, kind in spec.events.items()]
    for tolerant in (False, True):
        typed = _typed(_scan(path, spec), spec, tolerant, lookups)
        stager = EventStager(target, breaks)
        source_rows, totals = 0, dict.fromkeys([_BAD, *spec.events], 0)
        try:
            for batch in typed.collect_batches(chunk_size=STAGE_BATCH_ROWS):
                source_rows += batch.height
                totals[_BAD] += _unparsable(batch, spec)
                if totals[_BAD]:
                    break  # this pass is void: find the first bad row below
                for name, value in batch.select(counters).row(0, named=True).items():
                    totals[name] += int(value)
                stager.add(_events_of(batch.lazy(), spec).collect())
        except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
            stager.abort()
            raise SourceError(path, f"not a readable CSV file ({type(exc).__name__}: {exc})") from exc
        except BaseException:
            stager.abort()
            raise
        if totals[_BAD] == 0:
            stager.finish()
            break
        stager.abort()
        error = _first_bad_row(path, spec, tolerant=True)
        if error is not None:
            raise error
        if tolerant:  # the two passes disagree: never seen, but never stage a table with bad rows
            raise SourceError(path, f"{totals[_BAD]} value(s) do not parse; check the file's timestamps")
        # Every row parses with the tolerant parser: stage again with it (slower, rare).
    report: dict[str, Any] = {"file": str(path.relative_to(src)), "source_rows": source_rows, "events": {}}
    for name, kind in spec.events.items():
        # Static kinds give an event for every row.
        written = source_rows if kind.time is None else totals[name]
        report["events"][name] = {"written": written, "dropped_no_usable_time": source_rows - written}
    return _Staged(table, report, time.perf_counter() - t0)


def _fingerprint(paths: list[Path | None]) -> list[list[int] | None]:
    """Size and mtime of the files a staged table was made from (None: absent)."""
    return [None if p is None else [p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def _commit(staged: _Staged, inputs: list[Path | None], staging: Path) -> None:
    """Record a staged table as complete (the JSON last: its presence is the commit)."""
    tables = staging / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    info = {"inputs": _fingerprint(inputs), **staged.report}
    partial = tables / f"{staged.table}.json.partial"
    partial.write_text(json.dumps(info, indent=1))
    os.replace(partial, tables / f"{staged.table}.json")


def _committed(table: str, inputs: list[Path | None], staging: Path) -> _Staged | None:
    """The committed staging of a table from an earlier run, if its inputs (the table, and admissions
    for its lookups) are unchanged and its staged events check out."""
    info_path = staging / "tables" / f"{table}.json"
    if not info_path.exists():
        return None
    try:
        info = json.loads(info_path.read_text())
        if info["inputs"] != _fingerprint(inputs):
            return None
        written = sum(kind["written"] for kind in info["events"].values())
        if StagedEvents.load(staging / f"{table}.arrow").n_events != written:
            return None
    except (OSError, KeyError, ValueError, pl.exceptions.PolarsError):
        return None
    report = {k: info[k] for k in ("file", "source_rows", "events")}
    return _Staged(table, report, 0.0, resumed=True)


# -- admissions lookups, patients, dictionaries -------------------------------------------------------
def _lookups(path: Path | None) -> dict[str, pl.DataFrame]:
    """``dischtime`` per ``hadm_id`` and first ``deathtime`` per ``subject_id`` from admissions.

    Unparsable rows read as null here; the admissions table itself reports them when it is staged.
    """
    empty = {
        "dischtime": pl.DataFrame(schema={"hadm_id": pl.Int64, "dischtime": pl.Datetime("us")}),
        "deathtime": pl.DataFrame(schema={"subject_id": pl.Int64, "deathtime": pl.Datetime("us")}),
    }
    if path is None:
        return empty
    spec = TABLES["admissions"]
    typed = _scan(path, spec).select(**_parsers(spec, False))
    discharge = typed.select("hadm_id", "dischtime").drop_nulls("hadm_id").unique("hadm_id", keep="first")
    death = (
        typed.select("subject_id", "deathtime")
        .drop_nulls()
        .group_by("subject_id")
        .agg(pl.col("deathtime").min())
    )
    try:
        dischtime, deathtime = pl.collect_all([discharge, death])
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"not a readable CSV file ({type(exc).__name__}: {exc})") from exc
    return {"dischtime": dischtime.sort("hadm_id"), "deathtime": deathtime.sort("subject_id")}


def _patients(path: Path) -> pl.DataFrame:
    """The patients table's static columns (``patients.parquet``); unparsable values read as null."""
    spec = TABLES["patients"]
    try:
        frame = _scan(path, spec).with_columns(**_parsers(spec, False)).collect()
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"not a readable CSV file ({type(exc).__name__}: {exc})") from exc
    return frame.drop_nulls("subject_id").select(
        pl.col("subject_id").alias("patient_id"),
        "gender",
        "anchor_age",
        "anchor_year",
        pl.col("dod").cast(pl.Date),
    )


def _read_dictionary(path: Path) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"not a readable CSV file ({exc})") from exc


def _describe_codes(dictionaries: dict[str, pl.DataFrame]) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Descriptions from the d_* dictionaries (d_labitems, d_items, d_icd_*, when present)."""

    def describe(counts: pl.DataFrame) -> pl.DataFrame:
        parts = pl.col("code").str.split("//")
        out = counts.with_columns(
            prefix=parts.list.get(0, null_on_oob=True),
            p1=parts.list.get(1, null_on_oob=True),
            p2=parts.list.get(2, null_on_oob=True),
            p3=parts.list.get(3, null_on_oob=True),
        ).with_columns(
            itemid=pl.when(
                pl.col("prefix").is_in(["LAB", "SUBJECT_FLUID_OUTPUT", "INFUSION_START", "INFUSION_END"])
            )
            .then(pl.col("p1"))
            .when((pl.col("prefix") == "PROCEDURE") & pl.col("p1").is_in(["START", "END"]))
            .then(pl.col("p2")),
            description=pl.lit(None, pl.String),
        )
        # LAB codes come from labevents (d_labitems) and chartevents (d_items): the item ids differ.
        if "d_labitems" in dictionaries:
            lab = dictionaries["d_labitems"].select(
                "itemid",
                pl.concat_str(["label", "fluid", "category"], separator=", ", ignore_nulls=True).alias("_d"),
            )
            out = _fill(out.join(lab, on="itemid", how="left"), pl.col("prefix") == "LAB")
        if "d_items" in dictionaries:
            icu = dictionaries["d_items"].select("itemid", pl.col("label").alias("_d"))
            out = _fill(out.join(icu, on="itemid", how="left"), pl.col("itemid").is_not_null())
        for name, prefix in (("d_icd_diagnoses", "DIAGNOSIS"), ("d_icd_procedures", "PROCEDURE")):
            if name not in dictionaries:
                continue
            icd = (
                dictionaries[name]
                .select(
                    pl.col("icd_version").alias("p2"),
                    pl.col("icd_code").str.strip_chars().alias("p3"),
                    pl.col("long_title").alias("_d"),
                    pl.lit(prefix).alias("prefix"),
                )
                .unique(["prefix", "p2", "p3"], keep="first")
            )
            out = _fill(out.join(icd, on=["prefix", "p2", "p3"], how="left"), pl.lit(True))
        # No ontology parents: MIMIC-IV's dictionaries do not give them (the MEDS ETL maps to OMOP).
        return out.with_columns(pl.lit(None, pl.List(pl.String)).alias("parent_codes")).select(
            "code", "count", "description", "parent_codes"
        )

    return describe


def _fill(frame: pl.DataFrame, where: pl.Expr) -> pl.DataFrame:
    """``description`` = ``_d`` where ``where`` holds and no description was found yet; drops ``_d``."""
    return frame.with_columns(
        pl.when(where & pl.col("description").is_null())
        .then(pl.col("_d"))
        .otherwise(pl.col("description"))
        .alias("description")
    ).drop("_d")


# -- the conversion -----------------------------------------------------------------------------------
def _plan(src: Path, wanted: list[str], subjects_per_shard: int, breaks: list[int]) -> dict[str, Any]:
    return {
        "staging_version": _STAGING_VERSION,
        "source": str(src.resolve()),
        "tables": wanted,
        "subjects_per_shard": subjects_per_shard,
        "breaks": breaks,
    }


def convert_mimic_iv(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tables: Sequence[str] | None = None,
    on_error: OnError = "raise",
    progress: bool = True,
    subjects_per_shard: int = DEFAULT_SUBJECTS_PER_SHARD,
    workers: int | None = None,
) -> Path:
    """Convert MIMIC-IV ``src`` (with ``hosp/`` and ``icu/``) into a new events store at ``out``.

    Args:
        src: the MIMIC-IV folder as published (``hosp/*.csv.gz``, ``icu/*.csv.gz``; ``.csv`` also read).
        out: the store folder to create (must not exist). An unfinished earlier conversion to the same
            ``out`` (``<out>.tmp-*``) is resumed from its committed tables and shards.
        tables: which tables of :data:`TABLES` to convert; None = all. A missing table is reported in
            the manifest (``events.missing_tables``) and skipped. ``hosp/patients`` plans the shards and
            ``hosp/admissions`` gives discharge and death times whenever they exist, converted or not.
        on_error: ``"raise"``: a bad file (not CSV, missing column, unparsable timestamp, non-integer
            subject_id) raises :class:`SourceError` naming the file, column and first bad row; ``out``
            is not created and the tables committed so far are kept for a resume. ``"skip"``: that
            table (and the tables needing its discharge times) is skipped and listed in
            ``events.skipped_tables``.
        progress: show tqdm bars over tables and shards.
        subjects_per_shard: subjects per ``events/data`` shard (default ≈ 1 M MIMIC-IV events; the shard
            sorts hold at most ≈ 2 M events at once, see :func:`~clinseq.io.meds.write_events`).
        workers: threads converting tables (then sorting shards) in parallel; default the CPU count,
            at most 4.

    Returns:
        the store path. Its manifest's ``events.tables`` gives, per table, the source file, its rows and,
        per event kind, the events written and the rows dropped for lack of a usable time;
        ``events.timings_s`` where the time went.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    src, out = Path(src), Path(out)
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}: pass e.g. workers=2 (one per core)")
    if not src.is_dir():
        raise SourceError(src, "not a folder: pass the MIMIC-IV root that holds hosp/ and icu/")
    wanted = list(TABLES) if tables is None else list(dict.fromkeys(tables))
    unknown = [t for t in wanted if t not in TABLES]
    if unknown:
        raise ConfigError(f"unknown MIMIC-IV table(s) {unknown}: choose from {sorted(TABLES)}")
    n_workers = max(1, min(4, os.cpu_count() or 1)) if workers is None else int(workers)

    report: dict[str, Any] = {"tables": {}, "missing_tables": [], "skipped_tables": [], "resumed_tables": []}
    paths = {t: find_table(src, t) for t in wanted}
    for t in wanted:
        if paths[t] is None:
            report["missing_tables"].append(f"{TABLES[t].folder}/{t}.csv[.gz]")
    present = [t for t in wanted if paths[t] is not None]

    # Shards by subject-id range, planned from patients (every MIMIC-IV subject is in it).
    patients_path = find_table(src, "patients")
    statics = None
    if patients_path is not None:
        try:
            statics = _patients(patients_path)
        except SourceError:
            if on_error == "raise":
                raise
            # skip: the patients table's own staging reports it; plan from the other tables.
    if statics is not None:
        planned = statics["patient_id"]
    else:
        planned = _subject_ids([paths[t] for t in present])
    breaks = shard_breaks(planned.to_numpy(), subjects_per_shard)
    plan = _plan(src, wanted, subjects_per_shard, breaks)

    writer = StoreWriter(out, dataset="mimic-iv", source=src, resume=True)
    staging = writer.tmp_path / "_staging"
    plan_path = staging / "plan.json"
    if not plan_path.exists() or json.loads(plan_path.read_text()) != plan:
        # Nothing from another plan (or none) is reused.
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(writer.tmp_path / "events", ignore_errors=True)
        staging.mkdir(parents=True)
        plan_path.write_text(json.dumps(plan))
    timings: dict[str, float] = {"plan": time.perf_counter() - t_start}
    # A failure (bad file, interruption) leaves <out>.tmp-<pid> with what was committed, for a resume.
    t0 = time.perf_counter()
    admissions_path = find_table(src, "admissions")
    admissions_ok = admissions_path is not None
    staged: dict[str, _Staged] = {}

    def stage(table: str) -> _Staged:
        path = paths[table]
        assert path is not None  # only present tables are staged
        inputs = [path, admissions_path if TABLES[table].lookups and admissions_ok else None]
        done = _committed(table, inputs, staging)
        if done is not None:
            return done
        result = _stage_table(table, path, staging, breaks, lookups, src)
        _commit(result, inputs, staging)
        return result

    def kept_for_resume(exc: SourceError) -> SourceError:
        note = f"the tables converted so far are kept in {writer.tmp_path} for a resume"
        return SourceError(exc.path, f"{exc.problem} [{note}; delete that folder to start afresh]")

    def record_failure(table: str, exc: SourceError) -> None:
        if on_error == "raise":
            raise kept_for_resume(exc) from exc
        report["skipped_tables"].append({"table": table, "path": exc.path, "reason": exc.problem})

    # admissions first: its rows must parse before other tables use its discharge/death times.
    lookups = _lookups(None)
    if "admissions" in present:
        try:
            staged["admissions"] = stage("admissions")
        except SourceError as exc:
            admissions_ok = False
            record_failure("admissions", exc)
    if admissions_ok:
        try:
            lookups = _lookups(admissions_path)
        except SourceError as exc:  # only when admissions itself is not converted (else staged above)
            admissions_ok = False
            record_failure("admissions", exc)
    timings["admissions"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rest = [t for t in present if t != "admissions"]
    for table in [t for t in rest if TABLES[t].lookups == ("dischtime",) and not admissions_ok]:
        rest.remove(table)
        reason = "needs admissions (for dischtime), which is missing or was skipped"
        report["skipped_tables"].append({"table": table, "path": str(paths[table]), "reason": reason})
    rest.sort(key=lambda t: -(paths[t].stat().st_size))  # type: ignore[union-attr]  # largest first
    dictionaries: dict[str, pl.DataFrame] = {}
    with ThreadPoolExecutor(n_workers) as pool:
        futures: dict[Future, str] = {pool.submit(stage, t): t for t in rest}
        for name, folder in DICTIONARIES.items():
            path = find_table(src, name, folder)
            if path is not None:
                futures[pool.submit(_read_dictionary, path)] = name
        failure: SourceError | None = None
        bar = tqdm(total=len(rest), desc="reading MIMIC-IV tables", disable=not progress)
        for future in as_completed(futures):
            name = futures[future]
            if future.cancelled():
                continue
            try:
                result = future.result()
            except SourceError as exc:
                if on_error == "raise" and failure is None:
                    failure = exc
                    for other in futures:
                        other.cancel()  # the running ones finish and commit (for a resume)
                elif on_error == "skip":
                    report["skipped_tables"].append(
                        {"table": name, "path": str(exc.path), "reason": exc.problem}
                    )
                continue
            if isinstance(result, _Staged):
                staged[name] = result
                bar.update()
            else:
                dictionaries[name] = result
        bar.close()
        if failure is not None:
            raise kept_for_resume(failure) from failure
    timings["tables"] = time.perf_counter() - t0
    report["skipped_tables"].sort(key=lambda s: wanted.index(s["table"]) if s["table"] in wanted else 0)

    t0 = time.perf_counter()
    order = [t for t in wanted if t in staged]
    for table in order:
        report["tables"][table] = staged[table].report
        if staged[table].resumed:
            report["resumed_tables"].append(table)
    report["table_seconds"] = {t: round(staged[t].seconds, 3) for t in order if not staged[t].resumed}
    summary = write_events(
        [StagedEvents.load(staging / f"{t}.arrow") for t in order],
        writer.tmp_path,
        n_shards=len(breaks) + 1,
        dataset_meta={"dataset_name": "MIMIC-IV", "dataset_version": _version_of(src)},
        describe=_describe_codes(dictionaries),
        workers=n_workers,
        # Shards of an interrupted run hold the same events only if no table was staged anew.
        reuse_shards=all(staged[t].resumed for t in order),
        progress=progress,
    )
    timings["shards"] = time.perf_counter() - t0
    subjects = pl.concat(
        [planned.cast(pl.Int64).rename("subject_id"), pl.Series("subject_id", summary.subject_ids)]
    ).unique()
    splits = assign_splits(subjects.to_numpy())
    write_subject_splits(writer.tmp_path, splits)
    shutil.rmtree(staging)
    report.update(
        n_events=summary.n_events,
        n_subjects=summary.n_subjects,
        n_shards=summary.n_shards,
        n_codes=summary.codes.height,
        reused_shards=summary.reused_shards,
        source_format="mimic-iv",
    )
    timings["total"] = time.perf_counter() - t_start
    report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return writer.finish(store_patients(splits, statics), manifest_extra={"events": report})


def _subject_ids(paths: list[Path | None]) -> pl.Series:
    """Subject ids of the tables (only when there is no patients table to plan the shards from)."""
    frames = [
        pl.scan_csv(p, infer_schema=False)
        .select(pl.col("subject_id").str.strip_chars().cast(pl.Int64, strict=False))
        .drop_nulls()
        .unique()
        for p in paths
        if p is not None
    ]
    if not frames:
        return pl.Series("subject_id", [], pl.Int64)
    try:
        return pl.concat(frames).unique().collect()["subject_id"]
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError):
        return pl.Series("subject_id", [], pl.Int64)  # the staging pass reports the bad file


def _version_of(src: Path) -> str | None:
    """The MIMIC-IV version when the folder name or README says it (``.../mimic-iv/2.2``), else None."""
    for part in reversed(src.resolve().parts):
        if part[:1].isdigit() and "." in part:
            return part
    readme = src / "README.txt"
    if readme.exists():
        first = readme.read_text(errors="replace").splitlines()[:5]
        for line in first:
            if "Demo" in line:
                return "demo"
    return None


__all__ = [
    "DICTIONARIES",
    "TABLES",
    "EventKind",
    "TableSpec",
    "convert_mimic_iv",
    "find_table",
]
