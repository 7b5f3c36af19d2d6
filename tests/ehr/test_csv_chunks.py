"""CSV(.GZ) files read block by block (clinseq.io.csv_chunks) equal polars' whole-file read; the memory
budget (clinseq.io.memory) and a conversion under a small one."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from clinseq.errors import ConfigError, SourceError
from clinseq.io.csv_chunks import CsvChunks
from clinseq.io.memory import BASE_BYTES, MIB, memory_budget, parse_memory

LAB_COLUMNS = ["subject_id", "itemid", "charttime", "value", "valuenum", "valueuom", "comments"]


@pytest.mark.parametrize("chunk_bytes", [1 << 12, 1 << 16, 1 << 20, 1 << 26])
def test_blocks_of_a_real_table_equal_the_whole_file(demo_root: Path, chunk_bytes: int) -> None:
    path = demo_root / "hosp" / "labevents.csv.gz"
    expected = pl.read_csv(path, infer_schema=False).select(LAB_COLUMNS)
    with CsvChunks(path, chunk_bytes) as chunks:
        frames = list(chunks.frames(LAB_COLUMNS))
    assert len(frames) >= (2 if chunk_bytes <= 1 << 20 else 1)
    assert pl.concat(frames).equals(expected)


def test_quoted_newlines_and_concatenated_gzip_members(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "a": [str(i) for i in range(3000)],
            "b": [f'line {i}\nnext "quoted", x' if i % 7 == 0 else f"v{i}" for i in range(3000)],
        }
    )
    plain = tmp_path / "t.csv"
    frame.write_csv(plain)
    raw = plain.read_bytes()
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(raw[:20000]) + gzip.compress(raw[20000:]))  # as `cat a.gz b.gz`
    for path in (plain, packed):
        for chunk_bytes in (1 << 12, 1 << 14, 1 << 22):
            with CsvChunks(path, chunk_bytes) as chunks:
                got = pl.concat(list(chunks.frames(["b", "a"])))
            assert got.equals(frame.select("b", "a")), (path.name, chunk_bytes)


def test_truncated_empty_and_early_exit(tmp_path: Path) -> None:
    raw = b"a,b\n" + b"".join(f"{i},{i}\n".encode() for i in range(200_000))
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(raw)[:-200])
    with pytest.raises(SourceError, match=r"(?i)cut\.csv\.gz.*truncated"), CsvChunks(cut, 1 << 12) as chunks:
        list(chunks.frames(["a"]))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.csv.*empty"):
        CsvChunks(empty)
    whole = tmp_path / "whole.csv.gz"
    whole.write_bytes(gzip.compress(raw))
    with CsvChunks(whole, 1 << 12, prefetch=1) as chunks:  # leaving early stops the reading thread
        first = next(iter(chunks.frames(["b"])))
    assert first["b"][0] == "0" and not chunks._thread.is_alive()


def test_memory_budget() -> None:
    assert parse_memory("2G") == 2 << 30 and parse_memory("800M") == 800 * MIB
    assert parse_memory("1.5GiB") == 3 << 29 and parse_memory(4096) == 4096
    with pytest.raises(ConfigError, match="not a size"):
        parse_memory("lots")
    small, large = memory_budget("600M", 2), memory_budget("4G", 2)
    assert small.chunk_bytes < large.chunk_bytes and small.events_in_flight < large.events_in_flight
    for budget in (small, large):
        assert budget.expected_peak() <= budget.max_memory
    with pytest.raises(ConfigError, match=r"below what a conversion with 4 worker\(s\) needs"):
        memory_budget(BASE_BYTES, 4)


def test_a_small_memory_budget_gives_the_same_store(
    demo_root: Path, mimic_store: Path, tmp_path: Path
) -> None:
    """Blocks of ≈ 6 MiB (several per large table) and fewer events sorted at once: same events."""
    from clinseq.io.mimic_iv import convert_mimic_iv
    from clinseq.timeline.events import EVENTS_ARROW

    store = convert_mimic_iv(demo_root, tmp_path / "small", progress=False, max_memory="400M", workers=2)
    assert memory_budget("400M", 2).chunk_bytes < 8 * MIB
    for name in ("events_index.parquet", "events_codes.parquet", "patients.parquet"):
        assert pl.read_parquet(store / name).equals(pl.read_parquet(mimic_store / name)), name
    small = pl.read_parquet(store / "events" / "data" / "*.parquet")
    assert small.equals(pl.read_parquet(mimic_store / "events" / "data" / "*.parquet"))
    import pyarrow as pa

    with pa.memory_map(str(store / EVENTS_ARROW)) as a, pa.memory_map(str(mimic_store / EVENTS_ARROW)) as b:
        assert pa.ipc.open_file(a).read_all().equals(pa.ipc.open_file(b).read_all())
