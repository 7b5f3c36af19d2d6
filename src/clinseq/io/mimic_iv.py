"""MIMIC-IV (hosp/ and icu/ CSV or CSV.GZ, as published on PhysioNet) → an events timeline store.

Johnson et al., "MIMIC-IV, a freely accessible electronic health record dataset", Sci Data 10, 1 (2023).
How each table becomes MEDS events (codes as the MEDS MIMIC-IV ETL writes them) is the
:data:`~clinseq.io.mimic_iv_tables.TABLES` spec; this module is the pipeline that applies it.

Pipeline (plan → stage → write), reading every table block by block so that memory is bounded by a
batch and a few shards rather than the dataset (labevents ≈ 120 M rows, chartevents ≈ 330 M): peak
memory is set by ``max_memory`` through :func:`clinseq.io.memory.memory_budget` (its docstring gives the
formula), not by the number of rows or subjects.

1. **plan** (:func:`_plan`): check the arguments, find the tables, plan shards (subject-id ranges) from
   ``patients``;
2. **stage** (:class:`_TableStager`): admissions first, and the two lookups other tables need from it
   (each admission's ``dischtime``, each subject's first ``deathtime``); then per table, one streaming
   pass over the CSV (:class:`~clinseq.io.csv_chunks.CsvChunks`: gzip inflated in a thread ahead of
   the parse, blocks of ``chunk_bytes`` of text, only the needed columns parsed): each block of
   typed rows gives every event kind of the table, staged sorted by shard
   (:class:`~clinseq.timeline.events_write.EventStager`), and the row counts, events per kind and
   unparsable rows are counted from the same batches. Tables run in parallel (``workers`` threads,
   largest first; polars releases the GIL). Only when a table has a bad row is it read again, to name
   the first one (or, for timestamps in an unexpected format, to parse it tolerantly);
3. **write** (:func:`_write_shards`, :func:`_write_splits`): each shard is sorted once and written as
   ``events/data/NNNNN.parquet`` (MEDS) and appended to ``events.arrow``
   (:func:`clinseq.timeline.events_write.write_events`), shards in parallel under a memory bound.

Where the time goes (``benchmarks/bench_ehr.py``; ``events.timings_s``, ``table_step_seconds`` and
``shard_step_seconds`` in the manifest): reading the tables (gzip inflated in a thread, parsed block by
block), building and staging the events, then sorting the shards and writing their two copies (MEDS
Parquet, the uncompressed ``events.arrow``); ``benchmarks/README.md`` has the measured split.

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

import errno
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from clinseq.errors import ConfigError, SourceError
from clinseq.io.csv_chunks import DEFAULT_CHUNK_BYTES, CsvChunks
from clinseq.io.memory import MemoryBudget, freed_memory_returned, memory_budget
from clinseq.io.mimic_iv_tables import DICTIONARIES, TABLES, TableSpec, describe_codes, find_table
from clinseq.timeline.events_write import (
    DEFAULT_SUBJECTS_PER_SHARD,
    EventsSummary,
    EventStager,
    StagedEvents,
    assign_splits,
    shard_breaks,
    store_patients,
    write_events,
    write_subject_splits,
)
from clinseq.timeline.writer import StoreWriter, disk_error

OnError = Literal["raise", "skip"]
_ROW = "_row"
_BAD = "_bad"
_TEXT = "_text_"
_AS_TEXT = ":numeric_kept_as_text"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_FORMAT = "%Y-%m-%d"
#: Staging layout version: a resumed run discards staging written by another layout.
_STAGING_VERSION = 4


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


def _text_frames(path: Path, spec: TableSpec, chunk_bytes: int) -> Iterator[pl.DataFrame]:
    """The table's needed columns as text, block by block (:class:`~clinseq.io.csv_chunks.CsvChunks`:
    inflated in a thread ahead of the parse, about ``chunk_bytes`` of text per frame), after checking
    its header."""
    with CsvChunks(path, chunk_bytes) as chunks:
        missing = [c for c in spec.required if c not in chunks.header]
        if missing:
            raise SourceError(
                path,
                f"missing required column(s) {missing}; found {chunks.header}: is this "
                f"the MIMIC-IV table {path.name.split('.')[0]} as published?",
            )
        yield from chunks.frames(spec.required)


def _read_text(path: Path, spec: TableSpec, chunk_bytes: int, parse: dict[str, pl.Expr]) -> pl.DataFrame:
    """A small table (admissions, patients) read whole: its needed columns parsed (``parse``)."""
    frames = [t.select(**parse) for t in _text_frames(path, spec, chunk_bytes)]
    if not frames:
        return pl.DataFrame(schema={c: pl.String for c in spec.required}).select(**parse)
    return pl.concat(frames)


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


def _first_bad_row(path: Path, spec: TableSpec, tolerant: bool, chunk_bytes: int) -> SourceError | None:
    """The first row with an unparsable column, as the SourceError to raise (None if every row parses).

    A second read of the file (block by block, as the first), done only once a bad row is known to exist.
    """
    parsed = _parsers(spec, tolerant)
    column = pl.lit(None, pl.String)
    for c in reversed(list(parsed)):
        failed = pl.col(c).is_not_null() & parsed[c].is_null()
        if c == "subject_id":
            failed = failed | pl.col(c).is_null()
        column = pl.when(failed).then(pl.lit(c)).otherwise(column)
    offset = 0
    bad = None
    for text in _text_frames(path, spec, chunk_bytes):
        found = (
            text.with_row_index(_ROW, offset)
            .filter(_bad_row(parsed))
            .with_columns(column.alias("_column"))
            .head(1)
        )
        offset += text.height
        if found.height:
            bad = found
            break
    if bad is None:
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
    #: Wall seconds of this table's thread per step: ``read`` (waiting for the next parsed block: gzip
    #: inflation runs ahead in its own thread), ``build`` (typed columns, events), ``stage`` (codes
    #: numbered, sorted by shard, appended to the staging file).
    steps: dict[str, float] = field(default_factory=dict)


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
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> _Staged:
    """One streaming pass over the CSV: its events staged for the shard sort (``staging/{table}.arrow``)
    and, from the same batches, the rows, events per kind and unparsable rows counted.

    Raises SourceError (nothing of the table committed) for a bad file or row.
    """
    t0 = time.perf_counter()
    spec = TABLES[table]
    target = staging / f"{table}.arrow"
    counters = [kind.time_expr().is_not_null().sum().alias(name) for name, kind in spec.events.items()]
    as_text = {name: f"{name}{_AS_TEXT}" for name, kind in spec.events.items() if kind.numeric_column}
    counters += [
        (spec.events[name].time_expr().is_not_null() & spec.events[name].numeric_unusable()).sum().alias(key)
        for name, key in as_text.items()
    ]
    for tolerant in (False, True):
        stager = EventStager(target, breaks)
        source_rows, totals = 0, dict.fromkeys([_BAD, *spec.events, *as_text.values()], 0)
        steps = {"read": 0.0, "build": 0.0, "stage": 0.0}
        try:
            clock = time.perf_counter()
            for text in _text_frames(path, spec, chunk_bytes):
                now = time.perf_counter()
                steps["read"] += now - clock
                batch = _typed(text.lazy(), spec, tolerant, lookups).collect()
                del text
                source_rows += batch.height
                totals[_BAD] += _unparsable(batch, spec)
                if totals[_BAD]:
                    break  # this pass is void: find the first bad row below
                for name, value in batch.select(counters).row(0, named=True).items():
                    totals[name] += int(value)
                events = _events_of(batch.lazy(), spec).collect()
                del batch
                clock = time.perf_counter()
                steps["build"] += clock - now
                stager.add(events)
                del events
                now, clock = clock, time.perf_counter()
                steps["stage"] += clock - now
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
        error = _first_bad_row(path, spec, tolerant=True, chunk_bytes=chunk_bytes)
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
        if name in as_text:  # numeric text that gave no finite number: kept as text_value (values policy)
            report["events"][name]["numeric_kept_as_text"] = totals[as_text[name]]
    return _Staged(table, report, time.perf_counter() - t0, steps={k: round(v, 3) for k, v in steps.items()})


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
def _lookups(path: Path | None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> dict[str, pl.DataFrame]:
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
    parse = _parsers(spec, False)
    try:
        typed = _read_text(
            path,
            spec,
            chunk_bytes,
            {c: parse[c] for c in ("subject_id", "hadm_id", "dischtime", "deathtime")},
        )
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"not a readable CSV file ({type(exc).__name__}: {exc})") from exc
    dischtime = typed.select("hadm_id", "dischtime").drop_nulls("hadm_id").unique("hadm_id", keep="first")
    deathtime = (
        typed.select("subject_id", "deathtime")
        .drop_nulls()
        .group_by("subject_id")
        .agg(pl.col("deathtime").min())
    )
    return {"dischtime": dischtime.sort("hadm_id"), "deathtime": deathtime.sort("subject_id")}


def _patients(path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The patients table's static columns (``patients.parquet``; unparsable values read as null), one
    row per subject, and what was done to duplicated rows (values policy): the first row of a subject
    is kept; exact repeats are counted, subjects whose rows disagree are listed."""
    spec = TABLES["patients"]
    parse = _parsers(spec, False)
    try:
        frame = _read_text(path, spec, chunk_bytes, {c: parse.get(c, pl.col(c)) for c in spec.required})
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"not a readable CSV file ({type(exc).__name__}: {exc})") from exc
    frame = frame.drop_nulls("subject_id").select(
        pl.col("subject_id").alias("patient_id"),
        "gender",
        "anchor_age",
        "anchor_year",
        pl.col("dod").cast(pl.Date),
    )
    unique = frame.unique(maintain_order=True)
    conflicting = unique.filter(pl.col("patient_id").is_duplicated())["patient_id"].unique().sort()
    report = {
        "rows": frame.height,
        "subjects": frame["patient_id"].n_unique(),
        "duplicate_rows_identical": frame.height - unique.height,
        "duplicate_rows_conflicting": unique.height - unique["patient_id"].n_unique(),
        "conflicting_subject_ids": conflicting.head(20).to_list(),
    }
    if conflicting.len():
        import warnings

        warnings.warn(
            f"{path}: {conflicting.len()} subject(s) with conflicting rows (first: "
            f"{conflicting.head(5).to_list()}); the first row of each is kept (manifest events.patients)",
            stacklevel=2,
        )
    return unique.unique("patient_id", keep="first", maintain_order=True), report


def _read_dictionary(path: Path) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"not a readable CSV file ({exc})") from exc


# -- the conversion: plan → stage → write -------------------------------------------------------------
def convert_mimic_iv(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tables: Sequence[str] | None = None,
    on_error: OnError = "raise",
    progress: bool = True,
    subjects_per_shard: int = DEFAULT_SUBJECTS_PER_SHARD,
    workers: int | None = None,
    max_memory: int | str | None = None,
) -> Path:
    """Convert MIMIC-IV ``src`` (with ``hosp/`` and ``icu/``) into a new events store at ``out``.

    Args:
        src: the MIMIC-IV folder as published (``hosp/*.csv.gz``, ``icu/*.csv.gz``; ``.csv`` also read).
        out: the store folder to create (must not exist). An unfinished earlier conversion to the same
            ``out`` (``<out>.tmp-*``) is resumed from its committed tables and shards.
        tables: which tables of :data:`~clinseq.io.mimic_iv_tables.TABLES` to convert; None = all. A
            missing table is reported in the manifest (``events.missing_tables``) and skipped.
            ``hosp/patients`` plans the shards and ``hosp/admissions`` gives discharge and death times
            whenever they exist, converted or not.
        on_error: ``"raise"``: a bad file (not CSV, missing column, unparsable timestamp, non-integer
            subject_id) raises :class:`SourceError` naming the file, column and first bad row; ``out``
            is not created and the tables committed so far are kept for a resume. ``"skip"``: that
            table (and the tables needing its discharge times) is skipped and listed in
            ``events.skipped_tables``.
        progress: show tqdm bars over tables and shards.
        subjects_per_shard: subjects per ``events/data`` shard (default ≈ 1 M MIMIC-IV events; the shard
            sorts hold at most ≈ 2 M events at once, see
            :func:`~clinseq.timeline.events_write.write_events`).
        workers: threads converting tables (then sorting shards) in parallel; default the CPU count,
            at most 4.
        max_memory: the peak resident memory to aim at, in bytes or as text (``"2G"``, ``"800M"``);
            default 1 GiB. It sets the text block size and the events sorted at once
            (:func:`clinseq.io.memory.memory_budget`, whose docstring gives the formula); it does not
            depend on the size of the input. ConfigError when it is below the minimum for ``workers``.

    Returns:
        the store path. Its manifest's ``events.tables`` gives, per table, the source file, its rows and,
        per event kind, the events written and the rows dropped for lack of a usable time;
        ``events.timings_s`` where the time went.
    """
    t_start = time.perf_counter()
    plan = _plan(Path(src), tables, on_error, subjects_per_shard, workers, max_memory)
    missing = [f"{TABLES[t].folder}/{t}.csv[.gz]" for t in plan.wanted if plan.paths[t] is None]
    if not plan.present:
        hint = (
            f"; {plan.src.name}/ is itself a MIMIC-IV module folder: pass its parent, the MIMIC-IV root"
            if plan.src.name in ("hosp", "icu")
            else ": pass the MIMIC-IV root that holds hosp/ and icu/"
        )
        raise SourceError(
            plan.src,
            f"none of the MIMIC-IV tables asked for is here (looked for {', '.join(missing)}){hint}",
        )
    report: dict[str, Any] = {
        "tables": {},
        "missing_tables": missing,
        "skipped_tables": [],
        "resumed_tables": [],
    }
    # The source folder and the options; each staged table then checks its own files (size and mtime,
    # and admissions' for the tables using its times), so a fixed file redoes only what it feeds.
    identity = {"converter": "mimic-iv", **plan.staging_key()}
    writer = StoreWriter(out, dataset="mimic-iv", source=plan.src, resume=True, identity=identity)
    try:
        with freed_memory_returned():  # the resident set follows the live batches
            return _convert(plan, writer, report, progress, t_start)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise disk_error(exc, writer.tmp_path, writer.path) from exc
        raise
    finally:
        writer.release()


def _convert(
    plan: _Plan, writer: StoreWriter, report: dict[str, Any], progress: bool, t_start: float
) -> Path:
    staging = _open_staging(writer.tmp_path, plan)
    timings: dict[str, float] = {"plan": time.perf_counter() - t_start}
    # A failure (bad file, interruption) leaves <out>.tmp-<pid> with what was committed, for a resume.
    t0 = time.perf_counter()
    stager = _TableStager(plan, staging, writer.tmp_path)
    staged = stager.stage_admissions()
    timings["admissions"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    others, dictionaries = stager.stage_others(progress)
    staged.update(others)
    timings["tables"] = time.perf_counter() - t0
    report["skipped_tables"] = sorted(
        stager.skipped, key=lambda s: plan.wanted.index(s["table"]) if s["table"] in plan.wanted else 0
    )

    t0 = time.perf_counter()
    order = [t for t in plan.wanted if t in staged]
    for table in order:
        report["tables"][table] = staged[table].report
        if staged[table].resumed:
            report["resumed_tables"].append(table)
    report["table_seconds"] = {t: round(staged[t].seconds, 3) for t in order if not staged[t].resumed}
    report["table_step_seconds"] = {
        step: round(sum(staged[t].steps.get(step, 0.0) for t in order), 3)
        for step in ("read", "build", "stage")
    }
    summary = _write_shards(
        plan, [staged[t] for t in order], dictionaries, staging, writer.tmp_path, progress
    )
    timings["shards"] = time.perf_counter() - t0
    report["shard_step_seconds"] = summary.seconds  # thread seconds: gather, sort, MEDS, events.arrow
    splits = _write_splits(plan, summary, writer.tmp_path)
    shutil.rmtree(staging)
    patients_report = dict(plan.patients_report)
    if plan.statics is not None:
        # Events of subjects the patients table does not list are kept; they get a patients row
        # without static columns, and are counted here.
        absent = pl.Series(summary.subject_ids, dtype=pl.Int64)
        absent = absent.filter(~absent.is_in(plan.statics["patient_id"].implode())).sort()
        patients_report["subjects_with_events_not_in_patients"] = absent.len()
        patients_report["subject_ids_not_in_patients"] = absent.head(20).to_list()
    report["patients"] = patients_report
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
    return writer.finish(store_patients(splits, plan.statics), manifest_extra={"events": report})


# -- 1. plan ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """What a conversion reads and how it shards the events, decided before any event is read."""

    src: Path
    wanted: list[str]  # the tables asked for (known to TABLES), in the order given
    paths: dict[str, Path | None]  # each wanted table's file; None when it is missing
    statics: pl.DataFrame | None  # the patients table's static columns (None: no readable patients table)
    subjects: pl.Series  # the subject ids the shards were planned from
    breaks: list[int]  # first subject id of every shard after the first
    subjects_per_shard: int
    on_error: OnError
    n_workers: int
    patients_report: dict[str, Any]  # duplicated rows of the patients table (values policy)
    memory: MemoryBudget  # block size and events in flight under the memory limit

    @property
    def present(self) -> list[str]:
        return [t for t in self.wanted if self.paths[t] is not None]

    def staging_key(self) -> dict[str, Any]:
        """What ``_staging/plan.json`` holds: staging written under another plan is never reused."""
        return {
            "staging_version": _STAGING_VERSION,
            "source": str(self.src.resolve()),
            "tables": self.wanted,
            "subjects_per_shard": self.subjects_per_shard,
            "breaks": self.breaks,
        }


def _plan(
    src: Path,
    tables: Sequence[str] | None,
    on_error: OnError,
    subjects_per_shard: int,
    workers: int | None,
    max_memory: int | str | None = None,
) -> _Plan:
    """Check the arguments, find the tables and plan the shards (subject-id ranges) from patients."""
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
    memory = memory_budget(max_memory, n_workers)
    paths = {t: find_table(src, t) for t in wanted}

    # Shards by subject-id range, planned from patients (every MIMIC-IV subject is in it).
    patients_path = find_table(src, "patients")
    statics = None
    patients_report: dict[str, Any] = {}
    if patients_path is not None:
        try:
            statics, patients_report = _patients(patients_path, memory.chunk_bytes)
        except SourceError:
            if on_error == "raise":
                raise
            # skip: the patients table's own staging reports it; plan from the other tables.
    if statics is not None:
        subjects = statics["patient_id"]
    else:
        subjects = _subject_ids([paths[t] for t in wanted], memory.chunk_bytes)
    breaks = shard_breaks(subjects.to_numpy(), subjects_per_shard)
    return _Plan(
        src,
        wanted,
        paths,
        statics,
        subjects,
        breaks,
        subjects_per_shard,
        on_error,
        n_workers,
        patients_report,
        memory,
    )


def _open_staging(tmp_path: Path, plan: _Plan) -> Path:
    """``<tmp>/_staging``: kept from an interrupted run of the same plan, else emptied (and the shards
    of that run removed): nothing from another plan (or none) is reused."""
    staging = tmp_path / "_staging"
    plan_path = staging / "plan.json"
    key = plan.staging_key()
    if not plan_path.exists() or json.loads(plan_path.read_text()) != key:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(tmp_path / "events", ignore_errors=True)
        staging.mkdir(parents=True)
        plan_path.write_text(json.dumps(key))
    return staging


# -- 2. stage ---------------------------------------------------------------------------------------------
class _TableStager:
    """Stages the plan's tables: admissions first (the others use its discharge and death times), then
    the rest in parallel. A table committed by an earlier run with unchanged inputs is not read again.

    ``skipped`` lists the tables left out (with ``on_error="skip"``, or for want of admissions).
    """

    def __init__(self, plan: _Plan, staging: Path, tmp_path: Path) -> None:
        self.plan, self.staging, self.tmp_path = plan, staging, tmp_path
        self.admissions = find_table(plan.src, "admissions")
        self.admissions_ok = self.admissions is not None
        self.lookups = _lookups(None)
        self.skipped: list[dict[str, Any]] = []

    def stage(self, table: str) -> _Staged:
        """One table, resumed from its committed staging when its inputs are unchanged."""
        path = self.plan.paths[table]
        assert path is not None  # only present tables are staged
        inputs = [path, self.admissions if TABLES[table].lookups and self.admissions_ok else None]
        done = _committed(table, inputs, self.staging)
        if done is not None:
            return done
        result = _stage_table(
            table,
            path,
            self.staging,
            self.plan.breaks,
            self.lookups,
            self.plan.src,
            self.plan.memory.chunk_bytes,
        )
        _commit(result, inputs, self.staging)
        return result

    def _kept_for_resume(self, exc: SourceError) -> SourceError:
        note = f"the tables converted so far are kept in {self.tmp_path} for a resume"
        return SourceError(exc.path, f"{exc.problem} [{note}; delete that folder to start afresh]")

    def _failed(self, table: str, exc: SourceError) -> None:
        if self.plan.on_error == "raise":
            raise self._kept_for_resume(exc) from exc
        self.skipped.append({"table": table, "path": exc.path, "reason": exc.problem})

    def stage_admissions(self) -> dict[str, _Staged]:
        """Stage admissions (when asked for) and read its lookups: its rows must parse before other
        tables use its discharge/death times."""
        staged: dict[str, _Staged] = {}
        if "admissions" in self.plan.present:
            try:
                staged["admissions"] = self.stage("admissions")
            except SourceError as exc:
                self.admissions_ok = False
                self._failed("admissions", exc)
        if self.admissions_ok:
            try:
                self.lookups = _lookups(self.admissions, self.plan.memory.chunk_bytes)
            except SourceError as exc:  # only when admissions itself is not converted (else staged above)
                self.admissions_ok = False
                self._failed("admissions", exc)
        return staged

    def stage_others(self, progress: bool) -> tuple[dict[str, _Staged], dict[str, pl.DataFrame]]:
        """Stage every other present table (``plan.n_workers`` threads, largest first) and read the
        ``d_*`` dictionaries beside them; returns ``(staged tables, dictionaries)``."""
        from tqdm.auto import tqdm

        plan = self.plan
        rest = [t for t in plan.present if t != "admissions"]
        for table in [t for t in rest if TABLES[t].lookups == ("dischtime",) and not self.admissions_ok]:
            rest.remove(table)
            reason = "needs admissions (for dischtime), which is missing or was skipped"
            self.skipped.append({"table": table, "path": str(plan.paths[table]), "reason": reason})
        rest.sort(key=lambda t: -(plan.paths[t].stat().st_size))  # type: ignore[union-attr]  # largest first
        staged: dict[str, _Staged] = {}
        dictionaries: dict[str, pl.DataFrame] = {}
        with ThreadPoolExecutor(plan.n_workers) as pool:
            futures: dict[Future, str] = {pool.submit(self.stage, t): t for t in rest}
            for name, folder in DICTIONARIES.items():
                path = find_table(plan.src, name, folder)
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
                    if plan.on_error == "raise" and failure is None:
                        failure = exc
                        for other in futures:
                            other.cancel()  # the running ones finish and commit (for a resume)
                    elif plan.on_error == "skip":
                        self.skipped.append({"table": name, "path": str(exc.path), "reason": exc.problem})
                    continue
                if isinstance(result, _Staged):
                    staged[name] = result
                    bar.update()
                else:
                    dictionaries[name] = result
            bar.close()
            if failure is not None:
                raise self._kept_for_resume(failure) from failure
        return staged, dictionaries


# -- 3. write ---------------------------------------------------------------------------------------------
def _write_shards(
    plan: _Plan,
    staged: list[_Staged],
    dictionaries: dict[str, pl.DataFrame],
    staging: Path,
    tmp_path: Path,
    progress: bool,
) -> EventsSummary:
    """Sort the staged events shard by shard into ``events/`` (MEDS), ``events.arrow`` and the index."""
    return write_events(
        [StagedEvents.load(staging / f"{s.table}.arrow") for s in staged],
        tmp_path,
        n_shards=len(plan.breaks) + 1,
        dataset_meta={"dataset_name": "MIMIC-IV", "dataset_version": _version_of(plan.src)},
        describe=describe_codes(dictionaries),
        workers=plan.n_workers,
        max_events_in_flight=plan.memory.events_in_flight,
        # Shards of an interrupted run hold the same events only if no table was staged anew.
        reuse_shards=all(s.resumed for s in staged),
        progress=progress,
    )


def _write_splits(plan: _Plan, summary: EventsSummary, tmp_path: Path) -> pl.DataFrame:
    """Every subject's MEDS split (planned subjects and subjects with events), written to
    ``events/metadata/subject_splits.parquet`` and returned."""
    subjects = pl.concat(
        [plan.subjects.cast(pl.Int64).rename("subject_id"), pl.Series("subject_id", summary.subject_ids)]
    ).unique()
    splits = assign_splits(subjects.to_numpy())
    write_subject_splits(tmp_path, splits)
    return splits


def _subject_ids(paths: list[Path | None], chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> pl.Series:
    """Subject ids of the tables (only when there is no patients table to plan the shards from), read
    block by block: memory holds the distinct ids and one block."""
    ids = pl.Series("subject_id", [], pl.Int64)
    parse = pl.col("subject_id").str.strip_chars().cast(pl.Int64, strict=False)
    for p in paths:
        if p is None:
            continue
        try:
            with CsvChunks(p, chunk_bytes) as chunks:
                if "subject_id" not in chunks.header:
                    continue  # the staging pass reports the missing column
                for text in chunks.frames(["subject_id"]):
                    ids = pl.concat([ids, text.select(parse)["subject_id"].drop_nulls()]).unique()
        except (SourceError, pl.exceptions.PolarsError, UnicodeDecodeError):
            continue  # the staging pass reports the bad file
    return ids.sort()


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


__all__ = ["convert_mimic_iv"]
