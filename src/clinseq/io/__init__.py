"""Sources in their publishers' layouts → timeline stores (design §3).

:data:`~clinseq.io.sources.SOURCES` names every source and how it is converted (the CLI, the pretrain
config and the builders read it). The names below are imported on first use, so that importing the
registry (as ``clinseq --help`` does) loads no reader.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clinseq.io.base import Source, SourceItem
    from clinseq.io.conversion import convert
    from clinseq.io.eeg import EEGSource
    from clinseq.io.manifest import ManifestSource
    from clinseq.io.ptbxl import PTBXLSource
    from clinseq.io.wfdb_folder import MIMICIVECGSource, WFDBSource

#: Public name → the module that defines it.
_HOMES = {
    "EEGSource": "clinseq.io.eeg",
    "MIMICIVECGSource": "clinseq.io.wfdb_folder",
    "ManifestSource": "clinseq.io.manifest",
    "PTBXLSource": "clinseq.io.ptbxl",
    "Source": "clinseq.io.base",
    "SourceItem": "clinseq.io.base",
    "WFDBSource": "clinseq.io.wfdb_folder",
    "convert": "clinseq.io.conversion",
}

__all__ = [
    "EEGSource",
    "MIMICIVECGSource",
    "ManifestSource",
    "PTBXLSource",
    "Source",
    "SourceItem",
    "WFDBSource",
    "convert",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'clinseq.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
