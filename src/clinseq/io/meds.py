"""MEDS (Medical Event Data Standard, v0.4) in and out of a timeline store, and the shared event writer.

A store's ``events/`` folder *is* a MEDS v0.4 dataset (Arnrich et al., "MEDS: the Medical Event Data
Standard", https://github.com/Medical-Event-Data-Standard/meds)::

    events/data/NNNNN.parquet            subject_id i64, time timestamp[us] (null = static), code str,
                                         numeric_value f32, text_value large_str; one subject in one
                                         shard, shards in subject order, sorted by (subject_id, time)
    events/metadata/dataset.json         dataset_name, dataset_version, etl_name, etl_version,
                                         meds_version, created_at
    events/metadata/codes.parquet        code, description, parent_codes (+ count: events per code)
    events/metadata/subject_splits.parquet   subject_id, split (train / tuning / held_out)

plus ``events.arrow`` and ``events_index.parquet`` for per-patient random access
(:mod:`clinseq.timeline.events`).

Public API: :func:`import_meds` (any MEDS dataset → store), :func:`export_meds` (store → MEDS dataset),
:func:`attach_events` (add a MEDS dataset's events to an existing store, e.g. ECGs + EHR), and
:func:`write_events` which the MIMIC-IV converter shares.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clinseq import __version__
from clinseq.timeline.events import (
    EVENT_SCHEMA,
    EVENTS_ARROW,
    EVENTS_DIR,
    EVENTS_INDEX,
    EventIndexWriter,
    sort_events,
    to_arrow_events,
)
from clinseq.timeline.writer import StoreWriter
from clinseq.utils import SourceError, StoreError

#: MEDS split names → the store's split names (patients.parquet).
MEDS_TO_STORE_SPLIT = {"train": "train", "tuning": "val", "held_out": "test"}
DEFAULT_SUBJECTS_PER_SHARD = 5_000
MEDS_VERSION = "0.4"
CODES_ARROW_SCHEMA = pa.schema(
    [
        pa.field("code", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("parent_codes", pa.list_(pa.string())),
        pa.field("count", pa.int64()),
    ]
)
SPLITS_ARROW_SCHEMA = pa.schema(
    [pa.field("subject_id", pa.int64(), nullable=False), pa.field("split", pa.string(), nullable=False)]
)


def _meds_version() -> str:
    try:
        import meds  # optional (dev extra): only used to record the exact version

        return str(meds.__version__)
    except ImportError:
        return MEDS_VERSION


def assign_splits(subject_ids: np.ndarray, fractions: tuple[float, float] = (0.8, 0.1)) -> pl.DataFrame:
    """Deterministic per-subject MEDS splits (train / tuning / held_out) from the subject id alone.

    A multiplicative hash (Knuth's 2654435761 mod 2^32) maps each id to u in [0, 1); u < f_train is
    train, u < f_train + f_tuning tuning, else held_out. It depends on nothing but the id, so a subject
    keeps its split when the dataset grows and across library versions.
    """
    ids = np.asarray(subject_ids, dtype=np.int64)
    u = ((ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)).astype(np.float64) / 2**32
    split = np.where(
        u < fractions[0], "train", np.where(u < fractions[0] + fractions[1], "tuning", "held_out")
    )
    return pl.DataFrame(
        {"subject_id": ids, "split": split}, schema={"subject_id": pl.Int64, "split": pl.String}
    )


def shard_breaks(subject_ids: np.ndarray, subjects_per_shard: int) -> list[int]:
    """First subject id of every shard after the first (subjects sorted; shards hold whole subjects)."""
    if subjects_per_shard < 1:
        raise ValueError(f"subjects_per_shard must be >= 1, got {subjects_per_shard}")
    ids = np.unique(np.asarray(subject_ids, dtype=np.int64))
    return [int(x) for x in ids[subjects_per_shard::subjects_per_shard]]


def shard_expr(breaks: list[int]) -> pl.Expr:
    """Shard number of each event: how many shard breaks are <= its subject_id (a zero-padded string)."""
    if not breaks:
        return pl.lit("00000").alias("shard")
    count = pl.sum_horizontal([(pl.col("subject_id") >= b).cast(pl.Int32) for b in breaks])
    return count.cast(pl.String).str.zfill(5).alias("shard")


def sink_partitioned(events: pl.LazyFrame, folder: Path, breaks: list[int]) -> None:
    """Stream ``events`` into ``folder/shard=NNNNN/*.parquet`` (bounded memory: polars' streaming sink)."""
    folder.mkdir(parents=True, exist_ok=True)
    events.select(list(EVENT_SCHEMA)).sink_parquet(
        pl.PartitionBy(folder, key=shard_expr(breaks), include_key=False), mkdir=True
    )


@dataclass
class EventsSummary:
    """What :func:`write_events` wrote."""

    n_events: int
    n_subjects: int
    n_shards: int
    codes: pl.DataFrame


def write_events(
    staged: list[Path],
    events_root: Path,
    *,
    n_shards: int,
    splits: pl.DataFrame,
    dataset_meta: dict[str, Any],
    describe: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    progress: bool = False,
) -> EventsSummary:
    """Turn staged, shard-partitioned events into ``events/`` (MEDS) + ``events.arrow`` + index.

    Args:
        staged: folders written by :func:`sink_partitioned` (``shard=NNNNN/*.parquet`` inside).
        events_root: the store's temporary folder; ``events/``, ``events.arrow`` and
            ``events_index.parquet`` are created inside it.
        n_shards: number of shards planned (``len(breaks) + 1``).
        splits: ``subject_id``, ``split`` (MEDS names) for ``subject_splits.parquet``.
        dataset_meta: the content of ``dataset.json``.
        describe: maps the code table (``code``, ``count``) to one with ``description`` and
            ``parent_codes`` (the source's dictionaries); None leaves both null.
    """
    from tqdm.auto import tqdm

    data_dir = events_root / EVENTS_DIR / "data"
    meta_dir = events_root / EVENTS_DIR / "metadata"
    data_dir.mkdir(parents=True, exist_ok=True)
    meta_dir.mkdir(parents=True, exist_ok=True)
    index = EventIndexWriter(events_root)
    counts: list[pl.DataFrame] = []
    n_subjects = 0
    try:
        for k in tqdm(range(n_shards), desc="sorting shards", disable=not progress):
            files = [
                str(f) for folder in staged for f in sorted((folder / f"shard={k:05d}").glob("*.parquet"))
            ]
            if not files:
                continue
            shard = sort_events(
                pl.scan_parquet(files, hive_partitioning=False)
                .select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()])
                .collect()
            )
            if shard.height == 0:
                continue
            pq.write_table(to_arrow_events(shard), data_dir / f"{k:05d}.parquet")
            index.add_shard(shard)
            counts.append(shard.group_by("code").len("count"))
            n_subjects += shard["subject_id"].n_unique()
    except Exception:
        index.abort()
        raise
    index.finish()

    code_counts = (
        pl.concat(counts).group_by("code").agg(pl.col("count").sum().cast(pl.Int64))
        if counts
        else pl.DataFrame(schema={"code": pl.String, "count": pl.Int64})
    ).sort("code")
    if describe is not None:
        codes = describe(code_counts)
    else:
        codes = code_counts.with_columns(
            pl.lit(None, pl.String).alias("description"),
            pl.lit(None, pl.List(pl.String)).alias("parent_codes"),
        )
    codes = codes.select(
        pl.col("code"),
        pl.col("description").cast(pl.String),
        pl.col("parent_codes").cast(pl.List(pl.String)),
        pl.col("count").cast(pl.Int64),
    ).sort("code")
    # Written through pyarrow with MEDS' exact types (polars would write large_string / large_list).
    pq.write_table(codes.to_arrow().cast(CODES_ARROW_SCHEMA), meta_dir / "codes.parquet")
    split_table = splits.select(pl.col("subject_id").cast(pl.Int64), pl.col("split").cast(pl.String))
    pq.write_table(
        split_table.sort("subject_id").to_arrow().cast(SPLITS_ARROW_SCHEMA),
        meta_dir / "subject_splits.parquet",
    )
    meta = {
        "etl_name": "clinseq",
        "etl_version": __version__,
        "meds_version": _meds_version(),
        "created_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
        **dataset_meta,
    }
    (meta_dir / "dataset.json").write_text(json.dumps(meta, indent=1))
    return EventsSummary(index.n_events, n_subjects, n_shards, codes)


def store_patients(splits: pl.DataFrame, statics: pl.DataFrame | None = None) -> pl.DataFrame:
    """``patients.parquet`` for an events store: ``patient_id``, ``split`` (train/val/test), statics."""
    patients = splits.select(
        pl.col("subject_id").cast(pl.Int64).alias("patient_id"),
        pl.col("split").replace(MEDS_TO_STORE_SPLIT).alias("split"),
    )
    if statics is not None:
        patients = patients.join(statics, on="patient_id", how="left")
    return patients.sort("patient_id")


# -- import ---------------------------------------------------------------------------------------------
def _meds_data_files(src: Path) -> list[Path]:
    files = sorted((src / "data").rglob("*.parquet"))
    if not files:
        raise SourceError(
            src / "data", "no *.parquet files: a MEDS dataset keeps its events in data/**/*.parquet"
        )
    return files


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
    cols = [
        pl.col("subject_id").cast(pl.Int64),
        pl.col("time").cast(pl.Datetime("us")),
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
) -> Path:
    """Convert any MEDS dataset (v0.3/v0.4 layout) into a new events-only timeline store at ``out``.

    Only the five core columns are kept (extension columns such as ``hadm_id`` are dropped). Splits
    come from ``metadata/subject_splits.parquet`` (subjects it does not list get a null split) and
    code descriptions from ``metadata/codes.parquet``; both are optional. Events are re-sorted and
    re-sharded by subject ranges, so the result does not depend on the source's sharding.

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
        splits = pl.read_parquet(splits_path).select(pl.col("subject_id").cast(pl.Int64), pl.col("split"))
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
    source_meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    codes_path = src / "metadata" / "codes.parquet"
    source_codes = pl.read_parquet(codes_path) if codes_path.exists() else None

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
        staged = []
        for i, lf in enumerate(frames):
            folder = staging / f"file{i:05d}"
            sink_partitioned(lf, folder, breaks)
            staged.append(folder)
        dataset_meta = {
            k: source_meta[k] for k in ("dataset_name", "dataset_version") if source_meta.get(k) is not None
        }
        dataset_meta["description_uri"] = f"imported by clinseq from {src}"
        summary = write_events(
            staged,
            writer.tmp_path,
            n_shards=len(breaks) + 1,
            splits=all_splits.filter(pl.col("split").is_not_null()),
            dataset_meta=dataset_meta,
            describe=describe,
            progress=progress,
        )
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
                }
            },
        )
    except BaseException:
        shutil.rmtree(writer.tmp_path, ignore_errors=True)  # nothing half-written
        raise


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
) -> Path:
    """Add a MEDS dataset's events to an existing store (e.g. MIMIC-IV-ECG recordings + MIMIC-IV EHR).

    Only events of the store's patients are kept (``patient_id`` = MEDS ``subject_id``). Everything is
    written into ``<store>/.attach-tmp-<pid>/`` first; then ``events/`` and ``events.arrow`` are renamed
    into the store and ``events_index.parquet`` last, because the store counts as holding events only
    when that file exists: a crash at any point leaves the store as it was (plus a temporary folder).
    The manifest gains an ``events`` entry (atomic replace).
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
    source_meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    store_splits = patients.select(
        pl.col("patient_id").cast(pl.Int64).alias("subject_id"),
        pl.col("split").replace({v: k for k, v in MEDS_TO_STORE_SPLIT.items()})
        if "split" in patients.columns
        else pl.lit(None, pl.String).alias("split"),
    ).filter(pl.col("split").is_not_null())

    tmp = store_path / f".attach-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        staged = []
        for i, lf in enumerate(frames):
            folder = tmp / "_staging" / f"file{i:05d}"
            sink_partitioned(lf, folder, breaks)
            staged.append(folder)
        summary = write_events(
            staged,
            tmp,
            n_shards=len(breaks) + 1,
            splits=store_splits,
            dataset_meta={k: source_meta[k] for k in ("dataset_name", "dataset_version") if k in source_meta},
            progress=progress,
        )
        manifest = json.loads(manifest_path.read_text())
        manifest["events"] = {
            "source_format": "meds",
            "attached_from": str(meds_root),
            "n_events": summary.n_events,
            "n_subjects": summary.n_subjects,
            "n_shards": summary.n_shards,
        }
        new_manifest = tmp / "manifest.json"
        new_manifest.write_text(json.dumps(manifest, indent=1, default=str))
        os.replace(tmp / EVENTS_DIR, store_path / EVENTS_DIR)
        os.replace(tmp / EVENTS_ARROW, store_path / EVENTS_ARROW)
        os.replace(tmp / EVENTS_INDEX, store_path / EVENTS_INDEX)  # last: marks the events as present
        os.replace(new_manifest, manifest_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return store_path
