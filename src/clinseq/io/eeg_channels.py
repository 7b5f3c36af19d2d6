"""10-20 / 10-10 / 10-5 EEG channel names: the standard spelling of an electrode and the rules that turn
an EDF/mne channel label into ``(name, type)``.

Names are normalised to 10-20/10-10 spelling (``EEG FP1-REF``, ``EEG FP1-LE``, ``Fc5.``, ``FP1`` → ``Fp1``;
``Fcz.`` → ``FCz``) with the type prefix and common-reference suffix (``-REF``, ``-LE``, ``-AR``, ``-AVG``)
removed; bipolar derivations keep both ends (``EEG A2-A1`` → ``A2-A1``). Old and new temporal names are
kept as recorded unless ``ten_twenty="modern"`` (T3/T4/T5/T6 → T7/T8/P7/P8). Non-EEG channels keep a
clear name (``ECG ECG`` → ``ECG``, ``EEG EKG1-REF`` → ``EKG1``, ``EOG horizontal``) and get a type
(eeg, ecg, eog, emg, resp, bio, temp, stim, misc).
"""

from __future__ import annotations

import re
from typing import Literal

#: Old (Jasper 1958) → new (ACNS 2006) names of the four temporal/parietal electrodes that were renamed.
OLD_TO_MODERN_10_20 = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

# 10-20 / 10-10 / 10-5 position prefixes, longest first so the regex prefers e.g. AFF over AF over A.
_POSITION_PREFIXES = (
    "AFP", "AFF", "FFT", "FFC", "FTT", "FCC", "TTP", "CCP", "TPP", "CPP", "PPO", "POO",
    "FP", "AF", "FT", "FC", "TP", "CP", "PO", "OI", "NZ",
    "F", "T", "C", "P", "O", "I", "A", "M",
)  # fmt: skip
_ELECTRODE = re.compile(
    r"^(?P<prefix>" + "|".join(_POSITION_PREFIXES) + r")(?P<pos>Z|10|[1-9])?(?P<half>H)?$", re.IGNORECASE
)
# The prefix spellings of the standard (mixed case: Fp, AFp, Nz); every other prefix is upper case.
_PREFIX_SPELLING = {"FP": "Fp", "AFP": "AFp", "NZ": "Nz"}
# EDF label prefixes that state a channel type (EDF+ convention "EEG Fp1", mne's CH_TYPE_MAPPING).
_TYPE_PREFIXES = {
    "EEG": "eeg", "SEEG": "seeg", "ECOG": "ecog", "ECG": "ecg", "EKG": "ecg", "EOG": "eog",
    "EMG": "emg", "RESP": "resp", "SAO2": "bio", "SPO2": "bio", "BIO": "bio", "TEMP": "temp",
    "MISC": "misc", "STIM": "stim",
}  # fmt: skip
# Non-EEG signals recognised by the start of their name (TUH files label ECG as "EEG EKG1-REF").
_NAME_TYPES = (
    ("EKG", "ecg"), ("ECG", "ecg"), ("HEOG", "eog"), ("VEOG", "eog"), ("EOG", "eog"), ("LOC", "eog"),
    ("ROC", "eog"), ("EMG", "emg"), ("CHIN", "emg"), ("PHOTIC", "stim"), ("STATUS", "stim"),
    ("TRIGGER", "stim"), ("RESP", "resp"), ("SPO2", "bio"), ("SAO2", "bio"), ("PULSE", "bio"),
    ("IBI", "misc"), ("BURSTS", "misc"), ("SUPPR", "misc"),
)  # fmt: skip
# Suffixes naming a common reference (TUH: -REF, -LE; others -AR, -AVG, -CAR): dropped from the name.
_REFERENCE_SUFFIXES = {"REF", "LE", "AR", "AVG", "CAR", "AV"}


def canonical_electrode(name: str) -> str | None:
    """The standard spelling of a 10-20/10-10/10-5 electrode name (``FP1`` → ``Fp1``, ``fcz`` →
    ``FCz``, ``AFF1H`` → ``AFF1h``), or None when ``name`` is not one."""
    match = _ELECTRODE.match(name.strip())
    if match is None or (match["pos"] is None and match["prefix"].upper() != "NZ"):
        return None
    if match["prefix"].upper() == "NZ" and (match["pos"] or match["half"]):
        return None
    prefix = match["prefix"].upper()
    pos = (match["pos"] or "").upper().replace("Z", "z")
    return _PREFIX_SPELLING.get(prefix, prefix) + pos + ("h" if match["half"] else "")


def normalize_channel(
    label: str, *, ten_twenty: Literal["as_recorded", "modern"] = "as_recorded"
) -> tuple[str, str]:
    """``(name, type)`` of an EDF/mne channel label; see the module docstring for the rules.

    >>> normalize_channel("EEG FP1-REF"), normalize_channel("Fc5."), normalize_channel("ECG ECG")
    (('Fp1', 'eeg'), ('FC5', 'eeg'), ('ECG', 'ecg'))
    """
    text = " ".join(label.split()).rstrip(".")  # EEGMMIDB pads names with dots: "Fc5.", "T9.."
    prefix_type = None
    head, _, rest = text.partition(" ")
    if rest and head.upper() in _TYPE_PREFIXES:
        prefix_type, prefix, text = _TYPE_PREFIXES[head.upper()], head.upper(), rest.strip()
    if "-" in text:
        left, _, right = text.rpartition("-")
        if right.strip().upper() in _REFERENCE_SUFFIXES and left.strip():
            text = left.strip()
    upper = text.upper()
    kind = next((t for start, t in _NAME_TYPES if upper.startswith(start)), None) or prefix_type or "eeg"

    def electrode(part: str) -> str | None:
        name = canonical_electrode(part)
        if name is not None and ten_twenty == "modern":
            name = OLD_TO_MODERN_10_20.get(name, name)
        return name

    parts = [electrode(p) for p in text.split("-")] if "-" in text else [electrode(text)]
    if all(p is not None for p in parts) and text:
        return "-".join(parts), kind  # type: ignore[arg-type]
    if prefix_type not in (None, "eeg") and not upper.startswith(prefix):
        # "EOG horizontal", "EMG submental": the prefix is the only clue to what the signal is.
        return f"{prefix} {text}", kind
    return text, kind
