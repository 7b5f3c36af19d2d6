"""Convert any :class:`~clinseq.io.base.Source` into a timeline store: index, load in parallel, write.

Loads run in worker processes with a bounded look-ahead (memory stays at about ``4 × workers``
recordings) and are written in index order, so the store is the same whatever ``workers`` is.
"""

from __future__ import annotations

import os
import traceback
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from clinseq.errors import SourceError
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
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    items = source.index()
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise SourceError(source.root, "the index lists some items twice (duplicate keys)")
    writer = StoreWriter(
        out,
        dataset=source.dataset,
        source=source.root,
        part_max_bytes=part_max_bytes,
        attribute_schema=getattr(source, "attribute_schema", None),
    )
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
    with ProcessPoolExecutor(max_workers=workers) as pool:
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
