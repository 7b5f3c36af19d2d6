"""A CSV or CSV.GZ file read as a stream of polars frames of text columns, in bounded memory.

polars' own ``scan_csv`` of a ``.csv.gz`` file inflates the whole file in memory before it parses a
row (a 30 GB ``chartevents.csv`` would need 30 GB), and it decompresses and parses one after the other.
:class:`CsvChunks` instead inflates the file in a background thread (pyarrow's gzip stream, which
frees the GIL), cuts the text into blocks of about ``chunk_bytes`` at record ends (outside quotes: a
quoted field may hold a newline), and parses each block with ``pl.read_csv`` while the next one is
being inflated. Memory: at most ``prefetch + 2`` blocks of text (one being filled, ``prefetch``
queued, one being parsed) plus the parsed frame, whatever the file's size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

from clinseq.errors import SourceError

#: Text bytes per block (a block is parsed into one frame).
DEFAULT_CHUNK_BYTES = 32 << 20
#: Compressed (or plain) bytes read from the file at a time.
_READ_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_END = object()


def _record_end(block: bytes) -> int:
    """Index just past the last newline of ``block`` that lies outside quotes (the block starts outside
    quotes), or -1 if there is none. CSV escapes a quote as ``""``, so quote parity tells inside from
    outside."""
    quotes = block.count(b'"')
    pos = len(block)
    while True:
        pos = block.rfind(b"\n", 0, pos)
        if pos < 0:
            return -1
        if (quotes - block.count(b'"', pos)) % 2 == 0:
            return pos + 1


class _Inflater:
    """The file's text, in pieces: gzip inflated by pyarrow's stream (concatenated members too; about a
    third less CPU than Python's zlib, and it releases the GIL), or the plain bytes."""

    def __init__(self, path: Path, read_bytes: int = _READ_BYTES) -> None:
        import pyarrow as pa

        with open(path, "rb") as probe:
            self.gzip = probe.read(2) == _GZIP_MAGIC
        # Text bytes per read: a compressed byte gives about 4-6 of text.
        self.read_bytes = read_bytes * 4 if self.gzip else read_bytes
        self.file = pa.input_stream(str(path), compression="gzip" if self.gzip else None)

    def read(self) -> bytes | None:
        """The next piece of text, None at the end of the file (OSError for a truncated gzip)."""
        return self.file.read(self.read_bytes) or None

    def close(self) -> None:
        self.file.close()


class CsvChunks:
    """Blocks of a CSV(.GZ) file's records, inflated ahead in a thread; :meth:`frames` parses them.

    Raises :class:`SourceError` naming the file for an unreadable, empty or corrupt file. Use as a
    context manager (or call :meth:`close`): an early exit stops the reading thread.
    """

    def __init__(self, path: str | Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES, prefetch: int = 1) -> None:
        self.path = Path(path)
        self.chunk_bytes = max(1 << 12, int(chunk_bytes))
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        try:
            self._inflater = _Inflater(self.path, min(_READ_BYTES, max(4096, self.chunk_bytes // 16)))
        except OSError as exc:
            raise SourceError(self.path, f"not a readable file ({exc})") from exc
        self._thread = threading.Thread(target=self._produce, name=f"inflate {self.path.name}", daemon=True)
        self._thread.start()
        first = self._next_block()
        if first is None:
            self.close()
            raise SourceError(self.path, "not a readable CSV file: it is empty (no header line)")
        cut = first.find(b"\n")
        line, self._pending = (first, b"") if cut < 0 else (first[:cut], first[cut + 1 :])
        try:
            self.header: list[str] = pl.read_csv(
                line.rstrip(b"\r") + b"\n", n_rows=0, infer_schema=False
            ).columns
        except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
            self.close()
            raise SourceError(self.path, f"not a readable CSV file ({type(exc).__name__}: {exc})") from exc

    # -- the reading thread ----------------------------------------------------------------------------
    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        carry, pieces, size = b"", [], 0
        try:
            while not self._stop.is_set():
                piece = self._inflater.read()
                if piece is not None:
                    pieces.append(piece)
                    size += len(piece)
                    if size < self.chunk_bytes:
                        continue
                block = b"".join([carry, *pieces])
                pieces, size = [], 0
                if piece is None:  # the end: whatever is left is the last block
                    if block and not self._put(block):
                        return
                    break
                cut = _record_end(block)
                if cut < 0:  # one record longer than a block: keep reading
                    carry = block
                    continue
                carry = block[cut:]
                if not self._put(block[:cut]):
                    return
            self._put(_END)
        except (OSError, EOFError) as exc:
            self._put(SourceError(self.path, f"not a readable CSV file ({type(exc).__name__}: {exc})"))
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, which raises it)
            self._put(exc)
        finally:
            self._inflater.close()

    def _next_block(self) -> bytes | None:
        item = self._queue.get()
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    # -- the consumer ----------------------------------------------------------------------------------
    def blocks(self) -> Iterator[bytes]:
        """The text blocks after the header line, each ending at a record end."""
        if self._pending:
            first, self._pending = self._pending, b""
            yield first
        while (block := self._next_block()) is not None:
            yield block

    def frames(self, columns: Sequence[str]) -> Iterator[pl.DataFrame]:
        """Each block parsed: ``columns`` (names of the header) as text, in that order."""
        missing = [c for c in columns if c not in self.header]
        if missing:
            raise SourceError(self.path, f"missing column(s) {missing}; found {self.header}")
        schema = pl.Schema({name: pl.String for name in self.header})
        picks = [self.header.index(c) for c in columns]
        for block in self.blocks():
            if not block or block.isspace():  # isspace stops at the first other byte: no copy of the block
                continue
            try:
                frame = pl.read_csv(block, has_header=False, schema=schema, columns=picks)
            except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
                raise SourceError(
                    self.path, f"not a readable CSV file ({type(exc).__name__}: {exc})"
                ) from exc
            yield frame.select(columns)

    def close(self) -> None:
        """Stop the reading thread (it exits within 0.1 s) and close the file."""
        self._stop.set()
        while True:  # unblock a pending put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    def __enter__(self) -> CsvChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DEFAULT_CHUNK_BYTES", "CsvChunks"]
