"""Write a store's events (layout: :mod:`clinseq.timeline.events`) in two passes, under a memory bound.

1. :class:`EventStager` takes events in any order (a source's tables, a MEDS dataset's files) and
   appends them, sorted by shard (subject-id range, :func:`shard_breaks`), to an Arrow IPC file: one
   pass, memory of one batch.
2. :func:`write_events` sorts each shard once (:func:`~clinseq.timeline.events_sort.sort_ranked`), in
   parallel, writes it as MEDS ``events/data/NNNNN.parquet`` and appends it to ``events.arrow`` through
   :class:`EventIndexWriter`, which also writes ``events_codes.parquet`` and ``events_index.parquet``.

:func:`write_subject_splits`, :func:`assign_splits` and :func:`store_patients` write the splits
(MEDS ``subject_splits.parquet``, the store's ``patients.parquet``). Small event tables can skip the
staging: :func:`write_event_index` sorts and indexes one frame at once.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clinseq import __version__
from clinseq.errors import ConfigError, StoreError
from clinseq.timeline.events import (
    CODE_INDEX,
    EVENT_SCHEMA,
    EVENTS_ARROW,
    EVENTS_CODES,
    EVENTS_DIR,
    EVENTS_INDEX,
    INDEX_ARROW_SCHEMA,
    LOCAL_CODE,
    SUBJECT_INDEX_SCHEMA,
    to_arrow_events,
)
from clinseq.timeline.events_sort import canonical_sort, sort_ranked

#: MEDS split names → the store's split names (patients.parquet).
MEDS_TO_STORE_SPLIT = {"train": "train", "tuning": "val", "held_out": "test"}
#: Subjects per MEDS shard: ≈ 1 M events for MIMIC-IV (≈ 1,900 events per subject), so that a shard
#: sorts in ≈ 200 MB.
DEFAULT_SUBJECTS_PER_SHARD = 500
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
        raise ConfigError(
            f"subjects_per_shard must be >= 1, got {subjects_per_shard}: pass e.g. "
            f"subjects_per_shard={DEFAULT_SUBJECTS_PER_SHARD}"
        )
    ids = np.unique(np.asarray(subject_ids, dtype=np.int64))
    return [int(x) for x in ids[subjects_per_shard::subjects_per_shard]]


#: Events per staged batch (a batch is sorted by shard on its own; memory ≈ 150 bytes per event).
STAGE_BATCH_ROWS = 1 << 19
_STAGE_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64()),
        pa.field("time", pa.timestamp("us")),
        # The code's number in the stager's own code list (``*.codes.arrow``): strings are hashed once,
        # when staged, and a shard sort then ranks numbers, not strings.
        pa.field("code", pa.uint32()),
        pa.field("numeric_value", pa.float32()),
        # large_string, not a view: joining a shard's slices then copies the texts, so that no sorted
        # shard refers to (and keeps resident) the mapped staging file.
        pa.field("text_value", pa.large_string()),
    ]
)


def _codes_path(path: Path) -> Path:
    return path.with_suffix(".codes.arrow")


def _offsets_path(path: Path) -> Path:
    return path.with_suffix(".offsets.npy")


@dataclass
class StagedEvents:
    """Events staged for the shard sort: ``path`` is an Arrow IPC file of record batches, each sorted by
    shard; batch b holds shard k's events in rows ``[offsets[b, k], offsets[b, k + 1])``. Its ``code``
    column numbers the events' codes: ``codes[i]`` is the code numbered i."""

    path: Path
    offsets: np.ndarray
    codes: pl.Series

    @property
    def n_events(self) -> int:
        return int(self.offsets[:, -1].sum()) if len(self.offsets) else 0

    def rows(self, k: int) -> int:
        """Events of shard ``k``."""
        return int((self.offsets[:, k + 1] - self.offsets[:, k]).sum()) if len(self.offsets) else 0

    @staticmethod
    def load(path: Path) -> StagedEvents:
        """What :meth:`EventStager.finish` wrote at ``path`` (raises OSError when a part is missing)."""
        codes = pl.read_ipc(_codes_path(path))["code"]
        return StagedEvents(path, np.load(_offsets_path(path)), codes)


class EventStager:
    """Stages events for :func:`write_events` in one pass, whatever the number of shards.

    Each :meth:`add` numbers its events' codes (a code keeps its number across batches: one hash per
    event, and the strings of each distinct code stored once), sorts the events by shard (one integer
    sort) and appends them as one record batch to an IPC file, noting where each shard starts. The
    shard sort later reads its rows of every batch as zero-copy slices. Unlike a file per shard and
    input (polars' partitioned sink), the cost does not grow with the number of shards, and memory
    holds one batch.
    """

    def __init__(self, path: Path, breaks: list[int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._breaks = np.asarray(breaks, dtype=np.int64)
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_file(self._sink, _STAGE_SCHEMA)
        self._offsets: list[np.ndarray] = []
        # This stager's own code numbering (polars assigns numbers in order of first appearance). The
        # mapping lives while some data uses it: the empty series keeps it for the stager's lifetime.
        self._categories = pl.Categories.random()
        self._keep_codes = pl.Series("code", [], pl.Categorical(self._categories))

    def add(self, events: pl.DataFrame) -> None:
        """Stage a frame with the :data:`EVENT_SCHEMA` columns (``code`` never null, as MEDS requires)."""
        if events.height == 0:
            return
        schema = events.collect_schema()
        events = events.select(
            [pl.col(c) if schema.get(c) == t else pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()]
        )
        if events["code"].null_count():
            raise StoreError(
                f"{events['code'].null_count()} event(s) without a code: MEDS requires a code for every "
                "event; drop or fill them before staging"
            )
        # One chunk: a streaming engine's batch comes in many small ones, which slow every step below.
        events = events.with_columns(
            pl.col("code").cast(pl.Categorical(self._categories)).to_physical()
        ).rechunk()
        shard = np.searchsorted(self._breaks, events["subject_id"].to_numpy(), side="right")
        n = np.bincount(shard, minlength=len(self._breaks) + 1)
        if np.count_nonzero(n) > 1:
            # Shard numbers fit in 16 bits for any real dataset: numpy then radix-sorts them, O(n).
            shard = shard.astype(np.uint16) if len(n) <= 1 << 16 else shard
            events = events[pl.Series(np.argsort(shard, kind="stable"), dtype=pl.UInt32)]
        self._offsets.append(np.concatenate([[0], np.cumsum(n)]))
        table = events.to_arrow(compat_level=pl.CompatLevel.newest()).cast(_STAGE_SCHEMA).combine_chunks()
        self._writer.write_batch(table.to_batches()[0])  # one batch per add: offsets[b] is batch b

    def finish(self) -> StagedEvents:
        """Close the file and write the code list and the offsets beside it (``*.codes.arrow``,
        ``*.offsets.npy``)."""
        self._writer.close()
        self._sink.close()
        codes = self._categories.to_series().rename("code")
        if codes.null_count():  # numbers are reserved before their string is stored: never at rest
            raise StoreError(f"{self.path}: the code list has unassigned numbers; stage the events again")
        pl.DataFrame({"code": codes}).write_ipc(_codes_path(self.path))
        offsets = np.stack(self._offsets) if self._offsets else np.zeros((0, len(self._breaks) + 2), np.int64)
        np.save(_offsets_path(self.path), offsets)
        return StagedEvents(self.path, offsets, codes)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self._sink.close()


def stage_lazy(events: pl.LazyFrame, path: Path, breaks: list[int]) -> StagedEvents:
    """Stream ``events`` (the :data:`EVENT_SCHEMA` columns) through an :class:`EventStager`."""
    stager = EventStager(path, breaks)
    try:
        for batch in events.collect_batches(chunk_size=STAGE_BATCH_ROWS):
            stager.add(batch)
    except BaseException:
        stager.abort()
        raise
    return stager.finish()


@dataclass
class EventsSummary:
    """What :func:`write_events` wrote."""

    n_events: int
    n_subjects: int
    n_shards: int
    codes: pl.DataFrame
    subject_ids: np.ndarray
    reused_shards: int = 0
    #: Thread seconds per step, summed over shards: ``gather`` (a shard's staged rows read into one
    #: frame), ``sort``, ``meds_parquet`` (the MEDS copy), ``events_arrow`` (the store's copy + index).
    seconds: dict[str, float] = field(default_factory=dict)


#: Staged events the shard sorts may hold at once across workers (≈ 200 bytes each at a sort's peak):
#: a shard that alone exceeds it runs by itself.
DEFAULT_EVENTS_IN_FLIGHT = 4_000_000


def _build_shard(
    events: Callable[[], pl.DataFrame],
    codes: pl.Series,
    out: Path,
    reuse: bool,
    n_staged: int,
    seconds: dict[str, float] | None = None,
) -> tuple[pl.DataFrame, pl.Series, bool]:
    """Sort one shard's staged events, write its MEDS ``data/NNNNN.parquet`` (atomically) and return
    ``(sorted events, their codes, reused)`` as :func:`sort_ranked` gives them. ``events()`` gives the
    shard's events with their codes as rows of ``codes``. With ``reuse``, a finished shard file whose
    row count equals the staged rows is read back instead (resume)."""
    if reuse and out.exists() and pq.read_metadata(out).num_rows == n_staged:
        shard = pl.read_parquet(out)
        local_codes = shard["code"].unique().sort()
        local = shard["code"].cast(pl.Enum(local_codes)).to_physical()
        return shard.with_columns(local.alias(LOCAL_CODE)), local_codes, True
    clock = {} if seconds is None else seconds
    t0 = time.perf_counter()
    staged = events()
    t1 = time.perf_counter()
    shard, local_codes = sort_ranked(staged, codes)
    del staged
    t2 = time.perf_counter()
    unfinished = out.with_name(out.name + ".partial")
    # pyarrow writes MEDS' exact types. Dictionary pages for codes only (text values rarely repeat),
    # statistics where readers filter (subject_id, time), row groups of 256 k events, zstd level 1:
    # as fast as snappy here, a third smaller (any Parquet reader decodes it).
    pq.write_table(
        to_arrow_events(shard),
        unfinished,
        row_group_size=256 * 1024,
        use_dictionary=["code"],
        write_statistics=["subject_id", "time"],
        compression="zstd",
        compression_level=1,
    )
    os.replace(unfinished, out)
    for name, dt in (("gather", t1 - t0), ("sort", t2 - t1), ("meds_parquet", time.perf_counter() - t2)):
        clock[name] = clock.get(name, 0.0) + dt  # one float add per shard: safe enough across threads
    return shard, local_codes, False


def write_events(
    staged: list[StagedEvents],
    events_root: Path,
    *,
    n_shards: int,
    dataset_meta: dict[str, Any],
    describe: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    workers: int | None = None,
    reuse_shards: bool = False,
    max_events_in_flight: int = DEFAULT_EVENTS_IN_FLIGHT,
    progress: bool = False,
) -> EventsSummary:
    """Turn staged events into ``events/`` (MEDS) + ``events.arrow`` + index, one shard at a time.

    Shards are sorted and written by ``workers`` threads (polars and pyarrow release the GIL) while this
    thread appends them, in subject order, to ``events.arrow``. Each shard is sorted once, in the
    canonical :data:`EVENT_SORT` order (:func:`canonical_sort`). Memory: a shard is started only while
    the shards started and not yet appended hold at most ``max_events_in_flight`` events together (one
    shard always runs, however large).

    Args:
        staged: what :class:`EventStager` (or :func:`stage_lazy`) staged.
        events_root: the store's temporary folder; ``events/``, ``events.arrow``,
            ``events_codes.parquet`` and ``events_index.parquet`` are created inside it.
        n_shards: number of shards planned (``len(breaks) + 1``).
        dataset_meta: the content of ``dataset.json``.
        describe: maps the code table (``code``, ``count``) to one with ``description`` and
            ``parent_codes`` (the source's dictionaries); None leaves both null.
        workers: shard-sorting threads (default: the CPU count, at most 4).
        reuse_shards: keep ``data/NNNNN.parquet`` files of an interrupted run whose row counts match
            their staged rows (resume); only valid when the staged events did not change since.
        max_events_in_flight: the memory bound above, in events (≈ 200 bytes each at a sort's peak).

    ``metadata/subject_splits.parquet`` is written by :func:`write_subject_splits`.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    data_dir = events_root / EVENTS_DIR / "data"
    meta_dir = events_root / EVENTS_DIR / "metadata"
    data_dir.mkdir(parents=True, exist_ok=True)
    meta_dir.mkdir(parents=True, exist_ok=True)
    for leftover in data_dir.glob("*.partial"):
        leftover.unlink()
    if not reuse_shards:
        for old in data_dir.glob("*.parquet"):
            old.unlink()
    staged = [s for s in staged if len(s.offsets)]

    # One sorted list of every code; each staged file's code numbers map to their row in it.
    all_codes = (
        pl.concat([s.codes for s in staged]).unique().sort() if staged else pl.Series("code", [], pl.String)
    )
    ranks = [s.codes.cast(pl.Enum(all_codes)).to_physical().to_numpy() for s in staged]

    def shard_events(k: int) -> pl.DataFrame:
        """Shard k's rows of every staged batch (zero-copy slices of freshly mapped files), copied into
        one frame whose ``_local_code`` is the code's row in ``all_codes``. Nothing refers to the maps
        afterwards, so their pages leave this process's resident memory at once."""
        batches, code_rows = [], []
        for s, rank in zip(staged, ranks, strict=True):
            spans = [(b, int(s.offsets[b, k]), int(s.offsets[b, k + 1])) for b in range(len(s.offsets))]
            spans = [span for span in spans if span[2] > span[1]]
            if spans:
                reader = pa.ipc.open_file(pa.memory_map(str(s.path)))
                for b, lo, hi in spans:
                    batch = reader.get_batch(b).slice(lo, hi - lo)
                    batches.append(batch.drop_columns(["code"]))
                    code_rows.append(rank[batch.column("code").to_numpy()])
        frame = pl.from_arrow(pa.Table.from_batches(batches).combine_chunks())
        return frame.with_columns(pl.Series(LOCAL_CODE, np.concatenate(code_rows)))

    shards = [(k, rows) for k in range(n_shards) if (rows := sum(s.rows(k) for s in staged))]
    n_workers = max(1, min(4, os.cpu_count() or 1) if workers is None else int(workers))

    index = EventIndexWriter(events_root)
    subjects: list[np.ndarray] = []
    reused = 0
    seconds: dict[str, float] = {"gather": 0.0, "sort": 0.0, "meds_parquet": 0.0, "events_arrow": 0.0}
    try:
        with ThreadPoolExecutor(n_workers) as pool:
            pending: deque = deque()  # (rows, future), in shard order
            todo = deque(shards)
            bar = tqdm(total=len(shards), desc="sorting shards", disable=not progress)
            while todo or pending:
                # Start shards in order while a worker is free (one queued ahead) and the memory bound
                # allows: the shard appended below is still counted here, so it is included.
                in_flight = sum(rows for rows, _ in pending)
                while (
                    todo
                    and len(pending) <= n_workers
                    and (not pending or in_flight + todo[0][1] <= max_events_in_flight)
                ):
                    k, rows = todo.popleft()
                    out = data_dir / f"{k:05d}.parquet"
                    pending.append(
                        (
                            rows,
                            pool.submit(
                                _build_shard,
                                partial(shard_events, k),
                                all_codes,
                                out,
                                reuse_shards,
                                rows,
                                seconds,
                            ),
                        )
                    )
                    in_flight += rows
                _, future = pending.popleft()
                shard, codes, was_reused = future.result()
                reused += int(was_reused)
                t0 = time.perf_counter()
                index.add_shard(shard, codes)
                seconds["events_arrow"] += time.perf_counter() - t0
                subjects.append(shard["subject_id"].unique(maintain_order=True).to_numpy())
                del shard, codes
                bar.update()
            bar.close()
    except BaseException:
        index.abort()
        raise
    index.finish()

    code_counts = index.code_counts.sort("code")
    if describe is not None:
        described = describe(code_counts)
    else:
        described = code_counts.with_columns(
            pl.lit(None, pl.String).alias("description"),
            pl.lit(None, pl.List(pl.String)).alias("parent_codes"),
        )
    described = described.select(
        pl.col("code"),
        pl.col("description").cast(pl.String),
        pl.col("parent_codes").cast(pl.List(pl.String)),
        pl.col("count").cast(pl.Int64),
    ).sort("code")
    # Written through pyarrow with MEDS' exact types (polars would write large_string / large_list).
    pq.write_table(described.to_arrow().cast(CODES_ARROW_SCHEMA), meta_dir / "codes.parquet")
    meta = {
        "etl_name": "clinseq",
        "etl_version": __version__,
        "meds_version": _meds_version(),
        "created_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
        **dataset_meta,
    }
    (meta_dir / "dataset.json").write_text(json.dumps(meta, indent=1))
    subject_ids = np.concatenate(subjects) if subjects else np.zeros(0, np.int64)
    return EventsSummary(
        index.n_events,
        len(subject_ids),
        len(shards),
        described,
        subject_ids,
        reused_shards=reused,
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )


def write_subject_splits(events_root: Path, splits: pl.DataFrame) -> Path:
    """``events/metadata/subject_splits.parquet`` from ``subject_id``, ``split`` (MEDS split names)."""
    path = events_root / EVENTS_DIR / "metadata" / "subject_splits.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = splits.select(pl.col("subject_id").cast(pl.Int64), pl.col("split").cast(pl.String))
    table = table.filter(pl.col("split").is_not_null()).sort("subject_id")
    pq.write_table(table.to_arrow().cast(SPLITS_ARROW_SCHEMA), path)
    return path


def store_patients(splits: pl.DataFrame, statics: pl.DataFrame | None = None) -> pl.DataFrame:
    """``patients.parquet`` for an events store: ``patient_id``, ``split`` (train/val/test), statics."""
    patients = splits.select(
        pl.col("subject_id").cast(pl.Int64).alias("patient_id"),
        pl.col("split").replace(MEDS_TO_STORE_SPLIT).alias("split"),
    )
    if statics is not None:
        patients = patients.join(statics, on="patient_id", how="left")
    return patients.sort("patient_id")


class EventIndexWriter:
    """Writes ``events.arrow``, ``events_codes.parquet`` and ``events_index.parquet``, shard by shard.

    Shards must come in increasing subject order, each sorted by :data:`EVENT_SORT`, and a subject must
    lie in one shard only (the MEDS rule): memory stays at one shard whatever the dataset's size. Codes
    get their ``code_index`` in order of first appearance; :attr:`code_counts` counts their events.
    """

    def __init__(self, store_tmp_path: str | os.PathLike[str]) -> None:
        self.root = Path(store_tmp_path)
        self.root.mkdir(parents=True, exist_ok=True)
        self._sink = pa.OSFile(str(self.root / EVENTS_ARROW), "wb")
        self._writer = pa.ipc.new_file(self._sink, INDEX_ARROW_SCHEMA)
        self._index: list[pl.DataFrame] = []
        self._code_id: dict[str, int] = {}
        self._counts = np.zeros(0, np.int64)
        self.n_events = 0
        self._last_subject: int | None = None

    def add_shard(self, events: pl.DataFrame, codes: pl.Series | None = None) -> None:
        """Append one sorted shard: a polars frame with the :data:`EVENT_SCHEMA` columns, and, as
        :func:`canonical_sort` returns them, ``_local_code`` and its ``codes`` (else computed here)."""
        if events.height == 0:
            return
        if codes is None or LOCAL_CODE not in events.columns:
            codes = events["code"].unique().sort()
            events = events.with_columns(events["code"].cast(pl.Enum(codes)).to_physical().alias(LOCAL_CODE))
        subjects = events["subject_id"].to_numpy()
        if np.any(np.diff(subjects) < 0):
            raise StoreError("event shard is not sorted by subject_id: sort it with sort_events() first")
        if self._last_subject is not None and subjects[0] <= self._last_subject:
            raise StoreError(
                f"event shards overlap: subject {subjects[0]} comes after subject {self._last_subject}; "
                "each subject must lie in one shard and shards must come in subject order"
            )
        # Row range per subject from the run boundaries of the sorted subject_id column.
        starts = np.flatnonzero(np.concatenate([[True], subjects[1:] != subjects[:-1]]))
        ends = np.concatenate([starts[1:], [len(subjects)]])
        is_static = events["time"].is_null().to_numpy()
        n_static = np.add.reduceat(is_static.astype(np.int64), starts)
        self._index.append(
            pl.DataFrame(
                {
                    "subject_id": subjects[starts],
                    "start": starts + self.n_events,
                    "end": ends + self.n_events,
                    "n_static": n_static,
                },
                schema=SUBJECT_INDEX_SCHEMA,
            )
        )
        # Global ids in order of first appearance in the canonical order: the same ids however the
        # events are sharded. A dict lookup per distinct code of the shard only.
        local = events[LOCAL_CODE]
        names = codes.to_list()
        remap = np.zeros(len(names), np.int32)
        for i in local.unique(maintain_order=True).to_list():
            remap[i] = self._code_id.setdefault(names[i], len(self._code_id))
        code_index = remap[local.to_numpy()]
        self._counts = np.concatenate(
            [self._counts, np.zeros(len(self._code_id) - len(self._counts), np.int64)]
        )
        self._counts += np.bincount(code_index, minlength=len(self._counts))
        # string_view is polars' own string layout: the reader imports it without a copy.
        table = (
            events.select(*EVENT_SCHEMA)
            .with_columns(pl.Series(CODE_INDEX, code_index))
            .to_arrow(compat_level=pl.CompatLevel.newest())
            .cast(INDEX_ARROW_SCHEMA)
            .combine_chunks()
        )
        # One record batch per shard: a patient never spans two batches, so a slice stays zero-copy.
        for batch in table.to_batches(max_chunksize=max(table.num_rows, 1)):
            self._writer.write_batch(batch)
        self.n_events += events.height
        self._last_subject = int(subjects[-1])

    @property
    def code_counts(self) -> pl.DataFrame:
        """``code``, ``count``: events per code written so far, in ``code_index`` order."""
        return pl.DataFrame(
            {"code": list(self._code_id), "count": self._counts},
            schema={"code": pl.String, "count": pl.Int64},
        )

    def finish(self) -> Path:
        """Close ``events.arrow``, write the code list and, last (its presence marks success), the
        subject index ``events_index.parquet``."""
        self._writer.close()
        self._sink.close()
        pq.write_table(self.code_counts.select("code").to_arrow(), self.root / EVENTS_CODES)
        index = pl.concat(self._index) if self._index else pl.DataFrame(schema=SUBJECT_INDEX_SCHEMA)
        index.write_parquet(self.root / EVENTS_INDEX)
        return self.root / EVENTS_INDEX

    def abort(self) -> None:
        """Close the files after an error (the caller removes the temporary folder)."""
        try:
            self._writer.close()
        finally:
            self._sink.close()


def write_event_index(events: pl.LazyFrame | pl.DataFrame, store_tmp_path: str | os.PathLike[str]) -> Path:
    """Sort ``events`` and write ``events.arrow`` + ``events_codes.parquet`` + ``events_index.parquet``.

    This materialises all events at once; converters of large sources write shard by shard with
    :class:`EventIndexWriter` instead. Returns the path of the index file.
    """
    frame = events.collect() if isinstance(events, pl.LazyFrame) else events
    missing = [c for c in EVENT_SCHEMA if c not in frame.columns]
    if missing:
        raise StoreError(f"events need the columns {list(EVENT_SCHEMA)}; missing {missing}")
    frame, codes = canonical_sort(frame.select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()]))
    writer = EventIndexWriter(store_tmp_path)
    try:
        writer.add_shard(frame, codes)
    except Exception:
        writer.abort()
        raise
    return writer.finish()
