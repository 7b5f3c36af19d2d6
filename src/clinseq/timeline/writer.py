"""Write a timeline store atomically, in parts, resumably.

Everything goes into ``<out>.tmp-<pid>/`` and is renamed to ``<out>`` by :meth:`StoreWriter.finish`.
Signals are written to ``signals/part-NNNNN.arrow`` (uncompressed Arrow IPC, one row per recording:
``recording_id``, ``samples`` = channel-major flattened ``large_list<int16|int32|float32>``). A part is
*committed* when it reaches ``part_max_bytes`` (or at the end): its IPC file is closed and two sidecars
are written: ``part-NNNNN.recordings.parquet`` (the metadata rows) and, last, ``part-NNNNN.commit.json``
(row count, the source keys it consumed, skipped items). A run that stops (killed, or an error with
``on_error="raise"``) leaves the temporary folder behind; the next writer for the same output adopts it,
keeps every committed part whose row count checks out, deletes the rest, and reports the keys already
done so the conversion continues where it stopped. Part boundaries depend only on the sequence of
recordings, so a resumed conversion produces the same parts as an uninterrupted one.

**Annotations** (``Recording.events``) are committed with their part (``part-NNNNN.events.parquet``)
and written by :meth:`StoreWriter.finish` twice: ``recording_events.parquet`` holds every one, keyed
by ``recording_id`` with ``onset_s`` from the recording's first sample (what a window asks for its
labels: :meth:`~clinseq.timeline.store.TimelineStore.recording_events`); and the annotations of
recordings with a start time go onto the patient's timeline as store events (``events.arrow`` + index:
``subject_id`` = patient, ``time`` = start + onset, ``code``, ``numeric_value`` = duration in s when
> 0, ``text_value``). Annotations of a recording without a start time cannot be placed on the
timeline: they stay in ``recording_events.parquet`` and the manifest counts them
(``annotations.not_on_timeline_no_start_time``).

**Integrity** (design §2). The target is held under an exclusive lock (``<out>.lock``,
:class:`~clinseq.timeline.lock.FolderLock`) from the writer's creation to :meth:`StoreWriter.finish`
or :meth:`StoreWriter.release`: a second conversion into the same ``out`` fails at once naming the
holder. The temporary folder records what made it (``identity.json``: the source's files with sizes
and mtimes, and every option that changes the output); a later writer adopts it only when its identity
is the same, else it says so and starts clean. Each signal part's SHA-256 is computed from the bytes
as they are written (no second pass) and recorded with its size in the commit file, then in the
manifest's ``files`` (with the tables' and the sizes of every other file); :meth:`TimelineStore.open`
checks the sizes, ``clinseq verify`` the checksums. :meth:`StoreWriter.finish` validates the store in
the temporary folder before the rename (schema, unique ids, counts, finite calibration) and names the
source of an offending recording. An ``OSError`` while writing (a full disk) is reported with the
temporary folder, which the same command resumes from.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from clinseq import __version__
from clinseq.errors import StoreError
from clinseq.timeline.lock import FolderLock
from clinseq.timeline.records import Recording

FORMAT_VERSION = 1
SIGNALS_DIR = "signals"
DEFAULT_PART_MAX_BYTES = 1 << 30
#: The provenance file ``clinseq download`` writes into a source folder; :meth:`StoreWriter.finish`
#: copies it into the manifest under ``download`` (None when the source folder has none).
DOWNLOAD_PROVENANCE = ".clinseq-download.json"
# Buffer rows into record batches of about this size: few batches per part keeps opening cheap.
_BATCH_BYTES = 32 << 20

#: Columns every ``recordings.parquet`` has, in this order; dataset-specific columns follow.
RECORDING_COLUMNS: dict[str, pl.DataType] = {
    "recording_id": pl.Int64(),
    "patient_id": pl.Int64(),
    "start_time": pl.Datetime("us"),
    "modality": pl.String(),
    "sampling_rate_hz": pl.Float64(),
    "n_samples": pl.Int64(),
    "n_channels": pl.Int64(),
    "channel_names": pl.List(pl.String()),
    "units": pl.List(pl.String()),
    "gain": pl.List(pl.Float64()),
    "baseline": pl.List(pl.Float64()),
    "adc_invalid": pl.List(pl.Int64()),
    "sample_dtype": pl.String(),
    "part": pl.Int32(),
    "row": pl.Int64(),
    "source": pl.String(),
}


def empty_recordings() -> pl.DataFrame:
    """A ``recordings`` table with the standard columns and no rows (stores that hold only events)."""
    return pl.DataFrame(schema=RECORDING_COLUMNS)


def _part_stem(part: int) -> str:
    return f"part-{part:05d}"


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)


#: The file in a temporary folder that says which conversion made it.
IDENTITY_FILE = "identity.json"
#: Manifest key: ``{relative path: {"bytes": n, "sha256": hex (signal parts and tables)}}``.
FILES_KEY = "files"


def _write_hashed(path: Path, data: bytes) -> dict[str, Any]:
    """Write ``data`` to ``path``; its size and SHA-256 from the same bytes."""
    path.write_bytes(data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _disk_errors(method):
    """An ``OSError`` while writing (``ENOSPC``, ``EDQUOT``, ``EIO``...) becomes a StoreError naming the
    temporary folder, which keeps the committed parts for a resume."""

    @functools.wraps(method)
    def wrapped(self: StoreWriter, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.errno != errno.ENOSPC:
                raise
            raise disk_error(exc, self.tmp_path, self.path) from exc

    return wrapped


def disk_error(exc: OSError, tmp_path: Path, out: Path) -> StoreError:
    """The StoreError of a write that failed (a full disk): it names the temporary folder that keeps
    what was committed, and how to resume."""
    what = os.strerror(exc.errno) if exc.errno else str(exc)
    return StoreError(
        f"{tmp_path}: {what} while writing the store {out}"
        + (f" ({exc.filename})" if exc.filename else "")
        + "; what was committed so far is kept in that temporary folder: free space and run the same "
        "command again to resume, or delete the folder to start afresh"
    )


class StoreWriter:
    """Writes one timeline store; see the module docstring for the on-disk protocol.

    Args:
        path: the final store folder; it must not exist yet.
        dataset: dataset name recorded in the manifest (``"ptbxl"``, ``"eeg"``...).
        source: the source folder the data came from (recorded in the manifest).
        part_max_bytes: a signal part is committed once it holds at least this many sample bytes.
        resume: adopt an earlier run's temporary folder (``<path>.tmp-*``) when there is one made by
            the same conversion (its ``identity.json`` equals ``identity``); one made by another is
            reported (a warning) and removed.
        identity: what makes this conversion's output (source files with sizes and mtimes, options);
            JSON-serialisable. Without it, no earlier temporary folder is ever adopted.
        attribute_schema: dtypes of dataset-specific ``recordings`` columns, so that a column whose
            values are all empty lists or None still gets its real type (e.g. ``list<struct>``).

    Other writers (events) may put files into :attr:`tmp_path` before :meth:`finish`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dataset: str,
        source: str | os.PathLike[str] | None = None,
        part_max_bytes: int = DEFAULT_PART_MAX_BYTES,
        resume: bool = True,
        attribute_schema: dict[str, pl.DataType] | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        if part_max_bytes <= 0:
            raise ValueError(f"part_max_bytes must be > 0, got {part_max_bytes}")
        if self.path.exists():
            raise StoreError(
                f"{self.path} already exists: remove it or choose another output folder "
                "(stores are never overwritten in place)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FolderLock(self.path.parent / f"{self.path.name}.lock", f"store target {self.path}")
        self.lock.acquire()
        try:
            self._start(dataset, source, part_max_bytes, resume, attribute_schema, identity)
        except BaseException:
            self.lock.release()
            raise

    def _start(
        self,
        dataset: str,
        source: str | os.PathLike[str] | None,
        part_max_bytes: int,
        resume: bool,
        attribute_schema: dict[str, pl.DataType] | None,
        identity: dict[str, Any] | None,
    ) -> None:
        if self.path.exists():  # finished by another run while we waited for nothing: still refuse
            raise StoreError(f"{self.path} already exists: remove it or choose another output folder")
        self.dataset = dataset
        self.source = str(source) if source is not None else None
        self.part_max_bytes = int(part_max_bytes)
        self.attribute_schema = dict(attribute_schema or {})
        self.identity = None if identity is None else json.loads(json.dumps(identity, default=str))
        self.tmp_path = self.path.parent / f"{self.path.name}.tmp-{os.getpid()}"
        self.resumed_from: str | None = None
        #: Temporary folders of other conversions found and removed (named in a warning).
        self.discarded: list[str] = []
        self._difference = ""

        previous = sorted(
            (p for p in self.path.parent.glob(f"{self.path.name}.tmp-*") if p.is_dir()),
            key=lambda p: p.stat().st_mtime,
        )
        adopt = None
        for folder in reversed(previous):
            if resume and adopt is None and self._same_identity(folder):
                adopt = folder
                continue
            self.discarded.append(folder.name)
            shutil.rmtree(folder)
        if self.discarded:
            warnings.warn(
                f"{self.path}: removed unfinished conversion folder(s) {self.discarded} made by another "
                f"conversion ({self._difference or 'no identity recorded'}): starting clean",
                stacklevel=3,
            )
        if adopt is not None:
            if adopt != self.tmp_path:
                os.replace(adopt, self.tmp_path)
            self.resumed_from = adopt.name
        (self.tmp_path / SIGNALS_DIR).mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.tmp_path / IDENTITY_FILE, {"identity": self.identity})

        # Committed state (from parts that checked out) and the open part.
        self._committed_keys: list[str] = []
        self._committed_meta: list[pl.DataFrame] = []
        self._committed_events: list[pl.DataFrame] = []
        self._skipped: list[dict[str, str]] = []
        self._files: dict[str, dict[str, Any]] = {}
        self._n_rows_committed = 0
        self._n_parts = 0
        self._recover()
        self._open_part: _OpenPart | None = None
        self._pending_keys: list[str] = []
        self._pending_skipped: list[dict[str, str]] = []

    def release(self) -> None:
        """Release the target's lock (done by :meth:`finish`; call it when a conversion fails)."""
        self.lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- resume -------------------------------------------------------------------------------------
    def _same_identity(self, folder: Path) -> bool:
        """Whether ``folder`` was made by this very conversion (same identity; never without one)."""
        if self.identity is None:
            return False
        try:
            saved = json.loads((folder / IDENTITY_FILE).read_text())
        except (OSError, ValueError):
            return False
        theirs = saved.get("identity") if isinstance(saved, dict) else None
        if theirs == self.identity:
            return True
        if isinstance(theirs, dict) and isinstance(self.identity, dict):
            keys = sorted(
                k for k in set(theirs) | set(self.identity) if theirs.get(k) != self.identity.get(k)
            )
            self._difference = "differs in: " + ", ".join(keys)
        return False

    def _recover(self) -> None:
        signals = self.tmp_path / SIGNALS_DIR
        part = 0
        while True:
            stem = signals / _part_stem(part)
            commit = stem.with_suffix(".commit.json")
            if not commit.exists():
                break
            info = json.loads(commit.read_text())
            meta_path = stem.with_suffix(".recordings.parquet")
            if not self._part_checks_out(stem, info, meta_path):
                warnings.warn(
                    f"{stem}: committed part does not check out; it and later parts are rewritten",
                    stacklevel=3,
                )
                commit.unlink()
                break
            if info["n_rows"]:
                self._committed_meta.append(pl.read_parquet(meta_path))
            events_path = stem.with_suffix(".events.parquet")
            if events_path.exists():
                self._committed_events.append(pl.read_parquet(events_path))
            self._committed_keys.extend(info["keys"])
            self._skipped.extend(info["skipped"])
            self._n_rows_committed += int(info["n_rows"])
            if info.get("file"):
                self._files[f"{SIGNALS_DIR}/{_part_stem(part)}.arrow"] = info["file"]
            part += 1
        self._n_parts = part
        # Whatever is not committed is rewritten from scratch.
        for leftover in signals.iterdir():
            stem_name = leftover.name.split(".")[0]
            if not stem_name.startswith("part-") or int(stem_name[5:]) >= part:
                leftover.unlink()

    @staticmethod
    def _part_checks_out(stem: Path, info: dict[str, Any], meta_path: Path) -> bool:
        if info["n_rows"] == 0:
            return True
        arrow_path = stem.with_suffix(".arrow")
        if not (arrow_path.exists() and meta_path.exists()):
            return False
        recorded = info.get("file") or {}
        if recorded.get("bytes") is not None and arrow_path.stat().st_size != recorded["bytes"]:
            return False
        try:
            with pa.memory_map(str(arrow_path)) as source:
                n_rows = pa.ipc.open_file(source).read_all().num_rows
            n_meta = pl.scan_parquet(meta_path).select(pl.len()).collect().item()
        except (OSError, pa.ArrowInvalid):
            return False
        return n_rows == info["n_rows"] == n_meta

    @property
    def done_keys(self) -> set[str]:
        """Source keys already handled (written or skipped) by committed parts of an earlier run."""
        return set(self._committed_keys)

    # -- writing ------------------------------------------------------------------------------------
    @_disk_errors
    def add(self, recording: Recording | Sequence[Recording], *, key: str) -> None:
        """Append one recording, or the recordings one source item gives (e.g. one per sampling rate:
        they land in one part, and resume treats them as one item). ``key`` is the source item's key,
        for resume bookkeeping. Recordings of one item with different sample dtypes are brought to
        one (int16 → int32 losslessly; with a float32 one, all become float32 physical values)."""
        recordings = [recording] if isinstance(recording, Recording) else list(recording)
        if not recordings:
            raise StoreError(f"source item {key!r} gave no recording")
        recordings = _one_dtype(recordings)
        dtype = recordings[0].samples.dtype
        if self._open_part is not None and self._open_part.dtype != dtype:
            self._commit_part()  # one sample dtype per part
        if self._open_part is None:
            self._open_part = _OpenPart(self.tmp_path / SIGNALS_DIR / _part_stem(self._n_parts), dtype)
        for one in recordings:
            row = self._open_part.append(one)
            self._open_part.meta.append(_meta_row(one, part=self._n_parts, row=row))
            self._open_part.events.extend(_event_rows(one))
        self._pending_keys.append(key)
        if self._open_part.n_bytes >= self.part_max_bytes:
            self._commit_part()

    def skip(self, key: str, path: str, reason: str) -> None:
        """Record a source item that was not written (``on_error="skip"``); listed in the manifest."""
        self._pending_keys.append(key)
        self._pending_skipped.append({"key": key, "path": str(path), "reason": reason})

    def _commit_part(self) -> None:
        stem = self.tmp_path / SIGNALS_DIR / _part_stem(self._n_parts)
        n_rows = 0
        file_info = None
        if self._open_part is not None:
            n_rows = self._open_part.close()
            file_info = self._open_part.file_info()
            self._files[f"{SIGNALS_DIR}/{stem.name}.arrow"] = file_info
            meta = _meta_frame(self._open_part.meta, self.attribute_schema)
            meta.write_parquet(stem.with_suffix(".recordings.parquet"))
            self._committed_meta.append(meta)
            if self._open_part.events:
                events = pl.DataFrame(self._open_part.events, schema=RECORDING_EVENT_COLUMNS)
                events.write_parquet(stem.with_suffix(".events.parquet"))
                self._committed_events.append(events)
            self._open_part = None
        # The commit file is written last: its presence means the part is complete.
        _write_json_atomic(
            stem.with_suffix(".commit.json"),
            {
                "n_rows": n_rows,
                "keys": self._pending_keys,
                "skipped": self._pending_skipped,
                "file": file_info,
            },
        )
        self._committed_keys.extend(self._pending_keys)
        self._n_rows_committed += n_rows
        self._skipped.extend(self._pending_skipped)
        self._pending_keys, self._pending_skipped = [], []
        self._n_parts += 1

    def recordings(self) -> pl.DataFrame:
        """Metadata of every recording written so far (committed and pending)."""
        frames = list(self._committed_meta)
        if self._open_part is not None and self._open_part.meta:
            frames.append(_meta_frame(self._open_part.meta, self.attribute_schema))
        if not frames:
            return empty_recordings()
        return pl.concat(frames, how="diagonal_relaxed")

    @property
    def skipped(self) -> list[dict[str, str]]:
        return self._skipped + self._pending_skipped

    def _write_annotations(self, recordings: pl.DataFrame) -> dict[str, Any] | None:
        """``recording_events.parquet`` and the timeline events of dated recordings (module
        docstring); returns the manifest's ``annotations`` entry (None when there are none)."""
        if not self._committed_events:
            return None
        from clinseq.timeline.events_write import write_event_index

        events = pl.concat(self._committed_events).sort("recording_id", "onset_s", "code")
        events.write_parquet(self.tmp_path / RECORDING_EVENTS)
        starts = recordings.select("recording_id", "patient_id", "start_time")
        timed = events.join(starts, on="recording_id", how="left")
        dated = timed.filter(pl.col("start_time").is_not_null())
        if dated.height:
            timeline = dated.select(
                pl.col("patient_id").alias("subject_id"),
                (
                    pl.col("start_time")
                    + pl.duration(microseconds=(pl.col("onset_s") * 1e6).round().cast(pl.Int64))
                ).alias("time"),
                "code",
                pl.when(pl.col("duration_s") > 0).then(pl.col("duration_s")).alias("numeric_value"),
                "text_value",
            )
            write_event_index(timeline, self.tmp_path)
        counts = events.group_by("code").len().sort("code")
        return {
            "written": events.height,
            "on_timeline": dated.height,
            "not_on_timeline_no_start_time": events.height - dated.height,
            "by_code": {row["code"]: row["len"] for row in counts.iter_rows(named=True)},
        }

    def finish(
        self, patients: pl.DataFrame | None = None, manifest_extra: dict[str, Any] | None = None
    ) -> Path:
        """Write the tables and the manifest, validate the store (:func:`validate_tables`), then rename
        the temporary folder into place and release the lock. On an error the temporary folder stays
        (for a resume) and the lock is released."""
        try:
            return self._finish(patients, manifest_extra)
        finally:
            self.release()

    @_disk_errors
    def _finish(self, patients: pl.DataFrame | None, manifest_extra: dict[str, Any] | None) -> Path:
        if self._open_part is not None or self._pending_keys:
            self._commit_part()
        recordings = self.recordings()
        if patients is None:
            patients = recordings.select(pl.col("patient_id").unique().sort()).with_columns(
                pl.lit(None, dtype=pl.String).alias("split")
            )
        if "patient_id" not in patients.columns:
            raise StoreError(f"patients table needs a patient_id column, got {patients.columns}")
        patients = patients.with_columns(pl.col("patient_id").cast(pl.Int64)).sort("patient_id")
        validate_tables(
            recordings, patients, where=self.source or str(self.path), n_part_rows=self._n_rows_committed
        )
        self._files["recordings.parquet"] = _write_hashed(
            self.tmp_path / "recordings.parquet", _parquet_bytes(recordings)
        )
        self._files["patients.parquet"] = _write_hashed(
            self.tmp_path / "patients.parquet", _parquet_bytes(patients)
        )
        signals = self.tmp_path / SIGNALS_DIR
        annotations = self._write_annotations(recordings)
        if "unread_annotation_files" in recordings.columns:
            unread = recordings["unread_annotation_files"].explode().drop_nulls().to_list()
            if unread:  # annotation files a source found but could not read: listed, never dropped silently
                annotations = {**(annotations or {}), "unread_files": unread}
        for sidecar in (
            list(signals.glob("*.commit.json"))
            + list(signals.glob("*.recordings.parquet"))
            + list(signals.glob("*.events.parquet"))
        ):
            sidecar.unlink()
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "source": self.source,
            "clinseq_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "counts": {
                "patients": patients.height,
                "recordings": recordings.height,
                "signal_parts": len(list(signals.glob("part-*.arrow"))),
                "skipped": len(self._skipped),
            },
            "units": "physical = (adc - baseline) / gain, in units[c] (ECG mV, EEG uV)",
            "skipped": self._skipped,
        }
        manifest["download"] = _download_provenance(self.source)
        if annotations is not None:
            manifest["annotations"] = annotations
        if self.resumed_from:
            manifest["resumed_from"] = self.resumed_from
        manifest.update(manifest_extra or {})
        (self.tmp_path / IDENTITY_FILE).unlink(missing_ok=True)
        manifest[FILES_KEY] = self._file_table()
        _write_json_atomic(self.tmp_path / "manifest.json", manifest)
        os.replace(self.tmp_path, self.path)
        return self.path

    def _file_table(self) -> dict[str, dict[str, Any]]:
        """Every file of the store: its size, and the SHA-256 computed as it was written (signal parts
        and tables); other writers' files (events) by size (a stat, no pass over the data)."""
        table: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in self.tmp_path.rglob("*") if p.is_file()):
            rel = path.relative_to(self.tmp_path).as_posix()
            if rel == "manifest.json":
                continue
            known = self._files.get(rel)
            table[rel] = dict(known) if known else {"bytes": path.stat().st_size}
        return table


def _first_rows(frame: pl.DataFrame, mask: pl.Expr, what: str) -> str:
    """``what`` of the first offending rows, with the source file each came from."""
    bad = frame.with_row_index("_row").filter(mask).head(3)
    shown = []
    for row in bad.iter_rows(named=True):
        src = row.get("source")
        shown.append(f"recording_id={row.get('recording_id')}" + (f" from {src}" if src else ""))
    return f"{what}: " + "; ".join(shown)


def validate_tables(
    recordings: pl.DataFrame, patients: pl.DataFrame, *, where: str, n_part_rows: int | None = None
) -> None:
    """Check a store's tables before it is renamed into place; raise :class:`StoreError` naming the
    source (``where``) and the offending ids and files.

    Checked: the standard columns and their types; ``recording_id`` unique; one ``patients`` row per
    ``patient_id`` and a row for every recording's patient; channel lists as long as ``n_channels``;
    ``gain`` finite and non-zero, ``baseline`` finite, ``sampling_rate_hz`` finite and > 0; as many
    recordings as the committed signal parts hold rows (``n_part_rows``)."""
    problems: list[str] = []
    wrong = [
        f"{name} ({recordings.schema.get(name)}, expected {dtype})"
        for name, dtype in RECORDING_COLUMNS.items()
        if recordings.schema.get(name) != dtype
    ]
    if wrong and recordings.height:
        raise StoreError(f"{where}: recordings table has missing or mistyped columns: {', '.join(wrong)}")
    if recordings.height:
        duplicated = pl.col("recording_id").is_duplicated()
        if recordings.select(duplicated.any()).item():
            ids = recordings.filter(duplicated)["recording_id"].unique().sort().head(5).to_list()
            problems.append(_first_rows(recordings, duplicated, f"recording_id not unique ({ids})"))
        bad_rate = ~pl.col("sampling_rate_hz").is_finite() | (pl.col("sampling_rate_hz") <= 0)
        if recordings.select(bad_rate.any()).item():
            problems.append(_first_rows(recordings, bad_rate, "sampling rate not finite and > 0"))
        for column in ("gain", "baseline", "channel_names", "units"):
            short = pl.col(column).list.len() != pl.col("n_channels")
            if recordings.select(short.any()).item():
                problems.append(_first_rows(recordings, short, f"{column} has not n_channels entries"))
        bad_gain = pl.col("gain").list.eval(~pl.element().is_finite() | (pl.element() == 0)).list.any()
        if recordings.select(bad_gain.any()).item():
            problems.append(_first_rows(recordings, bad_gain, "gain not finite and non-zero"))
        bad_base = pl.col("baseline").list.eval(~pl.element().is_finite()).list.any()
        if recordings.select(bad_base.any()).item():
            problems.append(_first_rows(recordings, bad_base, "baseline not finite"))
    if patients["patient_id"].null_count():
        problems.append("patients table: a patient_id is null")
    dup_patients = patients.filter(pl.col("patient_id").is_duplicated())["patient_id"].unique().sort()
    if dup_patients.len():
        problems.append(f"patients table: patient_id not unique ({dup_patients.head(5).to_list()})")
    if recordings.height:
        orphan = ~pl.col("patient_id").is_in(patients["patient_id"].implode())
        if recordings.select(orphan.any()).item():
            problems.append(_first_rows(recordings, orphan, "recording of a patient absent from patients"))
    if n_part_rows is not None and n_part_rows != recordings.height:
        problems.append(
            f"signal parts hold {n_part_rows} rows but the recordings table has {recordings.height}"
        )
    if problems:
        raise StoreError(
            f"{where}: the converted store is invalid, so it was not renamed into place: "
            + " | ".join(problems)
        )


def _download_provenance(source: str | None) -> dict[str, Any] | None:
    """Where the source folder came from, when ``clinseq download`` fetched it (its provenance file:
    dataset, version, URL root, checksums verified); None otherwise."""
    if source is None:
        return None
    path = Path(source) / DOWNLOAD_PROVENANCE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"unreadable": f"{path}: {exc}"}


class _OpenPart:
    """The signal part being written: an IPC file writer plus a buffer of rows."""

    def __init__(self, stem: Path, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.schema = pa.schema(
            [("recording_id", pa.int64()), ("samples", pa.large_list(pa.from_numpy_dtype(dtype)))]
        )
        self._hashing = _HashingFile(stem.with_suffix(".arrow"))
        self.sink = pa.PythonFile(self._hashing, mode="w")
        self.writer = pa.ipc.new_file(self.sink, self.schema)
        self.meta: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.n_rows = 0
        self.n_bytes = 0
        self._buffer_ids: list[int] = []
        self._buffer_samples: list[np.ndarray] = []
        self._buffer_bytes = 0

    def append(self, recording: Recording) -> int:
        flat = np.ascontiguousarray(recording.samples).reshape(-1)
        if flat.nbytes >= _BATCH_BYTES:
            # A long recording is written as its own batch, straight from its array (or its spool
            # file's page cache): never concatenated into a second copy.
            self._flush()
            self._buffer_ids.append(recording.recording_id)
            self._buffer_samples.append(flat)
            self._flush()
            self.n_bytes += flat.nbytes
            self.n_rows += 1
            return self.n_rows - 1
        self._buffer_ids.append(recording.recording_id)
        self._buffer_samples.append(flat)
        self._buffer_bytes += flat.nbytes
        self.n_bytes += flat.nbytes
        row = self.n_rows
        self.n_rows += 1
        if self._buffer_bytes >= _BATCH_BYTES:
            self._flush()
        return row

    def _flush(self) -> None:
        if not self._buffer_ids:
            return
        lengths = np.array([len(s) for s in self._buffer_samples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        one = len(self._buffer_samples) == 1
        # pa.array of one contiguous numpy array wraps its buffer without a copy.
        values = pa.array(
            np.asarray(self._buffer_samples[0]) if one else np.concatenate(self._buffer_samples)
        )
        samples = pa.LargeListArray.from_arrays(pa.array(offsets), values)
        batch = pa.record_batch([pa.array(self._buffer_ids, pa.int64()), samples], schema=self.schema)
        self.writer.write_batch(batch)
        self._buffer_ids, self._buffer_samples, self._buffer_bytes = [], [], 0

    def close(self) -> int:
        self._flush()
        self.writer.close()
        self.sink.close()
        return self.n_rows

    def file_info(self) -> dict[str, Any]:
        """Size and SHA-256 of the closed part, from the bytes as they were written."""
        return {"bytes": self._hashing.size, "sha256": self._hashing.sha256.hexdigest()}


class _HashingFile:
    """A write-only file that hashes every byte on its way to disk (the checksum costs no second pass)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._file.write(view)
        self.sha256.update(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._file.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self._file.close()
            self.closed = True


#: ``recording_events.parquet``: every annotation of every recording, in time from its first sample.
RECORDING_EVENTS = "recording_events.parquet"
RECORDING_EVENT_COLUMNS: dict[str, pl.DataType] = {
    "recording_id": pl.Int64(),
    "onset_s": pl.Float64(),
    "duration_s": pl.Float64(),
    "code": pl.String(),
    "text_value": pl.String(),
}


def _event_rows(recording: Recording) -> list[dict[str, Any]]:
    return [
        {
            "recording_id": int(recording.recording_id),
            "onset_s": float(e["onset_s"]),
            "duration_s": float(e.get("duration_s") or 0.0),
            "code": str(e["code"]),
            "text_value": e.get("text_value"),
        }
        for e in recording.events
    ]


def _one_dtype(recordings: list[Recording]) -> list[Recording]:
    dtypes = {r.samples.dtype for r in recordings}
    if len(dtypes) == 1:
        return recordings
    if np.dtype("float32") not in dtypes:
        return [replace(r, samples=r.samples.astype(np.int32)) for r in recordings]
    out = []
    for r in recordings:
        if r.samples.dtype == np.float32:
            out.append(r)
            continue
        adc = r.samples.astype(np.float64)
        physical = (adc - np.asarray(r.baseline)[:, None]) / np.asarray(r.gain)[:, None]
        for c, sentinel in enumerate(r.adc_invalid or []):
            if sentinel is not None:
                physical[c, r.samples[c] == sentinel] = np.nan
        n = r.n_channels
        out.append(
            replace(
                r,
                samples=physical.astype(np.float32),
                gain=[1.0] * n,
                baseline=[0.0] * n,
                adc_invalid=[None] * n,
            )
        )
    return out


def _meta_row(recording: Recording, *, part: int, row: int) -> dict[str, Any]:
    return {
        "recording_id": int(recording.recording_id),
        "patient_id": int(recording.patient_id),
        "start_time": recording.start_time,
        "modality": recording.modality,
        "sampling_rate_hz": float(recording.sampling_rate_hz),
        "n_samples": recording.n_samples,
        "n_channels": recording.n_channels,
        "channel_names": list(recording.channel_names),
        "units": list(recording.units),
        "gain": [float(g) for g in recording.gain],
        "baseline": [float(b) for b in recording.baseline],
        "adc_invalid": list(recording.adc_invalid or []),
        "sample_dtype": str(recording.samples.dtype),
        "part": part,
        "row": row,
        "source": recording.source,
        **recording.attributes,
    }


def _meta_frame(
    rows: list[dict[str, Any]], attribute_schema: dict[str, pl.DataType] | None = None
) -> pl.DataFrame:
    frame = pl.DataFrame(rows, infer_schema_length=None)
    # The fixed columns get their exact types (polars would infer e.g. a naive datetime[μs]), and so do
    # the source's declared ones (all-empty lists would otherwise be list<null>).
    types = {**(attribute_schema or {}), **RECORDING_COLUMNS}
    return frame.with_columns(
        [pl.col(name).cast(dtype) for name, dtype in types.items() if name in frame.columns]
    ).select(list(RECORDING_COLUMNS) + [c for c in frame.columns if c not in RECORDING_COLUMNS])
