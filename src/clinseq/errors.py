"""clinseq's error types, one module so that every layer (the kernels included) may raise them.

This module imports nothing else from clinseq. Every class derives from :class:`ClinseqError`, which the
CLI turns into ``clinseq: error: <message>`` with exit status 2; each message names the file or the
setting and the problem.

=================  =====================================================================================
``ClinseqError``   base class of clinseq's own errors
``SourceError``    a source file is missing, malformed or inconsistent (names the file)
``StoreError``     a timeline store is missing, corrupt or asked for something it does not hold
``ConfigError``    a user-supplied configuration value is invalid (also a ``ValueError``)
``ShapeError``     a tensor argument has the wrong shape, dtype or device (also a ``ValueError``)
``LeakageError``   one patient in two splits that must be disjoint (also a ``ValueError``)
``TrainingError``  training cannot go on (e.g. the loss became NaN)
``LockHeldError``  another live process is writing the same store target or run folder
=================  =====================================================================================
"""

from __future__ import annotations

import os

__all__ = [
    "ClinseqError",
    "ConfigError",
    "LeakageError",
    "LockHeldError",
    "ShapeError",
    "SourceError",
    "StoreError",
    "TrainingError",
]


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


class ShapeError(ClinseqError, ValueError):
    """A tensor argument has the wrong shape, dtype or device, or ids that do not match it.

    Raised by the objectives on the tensors of a call (message: the expected shape, the one received).
    """


class LeakageError(ClinseqError, ValueError):
    """The same patient appears in two splits that must be disjoint."""


class TrainingError(ClinseqError):
    """Training cannot go on (e.g. the loss became NaN)."""


class LockHeldError(ClinseqError):
    """Another live process holds the lock of a store target or a run folder (the message names it:
    pid, host, since when, its command)."""
