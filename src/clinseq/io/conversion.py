"""Convert any :class:`~clinseq.io.base.Source` into a timeline store: index, load in parallel, write.

Loads run in worker processes with a bounded look-ahead (memory stays at about ``4 × workers``
recordings) and are written in index order, so the store is the same whatever ``workers`` is. Workers
end with their parent however it ends (SIGKILL included): on Linux the kernel sends them SIGKILL when
the parent dies (``PR_SET_PDEATHSIG``), and everywhere a watch thread in each worker exits it once the
parent is gone.

A conversion records its identity (:func:`source_identity`: the source's class, folder, options and
files with sizes and mtimes, and the part size) in its temporary folder, so only the same conversion
resumes from it (:class:`~clinseq.timeline.writer.StoreWriter`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from clinseq.errors import ConfigError, SourceError
from clinseq.io.base import Source, SourceItem
from clinseq.timeline.records import Recording
from clinseq.timeline.writer import DEFAULT_PART_MAX_BYTES, StoreWriter

OnError = Literal["raise", "skip"]


def _load_one(source: Source, item: SourceItem) -> Recording | list[Recording] | SourceError:
    """Load in a worker; errors come back as values so the writer decides (raise or skip)."""
    try:
        return source.load(item)
    except SourceError as exc:
        return exc
    except Exception as exc:  # a reader bug or an unforeseen corruption: still name the file
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return SourceError(item.path, f"could not be read: {detail}")


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when ``parent_pid`` ends, however it ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="clinseq-parent-watch", daemon=True).start()


def _options(source: Source) -> dict[str, Any]:
    """The source's public settings (scalars, paths, lists of them; callables by name)."""
    options: dict[str, Any] = {}
    for name, value in sorted(vars(source).items()):
        if name.startswith("_") or name == "root":
            continue
        if callable(value):
            options[name] = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
        elif value is None or isinstance(value, (str, int, float, bool, Path)):
            options[name] = value if not isinstance(value, Path) else str(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
            options[name] = list(value)
    return options


def source_identity(source: Source, items: list[SourceItem], **writing: Any) -> dict[str, Any]:
    """What makes a conversion's output: the source's class, folder and options, its items, every file
    in the folders of its items and directly in the source folder (names, sizes and mtimes, as one
    digest: a record's ``.dat``, tables such as ``ptbxl_database.csv``), and the writing options
    (``part_max_bytes``). Two conversions with the same identity give the same
    store; a temporary folder is adopted only by a conversion of the same identity."""
    root = Path(source.root)
    # Every file beside an item's file (a record's .dat and annotation files, an EDF's sidecars), and
    # the files directly in the source folder: listed with sizes and mtimes, hashed to a short digest.
    folders = sorted({Path(item.path).parent for item in items} | {root})
    listing = hashlib.sha256()
    n_files = 0
    for folder in folders:
        try:
            entries = sorted((e for e in os.scandir(folder) if e.is_file()), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            st = entry.stat()
            listing.update(f"{folder}/{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            n_files += 1
    return {
        "source": f"{type(source).__module__}.{type(source).__qualname__}",
        "root": str(root.resolve()),
        "options": _options(source),
        "writing": writing,
        "items": hashlib.sha256("\n".join(item.key for item in items).encode()).hexdigest(),
        "files": {"n": n_files, "sha256_of_names_sizes_mtimes": listing.hexdigest()},
    }


def convert(
    source: Source,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    on_error: OnError = "raise",
    part_max_bytes: int = DEFAULT_PART_MAX_BYTES,
    progress: bool = True,
) -> Path:
    """Convert ``source`` into a new store at ``out`` and return its path.

    Args:
        source: a dataset in its published layout (``PTBXLSource``, ``WFDBSource``, ``EEGSource``...).
        out: the store folder to create; it must not exist. An unfinished earlier conversion to the
            same ``out`` (``<out>.tmp-*``) is resumed from its committed parts.
        workers: processes that read source files (1 = read in this process).
        on_error: ``"raise"`` stops at the first bad file (what was committed is kept for a resume);
            ``"skip"`` leaves it out and lists it in the manifest under ``skipped`` with the reason.
        part_max_bytes: size at which a signal part is committed (resume granularity).
        progress: show a tqdm progress bar.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}: e.g. --workers 2")
    items = source.index()
    if not items:
        raise SourceError(
            source.root,
            f"found nothing to convert: {type(source).__name__} listed no item in this folder; is it the "
            f"{source.dataset} folder in its publisher's layout?",
        )
    seen: dict[str, SourceItem] = {}
    for item in items:
        if item.key in seen:
            raise SourceError(
                item.path,
                f"listed twice by the source index (key {item.key!r}, also {seen[item.key].path})",
            )
        seen[item.key] = item
    writer = StoreWriter(
        out,
        dataset=source.dataset,
        source=source.root,
        part_max_bytes=part_max_bytes,
        attribute_schema=getattr(source, "attribute_schema", None),
        identity=source_identity(source, items, part_max_bytes=part_max_bytes),
    )
    try:
        return _write(source, items, writer, workers, on_error, progress)
    finally:
        writer.release()


def _write(
    source: Source,
    items: list[SourceItem],
    writer: StoreWriter,
    workers: int,
    on_error: OnError,
    progress: bool,
) -> Path:
    done = writer.done_keys
    todo = [item for item in items if item.key not in done]
    bar = tqdm(
        total=len(items),
        initial=len(items) - len(todo),
        desc=f"convert {source.dataset}",
        unit="rec",
        disable=not progress,
    )
    try:
        for item, result in _load_in_order(source, todo, workers):
            if isinstance(result, SourceError):
                if on_error == "raise":
                    raise result
                writer.skip(item.key, result.path, result.problem)
            else:
                writer.add(result, key=item.key)
            bar.update(1)
    finally:
        bar.close()
    patients = source.patients(writer.recordings())
    return writer.finish(patients, manifest_extra=source.manifest_extra())


def _load_in_order(source: Source, items: list[SourceItem], workers: int):
    if workers == 1:
        for item in items:
            yield item, _load_one(source, item)
        return
    lookahead = 4 * workers
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        pending: deque[tuple[SourceItem, Future]] = deque()
        it = iter(items)
        for item in it:
            pending.append((item, pool.submit(_load_one, source, item)))
            if len(pending) >= lookahead:
                break
        while pending:
            item, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_load_one, source, nxt)))
            yield item, future.result()
