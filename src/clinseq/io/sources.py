"""The registry of sources: name → how it is converted into a store, with its options (design §3).

:data:`SOURCES` is the one place source names are written. ``clinseq convert <name>`` takes its
arguments and options from it, the pretrain config's ``data.source`` accepts its names, and the
pretraining converts a missing store through it (:func:`clinseq.train.builders.prepare_store`):
adding a source is one entry here.

Two families:

- **recordings** (PTB-XL, WFDB, MIMIC-IV-ECG, EEG): the factory is a :class:`~clinseq.io.base.Source`
  class, built from the source folder and its own options, then written by
  :func:`clinseq.io.convert` (``workers`` reader processes, ``on_error``);
- **events** (MIMIC-IV, MEDS): the factory is a converter function
  ``(src, out, *, progress, **options) → store path`` (``workers`` threads, ``subjects_per_shard``).

Factories are named ``"module:attribute"`` and imported when a source is converted, so that reading
this table (as ``clinseq --help`` does) loads no reader.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SOURCES", "Option", "SourceSpec", "memory_size", "positive_int"]


def memory_size(text: str) -> int:
    """Bytes from text such as ``4G`` or ``800M`` (an option's type; powers of 1024)."""
    from clinseq.errors import ConfigError
    from clinseq.io.memory import parse_memory

    try:
        return parse_memory(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """A whole number >= 1 (an option's type: the CLI reports a bad value in one line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


@dataclass(frozen=True)
class Option:
    """One option of a source's conversion: its command-line flag and the keyword it sets.

    ``default`` is the command line's; a value of None is not passed on (the converter keeps its own
    default). ``type`` converts the command-line text (None: kept as text).
    """

    flag: str
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    nargs: str | None = None
    metavar: str | None = None

    @property
    def keyword(self) -> str:
        """The converter's keyword: the flag without ``--``, dashes as underscores."""
        return self.flag.removeprefix("--").replace("-", "_")

    def argparse_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``ArgumentParser.add_argument`` for this option."""
        kwargs: dict[str, Any] = {"default": self.default, "help": self.help}
        for name in ("type", "choices", "nargs", "metavar"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs


@dataclass(frozen=True)
class SourceSpec:
    """How one source becomes a store.

    Attributes:
        help: one line for ``clinseq convert --help``.
        factory: ``"module:attribute"``: a :class:`~clinseq.io.base.Source` class (``events`` false) or
            a converter function ``(src, out, *, progress, **options) → Path`` (``events`` true).
        options: the options ``clinseq convert <name>`` takes besides ``src``, ``out`` and ``--quiet``.
        events: whether the factory converts by itself (an EHR source) rather than being a
            :class:`~clinseq.io.base.Source` that :func:`clinseq.io.convert` writes.
        rate_option: the keyword of the option that sets the recordings' sampling rate in Hz (the
            pretrain config's ``data.sampling_rate_hz`` sets it); None when there is none.
        pretrain_options: options the pretraining passes when it converts a missing store.
    """

    help: str
    factory: str
    options: tuple[Option, ...] = ()
    events: bool = False
    rate_option: str | None = None
    pretrain_options: Mapping[str, Any] = field(default_factory=dict)

    def pretrain_options_for(self, sampling_rate_hz: float | None) -> dict[str, Any]:
        """The options the pretraining converts with: :attr:`pretrain_options` and, when given (and
        the source has a rate option), the sampling rate in Hz as that option's type."""
        options = dict(self.pretrain_options)
        if self.rate_option is not None and sampling_rate_hz is not None:
            (option,) = [o for o in self.options if o.keyword == self.rate_option]
            options[self.rate_option] = (option.type or float)(sampling_rate_hz)
        return options

    def load(self) -> Any:
        """The factory (imported now)."""
        module, name = self.factory.split(":")
        return getattr(importlib.import_module(module), name)

    def convert(
        self,
        src: str | os.PathLike[str],
        out: str | os.PathLike[str],
        *,
        progress: bool = True,
        **options: Any,
    ) -> Path:
        """Convert ``src`` into a new store at ``out`` with these option values (keywords of
        :attr:`options`; None values are left out) and return the store path."""
        given = {k: v for k, v in options.items() if v is not None}
        known = {o.keyword for o in self.options}
        unknown = sorted(set(given) - known)
        if unknown:
            raise TypeError(f"{self.factory} takes the options {sorted(known)}, not {unknown}")
        factory = self.load()
        if self.events:
            return factory(src, out, progress=progress, **given)
        from clinseq.io.conversion import convert

        writing = {k: given.pop(k) for k in ("workers", "on_error") if k in given}
        return convert(factory(src, **given), out, progress=progress, **writing)


def _recordings(help: str, factory: str, *options: Option, rate_option: str | None = None) -> SourceSpec:
    """A :class:`~clinseq.io.base.Source`: its own options, then the reader processes and the error rule."""
    common = (
        Option("--workers", "reader processes (default 1)", positive_int, 1),
        Option(
            "--on-error",
            "stop at the first bad file (raise) or list it in the manifest and go on (skip)",
            default="raise",
            choices=("raise", "skip"),
        ),
    )
    # Pretraining converts with two reader processes.
    return SourceSpec(
        help, factory, (*common, *options), rate_option=rate_option, pretrain_options={"workers": 2}
    )


def _events(help: str, factory: str, *options: Option) -> SourceSpec:
    """An EHR converter: its own options, then parallelism and sharding (defaults: the converter's)."""
    common = (
        Option(
            "--workers",
            "threads converting tables and sorting shards (default: the CPU count, at most 4)",
            positive_int,
        ),
        Option(
            "--subjects-per-shard",
            "subjects per events/data shard (default: the converter's)",
            positive_int,
            metavar="N",
        ),
    )
    return SourceSpec(help, factory, (*options, *common), events=True)


#: Every source clinseq converts, by the name the CLI (``clinseq convert NAME``) and the pretrain
#: config (``data.source``) use.
SOURCES: dict[str, SourceSpec] = {
    "ptbxl": _recordings(
        "PTB-XL (ptbxl_database.csv + records100/records500)",
        "clinseq.io.ptbxl:PTBXLSource",
        Option("--sampling-rate-hz", "100 (records100) or 500", int, 100),
        rate_option="sampling_rate_hz",
    ),
    "wfdb": _recordings(
        "any folder of WFDB records (RECORDS file or *.hea)",
        "clinseq.io.wfdb_folder:WFDBSource",
        Option("--modality", "the recordings' modality, e.g. ecg", default="ecg"),
        Option(
            "--annotators",
            "annotation file extensions read as events (default: every annotation file found)",
            nargs="+",
            metavar="EXT",
        ),
    ),
    "mimic-iv-ecg": _recordings(
        "MIMIC-IV-ECG (record_list.csv + files/p…/p…/s…)", "clinseq.io.wfdb_folder:MIMICIVECGSource"
    ),
    "eeg": _recordings(
        "EEG files read through mne (EDF/BDF...; EEGMMIDB, TUH, EEGMAT)",
        "clinseq.io.eeg:EEGSource",
        Option("--layout", "auto, eegmmidb, tuh, eegmat or flat", default="auto"),
        Option("--resample-hz", "resample every recording to this rate", float),
        Option(
            "--mixed-rates",
            "channels at another rate than the EEG: one recording per rate (split), drop or raise",
            default="split",
            choices=("split", "drop", "raise"),
        ),
        rate_option="resample_hz",
    ),
    "manifest": _recordings(
        "your own files listed in a CSV: path (WFDB, EDF/BDF or .npy), patient_id, optional start_time, "
        "sampling_rate_hz (.npy); other columns are labels (src is the CSV)",
        "clinseq.io.manifest:ManifestSource",
        Option("--modality", "the recordings' modality (default: ecg for WFDB/.npy, eeg for EDF/BDF)"),
    ),
    "mimic-iv": _events(
        "MIMIC-IV hosp/ and icu/ tables → MEDS events",
        "clinseq.io.mimic_iv:convert_mimic_iv",
        Option("--tables", "only these tables (default: all present)", nargs="+"),
        Option(
            "--on-error",
            "stop at the first bad table (raise) or skip it",
            default="raise",
            choices=("raise", "skip"),
        ),
        Option(
            "--max-memory",
            "peak memory to aim at, e.g. 2G or 800M (default 1G); sets the block and sort batch sizes",
            memory_size,
            metavar="SIZE",
        ),
    ),
    "meds": _events("import any MEDS v0.4 dataset", "clinseq.io.meds:import_meds"),
}
