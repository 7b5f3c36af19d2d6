"""The memory a table conversion (MIMIC-IV) may use, and the batch sizes that follow from it.

Peak resident memory of :func:`clinseq.io.mimic_iv.convert_mimic_iv` does not grow with the number of
rows (it streams every table block by block, stages events to disk and sorts one shard at a time). It is
set by three sizes, which :func:`memory_budget` derives from one number, ``max_memory``::

    peak ≈ BASE + max(workers × STAGE_PER_CHUNK × chunk_bytes,      (2. staging tables)
                      WRITE_PER_EVENT × events_in_flight)           (3. sorting + writing shards)

- ``BASE``: the interpreter with polars and pyarrow, the admissions lookups and the patients table
  (≈ 40 bytes per admission and per subject: the only terms that grow with the dataset, ≈ 30 MB for
  the full MIMIC-IV), the code lists;
- staging: each of ``workers`` threads holds a few text blocks of ``chunk_bytes`` (one being inflated,
  one queued, one parsed) and the typed rows and events made from one block;
- writing: the shards being sorted and written hold at most ``events_in_flight`` staged events
  together (a shard larger than that runs alone: lower ``subjects_per_shard`` to bound it too).

The constants are upper bounds: with the default 1 GiB (formula: 1 GiB) the measured peaks were 618,
672 and 653 MiB on the MIMIC-IV demo × 20, × 80 and × 300 (4.4 M, 17.7 M, 66 M source rows;
``benchmarks/bench_ehr.py --scaling``, results in ``benchmarks/README.md``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import re
from collections.abc import Iterator
from dataclasses import dataclass

from clinseq.errors import ConfigError

MIB = 1 << 20
#: Resident memory before any batch: interpreter, polars, pyarrow, lookups, code lists (bytes).
BASE_BYTES = 300 * MIB
#: Resident bytes per text byte of a block, per staging worker (blocks in flight, parsed text, typed
#: columns, the events and their staged copy).
STAGE_PER_CHUNK = 8
#: Resident bytes per staged event of the shards in flight (the shard's columns, the sort key and
#: order, the sorted copy, the Parquet and Arrow writers' buffers).
WRITE_PER_EVENT = 200
MIN_CHUNK_BYTES = 1 * MIB
MAX_CHUNK_BYTES = 32 * MIB
MIN_EVENTS_IN_FLIGHT = 250_000
#: What a conversion aims at when the user gives no ``max_memory``.
DEFAULT_MAX_MEMORY = 1024 * MIB


@dataclass(frozen=True)
class MemoryBudget:
    """``chunk_bytes`` (text per block), ``events_in_flight`` (events of the shards sorted at once) and
    the ``max_memory`` (bytes) they were derived from, for ``workers`` threads."""

    max_memory: int
    workers: int
    chunk_bytes: int
    events_in_flight: int

    def expected_peak(self) -> int:
        """The formula of this module's docstring, in bytes."""
        return BASE_BYTES + max(
            self.workers * STAGE_PER_CHUNK * self.chunk_bytes, WRITE_PER_EVENT * self.events_in_flight
        )


def memory_budget(max_memory: int | str | None, workers: int) -> MemoryBudget:
    """The batch sizes that keep a conversion with ``workers`` threads within ``max_memory`` bytes
    (an int, or text such as ``"2G"``, ``"800M"``; None: :data:`DEFAULT_MAX_MEMORY`)."""
    total = DEFAULT_MAX_MEMORY if max_memory is None else parse_memory(max_memory)
    floor = BASE_BYTES + max(
        workers * STAGE_PER_CHUNK * MIN_CHUNK_BYTES, WRITE_PER_EVENT * MIN_EVENTS_IN_FLIGHT
    )
    if total < floor:
        raise ConfigError(
            f"max_memory {total / MIB:.0f} MiB is below what a conversion with {workers} worker(s) needs "
            f"({floor / MIB:.0f} MiB): pass at least --max-memory {-(-floor // MIB)}M, or fewer workers"
        )
    room = total - BASE_BYTES
    chunk = min(MAX_CHUNK_BYTES, room // (workers * STAGE_PER_CHUNK))
    events = room // WRITE_PER_EVENT
    return MemoryBudget(total, workers, int(chunk), int(events))


@contextlib.contextmanager
def freed_memory_returned() -> Iterator[None]:
    """Within the block, memory that pyarrow and the C heap free goes back to the OS at once.

    pyarrow's default pool (mimalloc) and glibc keep freed pages for reuse, so the resident set of a
    long conversion drifts up to the largest sum of pools ever reached. Here pyarrow allocates from the
    C heap, and glibc (when it is the C library) maps every block of 128 KiB or more on its own and
    unmaps it when freed. The pyarrow pool is restored afterwards; the glibc thresholds stay (they only
    make later large frees return memory too).
    """
    import pyarrow as pa

    name = ctypes.util.find_library("c")
    try:  # mallopt(M_MMAP_THRESHOLD = -3, ...), mallopt(M_TRIM_THRESHOLD = -1, ...)
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(-3, 128 * 1024)
            libc.mallopt(-1, 128 * 1024)
    except OSError:
        pass
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_memory(value: int | str) -> int:
    """Bytes from an int or text: ``"4G"``, ``"800M"``, ``"1.5GiB"``, ``"500MB"`` (powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(value), re.IGNORECASE)
        if match is None:
            raise ConfigError(f"max_memory: {value!r} is not a size; write e.g. 4G, 800M or 2147483648")
        number = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if number <= 0:
        raise ConfigError(f"max_memory must be > 0, got {value!r}")
    return number


__all__ = ["DEFAULT_MAX_MEMORY", "MemoryBudget", "freed_memory_returned", "memory_budget", "parse_memory"]
