"""WFDB annotation files (``.atr``, ``.qrs``, ``.apn``...) as a recording's events.

Each annotation becomes an event of the record's recording (of its first rate group when the record has
several): ``onset_s = sample / fs`` (the annotation file's frequency, else the record's frame rate),
``code = WFDB//<annotator>//<symbol>`` (e.g. ``WFDB//atr//N`` for a normal beat, ``WFDB//atr//+`` for
a rhythm change) and ``text_value`` = the aux note without its NUL padding (e.g. ``(AFIB``), None when
empty. ``wfdb.rdann`` reads the files; every annotation it returns is kept.

Annotators are the extensions given (``annotators=["atr"]``), or by default every file
``<record>.<ext>`` beside the header that is not the header or one of its signal files: a file that
``wfdb.rdann`` cannot read is not an error of the record, it is listed (``unread_annotation_files``,
with the reason) so that nothing is left out silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import wfdb

#: Extensions never taken for annotation files (signal, header and documentation files).
NOT_ANNOTATIONS = {"hea", "dat", "mat", "edf", "csv", "txt", "json", "md", "html", "xml", "png", "pdf", "zip"}


def annotation_files(
    record_path: Path, signal_files: Sequence[str], annotators: Sequence[str] | None
) -> list[str]:
    """The annotator extensions to read for the record at ``record_path`` (see the module docstring)."""
    if annotators is not None:
        return [a for a in annotators if (record_path.parent / f"{record_path.name}.{a}").exists()]
    found = []
    signals = set(signal_files)
    for path in sorted(record_path.parent.glob(f"{record_path.name}.*")):
        ext = path.name[len(record_path.name) + 1 :]
        if (
            not ext
            or "." in ext
            or ext.lower() in NOT_ANNOTATIONS
            or path.name in signals
            or not path.is_file()
        ):
            continue
        found.append(ext)
    return found


def read_annotations(
    record_path: Path,
    frame_rate_hz: float,
    signal_files: Sequence[str],
    annotators: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """``(events, annotators read, unread files with the reason)`` of the record at ``record_path``."""
    events: list[dict[str, Any]] = []
    read, unread = [], []
    for ext in annotation_files(record_path, signal_files, annotators):
        try:
            ann = wfdb.rdann(str(record_path), ext)
        except Exception as exc:
            unread.append(
                f"{record_path.name}.{ext}: wfdb.rdann cannot read it ({type(exc).__name__}: {exc})"
            )
            continue
        fs = float(ann.fs) if ann.fs else float(frame_rate_hz)
        aux = ann.aux_note or [""] * len(ann.sample)
        for sample, symbol, note in zip(ann.sample, ann.symbol, aux, strict=True):
            text = (note or "").rstrip("\x00").strip()
            events.append(
                {
                    "onset_s": int(sample) / fs,
                    "duration_s": 0.0,
                    "code": f"WFDB//{ext}//{symbol}",
                    "text_value": text or None,
                }
            )
        read.append(ext)
    return events, read, unread
