"""MIMIC-IV (hosp/ and icu/ CSV or CSV.GZ, as published on PhysioNet) → an events timeline store.

Johnson et al., "MIMIC-IV, a freely accessible electronic health record dataset", Sci Data 10, 1 (2023).
Codes follow the MEDS MIMIC-IV ETL conventions (``LAB//{itemid}//{valueuom}``,
``DIAGNOSIS//ICD//{icd_version}//{icd_code}``...), with a null code part written ``UNK``. The full
table → code map is :data:`TABLES` (and ``data_cards/mimic_iv.md``).

Pipeline, per table, with polars lazy scans and streaming sinks so that memory is bounded by one shard
rather than the dataset (labevents ≈ 120 M rows, chartevents ≈ 330 M):

1. scan the CSV with every column as text, parse the columns the table needs (``subject_id`` int64,
   timestamps, ``hadm_id``) and stream the typed table to ``_staging/tables/{table}.parquet`` with
   the data-row number of each row and the name of the first column that failed to parse;
2. check that staged table: an unparsable timestamp or a non-integer / missing ``subject_id`` is a
   :class:`~clinseq.utils.SourceError` naming the file, column, data row and value (or, with
   ``on_error="skip"``, the table is skipped and reported);
3. turn each of the table's event kinds into MEDS events and stream them into shards by subject-id
   range (``_staging/events/{event}/shard=NNNNN/``); rows without a usable time are dropped and
   counted per event kind;
4. sort each shard in memory and write ``events/data/NNNNN.parquet`` and ``events.arrow``.

Diagnoses, ICD procedures and DRG codes are timed at the admission's ``dischtime``: hospital coders
assign them after discharge, so timing them earlier would leak the future into any model that uses
the events before discharge.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from clinseq.io.meds import (
    DEFAULT_SUBJECTS_PER_SHARD,
    assign_splits,
    shard_breaks,
    sink_partitioned,
    store_patients,
    write_events,
)
from clinseq.timeline.writer import StoreWriter
from clinseq.utils import ConfigError, SourceError

OnError = Literal["raise", "skip"]
UNK = "UNK"
_ROW = "_row"
_BAD = "_bad_column"
_BAD_VALUE = "_bad_value"

EventBuilder = Callable[[pl.LazyFrame], pl.LazyFrame]


def _code(*parts: str) -> pl.Expr:
    """``A//B//C`` from literal parts and ``"@column"`` parts; a null column value becomes ``UNK``."""
    exprs = [pl.col(p[1:]).fill_null(UNK) if p.startswith("@") else pl.lit(p) for p in parts]
    return pl.concat_str(exprs, separator="//").alias("code")


def _events(
    time: str | pl.Expr | None,
    *code_parts: str,
    numeric: str | pl.Expr | None = None,
    text: str | None = None,
) -> EventBuilder:
    """An event kind: ``time`` column (None = static), code parts (``"@col"`` = a column), values."""

    def build(t: pl.LazyFrame) -> pl.LazyFrame:
        if time is None:
            time_expr = pl.lit(None, pl.Datetime("us"))
        else:
            time_expr = pl.col(time) if isinstance(time, str) else time
        if numeric is None:
            num = pl.lit(None, pl.Float32)
        else:
            num = (pl.col(numeric) if isinstance(numeric, str) else numeric).cast(pl.Float32, strict=False)
        txt = pl.lit(None, pl.String) if text is None else pl.col(text).cast(pl.String)
        out = t.select(
            pl.col("subject_id"),
            time_expr.cast(pl.Datetime("us")).alias("time"),
            _code(*code_parts),
            num.alias("numeric_value"),
            txt.alias("text_value"),
        )
        return out if time is None else out.filter(pl.col("time").is_not_null())

    return build


@dataclass(frozen=True)
class TableSpec:
    """How one MIMIC-IV table becomes events.

    ``times`` are parsed as timestamps (``%Y-%m-%d %H:%M:%S`` or ``%Y-%m-%d``); ``needs_discharge``
    tables are joined to admissions on ``hadm_id`` for the discharge time (``dischtime``).
    """

    folder: str
    required: tuple[str, ...]
    times: tuple[str, ...] = ()
    integers: tuple[str, ...] = ()
    events: dict[str, EventBuilder] = field(default_factory=dict)
    needs_discharge: bool = False


def _birth(t: pl.LazyFrame) -> pl.LazyFrame:
    year = pl.col("anchor_year") - pl.col("anchor_age")
    return _events(pl.datetime(year, 1, 1), "MEDS_BIRTH")(t)


#: table → (folder, required columns, timestamp columns, event kinds). Each is optional.
TABLES: dict[str, TableSpec] = {
    "patients": TableSpec(
        "hosp",
        ("subject_id", "gender", "anchor_age", "anchor_year", "dod"),
        ("dod",),
        ("anchor_age", "anchor_year"),
        {
            "gender": _events(None, "GENDER", "@gender"),
            "birth": _birth,
            "death": _events("dod", "MEDS_DEATH"),
        },
    ),
    "admissions": TableSpec(
        "hosp",
        (
            "subject_id",
            "hadm_id",
            "admittime",
            "dischtime",
            "admission_type",
            "admission_location",
            "discharge_location",
            "edregtime",
            "edouttime",
        ),
        ("admittime", "dischtime", "edregtime", "edouttime"),
        ("hadm_id",),
        {
            "admission": _events("admittime", "HOSPITAL_ADMISSION", "@admission_type", "@admission_location"),
            "discharge": _events("dischtime", "HOSPITAL_DISCHARGE", "@discharge_location"),
            "ed_registration": _events("edregtime", "ED_REGISTRATION"),
            "ed_out": _events("edouttime", "ED_OUT"),
        },
    ),
    "transfers": TableSpec(
        "hosp",
        ("subject_id", "eventtype", "careunit", "intime"),
        ("intime",),
        (),
        {"transfer": _events("intime", "TRANSFER_TO", "@eventtype", "@careunit")},
    ),
    "diagnoses_icd": TableSpec(
        "hosp",
        ("subject_id", "hadm_id", "icd_code", "icd_version"),
        (),
        ("hadm_id",),
        {"diagnosis": _events("dischtime", "DIAGNOSIS", "ICD", "@icd_version", "@icd_code")},
        needs_discharge=True,
    ),
    "procedures_icd": TableSpec(
        "hosp",
        ("subject_id", "hadm_id", "icd_code", "icd_version"),
        (),
        ("hadm_id",),
        {"procedure": _events("dischtime", "PROCEDURE", "ICD", "@icd_version", "@icd_code")},
        needs_discharge=True,
    ),
    "drgcodes": TableSpec(
        "hosp",
        ("subject_id", "hadm_id", "drg_type", "drg_code", "description"),
        (),
        ("hadm_id",),
        {"drg": _events("dischtime", "DRG", "@drg_type", "@drg_code", "@description")},
        needs_discharge=True,
    ),
    "hcpcsevents": TableSpec(
        "hosp",
        ("subject_id", "chartdate", "short_description"),
        ("chartdate",),
        (),
        {"hcpcs": _events("chartdate", "HCPCS", "@short_description")},
    ),
    "labevents": TableSpec(
        "hosp",
        ("subject_id", "itemid", "charttime", "value", "valuenum", "valueuom"),
        ("charttime",),
        (),
        {"lab": _events("charttime", "LAB", "@itemid", "@valueuom", numeric="valuenum", text="value")},
    ),
    "prescriptions": TableSpec(
        "hosp",
        ("subject_id", "starttime", "drug", "dose_val_rx"),
        ("starttime",),
        (),
        {
            "prescription": _events(
                "starttime", "MEDICATION", "PRESCRIPTION", "@drug", numeric="dose_val_rx", text="dose_val_rx"
            )
        },
    ),
    "pharmacy": TableSpec(
        "hosp",
        ("subject_id", "starttime", "stoptime", "medication"),
        ("starttime", "stoptime"),
        (),
        {
            "start": _events("starttime", "MEDICATION", "START", "@medication"),
            "stop": _events("stoptime", "MEDICATION", "STOP", "@medication"),
        },
    ),
    "emar": TableSpec(
        "hosp",
        ("subject_id", "charttime", "medication", "event_txt"),
        ("charttime",),
        (),
        {"administration": _events("charttime", "MEDICATION", "@medication", "@event_txt")},
    ),
    "omr": TableSpec(
        "hosp",
        ("subject_id", "chartdate", "result_name", "result_value"),
        ("chartdate",),
        (),
        {"omr": _events("chartdate", "@result_name", numeric="result_value", text="result_value")},
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
        ("chartdate", "charttime"),
        (),
        {
            "micro": _events(
                pl.coalesce("charttime", "chartdate"),
                "MICROBIOLOGY",
                "@test_name",
                "@org_name",
                "@ab_name",
                numeric="dilution_value",
                text="interpretation",
            )
        },
    ),
    "icustays": TableSpec(
        "icu",
        ("subject_id", "first_careunit", "last_careunit", "intime", "outtime"),
        ("intime", "outtime"),
        (),
        {
            "icu_admission": _events("intime", "ICU_ADMISSION", "@first_careunit"),
            "icu_discharge": _events("outtime", "ICU_DISCHARGE", "@last_careunit"),
        },
    ),
    "chartevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "charttime", "value", "valuenum", "valueuom"),
        ("charttime",),
        (),
        {"chart": _events("charttime", "CHART", "@itemid", "@valueuom", numeric="valuenum", text="value")},
    ),
    "inputevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "starttime", "endtime", "amount", "rate", "patientweight"),
        ("starttime", "endtime"),
        (),
        {
            "infusion_start": _events("starttime", "INFUSION_START", "@itemid", numeric="rate"),
            "infusion_end": _events("endtime", "INFUSION_END", "@itemid", numeric="amount"),
            "weight": _events(
                pl.when(pl.col("patientweight").is_not_null()).then(pl.col("starttime")),
                "SUBJECT_WEIGHT_AT_INFUSION",
                "KG",
                numeric="patientweight",
            ),
        },
    ),
    "outputevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "charttime", "value", "valueuom"),
        ("charttime",),
        (),
        {"output": _events("charttime", "SUBJECT_FLUID_OUTPUT", "@itemid", "@valueuom", numeric="value")},
    ),
    "procedureevents": TableSpec(
        "icu",
        ("subject_id", "itemid", "starttime", "endtime", "value", "valueuom"),
        ("starttime", "endtime"),
        (),
        {
            "start": _events("starttime", "PROCEDURE", "START", "@itemid", numeric="value"),
            "end": _events("endtime", "PROCEDURE", "END", "@itemid"),
        },
    ),
}


def find_table(src: Path, table: str) -> Path | None:
    """``src/{folder}/{table}.csv.gz`` or ``.csv`` (the layout as published), else None."""
    folder = src / TABLES[table].folder
    for name in (f"{table}.csv.gz", f"{table}.csv"):
        if (folder / name).exists():
            return folder / name
    return None


def _parse_time(column: str) -> pl.Expr:
    raw = pl.col(column)
    return pl.coalesce(
        raw.str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False),
        raw.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us", strict=False),
        raw.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
    )


def _scan_table(path: Path, spec: TableSpec) -> pl.LazyFrame:
    """The typed table with ``_row`` (0-based data row) and the first unparsable column per row."""
    try:
        lf = pl.scan_csv(path, infer_schema=False, row_index_name=_ROW, raise_if_empty=True)
        header = lf.collect_schema().names()
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"not a readable CSV file ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in spec.required if c not in header]
    if missing:
        raise SourceError(
            path,
            f"missing required column(s) {missing}; found {header[1:]}: is this the MIMIC-IV table "
            f"{path.name.split('.')[0]} as published?",
        )
    parsed = {"subject_id": pl.col("subject_id").str.strip_chars().cast(pl.Int64, strict=False)}
    for c in spec.integers:
        parsed[c] = pl.col(c).str.strip_chars().cast(pl.Int64, strict=False)
    for c in spec.times:
        parsed[c] = _parse_time(c)
    # The first column whose raw text is present but does not parse (subject_id must also be present).
    bad = pl.when(pl.col("subject_id").is_null()).then(pl.lit("subject_id"))
    for c, expr in parsed.items():
        bad = bad.when(pl.col(c).is_not_null() & expr.is_null()).then(pl.lit(c))
    bad = bad.otherwise(pl.lit(None, pl.String))
    bad_value = pl.lit(None, pl.String)
    for c in reversed(list(parsed)):
        bad_value = pl.when(pl.col(_BAD) == c).then(pl.col(c)).otherwise(bad_value)
    keep = [_ROW] + list(spec.required)
    return (
        lf.select(keep)
        .with_columns(bad.alias(_BAD))
        .with_columns(bad_value.alias(_BAD_VALUE))
        .with_columns(**parsed)
    )


def _stage_table(path: Path, spec: TableSpec, staged: Path) -> int:
    """Stream the typed table to ``staged``; raise SourceError at the first bad row; return the rows."""
    lf = _scan_table(path, spec)
    try:
        lf.sink_parquet(staged, mkdir=True)
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"not a readable CSV file ({type(exc).__name__}: {exc})") from exc
    first_bad = (
        pl.scan_parquet(staged)
        .filter(pl.col(_BAD).is_not_null())
        .select(_ROW, _BAD, _BAD_VALUE)
        .sort(_ROW)
        .head(1)
        .collect()
    )
    if first_bad.height:
        row, column, value = first_bad.row(0)
        what = "an integer" if column in ("subject_id", "hadm_id", *spec.integers) else "a timestamp"
        raise SourceError(
            path,
            f"column {column!r}, data row {row + 1} (line {row + 2}): {value!r} is not {what}"
            + ("" if value is not None else " (it is empty)")
            + "; fix or remove the row, or convert with on_error='skip' to skip this table",
        )
    return int(pl.scan_parquet(staged).select(pl.len()).collect().item())


def _describe_codes(src: Path) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Descriptions from the d_* dictionaries (d_labitems, d_items, d_icd_*, when present)."""

    def read(folder: str, name: str) -> pl.DataFrame | None:
        for suffix in (".csv.gz", ".csv"):
            path = src / folder / f"{name}{suffix}"
            if path.exists():
                try:
                    return pl.read_csv(path, infer_schema=False)
                except pl.exceptions.PolarsError as exc:
                    raise SourceError(path, f"not a readable CSV file ({exc})") from exc
        return None

    def describe(counts: pl.DataFrame) -> pl.DataFrame:
        parts = pl.col("code").str.split("//")
        out = counts.with_columns(
            prefix=parts.list.get(0, null_on_oob=True),
            p1=parts.list.get(1, null_on_oob=True),
            p2=parts.list.get(2, null_on_oob=True),
            p3=parts.list.get(3, null_on_oob=True),
        ).with_columns(
            itemid=pl.when(
                pl.col("prefix").is_in(
                    ["LAB", "CHART", "SUBJECT_FLUID_OUTPUT", "INFUSION_START", "INFUSION_END"]
                )
            )
            .then(pl.col("p1"))
            .when((pl.col("prefix") == "PROCEDURE") & pl.col("p1").is_in(["START", "END"]))
            .then(pl.col("p2"))
        )
        out = out.with_columns(pl.lit(None, pl.String).alias("description"))
        labitems, items = read("hosp", "d_labitems"), read("icu", "d_items")
        if labitems is not None:
            lab = labitems.select(
                pl.col("itemid"),
                pl.concat_str(["label", "fluid", "category"], separator=", ", ignore_nulls=True).alias(
                    "_d_lab"
                ),
            )
            out = (
                out.join(lab, on="itemid", how="left")
                .with_columns(
                    pl.when(pl.col("prefix") == "LAB")
                    .then(pl.col("_d_lab"))
                    .otherwise(pl.col("description"))
                    .alias("description")
                )
                .drop("_d_lab")
            )
        if items is not None:
            icu = items.select(pl.col("itemid"), pl.col("label").alias("_d_icu"))
            out = (
                out.join(icu, on="itemid", how="left")
                .with_columns(
                    pl.when(pl.col("prefix") != "LAB")
                    .then(pl.coalesce("_d_icu", "description"))
                    .otherwise(pl.col("description"))
                    .alias("description")
                )
                .drop("_d_icu")
            )
        for name, prefix in (("d_icd_diagnoses", "DIAGNOSIS"), ("d_icd_procedures", "PROCEDURE")):
            table = read("hosp", name)
            if table is None:
                continue
            icd = table.select(
                pl.col("icd_version").alias("p2"),
                pl.col("icd_code").str.strip_chars().alias("p3"),
                pl.col("long_title").alias("_d_icd"),
                pl.lit(prefix).alias("prefix"),
            ).unique(["prefix", "p2", "p3"], keep="first")
            out = (
                out.join(icd, on=["prefix", "p2", "p3"], how="left")
                .with_columns(
                    pl.coalesce("_d_icd", "description").alias("description"),
                )
                .drop("_d_icd")
            )
        # No ontology parents: MIMIC-IV's dictionaries do not give them (the MEDS ETL maps to OMOP).
        return out.with_columns(pl.lit(None, pl.List(pl.String)).alias("parent_codes")).select(
            "code", "count", "description", "parent_codes"
        )

    return describe


def convert_mimic_iv(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tables: Sequence[str] | None = None,
    on_error: OnError = "raise",
    progress: bool = True,
    subjects_per_shard: int = DEFAULT_SUBJECTS_PER_SHARD,
) -> Path:
    """Convert MIMIC-IV ``src`` (with ``hosp/`` and ``icu/``) into a new events store at ``out``.

    Args:
        src: the MIMIC-IV folder as published (``hosp/*.csv.gz``, ``icu/*.csv.gz``; ``.csv`` also read).
        out: the store folder to create (must not exist).
        tables: which tables of :data:`TABLES` to convert; None = all. A missing table is reported in
            the manifest (``events.missing_tables``) and skipped. Diagnoses, ICD procedures and DRG codes
            need ``admissions`` (their time is its ``dischtime``); it is staged whenever they are asked for.
        on_error: ``"raise"``: a bad file (not CSV, missing column, unparsable timestamp, non-integer
            subject_id) raises :class:`SourceError` naming the file, column and first bad row, and nothing
            is written; ``"skip"``: that table is skipped and listed in ``events.skipped_tables``.
        progress: show a tqdm bar over tables.
        subjects_per_shard: subjects per ``events/data`` shard (memory ≈ one shard's events).

    Returns:
        the store path. Its manifest's ``events.tables`` gives, per table, the source file, its rows and,
        per event kind, the events written and the rows dropped for lack of a usable time.
    """
    from tqdm.auto import tqdm

    src, out = Path(src), Path(out)
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not src.is_dir():
        raise SourceError(src, "not a folder: pass the MIMIC-IV root that holds hosp/ and icu/")
    wanted = list(TABLES) if tables is None else list(dict.fromkeys(tables))
    unknown = [t for t in wanted if t not in TABLES]
    if unknown:
        raise ConfigError(f"unknown MIMIC-IV table(s) {unknown}: choose from {sorted(TABLES)}")
    stage_order = list(wanted)
    if any(TABLES[t].needs_discharge for t in wanted) and "admissions" not in wanted:
        stage_order.insert(0, "admissions")  # staged for dischtime only, no admission events written
    # patients first: its subject ids plan the shards before any event is written.
    stage_order.sort(key=lambda t: (t != "patients", t != "admissions"))

    writer = StoreWriter(out, dataset="mimic-iv", source=src, resume=False)
    staging = writer.tmp_path / "_staging"
    report: dict[str, Any] = {"tables": {}, "missing_tables": [], "skipped_tables": []}
    try:
        staged_tables: dict[str, Path] = {}
        for table in tqdm(stage_order, desc="reading MIMIC-IV tables", disable=not progress):
            path = find_table(src, table)
            if path is None:
                report["missing_tables"].append(f"{TABLES[table].folder}/{table}.csv[.gz]")
                continue
            try:
                n_rows = _stage_table(path, TABLES[table], staging / "tables" / f"{table}.parquet")
            except SourceError as exc:
                if on_error == "raise":
                    raise
                report["skipped_tables"].append({"table": table, "path": str(path), "reason": exc.problem})
                continue
            staged_tables[table] = staging / "tables" / f"{table}.parquet"
            report["tables"][table] = {
                "file": str(path.relative_to(src)),
                "source_rows": n_rows,
                "events": {},
            }

        # Shards by subject-id range, planned from patients (every MIMIC-IV subject is in it).
        if "patients" in staged_tables:
            subjects = pl.read_parquet(staged_tables["patients"], columns=["subject_id"])["subject_id"]
        else:
            subjects = (
                pl.concat([pl.scan_parquet(p).select("subject_id") for p in staged_tables.values()])
                .unique()
                .collect()["subject_id"]
                if staged_tables
                else pl.Series("subject_id", [], pl.Int64)
            )
        breaks = shard_breaks(subjects.to_numpy(), subjects_per_shard)

        discharge = None
        if "admissions" in staged_tables:
            discharge = (
                pl.scan_parquet(staged_tables["admissions"])
                .select("hadm_id", "dischtime")
                .unique("hadm_id", keep="first")
            )
        staged_events: list[Path] = []
        for table, staged in staged_tables.items():
            spec = TABLES[table]
            if table not in wanted:
                continue
            lf = pl.scan_parquet(staged)
            if spec.needs_discharge:
                if discharge is None:
                    report["skipped_tables"].append(
                        {"table": table, "path": str(staged), "reason": "needs admissions (for dischtime)"}
                    )
                    del report["tables"][table]
                    continue
                lf = lf.join(discharge, on="hadm_id", how="left")
            for kind, build in spec.events.items():
                folder = staging / "events" / f"{table}.{kind}"
                sink_partitioned(build(lf), folder, breaks)
                n_written = (
                    pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=False)
                    .select(pl.len())
                    .collect()
                    .item()
                    if any(folder.rglob("*.parquet"))
                    else 0
                )
                source_rows = report["tables"][table]["source_rows"]
                report["tables"][table]["events"][kind] = {
                    "written": int(n_written),
                    "dropped_no_usable_time": int(source_rows - n_written),
                }
                staged_events.append(folder)

        all_subjects = subjects.unique().sort()
        splits = assign_splits(all_subjects.to_numpy())
        summary = write_events(
            staged_events,
            writer.tmp_path,
            n_shards=len(breaks) + 1,
            splits=splits,
            dataset_meta={"dataset_name": "MIMIC-IV", "dataset_version": _version_of(src)},
            describe=_describe_codes(src),
            progress=progress,
        )
        statics = None
        if "patients" in staged_tables:
            statics = pl.read_parquet(staged_tables["patients"]).select(
                pl.col("subject_id").alias("patient_id"),
                "gender",
                "anchor_age",
                "anchor_year",
                pl.col("dod").cast(pl.Date),
            )
        shutil.rmtree(staging)
        report.update(
            n_events=summary.n_events,
            n_subjects=summary.n_subjects,
            n_shards=summary.n_shards,
            n_codes=summary.codes.height,
            source_format="mimic-iv",
        )
        return writer.finish(store_patients(splits, statics), manifest_extra={"events": report})
    except BaseException:
        shutil.rmtree(writer.tmp_path, ignore_errors=True)  # nothing half-written
        raise


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
