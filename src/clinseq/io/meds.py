"""MEDS (Medical Event Data Standard, v0.4) in and out of a timeline store.

A store's ``events/`` folder *is* a MEDS v0.4 dataset (Arnrich et al., "MEDS: the Medical Event Data
Standard", https://github.com/Medical-Event-Data-Standard/meds)::

    events/data/NNNNN.parquet            subject_id i64, time timestamp[us] (null = static), code str,
                                         numeric_value f32, text_value large_str; one subject in one
                                         shard, shards in subject order, sorted by (subject_id, time)
    events/metadata/dataset.json         dataset_name, dataset_version, etl_name, etl_version,
                                         meds_version, created_at
    events/metadata/codes.parquet        code, description, parent_codes (+ count: events per code)
    events/metadata/subject_splits.parquet   subject_id, split (train / tuning / held_out)

plus ``events.arrow``, ``events_codes.parquet`` and ``events_index.parquet`` for per-patient random
access (layout: :mod:`clinseq.timeline.events`).

Public API: :func:`import_meds` (any MEDS dataset → store), :func:`export_meds` (store → MEDS dataset)
and :func:`attach_events` (add a MEDS dataset's events to an existing store, e.g. ECGs + EHR). The
events are written by the store's event writer (:mod:`clinseq.timeline.events_write`), which the
MIMIC-IV converter uses too.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import polars as pl

from clinseq.errors import SourceError, StoreError
from clinseq.timeline.events import EVENTS_ARROW, EVENTS_CODES, EVENTS_DIR, EVENTS_INDEX
from clinseq.timeline.events_write import (
    DEFAULT_SUBJECTS_PER_SHARD,
    MEDS_TO_STORE_SPLIT,
    shard_breaks,
    stage_lazy,
    store_patients,
    write_events,
    write_subject_splits,
)
from clinseq.timeline.lock import FolderLock
from clinseq.timeline.writer import FILES_KEY, StoreWriter


# -- import ---------------------------------------------------------------------------------------------
def _meds_data_files(src: Path) -> list[Path]:
    files = sorted((src / "data").rglob("*.parquet"))
    if not files:
        raise SourceError(
            src / "data", "no *.parquet files: a MEDS dataset keeps its events in data/**/*.parquet"
        )
    return files


def _read_dataset_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SourceError(path, f"not a readable MEDS dataset.json ({type(exc).__name__}: {exc})") from exc
    if not isinstance(meta, dict):
        raise SourceError(path, "not a MEDS dataset.json (a JSON object was expected)")
    return meta


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SourceError(path, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc


def _tz_aware_times(files: list[Path], src: Path) -> dict[str, dict]:
    """Files whose ``time`` carries a time zone: ``{file: {"time_zone", "events"}}`` (manifest)."""
    found = {}
    for f in files:
        dtype = pl.scan_parquet(f).collect_schema()["time"]
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            n = pl.scan_parquet(f).select(pl.col("time").is_not_null().sum()).collect().item()
            found[str(f.relative_to(src))] = {"time_zone": dtype.time_zone, "events": int(n)}
    return found


def _scan_meds_file(path: Path) -> pl.LazyFrame:
    """One MEDS data file as the five event columns, validating names and types (raises SourceError)."""
    try:
        schema = pl.scan_parquet(path).collect_schema()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SourceError(path, f"not a readable Parquet file ({exc})") from exc
    for column in ("subject_id", "time", "code"):
        if column not in schema:
            raise SourceError(
                path,
                f"missing required MEDS column {column!r}; found {list(schema)} (MEDS v0.4 needs "
                "subject_id, time, code)",
            )
    if not schema["subject_id"].is_integer():
        raise SourceError(path, f"column 'subject_id' must be an integer type, found {schema['subject_id']}")
    if not isinstance(schema["time"], pl.Datetime | pl.Date):
        raise SourceError(path, f"column 'time' must be a timestamp, found {schema['time']}")
    lf = pl.scan_parquet(path)
    time = pl.col("time")
    if isinstance(schema["time"], pl.Datetime) and schema["time"].time_zone is not None:
        # Policy: a time-zone-aware time is converted to UTC and stored naive (the store's times are
        # naive); the manifest records the file, its zone and its events (events.tz_aware_times).
        time = time.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    cols = [
        pl.col("subject_id").cast(pl.Int64),
        time.cast(pl.Datetime("us")).alias("time"),
        pl.col("code").cast(pl.String),
        (pl.col("numeric_value") if "numeric_value" in schema else pl.lit(None))
        .cast(pl.Float32)
        .alias("numeric_value"),
        (pl.col("text_value") if "text_value" in schema else pl.lit(None))
        .cast(pl.String)
        .alias("text_value"),
    ]
    return lf.select(cols)


def import_meds(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    progress: bool = True,
    subjects_per_shard: int = DEFAULT_SUBJECTS_PER_SHARD,
    workers: int | None = None,
) -> Path:
    """Convert any MEDS dataset (v0.3/v0.4 layout) into a new events-only timeline store at ``out``.

    Only the five core columns are kept (extension columns such as ``hadm_id`` are dropped). Splits
    come from ``metadata/subject_splits.parquet`` (subjects it does not list get a null split) and
    code descriptions from ``metadata/codes.parquet``; both are optional. Events are re-sorted and
    re-sharded by subject ranges, so the result does not depend on the source's sharding.

    Args:
        src: the MEDS root (``data/**/*.parquet``, optional ``metadata/``).
        out: the store folder to create (must not exist); written atomically.
        progress: show a tqdm bar over shards.
        subjects_per_shard: subjects per ``events/data`` shard.
        workers: shard-sorting threads (default: the CPU count, at most 4).

    Raises:
        SourceError: naming the file and problem (no data files, missing column, non-integer subject_id,
            null subject_id or code).
    """
    src, out = Path(src), Path(out)
    files = _meds_data_files(src)
    frames = [_scan_meds_file(f) for f in files]
    for f, lf in zip(files, frames, strict=True):
        bad = lf.filter(pl.col("subject_id").is_null() | pl.col("code").is_null()).head(1).collect()
        if bad.height:
            column = "subject_id" if bad["subject_id"][0] is None else "code"
            raise SourceError(
                f, f"column {column!r} has nulls (MEDS requires it non-null); first: {bad.row(0)}"
            )
    subjects = pl.concat([lf.select("subject_id").unique() for lf in frames]).unique().collect()["subject_id"]
    breaks = shard_breaks(subjects.to_numpy(), subjects_per_shard)

    splits_path = src / "metadata" / "subject_splits.parquet"
    if splits_path.exists():
        splits = _read_parquet(splits_path)
        if not {"subject_id", "split"} <= set(splits.columns):
            raise SourceError(splits_path, f"needs columns subject_id and split, found {splits.columns}")
        splits = splits.select(pl.col("subject_id").cast(pl.Int64), pl.col("split"))
        splits = splits.filter(pl.col("subject_id").is_in(subjects.implode()))
    else:
        splits = pl.DataFrame(schema={"subject_id": pl.Int64, "split": pl.String})
    missing = subjects.filter(~subjects.is_in(splits["subject_id"].implode()))
    all_splits = pl.concat(
        [
            splits,
            pl.DataFrame({"subject_id": missing, "split": pl.Series([None] * len(missing), dtype=pl.String)}),
        ]
    )
    meta_path = src / "metadata" / "dataset.json"
    source_meta = _read_dataset_json(meta_path) if meta_path.exists() else {}
    codes_path = src / "metadata" / "codes.parquet"
    source_codes = _read_parquet(codes_path) if codes_path.exists() else None
    tz_aware = _tz_aware_times(files, src)
    if tz_aware:
        warnings.warn(
            f"{src}: time-zone-aware times converted to UTC (stored naive): "
            + ", ".join(f"{k} ({v['time_zone']}, {v['events']} events)" for k, v in tz_aware.items()),
            stacklevel=2,
        )

    def describe(counts: pl.DataFrame) -> pl.DataFrame:
        if source_codes is None or "code" not in source_codes.columns:
            return counts.with_columns(
                pl.lit(None, pl.String).alias("description"),
                pl.lit(None, pl.List(pl.String)).alias("parent_codes"),
            )
        keep = [pl.col("code").cast(pl.String)]
        keep.append(
            pl.col("description").cast(pl.String)
            if "description" in source_codes.columns
            else pl.lit(None, pl.String).alias("description")
        )
        keep.append(
            pl.col("parent_codes").cast(pl.List(pl.String))
            if "parent_codes" in source_codes.columns
            else pl.lit(None, pl.List(pl.String)).alias("parent_codes")
        )
        table = source_codes.select(keep).unique("code", keep="first")
        return counts.join(table, on="code", how="left")

    writer = StoreWriter(out, dataset=source_meta.get("dataset_name") or "meds", source=src, resume=False)
    try:
        staging = writer.tmp_path / "_staging"
        staged = [stage_lazy(lf, staging / f"file{i:05d}.arrow", breaks) for i, lf in enumerate(frames)]
        dataset_meta = {
            k: source_meta[k] for k in ("dataset_name", "dataset_version") if source_meta.get(k) is not None
        }
        dataset_meta["description_uri"] = f"imported by clinseq from {src}"
        summary = write_events(
            staged,
            writer.tmp_path,
            n_shards=len(breaks) + 1,
            dataset_meta=dataset_meta,
            describe=describe,
            workers=workers,
            progress=progress,
        )
        write_subject_splits(writer.tmp_path, all_splits)
        shutil.rmtree(staging)
        return writer.finish(
            store_patients(all_splits),
            manifest_extra={
                "events": {
                    "source_format": "meds",
                    "source_meds_version": source_meta.get("meds_version"),
                    "source_files": [str(f.relative_to(src)) for f in files],
                    "n_events": summary.n_events,
                    "n_subjects": summary.n_subjects,
                    "n_shards": summary.n_shards,
                    "n_codes": summary.codes.height,
                    "tz_aware_times": tz_aware,
                }
            },
        )
    except BaseException:
        shutil.rmtree(writer.tmp_path, ignore_errors=True)  # nothing half-written
        raise
    finally:
        writer.release()


# -- export ---------------------------------------------------------------------------------------------
def export_meds(store_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write a store's events as a standalone MEDS v0.4 dataset at ``out`` (which must not exist).

    The store's ``events/`` folder already is one; it is copied into ``<out>.tmp-<pid>`` and renamed.
    """
    store_path, out = Path(store_path), Path(out)
    events = store_path / EVENTS_DIR
    if not (events / "data").is_dir():
        raise StoreError(
            f"{store_path}: this store holds no events (no {EVENTS_DIR}/data); nothing to export"
        )
    if out.exists():
        raise StoreError(f"{out} already exists: remove it or choose another output folder")
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(events, tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# -- attach ---------------------------------------------------------------------------------------------
def attach_events(
    store_path: str | os.PathLike[str],
    meds_root: str | os.PathLike[str],
    *,
    subjects_per_shard: int = DEFAULT_SUBJECTS_PER_SHARD,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Add a MEDS dataset's events to an existing store (e.g. MIMIC-IV-ECG recordings + MIMIC-IV EHR).

    Only events of the store's patients are kept (``patient_id`` = MEDS ``subject_id``). Everything is
    written into ``<store>/.attach-tmp-<pid>/`` first; then ``events/`` and ``events.arrow`` are renamed
    into the store and ``events_index.parquet`` last, because the store counts as holding events only
    when that file exists: a crash at any point leaves the store as it was (plus a temporary folder).
    The manifest gains an ``events`` entry (atomic replace). ``workers`` as for :func:`import_meds`.
    """
    store_path, meds_root = Path(store_path), Path(meds_root)
    manifest_path = store_path / "manifest.json"
    if not manifest_path.exists():
        raise StoreError(f"{store_path}: not a clinseq store (no manifest.json)")
    if (store_path / EVENTS_INDEX).exists() or (store_path / EVENTS_DIR).exists():
        raise StoreError(f"{store_path}: already holds events; convert into a new store to replace them")
    patients = pl.read_parquet(store_path / "patients.parquet")
    keep = patients["patient_id"].cast(pl.Int64)
    files = _meds_data_files(meds_root)
    frames = [_scan_meds_file(f).filter(pl.col("subject_id").is_in(keep.implode())) for f in files]
    breaks = shard_breaks(keep.to_numpy(), subjects_per_shard)
    meta_path = meds_root / "metadata" / "dataset.json"
    source_meta = _read_dataset_json(meta_path) if meta_path.exists() else {}
    tz_aware = _tz_aware_times(files, meds_root)
    store_splits = patients.select(
        pl.col("patient_id").cast(pl.Int64).alias("subject_id"),
        pl.col("split").replace({v: k for k, v in MEDS_TO_STORE_SPLIT.items()})
        if "split" in patients.columns
        else pl.lit(None, pl.String).alias("split"),
    ).filter(pl.col("split").is_not_null())

    tmp = store_path / f".attach-tmp-{os.getpid()}"
    # The store is changed in place: hold its lock (a conversion into it, or a second attach, waits out).
    lock = FolderLock(store_path.parent / f"{store_path.name}.lock", f"store {store_path}").acquire()
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        staged = [
            stage_lazy(lf, tmp / "_staging" / f"file{i:05d}.arrow", breaks) for i, lf in enumerate(frames)
        ]
        summary = write_events(
            staged,
            tmp,
            n_shards=len(breaks) + 1,
            dataset_meta={k: source_meta[k] for k in ("dataset_name", "dataset_version") if k in source_meta},
            workers=workers,
            progress=progress,
        )
        write_subject_splits(tmp, store_splits)
        manifest = json.loads(manifest_path.read_text())
        manifest["events"] = {
            "source_format": "meds",
            "attached_from": str(meds_root),
            "n_events": summary.n_events,
            "n_subjects": summary.n_subjects,
            "n_shards": summary.n_shards,
            "tz_aware_times": tz_aware,
        }
        if FILES_KEY in manifest:  # the new files by size (clinseq verify, open's size checks)
            for path in sorted(p for p in tmp.rglob("*") if p.is_file() and "_staging" not in p.parts):
                manifest[FILES_KEY][path.relative_to(tmp).as_posix()] = {"bytes": path.stat().st_size}
        new_manifest = tmp / "manifest.json"
        new_manifest.write_text(json.dumps(manifest, indent=1, default=str))
        os.replace(tmp / EVENTS_DIR, store_path / EVENTS_DIR)
        os.replace(tmp / EVENTS_ARROW, store_path / EVENTS_ARROW)
        os.replace(tmp / EVENTS_CODES, store_path / EVENTS_CODES)
        os.replace(tmp / EVENTS_INDEX, store_path / EVENTS_INDEX)  # last: marks the events as present
        os.replace(new_manifest, manifest_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        lock.release()
    return store_path
