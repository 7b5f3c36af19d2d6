"""clinseq: self-supervised learning on clinical sequences (ECG, EEG, EHR).

Layers, in the one direction data flows: ``io`` (sources) → ``timeline`` (the Arrow store) →
``data`` (datasets, samplers, views, splits) → ``models`` (encoders) → ``objectives`` (losses) →
``kernels`` (grouped InfoNCE) → ``train`` / ``eval``. The error types (:mod:`clinseq.errors`) are
importable from here.
"""

from clinseq.errors import (
    ClinseqError,
    ConfigError,
    LeakageError,
    LockHeldError,
    ShapeError,
    SourceError,
    StoreError,
    TrainingError,
)

__version__ = "0.1.0"

__all__ = [
    "ClinseqError",
    "ConfigError",
    "LeakageError",
    "LockHeldError",
    "ShapeError",
    "SourceError",
    "StoreError",
    "TrainingError",
    "__version__",
]
