"""An encoder alone, shared without its optimizer: safetensors weights + a JSON contract + a model card.

A folder written by :func:`save_pretrained` (``clinseq export encoder RUN OUT``, or ``RUN/encoder`` at the
end of a run) holds:

==========================  =======================================================================
``encoder.safetensors``     the encoder's ``state_dict`` (parameters and persistent buffers)
``encoder.json``            ``encoder``: registry name (:data:`clinseq.models.registry.ENCODERS`) and
                            constructor ``kwargs`` (``wrapper: "per_lead"`` for CLOCS' per-lead
                            encoder); ``input``: the :class:`InputContract`; ``training``: the data and
                            method it was trained with; ``clinseq_version``
``README.md``               the model card (method, data, steps, evaluation table)
==========================  =======================================================================

:func:`load_pretrained` rebuilds the encoder from the registry, loads the weights and returns it in eval
mode with its contract as ``encoder.input_contract``; :func:`check_input` (or ``check=`` at load time)
compares the contract with a store or a batch and raises :class:`ContractError` on a mismatch — wrong
channels, wrong sampling rate, wrong window length, wrong units — instead of returning a silently wrong
embedding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clinseq.errors import ConfigError

__all__ = [
    "CARD_FILE",
    "SPEC_FILE",
    "WEIGHTS_FILE",
    "ContractError",
    "InputContract",
    "check_input",
    "load_pretrained",
    "save_pretrained",
]

WEIGHTS_FILE = "encoder.safetensors"
SPEC_FILE = "encoder.json"
CARD_FILE = "README.md"
FORMAT_VERSION = 1


class ContractError(ConfigError):
    """Data handed to a pretrained encoder do not match what it was trained on."""


def _unit(name: str | None) -> str | None:
    """Units compared loosely: ``uV``/``µV``/``μV`` are one unit, case kept otherwise."""
    if name is None:
        return None
    return name.replace("µ", "u").replace("μ", "u").strip()


@dataclass(frozen=True)
class InputContract:
    """What the encoder was trained on; data given to it must match.

    Attributes:
        modality: "ecg", "eeg" (waveforms, (B, C, T) input) or "ehr" (event batches).
        channels: channel names in input order (names compared ignoring case, as the datasets do).
        sampling_rate_hz: samples per second of the input.
        window_s: window length in seconds; ``window_samples`` = round(window_s · sampling_rate_hz).
        units: physical units per channel ("mV" for ECG, "uV" for EEG), what the store's
            ``units="physical"`` reads.
        vocab_size: EHR encoders: size of the code vocabulary.
    """

    modality: str | None = None
    channels: list[str] | None = None
    sampling_rate_hz: float | None = None
    window_s: float | None = None
    window_samples: int | None = None
    units: list[str] | None = None
    vocab_size: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InputContract:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line: modality, channels, rate, window, units."""
        if self.modality == "ehr":
            return f"EHR event sequences, vocabulary of {self.vocab_size} codes"
        chans = ", ".join(self.channels or []) or "?"
        units = sorted({u for u in self.units or []})
        return (
            f"{self.modality or 'signal'}: {len(self.channels or [])} channels ({chans}) at "
            f"{self.sampling_rate_hz:g} Hz, windows of {self.window_s:g} s = {self.window_samples} samples, "
            f"units {', '.join(units) or '?'}"
        )

    # -- checks -------------------------------------------------------------------------------------
    def check(self, data: Any) -> None:
        """Raise :class:`ContractError` unless ``data`` — a store (anything with a ``recordings`` table),
        a (B, C, T) tensor, or a batch dict (``x`` plus optional ``sampling_rate_hz``,
        ``channel_names``, ``units``) — matches the contract."""
        if hasattr(data, "recordings"):
            self._check_store(data)
        elif isinstance(data, torch.Tensor):
            self._check_tensor(data)
        elif isinstance(data, Mapping):
            self._check_batch(data)
        else:
            raise ContractError(
                f"cannot check {type(data).__name__} against the encoder's input contract; pass a store, a "
                "(B, C, T) tensor or a batch dict with 'x'"
            )

    def _check_tensor(self, x: torch.Tensor) -> None:
        if self.modality == "ehr":
            raise ContractError("this encoder reads EHR event batches (a dict with 'codes'), not a tensor")
        if x.dim() != 3:
            raise ContractError(
                f"expected a (B, C, T) tensor of {self.describe()}; got shape {tuple(x.shape)}"
            )
        if self.channels is not None and x.shape[1] != len(self.channels):
            raise ContractError(
                f"the input has {x.shape[1]} channels; the encoder was trained on {len(self.channels)}: "
                f"{', '.join(self.channels)} (in that order)"
            )
        if self.window_samples is not None and x.shape[2] != self.window_samples:
            raise ContractError(
                f"the input has {x.shape[2]} samples per window; the encoder was trained on "
                f"{self.window_samples} ({self.window_s:g} s at {self.sampling_rate_hz:g} Hz): a different "
                "length means another sampling rate or window length; resample to "
                f"{self.sampling_rate_hz:g} Hz and cut {self.window_s:g} s windows"
            )

    def _check_batch(self, batch: Mapping[str, Any]) -> None:
        if self.modality == "ehr":
            codes = batch.get("codes")
            if not isinstance(codes, torch.Tensor):
                raise ContractError("an EHR batch needs 'codes' (B, L) int64")
            if self.vocab_size is not None and codes.numel() and int(codes.max()) >= self.vocab_size:
                raise ContractError(
                    f"codes up to {int(codes.max())} but the encoder's vocabulary has {self.vocab_size} codes"
                )
            return
        rate = batch.get("sampling_rate_hz")
        if rate is not None and self.sampling_rate_hz is not None:
            rate = float(rate.flatten()[0]) if isinstance(rate, torch.Tensor) else float(rate)
            if abs(rate - self.sampling_rate_hz) > 1e-6:
                raise ContractError(
                    f"the batch is sampled at {rate:g} Hz; the encoder was trained at "
                    f"{self.sampling_rate_hz:g} Hz"
                )
        names = batch.get("channel_names")
        if names is not None:
            self._check_channels(list(names), "the batch")
        units = batch.get("units")
        if units is not None:
            self._check_units(list(units) if not isinstance(units, str) else [units], "the batch")
        if "x" not in batch:
            raise ContractError("a waveform batch needs 'x' (B, C, T)")
        self._check_tensor(batch["x"])

    def _check_channels(self, names: Sequence[str], where: str) -> list[int]:
        """Positions of the contract's channels in ``names`` (ignoring case); raise if any is missing."""
        if self.channels is None:
            return list(range(len(names)))
        lookup = {str(n).casefold(): i for i, n in enumerate(names)}
        missing = [c for c in self.channels if c.casefold() not in lookup]
        if missing:
            raise ContractError(
                f"{where} lacks channel(s) {missing} of the encoder's input ({', '.join(self.channels)}); "
                f"it has {list(names)}"
            )
        return [lookup[c.casefold()] for c in self.channels]

    def _check_units(self, units: Sequence[str], where: str) -> None:
        if self.units is None:
            return
        if len(units) == 1 and len(self.units) > 1:
            units = list(units) * len(self.units)
        wrong = [
            (c, u, w) for c, u, w in zip(self.channels or self.units, units, self.units, strict=False)
            if _unit(u) != _unit(w)
        ]  # fmt: skip
        if wrong:
            c, u, w = wrong[0]
            raise ContractError(f"{where}: channel {c} is in {u}; the encoder expects {w}")

    def _check_store(self, store: Any) -> None:
        import polars as pl

        where = f"store {getattr(store, 'path', '')}".strip()
        rec = store.recordings
        if self.modality == "ehr":
            if not getattr(store, "has_events", False):
                raise ContractError(f"{where} holds no EHR events; this encoder reads event sequences")
            return
        if self.modality is not None:
            have = sorted(set(rec["modality"].to_list()))
            rec = rec.filter(pl.col("modality") == self.modality)
            if rec.height == 0:
                raise ContractError(
                    f"{where} has no {self.modality} recordings (it has {have}); the encoder reads "
                    f"{self.describe()}"
                )
        if self.sampling_rate_hz is not None:
            rates = sorted(set(rec["sampling_rate_hz"].to_list()))
            rec = rec.filter((pl.col("sampling_rate_hz") - self.sampling_rate_hz).abs() < 1e-6)
            if rec.height == 0:
                raise ContractError(
                    f"{where}: its {self.modality or ''} recordings are sampled at {rates} Hz; the encoder "
                    f"was trained at {self.sampling_rate_hz:g} Hz (convert or resample "
                    "the source at that rate)"
                )
        seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
        for rid, names, units in zip(
            rec["recording_id"].to_list(), rec["channel_names"].to_list(), rec["units"].to_list(), strict=True
        ):
            key = (tuple(names), tuple(units))
            if key in seen:
                continue
            seen.add(key)
            positions = self._check_channels(names, f"{where}, recording {rid},")
            self._check_units([units[i] for i in positions], f"{where}, recording {rid}")


# -- save / load -----------------------------------------------------------------------------------------
def save_pretrained(
    encoder: nn.Module,
    out: str | Path,
    *,
    name: str,
    kwargs: Mapping[str, Any],
    contract: InputContract,
    wrapper: str | None = None,
    training: Mapping[str, Any] | None = None,
    card: str | None = None,
) -> Path:
    """Write ``encoder`` to the folder ``out`` (see the module docstring); returns ``out``.

    Args:
        encoder: the encoder (a compiled module's weights are saved under their eager names).
        name, kwargs: its registry name and constructor arguments: ``ENCODERS[name](**kwargs)``
            rebuilds it (wrapped in ``PerLeadEncoder`` when ``wrapper="per_lead"``).
        contract: its :class:`InputContract`.
        training: what it was trained on and how (data, method, steps), kept in the JSON.
        card: the model card (Markdown) written as ``README.md``.
    """
    from safetensors.torch import save_model

    from clinseq import __version__

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    module = getattr(encoder, "_orig_mod", encoder)  # torch.compile(module) wraps it
    save_model(module, str(out / WEIGHTS_FILE), metadata={"format": "pt", "encoder": name})
    spec = {
        "format_version": FORMAT_VERSION,
        "encoder": {"name": name, "kwargs": dict(kwargs), "wrapper": wrapper,
                    "embed_dim": getattr(module, "embed_dim", None)},
        "input": contract.to_dict(),
        "training": dict(training or {}),
        "clinseq_version": __version__,
    }  # fmt: skip
    (out / SPEC_FILE).write_text(json.dumps(spec, indent=1, default=str))
    if card is not None:
        (out / CARD_FILE).write_text(card)
    return out


def read_spec(path: str | Path) -> dict[str, Any]:
    """The ``encoder.json`` of an exported encoder folder."""
    path = Path(path)
    spec_file = path / SPEC_FILE
    if not spec_file.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ConfigError(
            f"{path}: not an exported encoder (needs {SPEC_FILE} and {WEIGHTS_FILE}); export one with "
            "clinseq export encoder RUN OUT"
        )
    spec = json.loads(spec_file.read_text())
    if spec.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{spec_file}: format_version {spec.get('format_version')}, expected {FORMAT_VERSION}"
        )
    return spec


def load_pretrained(path: str | Path, *, device: str | torch.device = "cpu", check: Any = None) -> nn.Module:
    """The encoder exported to ``path``, weights loaded, in eval mode on ``device``.

    The returned module carries ``input_contract`` (:class:`InputContract`) and ``pretrained_spec``
    (the JSON). ``check``: a store, a (B, C, T) tensor or a batch, checked against the contract first
    (:func:`check_input`).

    Raises:
        ConfigError: not an exported folder, unknown encoder name, weights that do not fit.
        ContractError: ``check`` does not match the contract.
    """
    from safetensors.torch import load_model

    from clinseq.models.registry import ENCODERS

    spec = read_spec(path)
    contract = InputContract.from_dict(spec["input"])
    if check is not None:
        contract.check(check)
    enc = spec["encoder"]
    if enc["name"] not in ENCODERS:
        raise ConfigError(
            f"{path}: encoder {enc['name']!r} is not in this clinseq's registry ({', '.join(ENCODERS)})"
        )
    encoder: nn.Module = ENCODERS[enc["name"]](**enc["kwargs"])
    if enc.get("wrapper") == "per_lead":
        from clinseq.models.per_lead import PerLeadEncoder

        encoder = PerLeadEncoder(encoder)
    elif enc.get("wrapper") is not None:
        raise ConfigError(f"{path}: unknown encoder wrapper {enc['wrapper']!r}")
    try:
        load_model(encoder, str(Path(path) / WEIGHTS_FILE), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: the weights do not fit {enc['name']}({enc['kwargs']}): {exc}") from exc
    encoder.input_contract = contract  # type: ignore[assignment]
    encoder.pretrained_spec = spec  # type: ignore[assignment]
    return encoder.to(device).eval()


def check_input(encoder: nn.Module | InputContract, data: Any) -> None:
    """Check ``data`` (store, tensor or batch) against a loaded encoder's (or a) contract; see
    :meth:`InputContract.check`."""
    contract = encoder if isinstance(encoder, InputContract) else getattr(encoder, "input_contract", None)
    if contract is None:
        raise ConfigError(
            "this encoder carries no input contract; load it with clinseq.models.load_pretrained"
        )
    contract.check(data)
