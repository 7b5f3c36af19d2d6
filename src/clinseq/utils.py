"""Small shared helpers: the data-root setting and the error types every layer raises.

This module imports nothing else from clinseq, so every layer (the kernels included) may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that points at the real datasets (``ptbxl/``, ``eeg/``, ``mimic_iv_demo/``...).
DATA_ENV = "CLINSEQ_DATA"
DEFAULT_DATA_ROOT = "../shared/data"


def data_root() -> Path:
    """Folder holding the real datasets: ``$CLINSEQ_DATA``, else ``../shared/data`` from the cwd."""
    return Path(os.environ.get(DATA_ENV, DEFAULT_DATA_ROOT)).expanduser()


class ClinseqError(Exception):
    """Base class of clinseq's own errors."""


class SourceError(ClinseqError):
    """A source file is missing, malformed or inconsistent.

    The message always names the file and the problem, e.g.
    ``records100/00000/00007_lr.dat: truncated: header says 12 × 1000 samples (24000 bytes), file has 1000``.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.problem))


class StoreError(ClinseqError):
    """A timeline store is missing, corrupt or asked for something it does not hold."""


class ConfigError(ClinseqError, ValueError):
    """A user-supplied configuration value is invalid (message: expected, received, fix)."""
