"""What every source loader provides: a cheap index, then per-item loads (run in parallel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import polars as pl

from clinseq.timeline.records import Recording


@dataclass(frozen=True)
class SourceItem:
    """One loadable unit of a source (usually one record), found by the cheap index pass.

    ``key`` is stable and unique within the source (it is what resume and ``skipped`` refer to);
    ``path`` is the file that errors name; ``info`` is whatever the loader needs to load it.
    """

    key: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """A dataset in its publisher's layout. Must be picklable (items load in worker processes)."""

    dataset: str
    root: Path

    def index(self) -> list[SourceItem]:
        """List every item, sorted, deterministically, without reading signal data."""
        ...

    def load(self, item: SourceItem) -> Recording | list[Recording]:
        """Read one item: one recording, or one per sampling rate when the item's signals have several
        (they share ``session_id``); raise :class:`clinseq.errors.SourceError` naming the file and
        problem."""
        ...

    def patients(self, recordings: pl.DataFrame) -> pl.DataFrame:
        """The ``patients.parquet`` table (``patient_id`` int64, ``split`` str, static attributes)
        for the recordings that were written."""
        ...

    def manifest_extra(self) -> dict[str, Any]:
        """Extra manifest entries (source files' checksums, options such as a resampling rate)."""
        ...


#: A source may also define ``attribute_schema: dict[str, polars.DataType]``, the types of its own
#: ``recordings`` columns; :func:`clinseq.io.convert` hands it to the store writer (optional).
