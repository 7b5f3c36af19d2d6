"""Sources in their publishers' layouts → timeline stores (design §3)."""

from clinseq.io.base import Source, SourceItem
from clinseq.io.convert import convert
from clinseq.io.eeg import EEGSource
from clinseq.io.ptbxl import PTBXLSource
from clinseq.io.wfdb_folder import MIMICIVECGSource, WFDBSource

__all__ = ["EEGSource", "MIMICIVECGSource", "PTBXLSource", "Source", "SourceItem", "WFDBSource", "convert"]
