"""Small shared helpers: the data-root setting.

This module imports nothing else from clinseq, so every layer (the kernels included) may use it. The error
types live in :mod:`clinseq.errors`.
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
